"""Expert review: tasks of review jobs that reached ``overlap.max`` below the target wait
for a reviewer, whose label is final (confidence 1) and published like any resolution."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from quorum.db import enqueue, reading, utcnow
from quorum.errors import FailedPrecondition, InvalidArgument, NotFound
from quorum.messaging import Topics, outgoing
from quorum.tasktypes import TASK_TYPES
from services.consensus import messages
from services.consensus import tables as t
from services.consensus.domain import (
    RELIABILITY,
    Evaluation,
    JobSpec,
    TaskResult,
    TaskState,
    Vote,
    WeightedAnswer,
    evaluate,
    evaluate_structured,
    judged,
    minute_of,
)
from services.consensus.handlers import job_spec_of_row, worker_evidence


@dataclass(frozen=True)
class ReviewTask:
    task_id: str
    job_id: str
    item_id: str
    object_name: str
    labels: tuple[str, ...]
    answers: tuple[WeightedAnswer, ...]
    suggested_label: str
    confidence: float
    majority_label: str
    # The Answer member the job's workers set ("classification", "boxes", ...).
    answer_kind: str = "classification"


class ExpertReview:
    """The review queue and the reviewers' final answers. Each call is a few indexed queries."""

    def __init__(
        self,
        engine: Engine,
        topics: Topics,
        outbox_written: Callable[[], None],
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._engine = engine
        self._topics = topics
        self._outbox_written = outbox_written
        self._clock = clock

    def pending(self, job_id: str | None = None, limit: int = 100) -> list[ReviewTask]:
        """Tasks awaiting review, oldest first, with the crowd's answers and posterior."""
        tk = t.tasks
        with reading(self._engine) as conn:
            rows = conn.execute(
                sa.select(tk)
                .where(tk.c.state == TaskState.REVIEW.value, *([tk.c.job_id == job_id] if job_id else []))
                .order_by(tk.c.created_at, tk.c.task_id)
                .limit(limit)
            ).all()
            return [self._review_task(conn, row, _job(conn, row.job_id)) for row in rows]

    def submit(self, task_id: str, reviewer_id: str, label: str) -> TaskResult:
        """Resolves a task under review with the reviewer's label, in stored form
        (:func:`services.consensus.messages.label_of`).

        Raises NotFound for an unknown task, FailedPrecondition unless it awaits review and
        InvalidArgument for a classification label outside the job's labels or a structured
        answer of another kind than the job's."""
        tk = t.tasks
        now = self._clock()
        with self._engine.begin() as conn:
            row = conn.execute(sa.select(tk).where(tk.c.task_id == task_id)).one_or_none()
            if row is None:
                raise NotFound("task", task_id)
            if row.state != TaskState.REVIEW.value:
                raise FailedPrecondition(f"task {task_id} is not awaiting review (it is {row.state})")
            job = _job(conn, row.job_id)
            pending = self._review_task(conn, row, job)
            _check_review_label(pending, label)
            result = TaskResult(
                task_id=row.task_id,
                job_id=row.job_id,
                item_id=row.item_id,
                object_name=row.object_name,
                label=label,
                confidence=1.0,
                low_confidence=False,
                majority_label=pending.majority_label,
                answers=(*judged(job, pending.answers, label), WeightedAnswer(reviewer_id, label, 1.0, agreed=True)),
                resolved_at=now,
            )
            conn.execute(
                sa.insert(t.results).values(
                    task_id=result.task_id,
                    job_id=result.job_id,
                    org_id=row.org_id,
                    item_id=result.item_id,
                    object_name=result.object_name,
                    label=result.label,
                    confidence=result.confidence,
                    low_confidence=False,
                    majority_label=result.majority_label,
                    answers=json.dumps([[a.worker_id, a.label, a.weight] for a in result.answers]),
                    resolved_at=now,
                    ttr_seconds=max(0.0, (now - row.created_at).total_seconds()),
                    resolved_minute=minute_of(now),
                    version=result.version,
                    reviewed=True,
                )
            )
            reviewed = conn.execute(
                sa.update(tk)
                .where(tk.c.task_id == task_id, tk.c.state == TaskState.REVIEW.value)
                .values(state=TaskState.RESOLVED.value, label=label)
            )
            if not reviewed.rowcount:
                # Resolved by another reviewer, or purged with its job, since it was read.
                raise FailedPrecondition(f"task {task_id} is no longer awaiting review")
            enqueue(conn, t.outbox, [outgoing(self._topics.results, task_id, messages.task_resolved_event(result))])
        self._outbox_written()
        return result

    def _review_task(self, conn: Connection, row: Any, job: JobSpec) -> ReviewTask:
        a = t.answers
        votes = [
            Vote(worker, label)
            for worker, label in conn.execute(
                sa.select(a.c.worker_id, a.c.label).where(a.c.task_id == row.task_id).order_by(a.c.id)
            )
        ]
        evidence = worker_evidence(conn, t.worker_stats.c.worker_id.in_([v.worker_id for v in votes]))

        def reliability(worker_id: str) -> float:
            known = evidence.get(worker_id)
            return known.reliability(RELIABILITY) if known else RELIABILITY.prior_mean

        evaluation: Evaluation = (
            evaluate(job.labels, votes, reliability)
            if job.answer_kind == "classification"
            else evaluate_structured(job, votes, reliability)
        )
        return ReviewTask(
            task_id=row.task_id,
            job_id=row.job_id,
            item_id=row.item_id,
            object_name=row.object_name,
            labels=job.labels,
            answers=tuple(
                WeightedAnswer(v.worker_id, v.label, w) for v, w in zip(votes, evaluation.weights, strict=True)
            ),
            suggested_label=evaluation.label,
            confidence=evaluation.confidence,
            majority_label=evaluation.majority_label,
            answer_kind=job.answer_kind,
        )


def _job(conn: Connection, job_id: str) -> JobSpec:
    return job_spec_of_row(conn.execute(sa.select(t.jobs).where(t.jobs.c.job_id == job_id)).one())


def _check_review_label(pending: ReviewTask, label: str) -> None:
    """A reviewer's classification label is one of the job's labels; a structured answer is of
    the kind the job's workers give or the kind it fuses into (masks for polygons)."""
    if pending.answer_kind == "classification":
        if label not in pending.labels:
            raise InvalidArgument("label.classification.label", f"{label!r} is not one of the job's labels")
        return
    allowed = {pending.answer_kind} | {
        kind.fused_kind for kind in TASK_TYPES.values() if kind.answer_kind == pending.answer_kind
    }
    try:
        given = messages.answer_message(label).WhichOneof("value")
    except ValueError:
        given = None
    if given not in allowed:
        raise InvalidArgument("label", f"this job's review takes label.{' or label.'.join(sorted(allowed))}")
