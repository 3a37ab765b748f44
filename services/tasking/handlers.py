"""Tasking's service layer: sessions, handing out tasks, answers, stats and the
event batches from the other services. Each method owns its transaction.

How a handout stays correct under concurrency (threads and replicas):

- the database proposes candidates (an indexed query, no locks), in priority order;
- a Redis Lua script atomically leases the first candidate that still has room
  (answers received plus live leases below answers wanted);
- an assignment row, unique per (task, worker), is written before the task is
  returned (or, after an unanswered expiry, reused); a clash (the same worker asking
  twice at once) gives the lease back.

An answer first takes its lease in Redis (atomically: a lease is used once, and
only while live), then stores the answer, bumps the task's counter and enqueues
AnswerAccepted in one transaction; a failed transaction puts the lease back.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
import random
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import sqlalchemy as sa
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine, Row
from sqlalchemy.exc import IntegrityError

from quorum import taskmessages
from quorum.db import (
    OutgoingEvent,
    UtcDateTime,
    claim_events,
    drop_outbox_events,
    enqueue,
    insert_ignoring_conflicts,
    reading,
    utcnow,
)
from quorum.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from quorum.messaging import Topics, outgoing
from quorum.objectstore import ObjectMissing, ObjectStore
from quorum.owners import OwnerCache
from quorum.security.audit import audit_event
from quorum.security.principal import current_principal
from quorum.v1 import events_pb2
from services.tasking import tables
from services.tasking.domain import (
    ACTIVE_WINDOW,
    CONSENSUS,
    MAX_REASON_CHARS,
    SERIES_MINUTES,
    Candidate,
    HandedOutTask,
    JobRules,
    Lease,
    SessionInfo,
    SubmittedAnswer,
    TaskingStats,
    WorkerStanding,
    clamp_gold_share,
    initial_answers_wanted,
    lease_seconds_or_default,
    minute_of,
    minute_series,
    optional_id,
    require_id,
    validate_answer,
    validate_worker_id,
    wants_gold,
)
from services.tasking.leases import Claim, Leases, LeaseStatus

log = logging.getLogger(__name__)

CONSUMER = "tasking.events"
# Candidate pages: most claims succeed in the first; the later ones only matter when
# the top of the queue is full of live leases.
CANDIDATE_PAGES = (8, 32, 128, 512, 2048)
GOLD_CANDIDATES = 8
SWEEP_BATCH = 500
# A handout's row is written just after its lease is granted; the sweeper leaves younger
# "leased" rows alone when it looks for leases the lease store lost.
ORPHAN_GRACE = dt.timedelta(seconds=10)

t = tables.tasks
_assigned = tables.assignments

# Hot-path statements are built once with bind parameters: building SQLAlchemy
# constructs per call costs more than running them on SQLite.
# The worker's handout of a task, if any (one at most), joined to the candidates on the
# unique (task_id, worker_id) index: the probe that eligibility needs anyway also tells
# which candidates the worker let expire (``again``).
_WITH_HANDOUT = t.outerjoin(
    _assigned, sa.and_(_assigned.c.task_id == t.c.task_id, _assigned.c.worker_id == sa.bindparam("b_worker"))
)
# Eligible: never handed to the worker, or only under a lease that expired unanswered.
# Written as "none of the other states" on a coalesce, which PostgreSQL estimates as barely
# selective (as it does the anti join this replaced) and so walks the candidate index; it
# takes "= 'expired'" for very selective and plans a parallel scan instead (15x slower
# with 400k candidates).
_ELIGIBLE = sa.and_(
    *(sa.func.coalesce(_assigned.c.state, "expired") != state for state in ("leased", "answered", "skipped"))
)
_AGAIN = _assigned.c.state.is_not(None).label("again")
_MARK_FULL = sa.update(t).where(t.c.task_id == sa.bindparam("b_task")).values(full_until=sa.bindparam("b_until"))
# What a handout needs besides the counts: selected with the candidates, so that the
# winner needs no second query.
_CANDIDATE_COLUMNS = (t.c.task_id, t.c.job_id, t.c.content_type, t.c.object_key, t.c.text)
_INSERT_ANSWER = sa.insert(tables.answers)
# By (task, worker) rather than by lease: the row may have been handed out again meanwhile.
_MARK_ANSWERED = (
    sa.update(_assigned)
    .where(_assigned.c.task_id == sa.bindparam("b_task"), _assigned.c.worker_id == sa.bindparam("b_worker"))
    .values(state="answered", skip_reason=None)
)
_SET_ASSIGNMENT_STATE = (
    sa.update(_assigned)
    .where(_assigned.c.lease_id == sa.bindparam("b_lease"))
    .values(state=sa.bindparam("b_state"), skip_reason=sa.bindparam("b_reason"))
)
_ANSWERED_BY = sa.select(tables.answers.c.worker_id).where(tables.answers.c.lease_id == sa.bindparam("b_lease"))
_SUSPENSION = sa.select(tables.suspended_workers.c.reason).where(
    tables.suspended_workers.c.worker_id == sa.bindparam("b_worker")
)
# An operator's suspension, which (unlike a spam flag) ends the worker's live leases.
_OPERATOR_SUSPENSION = sa.select(tables.worker_standing.c.suspension_reason).where(
    tables.worker_standing.c.worker_id == sa.bindparam("b_worker"), tables.worker_standing.c.suspended_by_operator
)
_SESSION_WORKER = sa.select(tables.sessions.c.worker_id).where(
    tables.sessions.c.session_id == sa.bindparam("b_session")
)


@functools.lru_cache(maxsize=4)
def _insert_assignment(dialect: str) -> Any:
    """Writes a handout's row, or reuses the worker's row of the task if its lease expired
    unanswered; returns the lease id written, no row when the worker has another row of
    the task."""
    insert: Any = sqlite.insert(_assigned) if dialect == "sqlite" else postgresql.insert(_assigned)
    return insert.on_conflict_do_update(
        index_elements=[_assigned.c.task_id, _assigned.c.worker_id],
        set_={name: insert.excluded[name] for name in ("lease_id", "leased_at", "state", "skip_reason")},
        where=_assigned.c.state == "expired",
    ).returning(_assigned.c.lease_id)


@functools.lru_cache(maxsize=64)
def _candidates(with_job: bool, with_excluded: bool, limit: int) -> sa.Select[Any]:
    """Available non-gold tasks the worker may be handed (see _ELIGIBLE), not known to be
    full, in priority order: most answers first (closest to done), then the oldest job,
    then the oldest task; ``again`` says the worker's lease of it expired. Parameters:
    b_worker, b_now, b_job, b_excluded."""
    query = (
        sa.select(*_CANDIDATE_COLUMNS, t.c.answers_wanted, t.c.answers_received, _AGAIN)
        .select_from(_WITH_HANDOUT)
        .where(
            t.c.available,
            sa.or_(t.c.full_until.is_(None), t.c.full_until <= sa.bindparam("b_now", type_=UtcDateTime)),
            _ELIGIBLE,
        )
        .order_by(t.c.answers_received.desc(), t.c.job_created_at, t.c.created_at, t.c.task_id)
        .limit(limit)
    )
    if with_job:
        query = query.where(t.c.job_id == sa.bindparam("b_job"))
    if with_excluded:
        query = query.where(t.c.task_id.not_in(sa.bindparam("b_excluded", expanding=True)))
    return query


@functools.lru_cache(maxsize=4)
def _gold_candidates(with_excluded: bool) -> sa.Select[Any]:
    """Up to GOLD_CANDIDATES gold tasks of job b_job that worker b_worker may be handed."""
    query = (
        sa.select(*_CANDIDATE_COLUMNS, _AGAIN)
        .select_from(_WITH_HANDOUT)
        .where(t.c.job_id == sa.bindparam("b_job"), t.c.gold, t.c.job_ready, _ELIGIBLE)
        # Random order, so that workers do not all meet the gold tasks in one sequence.
        .order_by(sa.func.random())
        .limit(GOLD_CANDIDATES)
    )
    if with_excluded:
        query = query.where(t.c.task_id.not_in(sa.bindparam("b_excluded", expanding=True)))
    return query


def _fresh_first(rows: Sequence[Row[Any]]) -> list[Row[Any]]:
    """Candidates in their order, except that tasks the worker let expire come last: they
    go to other workers first where the page allows, at no extra query."""
    return sorted(rows, key=lambda row: row.again)


def _available(wanted: sa.ColumnElement[Any], received: sa.ColumnElement[Any]) -> sa.ColumnElement[bool]:
    """SQL for the ``available`` flag given the task's (new) wanted and received counts."""
    return sa.and_(t.c.job_ready, sa.not_(t.c.gold), sa.not_(t.c.resolved), received < wanted)


_GOLD_LABEL = sa.select(t.c.gold_label).where(t.c.task_id == sa.bindparam("b_task"))
_COUNT_ANSWER = (
    sa.update(t)
    .where(t.c.task_id == sa.bindparam("b_task"))
    .values(
        answers_received=t.c.answers_received + 1,
        available=_available(t.c.answers_wanted, t.c.answers_received + 1),
    )
)


def _raised(column: sa.ColumnElement[Any], floor: Any) -> sa.ColumnElement[Any]:
    """SQL for max(column, floor) on both SQLite and PostgreSQL."""
    return sa.case((column < floor, floor), else_=column)


def _gold_label(task: events_pb2.TaskCreated) -> str | None:
    """The known label of a gold task; None for a regular task or a gold task without one."""
    if not task.gold or task.gold_answer.WhichOneof("value") != "classification":
        return None
    return task.gold_answer.classification.label[:500] or None


def _gold_grade(label: str, gold_label: str | None) -> events_pb2.GoldGrade:
    """Whether a gold answer is right; unspecified when the task's known label is unknown."""
    if gold_label is None:
        return events_pb2.GOLD_GRADE_UNSPECIFIED
    return events_pb2.GOLD_GRADE_CORRECT if label == gold_label else events_pb2.GOLD_GRADE_WRONG


def _timestamp(moment: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _event_time(stamp: Timestamp, event: events_pb2.Event) -> dt.datetime:
    """The event's own timestamp field, else when the event occurred, else now."""
    for candidate in (stamp, event.occurred_at):
        if candidate.seconds or candidate.nanos:
            return candidate.ToDatetime(tzinfo=dt.UTC)
    return utcnow()


def _chunks(items: Sequence[Any], size: int = 500) -> Iterable[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _actor() -> str:
    """Who is acting: the caller of the RPC being served, else tasking itself."""
    principal = current_principal()
    return principal.label if principal else "tasking"


def _standing_of(row: Row[Any]) -> WorkerStanding:
    return WorkerStanding(
        worker_id=row.worker_id,
        suspended_by_operator=row.suspended_by_operator,
        suspension_reason=row.suspension_reason,
        spam_flagged=row.spam_flagged,
        spam_reason=row.spam_reason,
        flag_overridden=row.flag_overridden,
        changed_by=row.changed_by,
        changed_at=row.changed_at,
    )


def _standing_values(standing: WorkerStanding) -> dict[str, Any]:
    return {
        "suspended_by_operator": standing.suspended_by_operator,
        "suspension_reason": standing.suspension_reason,
        "spam_flagged": standing.spam_flagged,
        "spam_reason": standing.spam_reason,
        "flag_overridden": standing.flag_overridden,
        "changed_by": standing.changed_by[:300],
        "changed_at": standing.changed_at or utcnow(),
    }


def _recorded_standings(conn: Connection, worker_ids: Sequence[str]) -> dict[str, WorkerStanding]:
    """The standing of each worker with anything on record: its row, else (a worker
    suspended before standings were kept) the spam flag its suspension was."""
    w, s = tables.worker_standing, tables.suspended_workers
    found: dict[str, WorkerStanding] = {}
    for chunk in _chunks(list(worker_ids)):
        found.update(
            (row.worker_id, _standing_of(row)) for row in conn.execute(sa.select(w).where(w.c.worker_id.in_(chunk)))
        )
        earlier = [i for i in chunk if i not in found]
        if earlier:
            for row in conn.execute(sa.select(s).where(s.c.worker_id.in_(earlier))):
                found[row.worker_id] = WorkerStanding(
                    row.worker_id,
                    spam_flagged=True,
                    spam_reason=row.reason,
                    changed_by=CONSENSUS,
                    changed_at=row.suspended_at,
                )
    return found


def _standings(conn: Connection, worker_ids: Sequence[str]) -> dict[str, WorkerStanding]:
    """The standing of each worker: what is on record, else good standing."""
    found = _recorded_standings(conn, worker_ids)
    return {i: found.get(i) or WorkerStanding(i) for i in worker_ids}


def _standing(conn: Connection, worker_id: str) -> WorkerStanding:
    return _standings(conn, [worker_id])[worker_id]


@overload
def _locked_standing(conn: Connection, worker_id: str) -> WorkerStanding: ...
@overload
def _locked_standing(conn: Connection, worker_id: str, *, create: bool) -> WorkerStanding | None: ...
def _locked_standing(conn: Connection, worker_id: str, *, create: bool = True) -> WorkerStanding | None:
    """The worker's standing for a change, its row locked until the transaction ends: an
    operator's action and a consensus verdict (or two replicas) then take turns, each
    reading what the other wrote, instead of overwriting each other with what they read
    before. A missing row is first written as what is on record (good standing, or a
    flag from before standings were kept), ignoring a conflict, so that two first writers
    both go on to wait for the row. With ``create`` False, a worker with nothing on record
    gets None and nothing is written. One locking primary-key read, plus a read, an
    insert and a second locking read for a worker's first change."""
    w = tables.worker_standing
    locked = sa.select(w).where(w.c.worker_id == worker_id).with_for_update()
    row = conn.execute(locked).first()
    if row is None:
        recorded = _recorded_standings(conn, [worker_id]).get(worker_id)
        if recorded is None and not create:
            return None
        first = recorded or WorkerStanding(worker_id)
        insert_ignoring_conflicts(conn, w, [{"worker_id": worker_id, **_standing_values(first)}])
        row = conn.execute(locked).one()
    return _standing_of(row)


def _store_standing(conn: Connection, standing: WorkerStanding) -> None:
    """Writes the standing, whose row :func:`_locked_standing` locked, and keeps
    suspended_workers, which the handout reads, in step."""
    w, s = tables.worker_standing, tables.suspended_workers
    values = _standing_values(standing)
    conn.execute(sa.update(w).where(w.c.worker_id == standing.worker_id).values(**values))
    conn.execute(sa.delete(s).where(s.c.worker_id == standing.worker_id))
    if standing.suspended:
        conn.execute(
            sa.insert(s).values(worker_id=standing.worker_id, reason=standing.reason, suspended_at=values["changed_at"])
        )


class ContentCache:
    """Object bytes by key, least recently used out beyond ``max_bytes``. Keys are
    content addresses, so a cached value never goes stale. Thread-safe."""

    def __init__(self, store: ObjectStore, max_bytes: int = 64 * 1024 * 1024) -> None:
        self._store = store
        self._max_bytes = max_bytes
        self._items: OrderedDict[str, bytes] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def forget(self, keys: Iterable[str]) -> None:
        """Drops these objects from memory (their job was deleted)."""
        with self._lock:
            for key in keys:
                data = self._items.pop(key, None)
                if data is not None:
                    self._size -= len(data)

    def get(self, key: str) -> bytes:
        """The object's bytes; raises quorum.objectstore.ObjectMissing. A miss costs one store read."""
        with self._lock:
            data = self._items.get(key)
            if data is not None:
                self._items.move_to_end(key)
                return data
        data = self._store.get(key)
        if len(data) <= self._max_bytes // 8:
            with self._lock:
                if key not in self._items:
                    self._items[key] = data
                    self._size += len(data)
                while self._size > self._max_bytes:
                    _, dropped = self._items.popitem(last=False)
                    self._size -= len(dropped)
        return data


class _TaskGone(Exception):
    """The answered task was deleted (its job was) after the lease was granted."""


def _job_of(event: events_pb2.Event) -> str | None:
    """The job an event is about, None for events about no job (WorkerFlagged)."""
    kind = event.WhichOneof("payload")
    if kind is None or kind == "worker_flagged":
        return None
    job_id = getattr(getattr(event, kind), "job_id", None)
    return job_id if isinstance(job_id, str) else None


@dataclass
class _EventBatch:
    jobs: list[tuple[JobRules, dt.datetime]]
    sealed: list[events_pb2.JobSealed]
    tasks: list[tuple[events_pb2.TaskCreated, dt.datetime]]
    wanted: dict[str, int]
    resolved: set[str]
    # job id -> paused, the last JobPaused / JobResumed of the batch winning.
    paused: dict[str, bool]
    # worker id -> the last WorkerFlagged of the batch.
    flagged: dict[str, events_pb2.WorkerFlagged] = field(default_factory=dict)
    # job id -> organisation, from JobCreated.
    orgs: dict[str, str] = field(default_factory=dict)
    # job id -> organisation, from JobDeleted.
    deleted: dict[str, str] = field(default_factory=dict)


class TaskingService:
    """The tasking service layer. Thread-safe: gRPC threads, the consumer and the sweeper
    share one instance.

    ``rng`` draws the gold mix (inject a seeded one in tests); ``outbox_written`` wakes
    the outbox relay after a commit that enqueued events; ``orphan_grace``: see
    :meth:`sweep_expired`.
    """

    def __init__(
        self,
        engine: Engine,
        leases: Leases,
        objects: ObjectStore,
        topics: Topics,
        outbox_written: Callable[[], None] = lambda: None,
        rng: random.Random | None = None,
        orphan_grace: dt.timedelta = ORPHAN_GRACE,
    ) -> None:
        self._engine = engine
        self._leases = leases
        self._content = ContentCache(objects)
        self._topics = topics
        self._outbox_written = outbox_written
        self._rng = rng or random.Random()  # noqa: S311 - spreads workers over candidates; not a secret
        self._orphan_grace = orphan_grace
        # (leased_at, lease_id) of the last "leased" row the sweeper checked, None to start over.
        self._orphan_cursor: tuple[dt.datetime, str] | None = None
        # Sessions and job specs never change once written, so caching them is safe
        # even with several replicas.
        self._sessions: dict[str, str] = {}
        self._jobs: dict[str, JobRules] = {}
        self._owners = OwnerCache()

    # ------------------------------------------------------------------ sessions

    def start_session(self, worker_id: str) -> SessionInfo:
        """Opens a session for ``worker_id``. Raises InvalidArgument("worker_id"). One insert."""
        validate_worker_id(worker_id)
        session = SessionInfo(session_id=uuid.uuid4().hex, worker_id=worker_id, started_at=utcnow())
        with self._engine.begin() as conn:
            conn.execute(
                sa.insert(tables.sessions).values(
                    session_id=session.session_id, worker_id=worker_id, started_at=session.started_at
                )
            )
        self._remember_session(session.session_id, worker_id)
        return session

    def worker_for(self, session_id: str) -> str:
        """The worker of a session. Raises InvalidArgument("session_id") when blank and
        NotFound when unknown. Cached after the first lookup."""
        require_id("session_id", session_id)
        worker = self._sessions.get(session_id)
        if worker is not None:
            return worker
        with reading(self._engine) as conn:
            worker = conn.execute(_SESSION_WORKER, {"b_session": session_id}).scalar_one_or_none()
        if worker is None:
            raise NotFound("session", session_id)
        self._remember_session(session_id, worker)
        return worker

    def _remember_session(self, session_id: str, worker_id: str) -> None:
        if len(self._sessions) > 200_000:
            self._sessions.clear()
        self._sessions[session_id] = worker_id

    def owner_of(self, kind: str, ident: str) -> str | None:
        """Who owns ``ident``: for "job", its organisation (JobSpec.client_id, known once
        its JobCreated arrived, kept after a deletion); for "session", the worker who
        started it. None for another kind or an unknown id. Cached: one primary-key read
        per id, then none."""
        if kind == "job":
            query = sa.select(tables.jobs.c.org_id).where(tables.jobs.c.job_id == ident)
        elif kind == "session":
            query = sa.select(tables.sessions.c.worker_id).where(tables.sessions.c.session_id == ident)
        else:
            return None

        def load() -> str | None:
            with reading(self._engine) as conn:
                return conn.execute(query).scalar()

        return self._owners.lookup(kind, ident, load)

    # ------------------------------------------------------------------ jobs

    def job(self, job_id: str, conn: Connection | None = None) -> JobRules | None:
        """The job's rules once its JobCreated has arrived, else None. Cached."""
        rules = self._jobs.get(job_id)
        if rules is not None:
            return rules
        j = tables.jobs
        query = sa.select(j).where(j.c.job_id == job_id, j.c.known)
        if conn is None:
            with reading(self._engine) as own:
                row = own.execute(query).first()
        else:
            row = conn.execute(query).first()
        if row is None:
            return None
        rules = JobRules(
            job_id=row.job_id,
            task_type=row.task_type,
            labels=tuple(row.labels),
            instructions=row.instructions,
            overlap_min=row.overlap_min,
            overlap_max=row.overlap_max,
            gold_share=row.gold_share,
            lease_seconds=row.lease_seconds,
            options=tuple(sorted((row.task_options or {}).items())),
        )
        self._jobs[job_id] = rules
        return rules

    # ------------------------------------------------------------------ handing out

    def next_task(self, session_id: str, job_id: str = "") -> HandedOutTask | None:
        """Leases the best task for the session's worker, or returns None when nothing is
        available to it now.

        Best: the available task with the most answers (the closest to done), then the
        oldest job, then the oldest task; with probability gold_share of that task's job,
        an unseen gold task of the job instead. Gold is only mixed into real work: with no
        regular task for this worker, no gold task is handed out either. Gold tasks are
        not limited by answers wanted or TaskResolved: each worker may answer each once.
        A worker never gets a task it answered, skipped or holds; one whose lease of it
        expired unanswered may get it again, after the page's tasks it was never handed.
        A task whose content is missing from the object store is skipped (and logged).
        Raises InvalidArgument / NotFound for the session, InvalidArgument("job_id"),
        PermissionDenied for a worker consensus flagged as a spammer.
        Costs one indexed query per candidate page (usually one), one Redis script, one
        upsert and, for images, an object-store read unless cached.
        """
        worker = self.worker_for(session_id)
        job_filter = optional_id("job_id", job_id)
        excluded: set[str] = set()
        for _ in range(8):
            found = self._claim(worker, job_filter, excluded)
            if found is None:
                return None
            claimed, row = found
            lease = claimed.lease
            task: HandedOutTask | None
            try:
                task = self._hand_out(lease, row)
            except ObjectMissing:
                log.error("task %s: object %r is missing from the object store", lease.task_id, row.object_key)
                task = None
            try:
                with self._engine.begin() as conn:
                    written = conn.execute(
                        _insert_assignment(conn.dialect.name),
                        {
                            "lease_id": lease.lease_id,
                            "task_id": lease.task_id,
                            "worker_id": worker,
                            "job_id": lease.job_id,
                            "gold": lease.gold,
                            "leased_at": lease.leased_at(),
                            "state": "leased" if task else "skipped",
                            "skip_reason": None if task else "content missing from the object store",
                        },
                    ).first()
                    if written is None:
                        # The same worker got this task through a concurrent request.
                        task = None
                    elif claimed.filled and task is not None:
                        conn.execute(_MARK_FULL, {"b_task": lease.task_id, "b_until": lease.expires_at()})
            except BaseException:
                self._leases.take(lease, worker, count_answer=False)
                raise
            if task is not None:
                if claimed.filled and not self._leases.full(lease.task_id, row.answers_wanted, row.answers_received):
                    # A skip or release took its lease between this claim and the mark
                    # above, and so cleared nothing: without this the task would wait
                    # out the new lease. A wrong clear is harmless (the claim recounts).
                    with self._engine.begin() as conn:
                        conn.execute(_MARK_FULL, {"b_task": lease.task_id, "b_until": None})
                return task
            self._leases.take(lease, worker, count_answer=False)
            excluded.add(lease.task_id)
        return None

    @staticmethod
    def _refuse_suspended(conn: Connection, worker: str) -> None:
        reason = conn.execute(_SUSPENSION, {"b_worker": worker}).scalar()
        if reason is not None:
            raise PermissionDenied(f"worker {worker} is suspended: {reason}")

    def _claim(self, worker: str, job_filter: str | None, excluded: set[str]) -> tuple[Claim, Row[Any]] | None:
        lease_id = uuid.uuid4().hex
        params: dict[str, Any] = {
            "b_worker": worker,
            "b_now": utcnow(),
            "b_job": job_filter,
            "b_excluded": list(excluded),
        }
        # Later pages leave out what earlier ones offered rather than using an offset: on
        # PostgreSQL each query sees newer commits, and an offset would skip tasks.
        tried: list[str] = params["b_excluded"]
        with reading(self._engine) as conn:
            # Asked on the candidates' connection: a connection of its own costs more than the query.
            self._refuse_suspended(conn, worker)
            for page, limit in enumerate(CANDIDATE_PAGES):
                rows = conn.execute(_candidates(job_filter is not None, bool(tried), limit), params).all()
                if not rows:
                    return None
                if page == 0:
                    gold = self._claim_gold(conn, lease_id, worker, rows[0].job_id, excluded)
                    if gold is not None:
                        return gold
                candidates = []
                for row in _fresh_first(rows):
                    rules = self.job(row.job_id, conn)
                    if rules is None:  # pragma: no cover - job_ready implies a known job
                        continue
                    candidates.append(
                        Candidate(
                            task_id=row.task_id,
                            job_id=row.job_id,
                            answers_wanted=row.answers_wanted,
                            answers_received=row.answers_received,
                            lease_seconds=rules.lease_seconds,
                            gold=False,
                        )
                    )
                claimed = self._leases.claim(lease_id, worker, candidates)
                if claimed is not None:
                    return claimed, next(r for r in rows if r.task_id == claimed.lease.task_id)
                if len(rows) < limit:
                    return None
                tried.extend(row.task_id for row in rows)
        return None

    def _claim_gold(
        self, conn: Connection, lease_id: str, worker: str, job_id: str, excluded: set[str]
    ) -> tuple[Claim, Row[Any]] | None:
        rules = self.job(job_id, conn)
        if rules is None or not wants_gold(rules.gold_share, self._rng.random()):
            return None
        params = {"b_job": job_id, "b_worker": worker, "b_excluded": list(excluded)}
        rows = conn.execute(_gold_candidates(bool(excluded)), params).all()
        gold = [Candidate(row.task_id, job_id, -1, 0, rules.lease_seconds, gold=True) for row in _fresh_first(rows)]
        claimed = self._leases.claim(lease_id, worker, gold)
        if claimed is None:
            return None
        return claimed, next(r for r in rows if r.task_id == claimed.lease.task_id)

    def _hand_out(self, lease: Lease, row: Row[Any]) -> HandedOutTask:
        rules = self.job(lease.job_id)
        if rules is None:  # pragma: no cover - a lease is only granted on a ready job
            raise RuntimeError(f"job {lease.job_id!r} of leased task {lease.task_id!r} is unknown")
        text: str | None = None
        data: bytes | None = None
        if _is_text(rules, row.content_type):
            if row.text is not None or not row.object_key:
                text = row.text or ""
            else:
                text = self._content.get(row.object_key).decode("utf-8", "replace")
        else:
            data = self._content.get(row.object_key) if row.object_key else b""
        return HandedOutTask(
            task_id=lease.task_id,
            lease_id=lease.lease_id,
            job=rules,
            content_type=row.content_type,
            text=text,
            data=data,
            lease_expires_at=lease.expires_at(),
        )

    # ------------------------------------------------------------------ leases

    def _live_lease(self, worker: str, lease_id: str) -> Lease:
        require_id("lease_id", lease_id)
        lease = self._leases.get(lease_id)
        if lease is None:
            with reading(self._engine) as conn:
                answered_by = conn.execute(_ANSWERED_BY, {"b_lease": lease_id}).scalar_one_or_none()
                if answered_by == worker:
                    raise FailedPrecondition(f"lease {lease_id!r}: this task is already answered by {worker!r}")
                raise self._no_live_lease(conn, worker, lease_id)
        if lease.worker_id != worker:
            raise FailedPrecondition(f"no live lease {lease_id!r} for worker {worker!r}: it belongs to another worker")
        return lease

    @staticmethod
    def _no_live_lease(conn: Connection, worker: str, lease_id: str) -> FailedPrecondition:
        """Why ``worker`` holds no lease ``lease_id``: an operator's suspension, which ended
        its leases, when there is one (a spam flag ends none), else expiry."""
        suspension = conn.execute(_OPERATOR_SUSPENSION, {"b_worker": worker}).scalar()
        if suspension is not None:
            return FailedPrecondition(f"no live lease {lease_id!r}: worker {worker} is suspended: {suspension}")
        return FailedPrecondition(f"no live lease {lease_id!r}: it expired or was never granted")

    def _lease_lost(self, worker: str, lease_id: str, status: LeaseStatus) -> FailedPrecondition:
        """Why the lease store refused a lease that was live a moment before: another
        worker's, or it ended meanwhile (it expired, or a suspension ended it)."""
        if status is LeaseStatus.OTHER_WORKER:
            return FailedPrecondition(f"no live lease {lease_id!r} for this worker: it belongs to another worker")
        with reading(self._engine) as conn:
            return self._no_live_lease(conn, worker, lease_id)

    def submit_answer(self, session_id: str, lease_id: str, answer: SubmittedAnswer) -> str:
        """Accepts the answer to a live lease of the session's worker; returns the answer id.

        Raises InvalidArgument / NotFound for the session, InvalidArgument("lease_id"),
        InvalidArgument("answer" / "answer.classification.label") for an answer the job
        does not take, FailedPrecondition without a live lease of this worker or when the
        worker already answered, or when the task's job was deleted meanwhile. A lease on a
        task resolved meanwhile is still accepted.
        Costs three Redis round trips and one transaction (insert, update, outbox insert).
        """
        worker = self.worker_for(session_id)
        lease = self._live_lease(worker, lease_id)
        rules = self.job(lease.job_id)
        if rules is None:  # pragma: no cover - a lease is only granted on a ready job
            raise RuntimeError(f"job {lease.job_id!r} of leased task {lease.task_id!r} is unknown")
        text_length = self._text_length(lease.task_id, rules) if answer.kind == "spans" else None
        validate_answer(rules, answer, text_length)
        status = self._leases.take(lease, worker, count_answer=True)
        if status is not LeaseStatus.OK:
            raise self._lease_lost(worker, lease_id, status)
        answer_id = uuid.uuid4().hex
        submitted_at = utcnow()
        # The lease was read before the take, so it holds the time counted up to the last
        # heartbeat; the submit is the last activity point.
        active_ms = lease.active_ms_at(int(submitted_at.timestamp() * 1000))
        answer_pb = taskmessages.answer_from_text(answer.stored)
        event = events_pb2.Event(
            answer_accepted=events_pb2.AnswerAccepted(
                answer_id=answer_id,
                task_id=lease.task_id,
                job_id=lease.job_id,
                worker_id=worker,
                answer=answer_pb,
                gold=lease.gold,
                leased_at=_timestamp(lease.leased_at()),
                submitted_at=_timestamp(submitted_at),
                active_ms=active_ms,
            )
        )
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    _INSERT_ANSWER,
                    {
                        "answer_id": answer_id,
                        "lease_id": lease_id,
                        "task_id": lease.task_id,
                        "job_id": lease.job_id,
                        "worker_id": worker,
                        "gold": lease.gold,
                        "label": answer.stored,
                        "answer": answer_pb.SerializeToString(),
                        "leased_at": lease.leased_at(),
                        "submitted_at": submitted_at,
                    },
                )
                if not conn.execute(_COUNT_ANSWER, {"b_task": lease.task_id}).rowcount:
                    raise _TaskGone(lease.task_id)
                if lease.gold:
                    gold_label = conn.execute(_GOLD_LABEL, {"b_task": lease.task_id}).scalar()
                    event.answer_accepted.gold_grade = _gold_grade(answer.label, gold_label)
                conn.execute(_MARK_ANSWERED, {"b_task": lease.task_id, "b_worker": worker})
                enqueue(conn, tables.outbox, [outgoing(self._topics.answers, lease.task_id, event)])
        except _TaskGone:
            # The lease was taken; with its task gone there is nothing to give it back to.
            raise FailedPrecondition(f"task {lease.task_id!r} no longer exists: its job was deleted") from None
        except IntegrityError as exc:
            self._leases.restore(lease, counted_answer=True)
            raise FailedPrecondition(f"lease {lease_id!r}: this task is already answered by {worker!r}") from exc
        except BaseException:
            self._leases.restore(lease, counted_answer=True)
            raise
        self._outbox_written()
        return answer_id

    def _text_length(self, task_id: str, rules: JobRules) -> int | None:
        """The length in code points of a text task's body, which spans must stay within;
        None when the task holds no text."""
        t = tables.tasks
        with reading(self._engine) as conn:
            row = conn.execute(
                sa.select(t.c.text, t.c.object_key, t.c.content_type).where(t.c.task_id == task_id)
            ).first()
        if row is None or not _is_text(rules, row.content_type):
            return None
        if row.text is not None or not row.object_key:
            return len(row.text or "")
        return len(self._content.get(row.object_key).decode("utf-8", "replace"))

    def heartbeat(self, session_id: str, lease_id: str) -> dt.datetime:
        """Restarts a live lease's term (the job's lease_seconds) from now; returns the new
        expiry. Raises FailedPrecondition without a live lease of this worker. Two Redis
        round trips."""
        worker = self.worker_for(session_id)
        lease = self._live_lease(worker, lease_id)
        status, expires_ms = self._leases.extend(lease, worker)
        if status is not LeaseStatus.OK:
            raise self._lease_lost(worker, lease_id, status)
        return dt.datetime.fromtimestamp(expires_ms / 1000.0, dt.UTC)

    def skip_task(self, session_id: str, lease_id: str, reason: str = "") -> None:
        """Gives a leased task back: it goes back in play for others, never to this worker.
        Raises FailedPrecondition without a live lease of this worker. Two Redis round
        trips and one update."""
        worker = self.worker_for(session_id)
        lease = self._live_lease(worker, lease_id)
        status = self._leases.take(lease, worker, count_answer=False)
        if status is not LeaseStatus.OK:
            raise self._lease_lost(worker, lease_id, status)
        with self._engine.begin() as conn:
            conn.execute(
                _SET_ASSIGNMENT_STATE, {"b_lease": lease_id, "b_state": "skipped", "b_reason": reason[:500] or None}
            )
            conn.execute(_MARK_FULL, {"b_task": lease.task_id, "b_until": None})

    def release_undelivered(self, session_id: str, lease_id: str) -> bool:
        """Ends a lease whose handout never reached its worker (the call was cancelled: the
        caller gave up, or a draining server's grace ran out) and forgets the handout, so
        the task is back in play at once, for this worker too, instead of when the lease
        expires. Returns whether the lease was still live. Two Redis round trips and one
        transaction."""
        worker = self.worker_for(session_id)
        lease = self._leases.get(lease_id)
        if lease is None or lease.worker_id != worker:
            return False
        if self._leases.take(lease, worker, count_answer=False) is not LeaseStatus.OK:
            return False
        a = tables.assignments
        with self._engine.begin() as conn:
            conn.execute(sa.delete(a).where(a.c.lease_id == lease_id, a.c.state == "leased"))
            conn.execute(_MARK_FULL, {"b_task": lease.task_id, "b_until": None})
        log.info("lease %s of task %s released: its handout was not delivered", lease_id, lease.task_id)
        return True

    def sweep_expired(self) -> int:
        """Marks expired the assignments whose lease ended unanswered, which puts their tasks
        back in play, for their workers too: up to SWEEP_BATCH leases the lease store swept
        as expired, and up to SWEEP_BATCH rows still "leased" whose lease it no longer knows
        (Redis was flushed, the in-memory store restarted with the service). Returns how
        many. Safe to run in every replica: each expired lease is swept once, and marking
        an orphan twice changes nothing. Costs up to three Redis round trips, one indexed
        query and one transaction."""
        ended = [(lease_id, task_id) for lease_id, task_id, _ in self._leases.sweep(SWEEP_BATCH)]
        ended += self._orphans()
        self._mark_expired(ended)
        return len(ended)

    def _mark_expired(self, ended: Sequence[tuple[str, str]]) -> None:
        """Marks expired the assignments of these ended (lease_id, task_id), so that their
        tasks are back in play, for their workers too. One transaction."""
        if not ended:
            return
        a = tables.assignments
        with self._engine.begin() as conn:
            for chunk in _chunks(ended):
                conn.execute(
                    sa.update(a)
                    .where(a.c.lease_id.in_([lease_id for lease_id, _ in chunk]), a.c.state == "leased")
                    .values(state="expired")
                )
                tasks = sorted({task_id for _, task_id in chunk})
                conn.execute(
                    sa.update(t).where(t.c.task_id.in_(tasks), t.c.full_until.is_not(None)).values(full_until=None)
                )

    def _orphans(self) -> list[tuple[str, str]]:
        """(lease_id, task_id) of the assignments, among up to SWEEP_BATCH still "leased"
        and older than the grace, whose lease the lease store does not know. Each call goes
        on from where the last one stopped, so that live leases at the front do not hide the
        rest; after the last row it starts over."""
        a = tables.assignments
        query = (
            sa.select(a.c.lease_id, a.c.task_id, a.c.leased_at)
            .where(a.c.state == "leased", a.c.leased_at < utcnow() - self._orphan_grace)
            .order_by(a.c.leased_at, a.c.lease_id)
            .limit(SWEEP_BATCH)
        )
        if self._orphan_cursor is not None:
            query = query.where(sa.tuple_(a.c.leased_at, a.c.lease_id) > self._orphan_cursor)
        with reading(self._engine) as conn:
            rows = conn.execute(query).all()
        self._orphan_cursor = (rows[-1].leased_at, rows[-1].lease_id) if len(rows) == SWEEP_BATCH else None
        if not rows:
            return []
        live = self._leases.live([row.lease_id for row in rows])
        return [(row.lease_id, row.task_id) for row in rows if row.lease_id not in live]

    def sweep_loop(self, stop: threading.Event, interval_s: float = 1.0) -> None:
        """Sweeps expired leases every ``interval_s`` until ``stop`` is set."""
        while not stop.wait(interval_s):
            try:
                while self.sweep_expired() >= SWEEP_BATCH and not stop.is_set():
                    pass
            except Exception:
                log.exception("tasking: sweeping expired leases failed; retrying")

    # ------------------------------------------------------------------ workers

    def suspend_worker(self, worker_id: str, reason: str) -> WorkerStanding:
        """Stops handing ``worker_id`` tasks, with ``reason`` (which the worker is shown),
        then ends its live leases: their tasks go back in play at once, and answering or
        extending one is refused, naming the suspension. The change and its audit entry
        commit together, before the leases end, so no handout starts after it; one that
        was already under way may still be answered. Suspending a suspended worker
        replaces the reason. Raises InvalidArgument("worker_id" / "reason"). Costs one
        transaction, a read of the worker's handouts (not indexed by worker) and two
        lease store round trips per live lease."""
        validate_worker_id(worker_id)
        with self._engine.begin() as conn:
            standing = _locked_standing(conn, worker_id).suspend(reason, _actor(), utcnow())
            _store_standing(conn, standing)
            audited = audit_event(
                self._topics.audit,
                "tasking",
                "worker.suspended",
                f"worker/{worker_id}",
                details={"reason": standing.suspension_reason, "spam_flagged": standing.spam_flagged},
            )
            enqueue(conn, tables.outbox, [audited])
        self._outbox_written()
        ended = self._end_leases_of(worker_id)
        log.info("tasking: worker %s suspended by %s; %d live leases ended", worker_id, standing.changed_by, ended)
        return standing

    def reinstate_worker(self, worker_id: str, note: str = "") -> WorkerStanding:
        """Hands ``worker_id`` tasks again: lifts an operator's suspension and overrides
        consensus's spam flag as it stands (a later flag suspends the worker again, see
        WorkerStanding). An overridden flag is also lifted for payments, which would
        otherwise leave the worker's answers unpaid: see :meth:`_flag_lifted`. Reinstating
        a worker in good standing changes nothing but the audit trail, and one with
        nothing on record stays without a record. Raises InvalidArgument("worker_id").
        One transaction."""
        validate_worker_id(worker_id)
        note = note.strip()[:MAX_REASON_CHARS]
        with self._engine.begin() as conn:
            before = _locked_standing(conn, worker_id, create=False)
            if before is None:
                standing = WorkerStanding(worker_id)
            else:
                standing = before.reinstate(_actor(), utcnow())
                _store_standing(conn, standing)
            details = {
                "was_suspended": before is not None and before.suspended,
                "flag_overridden": standing.flag_overridden,
                "note": note,
            }
            events = [
                audit_event(self._topics.audit, "tasking", "worker.reinstated", f"worker/{worker_id}", details=details)
            ]
            if standing.flag_overridden:
                events.append(self._flag_lifted(standing, note))
            enqueue(conn, tables.outbox, events)
        self._outbox_written()
        return standing

    def _flag_lifted(self, standing: WorkerStanding, note: str) -> OutgoingEvent:
        """The WorkerFlagged (spammer false, as of the reinstatement) that tells payments an
        operator overrode the worker's spam flag, so that its answers are paid again until a
        newer verdict. It goes on the answers topic: payments reads it; consensus ignores
        it; tasking does not read that topic, so it never takes its own override for
        consensus lifting the flag."""
        reason = f"reinstated by an operator: {note}" if note else "reinstated by an operator"
        event = events_pb2.Event(
            worker_flagged=events_pb2.WorkerFlagged(
                worker_id=standing.worker_id, spammer=False, reason=reason[:MAX_REASON_CHARS]
            )
        )
        event.occurred_at.CopyFrom(_timestamp(standing.changed_at or utcnow()))
        return outgoing(self._topics.answers, standing.worker_id, event)

    def worker_standing(self, worker_id: str) -> WorkerStanding:
        """Whether tasking hands ``worker_id`` tasks, and why not; a worker with nothing on
        record is in good standing. Raises InvalidArgument("worker_id"). Two primary-key
        reads."""
        validate_worker_id(worker_id)
        with reading(self._engine) as conn:
            return _standing(conn, worker_id)

    def worker_standings(
        self, suspended_only: bool = False, page_size: int = 100, after: str = ""
    ) -> tuple[list[WorkerStanding], str]:
        """The workers with anything on record (a suspension, a flag, an override), by
        worker id after ``after``; with ``suspended_only``, those handed no tasks. Returns
        a page and the id to continue after ("" on the last page). Raises
        InvalidArgument("page_size"). Costs three indexed reads."""
        if not 1 <= page_size <= 1000:
            raise InvalidArgument("page_size", f"between 1 and 1000 (got {page_size})")
        w, s = tables.worker_standing, tables.suspended_workers
        ids: sa.Select[Any] | sa.CompoundSelect[Any]
        if suspended_only:
            ids = sa.select(s.c.worker_id.label("worker_id")).where(s.c.worker_id > after)
        else:
            ids = sa.union(
                sa.select(w.c.worker_id).where(w.c.worker_id > after),
                sa.select(s.c.worker_id).where(s.c.worker_id > after),
            )
        page = ids.subquery()
        query = sa.select(page.c.worker_id).order_by(page.c.worker_id).limit(page_size + 1)
        with reading(self._engine) as conn:
            worker_ids = list(conn.execute(query).scalars())
            more = len(worker_ids) > page_size
            worker_ids = worker_ids[:page_size]
            standings = _standings(conn, worker_ids)
        return [standings[i] for i in worker_ids], (worker_ids[-1] if more else "")

    def _end_leases_of(self, worker: str) -> int:
        """Ends the live leases of ``worker`` and puts their tasks back in play. Returns how
        many it ended."""
        a = tables.assignments
        with reading(self._engine) as conn:
            held = list(
                conn.execute(sa.select(a.c.lease_id).where(a.c.worker_id == worker, a.c.state == "leased")).scalars()
            )
        ended = []
        for lease_id in held:
            lease = self._leases.get(lease_id)
            if lease is not None and self._leases.take(lease, worker, count_answer=False) is LeaseStatus.OK:
                ended.append((lease_id, lease.task_id))
        self._mark_expired(ended)
        return len(ended)

    # ------------------------------------------------------------------ stats

    def stats(self, job_id: str = "") -> TaskingStats:
        """Counts for one job or all. ``workers`` counts distinct workers active in the last
        10 minutes: those who took a task then (for a job: a task of that job) or, over
        all jobs, also those who started a session then. The per-minute series cover the
        last 60 minutes (task creation times, answer submission times). Costs a handful of
        aggregate queries (indexed with a job) and one Redis count."""
        job = optional_id("job_id", job_id)
        now = utcnow()
        window_start = dt.datetime.fromtimestamp(minute_of(now) - (SERIES_MINUTES - 1) * 60, dt.UTC)
        active_since = now - ACTIVE_WINDOW
        a, ans, s = tables.assignments, tables.answers, tables.sessions
        with reading(self._engine) as conn:
            dialect = conn.dialect.name
            counts = sa.select(
                sa.func.count(),
                sa.func.coalesce(sa.func.sum(sa.case((t.c.gold, 1), else_=0)), 0),
                sa.func.coalesce(
                    sa.func.sum(sa.case((sa.and_(sa.not_(t.c.gold), sa.not_(t.c.resolved)), 1), else_=0)), 0
                ),
            )
            answered = sa.select(sa.func.count()).select_from(ans)
            takers = sa.select(a.c.worker_id).where(a.c.leased_at >= active_since)
            if job is not None:
                counts = counts.where(t.c.job_id == job)
                answered = answered.where(ans.c.job_id == job)
                takers = takers.where(a.c.job_id == job)
                active_workers: sa.Select[Any] | sa.CompoundSelect[Any] = takers
            else:
                active_workers = sa.union(takers, sa.select(s.c.worker_id).where(s.c.started_at >= active_since))
            tasks, gold_tasks, backlog = conn.execute(counts).one()
            answers = conn.execute(answered).scalar_one()
            workers = conn.execute(sa.select(sa.func.count()).select_from(active_workers.subquery())).scalar_one()
            created = self._per_minute(conn, dialect, t.c.created_at, t.c.job_id, job, window_start)
            submitted = self._per_minute(conn, dialect, ans.c.submitted_at, ans.c.job_id, job, window_start)
        return TaskingStats(
            tasks=int(tasks),
            gold_tasks=int(gold_tasks),
            backlog=int(backlog),
            answers=int(answers),
            active_leases=self._leases.active(job),
            workers=int(workers),
            created_per_minute=minute_series(created, now),
            answered_per_minute=minute_series(submitted, now),
        )

    @staticmethod
    def _per_minute(
        conn: Connection,
        dialect: str,
        moment: sa.ColumnElement[Any],
        job_column: sa.ColumnElement[Any],
        job: str | None,
        since: dt.datetime,
    ) -> dict[int, int]:
        seconds: sa.ColumnElement[Any]
        if dialect == "sqlite":
            seconds = sa.cast(sa.func.strftime("%s", moment), sa.BigInteger)
        else:
            seconds = sa.cast(sa.func.floor(sa.extract("epoch", moment)), sa.BigInteger)
        minute = (seconds - seconds % 60).label("minute")
        query = sa.select(minute, sa.func.count()).where(moment >= since).group_by(minute)
        if job is not None:
            query = query.where(job_column == job)
        return {int(m): int(c) for m, c in conn.execute(query)}

    # ------------------------------------------------------------------ events

    def handle_events(self, events: list[events_pb2.Event]) -> None:
        """Applies a batch of jobs, tasks, task-requests and results events in one
        transaction, each event once (redeliveries are dropped by id). Order does not
        matter: a task waits for its job, and updates wait for their task. A JobDeleted
        drops the job's tasks, answers and leases, and every later event of the job is
        ignored. Events of other types are ignored. A few statements per event type,
        not per event."""
        with self._engine.begin() as conn:
            fresh = claim_events(conn, tables.inbox, CONSUMER, [e.event_id for e in events])
            batch = _EventBatch(jobs=[], sealed=[], tasks=[], wanted={}, resolved=set(), paused={})
            applicable = []
            for event in events:
                if event.event_id not in fresh:
                    continue
                fresh.discard(event.event_id)
                if event.WhichOneof("payload") == "job_deleted":
                    batch.deleted[event.job_deleted.job_id] = event.job_deleted.org_id
                else:
                    applicable.append(event)
            # Events of a deleted job change nothing, whichever came first.
            gone = set(batch.deleted) | self._deleted_jobs(conn, {_job_of(e) for e in applicable} - {None, ""})
            for event in applicable:
                if _job_of(event) in gone:
                    continue
                kind = event.WhichOneof("payload")
                if kind == "job_created":
                    batch.orgs[event.job_created.job_id] = event.job_created.spec.client_id
                    batch.jobs.append(self._rules_of(event.job_created, event))
                elif kind == "job_sealed":
                    batch.sealed.append(event.job_sealed)
                elif kind == "task_created":
                    batch.tasks.append((event.task_created, _event_time(event.task_created.created_at, event)))
                elif kind == "more_answers_requested":
                    request = event.more_answers_requested
                    batch.wanted[request.task_id] = max(batch.wanted.get(request.task_id, 0), request.answers_wanted)
                elif kind == "task_resolved":
                    batch.resolved.add(event.task_resolved.task_id)
                elif kind == "job_paused":
                    batch.paused[event.job_paused.job_id] = True
                elif kind == "job_resumed":
                    batch.paused[event.job_resumed.job_id] = False
                elif kind == "worker_flagged":
                    batch.flagged[event.worker_flagged.worker_id] = event.worker_flagged
            self._apply_jobs(conn, batch.jobs, batch.orgs)
            self._apply_sealed(conn, batch.sealed)
            self._apply_tasks(conn, batch.tasks)
            self._apply_wanted(conn, batch.wanted)
            self._apply_resolved(conn, batch.resolved)
            self._apply_paused(conn, batch.paused)
            self._apply_flagged(conn, batch.flagged)
            self._apply_deleted(conn, batch.deleted)
        for job_id in sorted(batch.deleted):
            # After the commit: should this fail, the leases expire on their own, and their
            # answers are refused anyway since the tasks are gone.
            dropped = self._leases.drop_job(job_id)
            self._jobs.pop(job_id, None)
            log.info("tasking: job %s deleted; dropped %d leases", job_id, dropped)

    @staticmethod
    def _deleted_jobs(conn: Connection, job_ids: set[str | None]) -> set[str]:
        ids = sorted(i for i in job_ids if i)
        j = tables.jobs
        found: set[str] = set()
        for chunk in _chunks(ids):
            found.update(conn.execute(sa.select(j.c.job_id).where(j.c.job_id.in_(chunk), j.c.deleted)).scalars())
        return found

    def _apply_deleted(self, conn: Connection, deleted: dict[str, str]) -> None:
        """Marks jobs deleted (keeping their organisation, dropping their instructions) and
        deletes their tasks, assignments and answers: nothing of them is handed out again."""
        j = tables.jobs
        for job_id, org_id in sorted(deleted.items()):
            marked = conn.execute(sa.update(j).where(j.c.job_id == job_id).values(deleted=True, instructions=""))
            if not marked.rowcount:
                conn.execute(sa.insert(j).values(job_id=job_id, known=False, org_id=org_id, deleted=True))
            tasks = conn.execute(sa.select(t.c.task_id, t.c.object_key).where(t.c.job_id == job_id)).all()
            # Answers waiting in the outbox, or kept there for replay, go with the answers.
            drop_outbox_events(conn, tables.outbox, self._topics.answers, [row.task_id for row in tasks])
            self._content.forget(row.object_key for row in tasks if row.object_key)
            for table in (t, tables.assignments, tables.answers):
                conn.execute(sa.delete(table).where(table.c.job_id == job_id))

    def _apply_flagged(self, conn: Connection, flagged: dict[str, events_pb2.WorkerFlagged]) -> None:
        """Suspends workers consensus flagged as spammers and lifts lifted flags, minding an
        operator's suspension or override (see WorkerStanding). A flagged worker's live
        leases run to their end; payments decides what their answers earn."""
        now = utcnow()
        for worker_id, verdict in sorted(flagged.items()):
            standing = _locked_standing(conn, worker_id).verdict(verdict.spammer, verdict.reason, now)
            _store_standing(conn, standing)

    @staticmethod
    def _rules_of(created: events_pb2.JobCreated, event: events_pb2.Event) -> tuple[JobRules, dt.datetime]:
        spec = created.spec
        task_type = spec.WhichOneof("task") or ""
        labels: Sequence[str] = taskmessages.schema_labels(spec, task_type) if task_type else ()
        rules = JobRules(
            job_id=created.job_id,
            task_type=task_type,
            labels=tuple(labels),
            instructions=spec.instructions,
            overlap_min=initial_answers_wanted(spec.overlap.min),
            overlap_max=max(spec.overlap.max, initial_answers_wanted(spec.overlap.min)),
            gold_share=clamp_gold_share(spec.gold_share),
            lease_seconds=lease_seconds_or_default(spec.lease_seconds),
            options=tuple(sorted(taskmessages.config_options(spec, task_type).items())),
        )
        return rules, _event_time(created.created_at, event)

    def _apply_jobs(self, conn: Connection, jobs: list[tuple[JobRules, dt.datetime]], orgs: dict[str, str]) -> None:
        if not jobs:
            return
        j = tables.jobs
        ids = [rules.job_id for rules, _ in jobs]
        existing: dict[str, bool] = {}
        paused: set[str] = set()
        for row in conn.execute(sa.select(j.c.job_id, j.c.known, j.c.paused).where(j.c.job_id.in_(ids))):
            existing[row.job_id] = row.known
            if row.paused:
                paused.add(row.job_id)
        for rules, created_at in jobs:
            if existing.get(rules.job_id):
                continue  # a job's spec never changes; a second JobCreated is a replay
            values = {
                "known": True,
                "task_type": rules.task_type,
                "labels": list(rules.labels),
                "task_options": dict(rules.options),
                "instructions": rules.instructions,
                "overlap_min": rules.overlap_min,
                "overlap_max": rules.overlap_max,
                "gold_share": rules.gold_share,
                "lease_seconds": rules.lease_seconds,
                "created_at": created_at,
                "org_id": orgs.get(rules.job_id, ""),
            }
            if rules.job_id in existing:
                conn.execute(sa.update(j).where(j.c.job_id == rules.job_id).values(**values))
            else:
                conn.execute(sa.insert(j).values(job_id=rules.job_id, **values))
            existing[rules.job_id] = True
            # Tasks that arrived before their job learn its organisation now.
            conn.execute(
                sa.update(t).where(t.c.job_id == rules.job_id, t.c.org_id == "").values(org_id=values["org_id"])
            )
            if not rules.supported:
                log.warning("job %s has task type %r, which tasking does not hand out", rules.job_id, rules.task_type)
                continue
            if rules.job_id in paused:
                continue
            wanted = _raised(t.c.answers_wanted, rules.answers_wanted)
            conn.execute(
                sa.update(t)
                .where(t.c.job_id == rules.job_id, sa.not_(t.c.job_ready))
                .values(
                    job_ready=True,
                    job_created_at=created_at,
                    answers_wanted=wanted,
                    available=sa.and_(sa.not_(t.c.gold), sa.not_(t.c.resolved), t.c.answers_received < wanted),
                )
            )

    @staticmethod
    def _apply_sealed(conn: Connection, sealed: list[events_pb2.JobSealed]) -> None:
        j = tables.jobs
        for event in sealed:
            values = {"sealed": True, "objects": event.objects, "gold_objects": event.gold_objects}
            if not conn.execute(sa.update(j).where(j.c.job_id == event.job_id).values(**values)).rowcount:
                conn.execute(sa.insert(j).values(job_id=event.job_id, known=False, **values))

    def _apply_tasks(self, conn: Connection, created: list[tuple[events_pb2.TaskCreated, dt.datetime]]) -> None:
        if not created:
            return
        j, u = tables.jobs, tables.task_updates
        job_ids = list({task.job_id for task, _ in created})
        ready: dict[str, tuple[JobRules, dt.datetime]] = {}
        orgs: dict[str, str] = {}
        for chunk in _chunks(job_ids):
            for row in conn.execute(
                sa.select(j.c.job_id, j.c.created_at, j.c.org_id, j.c.paused).where(j.c.job_id.in_(chunk), j.c.known)
            ):
                orgs[row.job_id] = row.org_id
                if row.paused:
                    continue
                rules = self.job(row.job_id, conn)
                if rules is not None and rules.supported:
                    ready[row.job_id] = (rules, row.created_at)
        task_ids = [task.task_id for task, _ in created]
        pending: dict[str, tuple[int, bool]] = {}
        for chunk in _chunks(task_ids):
            for row in conn.execute(sa.select(u).where(u.c.task_id.in_(chunk))):
                pending[row.task_id] = (row.answers_wanted, row.resolved)
        if pending:
            for chunk in _chunks(list(pending)):
                conn.execute(sa.delete(u).where(u.c.task_id.in_(chunk)))
        rows = []
        for task, created_at in created:
            job = ready.get(task.job_id)
            pending_wanted, resolved = pending.get(task.task_id, (0, False))
            wanted = max(job[0].answers_wanted if job else 0, pending_wanted)
            rows.append(
                {
                    "task_id": task.task_id,
                    "job_id": task.job_id,
                    "org_id": orgs.get(task.job_id, ""),
                    "item_id": task.item_id,
                    "object_name": task.object_name,
                    "object_key": task.object_key,
                    "content_type": task.content_type,
                    "text": task.text if task.text else None,
                    "gold": task.gold,
                    "gold_label": _gold_label(task),
                    "created_at": created_at,
                    "job_ready": job is not None,
                    "job_created_at": job[1] if job else None,
                    "answers_wanted": wanted,
                    "answers_received": 0,
                    "resolved": resolved,
                    "available": job is not None and not task.gold and not resolved and wanted > 0,
                }
            )
        insert_ignoring_conflicts(conn, t, rows)

    def _apply_paused(self, conn: Connection, paused: dict[str, bool]) -> None:
        """Pauses or resumes jobs: a paused job's tasks are not job_ready, so neither the
        candidate nor the gold query offers them; live leases run to their end."""
        j = tables.jobs
        for job_id, pause in sorted(paused.items()):
            if not conn.execute(sa.update(j).where(j.c.job_id == job_id).values(paused=pause)).rowcount:
                conn.execute(sa.insert(j).values(job_id=job_id, known=False, paused=pause))
            if pause:
                conn.execute(sa.update(t).where(t.c.job_id == job_id).values(job_ready=False, available=False))
                continue
            rules = self.job(job_id, conn)
            if rules is None or not rules.supported:
                continue
            created_at = conn.execute(sa.select(j.c.created_at).where(j.c.job_id == job_id)).scalar_one()
            # Tasks that arrived while the job was paused start wanting nothing: raise them too.
            wanted = _raised(t.c.answers_wanted, rules.answers_wanted)
            conn.execute(
                sa.update(t)
                .where(t.c.job_id == job_id, sa.not_(t.c.job_ready))
                .values(
                    job_ready=True,
                    job_created_at=created_at,
                    answers_wanted=wanted,
                    available=sa.and_(sa.not_(t.c.gold), sa.not_(t.c.resolved), t.c.answers_received < wanted),
                )
            )

    def _apply_wanted(self, conn: Connection, wanted: dict[str, int]) -> None:
        if not wanted:
            return
        known = self._existing_tasks(conn, list(wanted))
        if known:
            new_wanted = _raised(t.c.answers_wanted, sa.bindparam("b_wanted"))
            conn.execute(
                sa.update(t)
                .where(t.c.task_id == sa.bindparam("b_task_id"))
                .values(
                    answers_wanted=new_wanted,
                    available=_available(new_wanted, t.c.answers_received),
                    full_until=None,
                ),
                [{"b_task_id": task_id, "b_wanted": wanted[task_id]} for task_id in known],
            )
        later = [{"task_id": i, "answers_wanted": n, "resolved": False} for i, n in wanted.items() if i not in known]
        if later:
            self._upsert_updates(conn, later)

    def _apply_resolved(self, conn: Connection, resolved: set[str]) -> None:
        if not resolved:
            return
        known = self._existing_tasks(conn, list(resolved))
        for chunk in _chunks(list(known)):
            conn.execute(sa.update(t).where(t.c.task_id.in_(chunk)).values(resolved=True, available=False))
        later = [{"task_id": i, "answers_wanted": 0, "resolved": True} for i in resolved if i not in known]
        if later:
            self._upsert_updates(conn, later)

    @staticmethod
    def _existing_tasks(conn: Connection, task_ids: list[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(task_ids):
            found.update(conn.execute(sa.select(t.c.task_id).where(t.c.task_id.in_(chunk))).scalars())
        return found

    @staticmethod
    def _upsert_updates(conn: Connection, rows: list[dict[str, Any]]) -> None:
        """Stores updates of tasks not seen yet, merged with any already stored."""
        u = tables.task_updates
        insert: Any = sqlite.insert(u) if conn.dialect.name == "sqlite" else postgresql.insert(u)
        merged = {
            "answers_wanted": _raised(u.c.answers_wanted, insert.excluded.answers_wanted),
            "resolved": sa.or_(u.c.resolved, insert.excluded.resolved),
        }
        conn.execute(insert.on_conflict_do_update(index_elements=[u.c.task_id], set_=merged), rows)


def _is_text(rules: JobRules, content_type: str) -> bool:
    """Whether a task's object goes to the worker as text (else as bytes)."""
    return rules.media == "text" or (rules.media == "any" and content_type.startswith("text/"))
