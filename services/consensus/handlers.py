"""The consensus service layer: the event-batch handler that turns answers into labels, and the
read-side queries behind the gRPC API.

Event flow. :class:`ConsensusEvents` consumes JobCreated, TaskCreated and AnswerAccepted and
processes each batch in one transaction:

1. claim the event ids (a redelivered event is a no-op) and store what arrived: job specs,
   tasks, answers;
2. apply, in arrival order, every answer whose task and job are both known, including answers
   stored earlier that waited for their task or job. After each answer to an open task the
   one-coin posterior is recomputed and :func:`~services.consensus.domain.decide` says wait,
   ask for one more, or resolve; gold answers grade their worker; answers after resolution are
   counted and compared with the label;
3. write the task states, results, worker evidence (with, on each answer compared with a
   resolved label, whether it agreed) and the outbox events (TaskResolved,
   MoreAnswersRequested) in the same transaction.

Job specs and worker evidence are cached in memory and rebuilt from the database on start
(:meth:`ConsensusEvents.load`); the batch works on a copy and the cache takes it only after
the commit, so a failed batch leaves the cache as the database is. The next batch reads afresh
the evidence of workers whose answers a refit graded again
(:meth:`ConsensusEvents.evidence_changed`). The handler assumes it is the only writer of the
rest (one consumer per service instance; several instances would each keep a slightly stale
view of the other's worker evidence, which only shifts weights).

Refit. A label resolved here is version 1: later evidence (more gold, late answers) moves
worker reliabilities but not the labels already published. The periodic refit
(:mod:`services.consensus.refit`, a background loop) re-estimates the workers of a job from all
its answers, classification and structured alike, and re-resolves the tasks whose label
changes with ``version + 1`` and a new TaskResolved in the same transaction.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine

from quorum.db import (
    OutgoingEvent,
    claim_events,
    drop_outbox_events,
    enqueue,
    insert_ignoring_conflicts,
    reading,
    utcnow,
)
from quorum.errors import NotFound
from quorum.messaging import Topics, outgoing
from quorum.owners import OwnerCache
from quorum.v1 import events_pb2
from services.consensus import messages
from services.consensus import tables as t
from services.consensus.aggregation import BetaReliability
from services.consensus.aggregation.agreement import fleiss_kappa, krippendorff_alpha
from services.consensus.aggregation.spam import SPAM_THRESHOLD
from services.consensus.domain import (
    RELIABILITY,
    Decision,
    Evaluation,
    Graded,
    JobQuality,
    JobSpec,
    MinuteCount,
    TaskProgress,
    TaskResult,
    TaskState,
    Vote,
    WeightedAnswer,
    WorkerEvidence,
    WorkerQuality,
    minute_of,
    percentiles,
    ratio,
)

log = logging.getLogger(__name__)

CONSUMER = "consensus.events"
"""The consumer name under which processed event ids are recorded."""

_HANDLED = frozenset({"job_created", "task_created", "answer_accepted", "job_deleted"})
# Keeps IN (...) lists under every backend's bound-parameter limit.
_CHUNK = 5000
_COUNTS = ("answers", "gold_answers", "gold_correct", "compared", "agreed")
# Pseudo-answers per confusion row toward the worker's one-coin matrix.
_SHRINK = 2.0
# A worker is called a spammer only with this many answers checked against gold or consensus.
MIN_SPAM_EVIDENCE = 10


@dataclass(frozen=True)
class _Spam:
    score: float
    evidence: int
    labels: tuple[str, ...]
    confusion: tuple[float, ...]


def _chunks(values: Sequence[str], size: int = _CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


@dataclass
class _Counts:
    answers: int = 0
    gold_answers: int = 0
    gold_correct: int = 0
    compared: int = 0
    agreed: int = 0


@dataclass(frozen=True)
class _TaskMeta:
    item_id: str
    object_name: str
    created_at: dt.datetime


@dataclass(frozen=True)
class _NewTask:
    task_id: str
    job_id: str
    meta: _TaskMeta
    gold: bool
    gold_label: str


@dataclass(frozen=True)
class _NewAnswer:
    answer_id: str
    task_id: str
    job_id: str
    vote: Vote
    submitted_at: dt.datetime | None


@dataclass(frozen=True)
class _Stored:
    row_id: int
    answer_id: str
    vote: Vote


@dataclass
class _Batch:
    """One batch's work inside its transaction: load what it touches, decide in memory, write."""

    conn: Connection
    jobs: dict[str, JobSpec]
    workers: dict[str, WorkerEvidence]
    topics: Topics
    prior: BetaReliability
    now: dt.datetime
    job_events: list[JobSpec] = field(default_factory=list)
    task_events: list[_NewTask] = field(default_factory=list)
    answer_events: list[_NewAnswer] = field(default_factory=list)
    # Results of the batch, for the caller once the transaction commits.
    new_jobs: dict[str, JobSpec] = field(default_factory=dict)
    evidence: dict[str, WorkerEvidence] = field(default_factory=dict)
    emitted: int = 0
    progress: dict[str, TaskProgress] = field(default_factory=dict)
    meta: dict[str, _TaskMeta] = field(default_factory=dict)
    # Tasks whose row must be rewritten.
    dirty: set[str] = field(default_factory=set)
    # (task, worker) -> whether that answer agreed with the task's label when compared.
    compared: dict[tuple[str, str], bool] = field(default_factory=dict)

    def add(self, event: events_pb2.Event) -> None:
        kind = event.WhichOneof("payload")
        occurred = messages.datetime_of(event.occurred_at)
        if kind == "job_created":
            self.job_events.append(messages.job_spec_of(event.job_created))
        elif kind == "task_created":
            task = event.task_created
            created = messages.datetime_of(task.created_at) or occurred or self.now
            self.task_events.append(
                _NewTask(
                    task_id=task.task_id,
                    job_id=task.job_id,
                    meta=_TaskMeta(task.item_id, task.object_name, created),
                    gold=task.gold,
                    gold_label=messages.label_of(task.gold_answer) if task.gold else "",
                )
            )
        elif kind == "answer_accepted":
            answer = event.answer_accepted
            self.answer_events.append(
                _NewAnswer(
                    answer_id=answer.answer_id or event.event_id,
                    task_id=answer.task_id,
                    job_id=answer.job_id,
                    vote=Vote(answer.worker_id, messages.label_of(answer.answer)),
                    submitted_at=messages.datetime_of(answer.submitted_at),
                )
            )

    def reliability(self, worker_id: str) -> float:
        evidence = self.evidence.get(worker_id) or self.workers.get(worker_id)
        return evidence.reliability(self.prior) if evidence else self.prior.prior_mean

    def _evidence_of(self, worker_id: str) -> WorkerEvidence:
        # Copy on first write: the shared cache changes only after the commit.
        evidence = self.evidence.get(worker_id)
        if evidence is None:
            cached = self.workers.get(worker_id)
            evidence = cached.copy() if cached else WorkerEvidence()
            self.evidence[worker_id] = evidence
        return evidence

    def _job(self, job_id: str) -> JobSpec | None:
        return self.new_jobs.get(job_id) or self.jobs.get(job_id)

    def _org_of(self, job_id: str) -> str:
        job = self._job(job_id)
        return job.org_id if job is not None else ""

    def run(self) -> None:
        """Stores the batch, applies every answer that can be applied, writes the outcome."""
        self._store_jobs()
        touched = self._touched_tasks()
        self.progress, self.meta = self._load_tasks(touched)
        stored = self._load_answers(touched)
        new_tasks = self._add_new_tasks()
        queue = self._replay_stored(stored, {task.task_id for task in new_tasks})
        new_answers = self._accept_answers(stored, queue)
        results, deltas = self._apply(queue)
        events = [
            outgoing(self.topics.results, result.task_id, messages.task_resolved_event(result)) for result in results
        ]
        events.extend(self._requests())

        new_ids = {task.task_id for task in new_tasks}
        self._write_tasks(new_tasks, [self.progress[i] for i in sorted(self.dirty - new_ids)])
        self._write_answers(new_answers)
        self._write_answer_grades({(a.task_id, a.vote.worker_id) for a in new_answers})
        self._write_results(results)
        self._write_worker_stats(deltas)
        if events:
            enqueue(self.conn, t.outbox, events)
        self.emitted = len(events)

    def _touched_tasks(self) -> list[str]:
        touched = {task.task_id for task in self.task_events} | {a.task_id for a in self.answer_events}
        for chunk in _chunks(sorted(self.new_jobs)):
            touched.update(
                self.conn.execute(
                    sa.select(t.tasks.c.task_id).where(
                        t.tasks.c.job_id.in_(chunk), t.tasks.c.state == TaskState.WAITING.value
                    )
                ).scalars()
            )
        return sorted(touched)

    def _add_new_tasks(self) -> list[_NewTask]:
        new_tasks: list[_NewTask] = []
        for task in self.task_events:
            if task.task_id in self.progress:
                continue  # the same TaskCreated again under another event id
            state = TaskState.GOLD if task.gold else TaskState.WAITING
            self.progress[task.task_id] = TaskProgress(task.task_id, task.job_id, task.gold, task.gold_label, state)
            self.meta[task.task_id] = task.meta
            new_tasks.append(task)
        return new_tasks

    def _replay_stored(self, stored: dict[str, list[_Stored]], new_ids: set[str]) -> list[tuple[str, Vote]]:
        """Opens waiting tasks whose job is known and returns the stored answers that become
        applicable (of those tasks and of new gold tasks), in arrival order."""
        replay: list[tuple[int, str, Vote]] = []
        for task_id, progress in self.progress.items():
            if progress.state in (TaskState.OPEN, TaskState.REVIEW):
                # Every stored answer of an open task was applied; the posterior needs them all.
                progress.votes = [s.vote for s in stored.get(task_id, ())]
                continue
            opens = progress.state is TaskState.WAITING and self._job(progress.job_id) is not None
            if opens:
                progress.state = TaskState.OPEN
                self.dirty.add(task_id)
            if opens or (task_id in new_ids and progress.state is TaskState.GOLD):
                replay.extend((s.row_id, task_id, s.vote) for s in stored.get(task_id, ()))
        replay.sort(key=lambda item: item[0])
        return [(task_id, vote) for _, task_id, vote in replay]

    def _accept_answers(self, stored: dict[str, list[_Stored]], queue: list[tuple[str, Vote]]) -> list[_NewAnswer]:
        """Drops repeated answers, queues those whose task can take them; returns the rows to store."""
        known_ids = {s.answer_id for rows in stored.values() for s in rows}
        workers_on = {task_id: {s.vote.worker_id for s in rows} for task_id, rows in stored.items()}
        accepted: list[_NewAnswer] = []
        for answer in self.answer_events:
            if answer.answer_id in known_ids:
                continue
            on_task = workers_on.setdefault(answer.task_id, set())
            if answer.vote.worker_id in on_task:
                # One worker, one vote: a second answer would count the same opinion twice.
                log.warning(
                    "worker %s answered task %s twice; keeping the first", answer.vote.worker_id, answer.task_id
                )
                continue
            known_ids.add(answer.answer_id)
            on_task.add(answer.vote.worker_id)
            accepted.append(answer)
            target = self.progress.get(answer.task_id)
            if target is not None and target.state is not TaskState.WAITING:
                queue.append((answer.task_id, answer.vote))
        return accepted

    def _apply(self, queue: list[tuple[str, Vote]]) -> tuple[list[TaskResult], dict[tuple[str, str], _Counts]]:
        deltas: dict[tuple[str, str], _Counts] = {}
        results: list[TaskResult] = []
        for task_id, vote in queue:
            progress = self.progress[task_id]
            step = progress.add_answer(vote, self._job(progress.job_id), self.reliability)
            self.dirty.add(task_id)
            delta = deltas.setdefault((vote.worker_id, progress.job_id), _Counts())
            delta.answers += 1
            if step.gold_correct is not None:
                evidence = self._evidence_of(vote.worker_id)
                evidence.gold_answers += 1
                evidence.gold_correct += step.gold_correct
                delta.gold_answers += 1
                delta.gold_correct += step.gold_correct
            for worker_id, agreed in step.compared:
                self.compared[(task_id, worker_id)] = bool(agreed)
                evidence = self._evidence_of(worker_id)
                evidence.compared += 1
                evidence.agreed += agreed
                counts = deltas.setdefault((worker_id, progress.job_id), _Counts())
                counts.compared += 1
                counts.agreed += agreed
            if step.resolved and step.evaluation is not None:
                results.append(self._result(progress, step.evaluation, step.decision))
        return results, deltas

    def _result(self, progress: TaskProgress, evaluation: Evaluation, decision: Decision | None) -> TaskResult:
        info = self.meta[progress.task_id]
        return TaskResult(
            task_id=progress.task_id,
            job_id=progress.job_id,
            item_id=info.item_id,
            object_name=info.object_name,
            label=evaluation.label,
            confidence=evaluation.confidence,
            low_confidence=decision is Decision.RESOLVE_LOW_CONFIDENCE,
            majority_label=evaluation.majority_label,
            answers=tuple(
                WeightedAnswer(v.worker_id, v.label, w, agreed=evaluation.agrees(i, v))
                for i, (v, w) in enumerate(zip(progress.votes, evaluation.weights, strict=True))
            ),
            resolved_at=self.now,
        )

    def _requests(self) -> list[OutgoingEvent]:
        """MoreAnswersRequested for tasks whose last decision asked for more, once per count."""
        events = []
        for task_id, progress in self.progress.items():
            wanted = progress.take_request()
            if wanted is not None:
                self.dirty.add(task_id)
                event = messages.more_answers_event(task_id, progress.job_id, wanted)
                events.append(outgoing(self.topics.task_requests, task_id, event))
        return events

    def _store_jobs(self) -> None:
        for job in self.job_events:
            if job.job_id and job.job_id not in self.jobs and job.job_id not in self.new_jobs:
                self.new_jobs[job.job_id] = job
        insert_ignoring_conflicts(
            self.conn,
            t.jobs,
            [
                {
                    "job_id": job.job_id,
                    "labels": json.dumps(list(job.labels)),
                    "overlap_min": job.overlap_min,
                    "overlap_max": job.overlap_max,
                    "target_confidence": job.target_confidence,
                    "expert_review": job.expert_review,
                    "org_id": job.org_id,
                    "answer_kind": job.answer_kind,
                    "received_at": self.now,
                }
                for job in self.new_jobs.values()
            ],
        )
        for job in self.new_jobs.values():
            # Tasks that arrived before their job learn its organisation now.
            self.conn.execute(
                sa.update(t.tasks)
                .where(t.tasks.c.job_id == job.job_id, t.tasks.c.org_id == "")
                .values(org_id=job.org_id)
            )

    def _load_tasks(self, task_ids: list[str]) -> tuple[dict[str, TaskProgress], dict[str, _TaskMeta]]:
        progress: dict[str, TaskProgress] = {}
        meta: dict[str, _TaskMeta] = {}
        # Locked (on PostgreSQL; SQLite writers take turns anyway) in key order, as the refit
        # locks the tasks it relabels: a batch that read a task the refit is relabelling would
        # otherwise write the old label back and grade late answers against it.
        for chunk in _chunks(task_ids):
            query = sa.select(t.tasks).where(t.tasks.c.task_id.in_(chunk)).order_by(t.tasks.c.task_id)
            for row in self.conn.execute(query.with_for_update()):
                progress[row.task_id] = TaskProgress(
                    task_id=row.task_id,
                    job_id=row.job_id,
                    gold=row.gold,
                    gold_label=row.gold_label,
                    state=TaskState(row.state),
                    answers=row.answers,
                    agree=row.agree,
                    requested=row.requested,
                    label=row.label,
                )
                meta[row.task_id] = _TaskMeta(row.item_id, row.object_name, row.created_at)
        return progress, meta

    def _load_answers(self, task_ids: list[str]) -> dict[str, list[_Stored]]:
        a = t.answers
        stored: dict[str, list[_Stored]] = {}
        for chunk in _chunks(task_ids):
            rows = self.conn.execute(
                sa.select(a.c.id, a.c.answer_id, a.c.task_id, a.c.worker_id, a.c.label)
                .where(a.c.task_id.in_(chunk))
                .order_by(a.c.id)
            )
            for row in rows:
                stored.setdefault(row.task_id, []).append(
                    _Stored(row.id, row.answer_id, Vote(row.worker_id, row.label))
                )
        return stored

    def _write_tasks(self, new_tasks: list[_NewTask], changed: list[TaskProgress]) -> None:
        insert_ignoring_conflicts(
            self.conn,
            t.tasks,
            [
                {
                    "task_id": task.task_id,
                    "job_id": task.job_id,
                    "org_id": self._org_of(task.job_id),
                    "item_id": task.meta.item_id,
                    "object_name": task.meta.object_name,
                    "gold": task.gold,
                    "gold_label": task.gold_label,
                    "created_at": task.meta.created_at,
                    **_task_state(self.progress[task.task_id]),
                }
                for task in new_tasks
            ],
        )
        if changed:
            c = t.tasks.c
            self.conn.execute(
                sa.update(t.tasks)
                .where(c.task_id == sa.bindparam("b_task_id"))
                .values(
                    {name: sa.bindparam(f"b_{name}") for name in ("state", "answers", "agree", "requested", "label")}
                ),
                [{"b_task_id": p.task_id, **{f"b_{k}": v for k, v in _task_state(p).items()}} for p in changed],
            )

    def _write_answers(self, answers: list[_NewAnswer]) -> None:
        insert_ignoring_conflicts(
            self.conn,
            t.answers,
            [
                {
                    "answer_id": a.answer_id,
                    "task_id": a.task_id,
                    "job_id": a.job_id,
                    "worker_id": a.vote.worker_id,
                    "label": a.vote.label,
                    "submitted_at": a.submitted_at,
                    "agreed": self.compared.get((a.task_id, a.vote.worker_id)),
                }
                for a in answers
            ],
        )

    def _write_answer_grades(self, inserted: set[tuple[str, str]]) -> None:
        """Records on the answers stored before this batch whether they agreed with their
        task's label (the inserted ones carry it already): what a refit's re-grade starts from."""
        earlier = sorted((key, agreed) for key, agreed in self.compared.items() if key not in inserted)
        if not earlier:
            return
        a = t.answers
        self.conn.execute(
            sa.update(a)
            .where(a.c.task_id == sa.bindparam("b_task_id"), a.c.worker_id == sa.bindparam("b_worker_id"))
            .values(agreed=sa.bindparam("b_agreed")),
            [{"b_task_id": task, "b_worker_id": worker, "b_agreed": agreed} for (task, worker), agreed in earlier],
        )

    def _write_results(self, results: list[TaskResult]) -> None:
        insert_ignoring_conflicts(
            self.conn,
            t.results,
            [
                {
                    "task_id": r.task_id,
                    "job_id": r.job_id,
                    "org_id": self._org_of(r.job_id),
                    "item_id": r.item_id,
                    "object_name": r.object_name,
                    "label": r.label,
                    "confidence": r.confidence,
                    "low_confidence": r.low_confidence,
                    "majority_label": r.majority_label,
                    "answers": json.dumps([[a.worker_id, a.label, a.weight] for a in r.answers]),
                    "resolved_at": r.resolved_at,
                    "ttr_seconds": max(0.0, (r.resolved_at - self.meta[r.task_id].created_at).total_seconds()),
                    "resolved_minute": minute_of(r.resolved_at),
                    "version": r.version,
                }
                for r in results
            ],
        )

    def _write_worker_stats(self, deltas: dict[tuple[str, str], _Counts]) -> None:
        if not deltas:
            return
        ws = t.worker_stats
        insert: Any = sqlite.insert(ws) if self.conn.dialect.name == "sqlite" else postgresql.insert(ws)
        stmt = insert.on_conflict_do_update(
            index_elements=[ws.c.worker_id, ws.c.job_id],
            set_={name: ws.c[name] + insert.excluded[name] for name in _COUNTS},
        )
        self.conn.execute(
            stmt,
            [
                {"worker_id": worker_id, "job_id": job_id, **{name: getattr(counts, name) for name in _COUNTS}}
                for (worker_id, job_id), counts in sorted(deltas.items())
            ],
        )


def _confusion_and_spam(counts: np.ndarray, accuracy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Confusion matrices ``errors[w, true, answered]`` and spam scores from answer counts.

    Each row of ``n`` answers gets ``_SHRINK`` pseudo-answers from the worker's one-coin matrix
    (``accuracy`` on the diagonal), so a row with little evidence looks like what we already
    believe of the worker. The spam score (Raykar & Yu) compares these shrunk rows pairwise,
    less their sampling noise: a shrunk row is off by ``n (1 - sum p^2) / (n + _SHRINK)^2`` in
    squared distance on average, which is subtracted, else a spammer with many answers would
    look informative. Comparing raw rows instead let a row of one or two answers erase the
    evidence of the others: a worker right 8 times in 10 could score 1.0, a certain spammer.
    """
    n_workers, k = counts.shape[0], counts.shape[1]
    one_coin = np.repeat(((1.0 - accuracy) / max(k - 1, 1))[:, None, None], k, axis=1).repeat(k, axis=2)
    one_coin[:, np.arange(k), np.arange(k)] = accuracy[:, None]
    rows = counts.sum(axis=2, keepdims=True)
    errors = (counts + _SHRINK * one_coin) / (rows + _SHRINK)
    if k < 2:
        return errors, np.zeros(n_workers)
    n = rows[:, :, 0]
    empirical = counts / np.maximum(rows, 1.0)
    # 1 - sum p^2 of each row, unbiased from two answers up; from the one-coin row below that.
    impurity = np.where(
        n >= 2,
        (1.0 - (empirical**2).sum(axis=2)) * n / np.maximum(n - 1.0, 1.0),
        1.0 - (one_coin**2).sum(axis=2),
    )
    noise = n * impurity / (n + _SHRINK) ** 2
    diff = errors[:, :, None, :] - errors[:, None, :, :]
    distance = (diff**2).sum(axis=3) - noise[:, :, None] - noise[:, None, :]
    off_diagonal = ~np.eye(k, dtype=bool)
    spread = np.clip(distance[:, off_diagonal].sum(axis=1) / (2.0 * k * (k - 1)), 0.0, 1.0)
    return errors, 1.0 - np.sqrt(spread)


def _task_state(progress: TaskProgress) -> dict[str, Any]:
    return {
        "state": progress.state.value,
        "answers": progress.answers,
        "agree": progress.agree,
        "requested": progress.requested,
        "label": progress.label,
    }


def worker_evidence(conn: Connection, *where: sa.ColumnElement[bool]) -> dict[str, WorkerEvidence]:
    """Each worker's evidence summed over its jobs' ``consensus_worker_stats`` rows (those
    matching ``where``): the evidence consensus weighs a worker's answers with. One grouped scan."""
    ws = t.worker_stats
    return {
        row.worker_id: WorkerEvidence(int(row.gold_answers), int(row.gold_correct), int(row.compared), int(row.agreed))
        for row in conn.execute(
            sa.select(
                ws.c.worker_id,
                sa.func.sum(ws.c.gold_answers).label("gold_answers"),
                sa.func.sum(ws.c.gold_correct).label("gold_correct"),
                sa.func.sum(ws.c.compared).label("compared"),
                sa.func.sum(ws.c.agreed).label("agreed"),
            )
            .where(*where)
            .group_by(ws.c.worker_id)
        )
    }


def lock_tasks(conn: Connection, task_ids: Sequence[str]) -> None:
    """Locks the tasks' rows until the transaction ends, in key order (``task_ids`` sorted), as
    the handler's batches lock theirs; a no-op on SQLite, whose writers take turns."""
    for chunk in _chunks(task_ids):
        conn.execute(
            sa.select(t.tasks.c.task_id)
            .where(t.tasks.c.task_id.in_(chunk))
            .order_by(t.tasks.c.task_id)
            .with_for_update()
        )


def graded_answers(conn: Connection, task_ids: Sequence[str]) -> dict[str, list[tuple[int, Graded]]]:
    """Each task's stored answers, in arrival order, with their row id and whether they agreed
    with the task's label when compared with it. One query per 5,000 tasks."""
    a = t.answers
    answers: dict[str, list[tuple[int, Graded]]] = {}
    for chunk in _chunks(task_ids):
        rows = conn.execute(
            sa.select(a.c.id, a.c.task_id, a.c.worker_id, a.c.label, a.c.agreed)
            .where(a.c.task_id.in_(chunk))
            .order_by(a.c.id)
        )
        for row in rows:
            answers.setdefault(row.task_id, []).append((row.id, Graded(Vote(row.worker_id, row.label), row.agreed)))
    return answers


def job_spec_of_row(row: Any) -> JobSpec:
    """The JobSpec a ``consensus_jobs`` row holds."""
    return JobSpec(
        job_id=row.job_id,
        labels=tuple(json.loads(row.labels)),
        overlap_min=row.overlap_min,
        overlap_max=row.overlap_max,
        target_confidence=row.target_confidence,
        expert_review=bool(row.expert_review),
        org_id=row.org_id,
        answer_kind=row.answer_kind or "classification",
    )


def _job_of(event: events_pb2.Event) -> str:
    kind = event.WhichOneof("payload")
    return str(getattr(getattr(event, kind), "job_id", "")) if kind else ""


def _deleted_among(conn: Connection, job_ids: set[str]) -> set[str]:
    d = t.deleted_jobs
    found: set[str] = set()
    for chunk in _chunks(sorted(i for i in job_ids if i)):
        found.update(conn.execute(sa.select(d.c.job_id).where(d.c.job_id.in_(chunk))).scalars())
    return found


def _purge_jobs(conn: Connection, topics: Topics, deletions: dict[str, str], now: dt.datetime) -> None:
    """Records the jobs as deleted and removes their answers, results, tasks and specs, and
    the events about their tasks from the outbox (TaskResolved names the objects)."""
    if not deletions:
        return
    known_orgs = dict(
        conn.execute(sa.select(t.jobs.c.job_id, t.jobs.c.org_id).where(t.jobs.c.job_id.in_(list(deletions)))).all()
    )
    insert_ignoring_conflicts(
        conn,
        t.deleted_jobs,
        [
            {"job_id": job_id, "org_id": org_id or known_orgs.get(job_id, ""), "deleted_at": now}
            for job_id, org_id in sorted(deletions.items())
        ],
    )
    for job_id in sorted(deletions):
        task_ids = list(conn.execute(sa.select(t.tasks.c.task_id).where(t.tasks.c.job_id == job_id)).scalars())
        for topic in (topics.results, topics.task_requests):
            drop_outbox_events(conn, t.outbox, topic, task_ids)
        for table in (t.answers, t.results, t.tasks, t.jobs):
            conn.execute(sa.delete(table).where(table.c.job_id == job_id))
    log.info("consensus: purged deleted jobs %s", ", ".join(sorted(deletions)))


class ConsensusEvents:
    """The handler of the consensus consumer (topics jobs, tasks and answers).

    Call :meth:`load` once before the first batch. ``outbox_written`` is called after a batch
    committed outbox rows. ``clock`` gives the resolution time (UTC).
    """

    def __init__(
        self,
        engine: Engine,
        topics: Topics,
        outbox_written: Callable[[], None] = lambda: None,
        prior: BetaReliability = RELIABILITY,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._engine = engine
        self._topics = topics
        self._outbox_written = outbox_written
        self._prior = prior
        self._clock = clock
        self._jobs: dict[str, JobSpec] = {}
        self._workers: dict[str, WorkerEvidence] = {}
        # Workers whose stored evidence another writer (the refit's thread) changed.
        self._changed_workers: set[str] = set()
        self._changed_lock = threading.Lock()

    def load(self) -> None:
        """Rebuilds the caches (job specs, worker evidence) from the database. One scan of the
        jobs and worker-stats tables."""
        with reading(self._engine) as conn:
            jobs = {row.job_id: job_spec_of_row(row) for row in conn.execute(sa.select(t.jobs))}
            workers = worker_evidence(conn)
        self._jobs = jobs
        self._workers = workers

    def evidence_changed(self, worker_ids: Iterable[str]) -> None:
        """Tells the handler that these workers' stored evidence changed under it (a refit
        graded their answers again): the next batch reads it afresh instead of the cached
        copy. Call it after the change is committed; safe from any thread."""
        with self._changed_lock:
            self._changed_workers.update(worker_ids)

    def _reload_changed_evidence(self, conn: Connection) -> None:
        # Taken before the read: a change reported meanwhile is read again by the next batch.
        with self._changed_lock:
            changed, self._changed_workers = self._changed_workers, set()
        for chunk in _chunks(sorted(changed)):
            self._workers.update(worker_evidence(conn, t.worker_stats.c.worker_id.in_(chunk)))

    def reliability(self, worker_id: str) -> float:
        """The reliability the next evaluation gives ``worker_id`` (the prior mean if unknown),
        as of the last batch."""
        evidence = self._workers.get(worker_id)
        return evidence.reliability(self._prior) if evidence else self._prior.prior_mean

    def handle(self, events: list[events_pb2.Event]) -> None:
        """Processes a batch in one transaction; events of other types are ignored and a
        redelivered event changes nothing. Events may come in any order: a task or answer
        whose dependency has not arrived is stored and applied when it does.

        A JobDeleted purges the job's tasks, answers and results (worker evidence stays: it
        is about the workers), and every later event of the job is dropped.

        Raises what the database raises (the consumer retries, then dead-letters). Costs a
        constant number of statements per batch plus one posterior per answer to an open task.
        """
        wanted = [e for e in events if e.WhichOneof("payload") in _HANDLED]
        if not wanted:
            return
        with self._engine.begin() as conn:
            fresh = claim_events(conn, t.inbox, CONSUMER, [e.event_id for e in wanted])
            if not fresh:
                return
            self._reload_changed_evidence(conn)
            deletions: dict[str, str] = {}
            others: list[events_pb2.Event] = []
            for event in wanted:
                if event.event_id in fresh:
                    fresh.discard(event.event_id)
                    if event.WhichOneof("payload") == "job_deleted":
                        deletions[event.job_deleted.job_id] = event.job_deleted.org_id
                    else:
                        others.append(event)
            # Events of a deleted job change nothing, whichever came first.
            gone = set(deletions) | _deleted_among(conn, {_job_of(e) for e in others})
            batch = _Batch(conn, self._jobs, self._workers, self._topics, self._prior, self._clock())
            for event in others:
                if _job_of(event) not in gone:
                    batch.add(event)
            batch.run()
            _purge_jobs(conn, self._topics, deletions, batch.now)
        self._jobs.update(batch.new_jobs)
        for job_id in deletions:
            self._jobs.pop(job_id, None)
        self._workers.update(batch.evidence)
        if batch.emitted:
            self._outbox_written()


class ConsensusQueries:
    """Read-side queries; each runs on a read-only connection (no SQLite write lock)."""

    def __init__(
        self,
        engine: Engine,
        prior: BetaReliability = RELIABILITY,
        clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._engine = engine
        self._prior = prior
        self._clock = clock
        self._owners = OwnerCache()

    def owner_of(self, kind: str, ident: str) -> str | None:
        """The organisation of job ``ident`` ("job"; kept after its deletion) or of the job
        of task ``ident`` ("task"; gone with a deleted job's tasks). None for another kind,
        an unknown id, or a task whose JobCreated has not arrived. Cached: one or two
        primary-key reads per id, then none."""
        if kind not in ("job", "task"):
            return None

        def load() -> str | None:
            tk, jb, gone = t.tasks, t.jobs, t.deleted_jobs
            with reading(self._engine) as conn:
                if kind == "task":
                    row = conn.execute(
                        sa.select(tk.c.org_id, jb.c.org_id.label("job_org"))
                        .select_from(tk.outerjoin(jb, jb.c.job_id == tk.c.job_id))
                        .where(tk.c.task_id == ident)
                    ).first()
                    return (row.org_id or row.job_org) if row is not None else None
                org = conn.execute(sa.select(jb.c.org_id).where(jb.c.job_id == ident)).scalar()
                if org is None:
                    org = conn.execute(sa.select(gone.c.org_id).where(gone.c.job_id == ident)).scalar()
                return org

        return self._owners.lookup(kind, ident, load)

    def get_result(self, task_id: str) -> TaskResult:
        """The resolved label of a task. Raises NotFound when the task is unknown, gold or not
        resolved yet. One primary-key lookup."""
        with reading(self._engine) as conn:
            row = conn.execute(sa.select(t.results).where(t.results.c.task_id == task_id)).first()
        if row is None:
            raise NotFound("result of task", task_id)
        return result_of_row(row)

    def export_results(self, job_id: str, page_size: int = 500) -> Iterator[TaskResult]:
        """Every resolved task of a job, ordered by task id, read page by page so no read
        transaction stays open while the client consumes. Raises NotFound (at once, before the
        iterator is returned) when the job is unknown: neither its JobCreated nor a task of it
        has arrived."""
        with reading(self._engine) as conn:
            known = conn.execute(sa.select(t.jobs.c.job_id).where(t.jobs.c.job_id == job_id)).first() or (
                conn.execute(sa.select(t.tasks.c.task_id).where(t.tasks.c.job_id == job_id).limit(1)).first()
            )
        if not known:
            raise NotFound("job", job_id)
        return self._pages(job_id, page_size)

    def _pages(self, job_id: str, page_size: int) -> Iterator[TaskResult]:
        r = t.results
        after = ""
        while True:
            with reading(self._engine) as conn:
                rows = conn.execute(
                    sa.select(r).where(r.c.job_id == job_id, r.c.task_id > after).order_by(r.c.task_id).limit(page_size)
                ).all()
            for row in rows:
                yield result_of_row(row)
            if len(rows) < page_size:
                return
            after = rows[-1].task_id

    def job_quality(self, job_id: str | None = None) -> JobQuality:
        """Quality figures of one job, or of every job when ``job_id`` is empty or None. An
        unknown job gets zeros (the dashboard may ask before the JobCreated arrived).

        ``tasks`` and ``answers`` count non-gold tasks and the answers applied to them (late
        ones included; answers still waiting for their task or job are not counted yet); gold
        answers are in ``gold_answers``. Four aggregate queries; the time-to-resolution
        percentiles read one float per resolved task."""
        tk, r = t.tasks, t.results
        task_filter = [tk.c.job_id == job_id] if job_id else []
        result_filter = [r.c.job_id == job_id] if job_id else []
        now_minute = minute_of(self._clock())
        with reading(self._engine) as conn:
            tasks = conn.execute(
                sa.select(
                    sa.func.coalesce(sa.func.sum(sa.case((sa.not_(tk.c.gold), 1), else_=0)), 0).label("tasks"),
                    sa.func.coalesce(sa.func.sum(sa.case((sa.not_(tk.c.gold), tk.c.answers), else_=0)), 0).label(
                        "answers"
                    ),
                    sa.func.coalesce(sa.func.sum(sa.case((tk.c.gold, tk.c.answers), else_=0)), 0).label("gold_answers"),
                    sa.func.coalesce(sa.func.sum(sa.case((tk.c.gold, tk.c.agree), else_=0)), 0).label("gold_correct"),
                    sa.func.avg(
                        sa.case(
                            (
                                sa.and_(tk.c.state == TaskState.RESOLVED.value, tk.c.answers > 0),
                                sa.cast(tk.c.agree, sa.Float) / tk.c.answers,
                            ),
                            else_=None,
                        )
                    ).label("agreement"),
                ).where(*task_filter)
            ).one()
            resolved = conn.execute(
                sa.select(
                    sa.func.count().label("resolved"),
                    sa.func.coalesce(sa.func.sum(sa.case((r.c.low_confidence, 1), else_=0)), 0).label("low"),
                    sa.func.avg(r.c.confidence).label("confidence"),
                ).where(*result_filter)
            ).one()
            ttrs = list(conn.execute(sa.select(r.c.ttr_seconds).where(*result_filter)).scalars())
            per_minute = conn.execute(
                sa.select(r.c.resolved_minute, sa.func.count())
                .where(*result_filter, r.c.resolved_minute > now_minute - 60 * 60)
                .group_by(r.c.resolved_minute)
                .order_by(r.c.resolved_minute)
            ).all()
            label_counts = self._label_counts(conn, job_id)
        p50, p90, p99 = percentiles(ttrs)
        mean_confidence = float(resolved.confidence or 0.0)
        return JobQuality(
            tasks=int(tasks.tasks),
            resolved=int(resolved.resolved),
            low_confidence=int(resolved.low),
            answers=int(tasks.answers),
            agreement=float(tasks.agreement or 0.0),
            gold_accuracy=ratio(int(tasks.gold_correct), int(tasks.gold_answers)),
            gold_answers=int(tasks.gold_answers),
            # Until a refit recomputes posteriors, the expected share of right labels is the
            # mean confidence they were resolved with.
            estimated_accuracy=mean_confidence,
            mean_confidence=mean_confidence,
            ttr_p50_seconds=p50,
            ttr_p90_seconds=p90,
            ttr_p99_seconds=p99,
            resolved_per_minute=tuple(MinuteCount(int(m), int(c)) for m, c in per_minute),
            krippendorff_alpha=krippendorff_alpha(label_counts),
            fleiss_kappa=fleiss_kappa(label_counts),
        )

    @staticmethod
    def _label_counts(conn: Connection, job_id: str | None) -> sp.csr_array:
        """counts[task, category] over the answers to non-gold tasks, for the agreement
        coefficients. In a classification job a category is a label. Structured answers are
        rarely exactly alike, so in a structured job a resolved task's answers that agreed with
        its fused label form one category and each other answer one of its own, all of that
        task only (answers of unresolved structured tasks are left out)."""
        a, tk, jb = t.answers, t.tasks, t.jobs
        job_filter = [tk.c.job_id == job_id] if job_id else []
        structured_jobs = sa.select(jb.c.job_id).where(jb.c.answer_kind.notin_(("", "classification")))
        rows = conn.execute(
            sa.select(a.c.task_id, a.c.label, sa.func.count())
            .join(tk, tk.c.task_id == a.c.task_id)
            .where(sa.not_(tk.c.gold), tk.c.job_id.notin_(structured_jobs), *job_filter)
            .group_by(a.c.task_id, a.c.label)
        ).all()
        groups = conn.execute(
            sa.select(tk.c.agree, tk.c.answers).where(
                sa.not_(tk.c.gold),
                tk.c.state == TaskState.RESOLVED.value,
                tk.c.job_id.in_(structured_jobs),
                *job_filter,
            )
        ).all()
        task_codes = np.unique([r[0] for r in rows], return_inverse=True)[1].ravel() if rows else np.zeros(0, np.intp)
        label_codes = np.unique([r[1] for r in rows], return_inverse=True)[1].ravel() if rows else np.zeros(0, np.intp)
        row_of, column_of, value = [task_codes], [label_codes], [np.array([r[2] for r in rows], dtype=np.float64)]
        next_row = int(task_codes.max()) + 1 if rows else 0
        next_column = int(label_codes.max()) + 1 if rows else 0
        for agree, answers in groups:
            sizes = np.array(([agree] if agree else []) + [1] * (answers - agree), dtype=np.float64)
            row_of.append(np.full(len(sizes), next_row))
            column_of.append(next_column + np.arange(len(sizes)))
            value.append(sizes)
            next_row += 1
            next_column += len(sizes)
        return sp.csr_array(
            (np.concatenate(value), (np.concatenate(row_of), np.concatenate(column_of))),
            shape=(next_row, next_column),
        )

    def _spam(self, conn: Connection, job_id: str | None, reliability: dict[str, float]) -> dict[str, _Spam]:
        """Each worker's confusion matrix and spam score, per job, against gold and resolved labels.

        Sparse evidence is shrunk toward the worker's one-coin matrix (its reliability on the
        diagonal), so a worker with few answers looks like what we already believe of them
        rather than like a spammer. Across jobs, the score is the answer-weighted mean."""
        a, tk, jb = t.answers, t.tasks, t.jobs
        reference = sa.case((tk.c.gold, tk.c.gold_label), else_=tk.c.label)
        rows = conn.execute(
            sa.select(a.c.job_id, a.c.worker_id, reference.label("truth"), a.c.label)
            .join(tk, tk.c.task_id == a.c.task_id)
            .where(
                sa.or_(tk.c.gold, tk.c.state == TaskState.RESOLVED.value),
                *([a.c.job_id == job_id] if job_id else []),
            )
        ).all()
        labels_of = {
            row.job_id: tuple(json.loads(row.labels))
            for row in conn.execute(
                sa.select(jb.c.job_id, jb.c.labels).where(*([jb.c.job_id == job_id] if job_id else []))
            )
        }
        by_job: dict[str, list[Any]] = {}
        for row in rows:
            by_job.setdefault(row.job_id, []).append(row)
        weighted: dict[str, list[tuple[float, int]]] = {}
        confusion: dict[str, tuple[tuple[str, ...], tuple[float, ...], int]] = {}
        for job, job_rows in by_job.items():
            labels = labels_of.get(job)
            if not labels:
                continue
            code = {label: i for i, label in enumerate(labels)}
            usable = [r for r in job_rows if r.truth in code and r.label in code]
            if not usable:
                continue
            workers = sorted({r.worker_id for r in usable})
            wcode = {w: i for i, w in enumerate(workers)}
            k = len(labels)
            counts = np.zeros((len(workers), k, k))
            np.add.at(
                counts,
                (
                    np.array([wcode[r.worker_id] for r in usable]),
                    np.array([code[r.truth] for r in usable]),
                    np.array([code[r.label] for r in usable]),
                ),
                1.0,
            )
            accuracy = np.array([reliability.get(w, self._prior.prior_mean) for w in workers])
            errors, scores = _confusion_and_spam(counts, accuracy)
            evidence = counts.sum(axis=(1, 2))
            for i, worker in enumerate(workers):
                weighted.setdefault(worker, []).append((float(scores[i]), int(evidence[i])))
                confusion[worker] = (labels, tuple(float(x) for x in errors[i].ravel()), int(evidence[i]))
        spam: dict[str, _Spam] = {}
        for worker, parts in weighted.items():
            total = sum(n for _, n in parts)
            score = sum(s * n for s, n in parts) / total if total else 0.0
            labels, matrix, _ = confusion[worker] if job_id else ((), (), 0)
            spam[worker] = _Spam(score, total, labels, matrix)
        return spam

    def list_workers(self, job_id: str | None = None) -> list[WorkerQuality]:
        """Workers who answered in a job (every worker when ``job_id`` is empty or None), most
        reliable first. Counts and agreement are the job's; reliability is the worker's
        overall estimate, the one consensus weighs their answers with; spam scores and, for one
        job, confusion matrices come from the answers checked against gold and resolved labels."""
        ws = t.worker_stats
        sums = [sa.func.sum(ws.c[name]).label(name) for name in _COUNTS]
        with reading(self._engine) as conn:
            scoped = conn.execute(
                sa.select(ws.c.worker_id, *sums)
                .where(*([ws.c.job_id == job_id] if job_id else []))
                .group_by(ws.c.worker_id)
            ).all()
            overall = {row.worker_id: row for row in scoped}
            if job_id and scoped:
                workers_of_job = sa.select(ws.c.worker_id).where(ws.c.job_id == job_id)
                overall = {
                    row.worker_id: row
                    for row in conn.execute(
                        sa.select(ws.c.worker_id, *sums)
                        .where(ws.c.worker_id.in_(workers_of_job))
                        .group_by(ws.c.worker_id)
                    )
                }
            reliability = {
                worker: float(
                    self._prior.estimate(
                        int(row.gold_answers), int(row.gold_correct), int(row.compared), int(row.agreed)
                    )
                )
                for worker, row in overall.items()
            }
            spam = self._spam(conn, job_id, reliability)
        workers = []
        for row in scoped:
            flags = spam.get(row.worker_id, _Spam(0.0, 0, (), ()))
            workers.append(
                WorkerQuality(
                    worker_id=row.worker_id,
                    answers=int(row.answers),
                    gold_answers=int(row.gold_answers),
                    gold_correct=int(row.gold_correct),
                    reliability=reliability[row.worker_id],
                    agreement=ratio(int(row.agreed), int(row.compared)),
                    spam_score=flags.score,
                    spammer=flags.score > SPAM_THRESHOLD and flags.evidence >= MIN_SPAM_EVIDENCE,
                    labels=flags.labels,
                    confusion=flags.confusion,
                )
            )
        workers.sort(key=lambda w: (-w.reliability, w.worker_id))
        return workers


def result_of_row(row: Any) -> TaskResult:
    """The TaskResult a ``consensus_results`` row holds."""
    return TaskResult(
        task_id=row.task_id,
        job_id=row.job_id,
        item_id=row.item_id,
        object_name=row.object_name,
        label=row.label,
        confidence=row.confidence,
        low_confidence=bool(row.low_confidence),
        majority_label=row.majority_label,
        answers=tuple(WeightedAnswer(w, label, float(weight)) for w, label, weight in json.loads(row.answers)),
        resolved_at=row.resolved_at,
        version=row.version,
    )
