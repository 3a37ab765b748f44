"""Periodic refit: re-estimates every worker of a job from all its answers at once and
re-resolves the tasks whose label changes.

The streaming handler labels a task as soon as its posterior is confident enough, with the
worker estimates it has at that moment. Later answers (and gold) sharpen those estimates; a
refit reads the job's whole answer matrix and, for each resolved task whose label is now
different, writes the new label with ``version + 1`` and publishes a new TaskResolved through
the outbox in the same transaction. Billing is per task, so a re-resolution never bills twice.
The same transaction grades the task's answers again against the new label: each answer's
recorded outcome, the task's ``agree`` and each worker's ``agreed`` count in
``consensus_worker_stats`` (the evidence its reliability is estimated from); the streaming
handler is told which workers changed. An answer's shift starts from the outcome recorded
when it was compared (see :func:`~services.consensus.domain.regrade`), so a count only ever
gives back what it was given, and relabelling a task back restores its counts.

- Classification jobs are fitted with the library's ``default`` method, gold answers clamped
  as known; a task changes when another label is now more probable.
- Structured jobs (multi-label, boxes, spans, keypoints, polygons, transcription, pairwise) go
  through :func:`~services.consensus.domain.refit_structured`: each worker's reliability is
  re-estimated from how its answers agree with the current labels (gold pinned), and the
  resolved tasks are re-fused with those reliabilities, for a few rounds. A task changes when
  its fused label says something else (:func:`~services.consensus.structured.same_label`); a
  new confidence alone is not republished.

A task an expert reviewer resolved is final: no refit relabels it. A structured job still
being answered is refitted when its answers grew by a quarter, or once they pause (see
:meth:`Refit.run_once`).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from quorum.db import enqueue, reading, utcnow
from quorum.messaging import Topics, outgoing
from services.consensus import messages, structured
from services.consensus import tables as t
from services.consensus.aggregation import BetaReliability
from services.consensus.domain import (
    RELIABILITY,
    JobSpec,
    Regrade,
    TaskResult,
    TaskState,
    Vote,
    WeightedAnswer,
    refit_structured,
    regrade,
)
from services.consensus.handlers import graded_answers, job_spec_of_row, lock_tasks, result_of_row, worker_evidence
from services.consensus.offline import METHODS

log = logging.getLogger(__name__)

STRUCTURED_GROWTH = 1.25
"""A structured job still receiving answers is refitted when it has this many times the
answers of its last refit (see :meth:`Refit.run_once`)."""


@dataclasses.dataclass(frozen=True)
class _NewLabel:
    label: str
    confidence: float
    # The answers with the weights the new label came from; None: the stored ones stay.
    answers: tuple[WeightedAnswer, ...] | None = None
    # Per worker, whether its answer agrees with the new label, as found by the fusion that
    # produced the label; a worker left out is compared with the label.
    agreed: Mapping[str, bool] | None = None


class Refit:
    """Refits jobs that received answers since their last refit. Cost per job: for a
    classification job one fit over its answers (the default method fits 100k answers in well
    under a second); for a structured job one fusion per resolved task and round, 1-10 ms each
    (``benchmarks/refit_bench.py``); then one transaction for the changed labels. The fits
    run outside any transaction."""

    def __init__(
        self,
        engine: Engine,
        topics: Topics,
        outbox_written: Callable[[], None],
        method: str = "default",
        clock: Callable[[], dt.datetime] = utcnow,
        prior: BetaReliability = RELIABILITY,
        evidence_changed: Callable[[Collection[str]], None] = lambda workers: None,
    ) -> None:
        self._engine = engine
        # Told, after the commit, which workers' agreed counts a relabel changed.
        self._evidence_changed = evidence_changed
        self._topics = topics
        self._outbox_written = outbox_written
        self._method = method
        self._clock = clock
        self._prior = prior
        # job -> highest answer row id seen by its last refit, and its answer count then.
        self._seen: dict[str, int] = {}
        self._counted: dict[str, int] = {}
        # job -> highest answer row id seen by the previous round.
        self._previous: dict[str, int] = {}

    def run_once(self) -> int:
        """Refits every job with new answers; returns how many tasks changed label.

        A structured job is refitted only once its answers grew by a quarter since its last
        refit, or when they stopped coming (none since the previous round): its refit re-fuses
        every resolved task, so refitting it every round while it is being labelled would
        cost its whole size each time. With geometric steps all its refits add up to about
        five times the cost of the largest."""
        a, jb = t.answers, t.jobs
        with reading(self._engine) as conn:
            latest = conn.execute(
                sa.select(a.c.job_id, sa.func.max(a.c.id), sa.func.count(), jb.c.answer_kind)
                .join(jb, jb.c.job_id == a.c.job_id)
                .group_by(a.c.job_id, jb.c.answer_kind)
            ).all()
        changed = 0
        for job_id, last_id, count, kind in latest:
            previous, self._previous[job_id] = self._previous.get(job_id), last_id
            if self._seen.get(job_id) == last_id:
                continue
            categorical = kind in ("", "classification")
            if not categorical and previous != last_id and count < STRUCTURED_GROWTH * self._counted.get(job_id, 0):
                continue
            changed += self.refit_job(job_id)
            self._seen[job_id], self._counted[job_id] = last_id, count
        return changed

    def refit_job(self, job_id: str) -> int:
        """Refits one job; returns how many of its resolved tasks changed label."""
        a, tk = t.answers, t.tasks
        with reading(self._engine) as conn:
            answers = conn.execute(
                sa.select(a.c.task_id, a.c.worker_id, a.c.label)
                .join(tk, tk.c.task_id == a.c.task_id)
                .where(a.c.job_id == job_id)
                .order_by(a.c.id)
            ).all()
            gold = dict(
                conn.execute(sa.select(tk.c.task_id, tk.c.gold_label).where(tk.c.job_id == job_id, tk.c.gold)).all()
            )
            job = conn.execute(sa.select(t.jobs).where(t.jobs.c.job_id == job_id)).first()
        if not answers or job is None:
            return 0
        spec = job_spec_of_row(job)
        if spec.answer_kind == "classification":
            return self._refit_categorical(spec, answers, gold)
        return self._refit_structured(spec, answers, gold)

    def _refit_categorical(self, job: JobSpec, answers: Sequence[Any], gold: Mapping[str, str]) -> int:
        aggregator = METHODS[self._method]()
        # The job's label order, so a label nobody used still has a column.
        aggregator.labels = job.labels
        triples = [(row.task_id, row.worker_id, row.label) for row in answers if row.label in job.labels]
        probas = aggregator.fit_predict_proba(triples, known={k: v for k, v in gold.items() if v in job.labels})

        def relabel(row: Any) -> _NewLabel | None:
            posterior = probas.get(row.task_id)
            if not posterior:
                return None
            best = max(posterior, key=lambda label: (posterior[label], str(label)))
            if best == row.label or posterior[best] <= posterior.get(row.label, 0.0):
                return None
            return _NewLabel(str(best), float(posterior[best]))

        return self._relabel(job, relabel)

    def _refit_structured(self, job: JobSpec, answers: Sequence[Any], gold: Mapping[str, str]) -> int:
        a, r = t.answers, t.results
        with reading(self._engine) as conn:
            rows = conn.execute(
                sa.select(r.c.task_id, r.c.label, r.c.version, r.c.reviewed).where(r.c.job_id == job.job_id)
            ).all()
            # The handler keeps evidence per (worker, job) and weighs a worker by its sum over
            # every job; so does the refit, with this job's part recounted against the current
            # labels (the stored counts compared answers with the labels of their time).
            elsewhere = worker_evidence(
                conn,
                t.worker_stats.c.job_id != job.job_id,
                t.worker_stats.c.worker_id.in_(sa.select(a.c.worker_id).where(a.c.job_id == job.job_id)),
            )
        votes: dict[str, list[Vote]] = {}
        for answer in answers:
            votes.setdefault(answer.task_id, []).append(Vote(answer.worker_id, answer.label))
        fitted = refit_structured(
            job,
            votes,
            {task: label for task, label in gold.items() if label},
            {row.task_id: row.label for row in rows},
            final={row.task_id for row in rows if row.reviewed},
            elsewhere=elsewhere,
            prior=self._prior,
        )
        fitted_version = {row.task_id: row.version for row in rows}

        def relabel(row: Any) -> _NewLabel | None:
            label = fitted.labels.get(row.task_id)
            # A row written since it was read is not the one that was fitted.
            if label is None or row.version != fitted_version.get(row.task_id):
                return None
            if structured.same_label(label, row.label):
                return None
            weighted = tuple(
                WeightedAnswer(v.worker_id, v.label, fitted.reliability[v.worker_id]) for v in votes[row.task_id]
            )
            agreed = {v.worker_id: ok for v, ok in zip(votes[row.task_id], fitted.agreed[row.task_id], strict=True)}
            return _NewLabel(label, fitted.confidences[row.task_id], weighted, agreed)

        return self._relabel(job, relabel)

    def _relabel(self, job: JobSpec, relabel: Callable[[Any], _NewLabel | None]) -> int:
        """Writes, in one transaction, the new label ``relabel`` gives a result row of the job
        (None: it stays): the result with ``version + 1``, the task's label, and a TaskResolved
        in the outbox; and grades the task's answers again against the new label, in its
        ``agree`` and its workers' ``agreed`` counts. Reviewed results are final and never
        offered."""
        r = t.results
        now = self._clock()
        changed: list[TaskResult] = []
        relabels: dict[str, tuple[str, str]] = {}
        fused: dict[str, Mapping[str, bool]] = {}
        with self._engine.begin() as conn:
            rows = conn.execute(sa.select(r).where(r.c.job_id == job.job_id, sa.not_(r.c.reviewed))).all()
            for row in rows:
                new = relabel(row)
                if new is None:
                    continue
                current = result_of_row(row)
                result = dataclasses.replace(
                    current,
                    label=new.label,
                    confidence=new.confidence,
                    answers=current.answers if new.answers is None else new.answers,
                    resolved_at=now,
                    version=row.version + 1,
                )
                written = conn.execute(
                    sa.update(r)
                    .where(r.c.task_id == row.task_id, r.c.version == row.version)
                    .values(
                        label=result.label,
                        confidence=result.confidence,
                        answers=json.dumps([[w.worker_id, w.label, w.weight] for w in result.answers]),
                        version=result.version,
                    )
                )
                if not written.rowcount:
                    continue  # changed since it was read: not the row this label was fitted for
                changed.append(result)
                relabels[row.task_id] = (row.label, result.label)
                if new.agreed is not None:
                    fused[row.task_id] = new.agreed
            grades, verdicts = _write_regrade(conn, job, relabels, fused)
            published = [
                dataclasses.replace(
                    c,
                    answers=tuple(
                        dataclasses.replace(a, agreed=verdicts[c.task_id].get(a.worker_id)) for a in c.answers
                    ),
                )
                for c in changed
            ]
            enqueue(
                conn,
                t.outbox,
                [outgoing(self._topics.results, c.task_id, messages.task_resolved_event(c)) for c in published],
            )
        if grades.agreed:
            self._evidence_changed(sorted(grades.agreed))
        if changed:
            self._outbox_written()
            log.info("refit of %s changed %d labels", job.job_id, len(changed))
        return len(changed)


def _write_regrade(
    conn: Connection,
    job: JobSpec,
    relabels: Mapping[str, tuple[str, str]],
    fused: Mapping[str, Mapping[str, bool]],
) -> tuple[Regrade, dict[str, dict[str, bool]]]:
    """Writes the new labels of ``relabels`` (task -> (old, new) label) to their tasks and
    grades the tasks' answers again against them (see :func:`regrade`; ``fused`` is what the
    fusion behind a new label said of each answer): each answer's ``agreed``, each task's
    ``agree``, each worker's ``agreed`` in the job. Returns what it graded, and per task
    whether each worker's answer agrees with the new label."""
    a, tk, ws = t.answers, t.tasks, t.worker_stats
    tasks = sorted(relabels)
    # Locked before their answers are read, in key order as the handler locks them: a late
    # answer is then graded either here, or by the handler against the new label.
    lock_tasks(conn, tasks)
    # A task a reviewer did not decide had each of its answers compared with its label once:
    # all of them when it resolved, every later one on arrival.
    stored = graded_answers(conn, tasks)
    answers = {task: [graded for _, graded in rows] for task, rows in stored.items()}
    grades = regrade(job, relabels, answers, fused)
    regraded = sorted(
        (row_id, flag)
        for task in relabels
        for (row_id, graded), flag in zip(stored.get(task, ()), grades.flags[task], strict=True)
        if graded.agreed != flag
    )
    if regraded:
        conn.execute(
            sa.update(a).where(a.c.id == sa.bindparam("b_id")).values(agreed=sa.bindparam("b_agreed")),
            [{"b_id": row_id, "b_agreed": flag} for row_id, flag in regraded],
        )
    # Rows in key order, the order the handler writes its own in: on PostgreSQL the two
    # never wait for each other's row locks in a cycle.
    if relabels:
        conn.execute(
            sa.update(tk)
            .where(tk.c.task_id == sa.bindparam("b_task_id"), tk.c.state == TaskState.RESOLVED.value)
            .values(label=sa.bindparam("b_label"), agree=sa.bindparam("b_agree")),
            [
                {"b_task_id": task, "b_label": new, "b_agree": grades.agree[task]}
                for task, (_, new) in sorted(relabels.items())
            ],
        )
    if grades.agreed:
        conn.execute(
            sa.update(ws)
            .where(ws.c.worker_id == sa.bindparam("b_worker_id"), ws.c.job_id == job.job_id)
            .values(agreed=ws.c.agreed + sa.bindparam("b_shift")),
            [{"b_worker_id": worker, "b_shift": shift} for worker, shift in sorted(grades.agreed.items())],
        )
    return grades, {task: grades.verdicts(task, answers.get(task, ())) for task in relabels}
