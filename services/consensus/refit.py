"""Periodic refit: re-estimates every worker of a job from all its answers at once and
re-resolves the tasks whose label changes.

The streaming handler labels a task as soon as its posterior is confident enough, with the
worker estimates it has at that moment. Later answers (and gold) sharpen those estimates; a
refit fits the job's whole answer matrix with the library's ``default`` method, gold answers
clamped as known, and for each resolved task whose most probable label is now different
writes the new label with ``version + 1`` and publishes a new TaskResolved through the
outbox. Billing is per task, so a re-resolution never bills twice. A task an expert reviewer
resolved is final: no refit relabels it.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from quorum.db import enqueue, reading, utcnow
from quorum.messaging import Topics, outgoing
from services.consensus import messages
from services.consensus import tables as t
from services.consensus.domain import TaskResult, TaskState, WeightedAnswer
from services.consensus.offline import METHODS

log = logging.getLogger(__name__)


class Refit:
    """Refits jobs that received answers since their last refit. Cost per job: one fit over
    its answers (the default method fits 100k answers in well under a second) and one
    transaction for the changed labels."""

    def __init__(
        self,
        engine: Engine,
        topics: Topics,
        outbox_written: Callable[[], None],
        method: str = "default",
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._engine = engine
        self._topics = topics
        self._outbox_written = outbox_written
        self._method = method
        self._clock = clock
        # job -> highest answer row id seen by its last refit.
        self._seen: dict[str, int] = {}

    def run_once(self) -> int:
        """Refits every job with new answers; returns how many tasks changed label."""
        a = t.answers
        with reading(self._engine) as conn:
            latest = dict(conn.execute(sa.select(a.c.job_id, sa.func.max(a.c.id)).group_by(a.c.job_id)).all())
        changed = 0
        for job_id, last_id in latest.items():
            if self._seen.get(job_id) == last_id:
                continue
            changed += self.refit_job(job_id)
            self._seen[job_id] = last_id
        return changed

    def refit_job(self, job_id: str) -> int:
        """Refits one job; returns how many of its resolved tasks changed label."""
        a, tk = t.answers, t.tasks
        with reading(self._engine) as conn:
            answers = conn.execute(
                sa.select(a.c.task_id, a.c.worker_id, a.c.label)
                .join(tk, tk.c.task_id == a.c.task_id)
                .where(a.c.job_id == job_id)
            ).all()
            gold = dict(
                conn.execute(sa.select(tk.c.task_id, tk.c.gold_label).where(tk.c.job_id == job_id, tk.c.gold)).all()
            )
            job = conn.execute(
                sa.select(t.jobs.c.labels, t.jobs.c.answer_kind).where(t.jobs.c.job_id == job_id)
            ).first()
        # Structured answers (boxes, spans, ...) are fused per task when they resolve; the
        # categorical models here have nothing to say about them.
        if not answers or job is None or job.answer_kind not in ("", "classification"):
            return 0
        labels = json.loads(job.labels)
        aggregator = METHODS[self._method]()
        # The job's label order, so a label nobody used still has a column.
        aggregator.labels = tuple(labels)
        triples = [(row.task_id, row.worker_id, row.label) for row in answers if row.label in labels]
        probas = aggregator.fit_predict_proba(triples, known={k: v for k, v in gold.items() if v in labels})
        return self._relabel(job_id, probas)

    def _relabel(self, job_id: str, probas: dict[object, dict[object, float]]) -> int:
        r, tk = t.results, t.tasks
        now = self._clock()
        changed: list[TaskResult] = []
        with self._engine.begin() as conn:
            # A reviewer's label is final.
            rows = conn.execute(sa.select(r).where(r.c.job_id == job_id, sa.not_(r.c.reviewed))).all()
            for row in rows:
                posterior = probas.get(row.task_id)
                if not posterior:
                    continue
                best = max(posterior, key=lambda label: (posterior[label], str(label)))
                if best == row.label or posterior[best] <= posterior.get(row.label, 0.0):
                    continue
                result = TaskResult(
                    task_id=row.task_id,
                    job_id=row.job_id,
                    item_id=row.item_id,
                    object_name=row.object_name,
                    label=str(best),
                    confidence=float(posterior[best]),
                    low_confidence=row.low_confidence,
                    majority_label=row.majority_label,
                    answers=tuple(
                        WeightedAnswer(w, label, float(weight)) for w, label, weight in json.loads(row.answers)
                    ),
                    resolved_at=now,
                    version=row.version + 1,
                )
                conn.execute(
                    sa.update(r)
                    .where(r.c.task_id == row.task_id, r.c.version == row.version)
                    .values(label=result.label, confidence=result.confidence, version=result.version)
                )
                conn.execute(
                    sa.update(tk)
                    .where(tk.c.task_id == row.task_id, tk.c.state == TaskState.RESOLVED.value)
                    .values(label=result.label)
                )
                changed.append(result)
            enqueue(
                conn,
                t.outbox,
                [outgoing(self._topics.results, c.task_id, messages.task_resolved_event(c)) for c in changed],
            )
        if changed:
            self._outbox_written()
            log.info("refit of %s changed %d labels", job_id, len(changed))
        return len(changed)
