"""Tasking's rules, free of I/O: who may take what, what an answer must look like,
and the value objects the service layer passes around.

Nothing here imports grpc, protobuf, Kafka or SQLAlchemy; the service layer
translates to and from those.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from dataclasses import dataclass

from quorum.errors import InvalidArgument

WORKER_ID = re.compile(r"[A-Za-z0-9._@-]{1,128}")
# Ids from other services (job, task) and our own (session, lease) fit this.
MAX_ID_LENGTH = 200
DEFAULT_LEASE_SECONDS = 120
# What a worker is told to wait when nothing is available for it.
RETRY_AFTER_MS = 500
# The window of GetTaskingStats.workers and of the per-minute series.
ACTIVE_WINDOW = dt.timedelta(minutes=10)
SERIES_MINUTES = 60

# The answer member (Answer.value oneof) each task type (JobSpec.task oneof) takes.
ANSWER_KIND_FOR_TASK_TYPE: Mapping[str, str] = {
    "image_classification": "classification",
    "text_classification": "classification",
}


@dataclass(frozen=True)
class JobRules:
    """What tasking keeps of a job spec: enough to hand out its tasks and check answers."""

    job_id: str
    task_type: str
    labels: tuple[str, ...]
    instructions: str
    overlap_min: int
    overlap_max: int
    gold_share: float
    lease_seconds: int

    @property
    def supported(self) -> bool:
        """Whether tasking knows this task type (and so may hand out its tasks)."""
        return self.task_type in ANSWER_KIND_FOR_TASK_TYPE

    @property
    def answers_wanted(self) -> int:
        """Distinct answers a new task starts out wanting."""
        return initial_answers_wanted(self.overlap_min)


def lease_seconds_or_default(seconds: int) -> int:
    """A job's lease length: the spec's value, or 120 s when it is zero or negative."""
    return seconds if seconds > 0 else DEFAULT_LEASE_SECONDS


def initial_answers_wanted(overlap_min: int) -> int:
    """Answers a task wants before consensus asks for more: ``overlap.min``, at least one."""
    return max(1, overlap_min)


def clamp_gold_share(share: float) -> float:
    """Gold share kept in [0, 1): a spec value outside it (or NaN) cannot starve real work."""
    if not share > 0.0:
        return 0.0
    return min(share, 0.95)


def validate_worker_id(worker_id: str) -> str:
    """Returns ``worker_id``; raises InvalidArgument("worker_id") unless it is 1-128
    characters of letters, digits and ``._@-``."""
    if not worker_id:
        raise InvalidArgument("worker_id", "is required")
    if not WORKER_ID.fullmatch(worker_id):
        raise InvalidArgument("worker_id", "use 1-128 characters of letters, digits, '.', '_', '@' or '-'")
    return worker_id


def require_id(field: str, value: str) -> str:
    """Returns ``value``; raises InvalidArgument(field) when it is blank or too long."""
    if not value or not value.strip():
        raise InvalidArgument(field, "is required")
    if len(value) > MAX_ID_LENGTH:
        raise InvalidArgument(field, f"is longer than {MAX_ID_LENGTH} characters")
    return value


def optional_id(field: str, value: str) -> str | None:
    """``None`` for an empty value, else the value; raises InvalidArgument(field) when too long."""
    if not value:
        return None
    return require_id(field, value)


@dataclass(frozen=True)
class SubmittedAnswer:
    """A worker's answer as received: ``kind`` is the Answer oneof member set (None when unset)."""

    kind: str | None
    label: str = ""


def validate_answer(job: JobRules, answer: SubmittedAnswer) -> None:
    """Checks an answer against its job's task type and labels.

    Raises InvalidArgument("answer") when no answer or the wrong kind is set, and
    InvalidArgument("answer.classification.label") for a label outside the job's labels.
    """
    if answer.kind is None:
        raise InvalidArgument("answer", "is required: set one answer member (e.g. classification)")
    wanted = ANSWER_KIND_FOR_TASK_TYPE.get(job.task_type)
    if wanted is None:
        raise InvalidArgument("answer", f"job {job.job_id!r} has a task type tasking does not support")
    if answer.kind != wanted:
        raise InvalidArgument("answer", f"a {job.task_type} task takes answer.{wanted}, not answer.{answer.kind}")
    if answer.label not in job.labels:
        allowed = ", ".join(repr(label) for label in job.labels)
        raise InvalidArgument(
            "answer.classification.label", f"{answer.label!r} is not one of the job's labels ({allowed})"
        )


def wants_gold(gold_share: float, draw: float) -> bool:
    """Whether this handout should be a gold task, given a uniform draw in [0, 1)."""
    return draw < gold_share


@dataclass(frozen=True)
class Candidate:
    """A task the worker may get, as the claim sees it. ``answers_wanted`` is -1 for gold
    tasks: every worker may answer a gold task once, so no count limits them."""

    task_id: str
    job_id: str
    answers_wanted: int
    answers_received: int
    lease_seconds: int
    gold: bool


# A gap between two activity points of a lease counts at most this much (and at most
# the lease term): beyond it the worker is taken to be idle.
IDLE_CAP_MS = 5 * 60 * 1000


def active_gap_cap_ms(term_ms: int) -> int:
    """The most one gap between activity points counts: min(lease term, 5 minutes)."""
    return max(0, min(term_ms, IDLE_CAP_MS))


def active_time_ms(counted_ms: int, last_ms: int, now_ms: int, term_ms: int) -> int:
    """Active time of a lease when it ends at ``now_ms``.

    A lease's activity points are its grant, each accepted heartbeat and the submit;
    active time is the sum over consecutive points of min(gap, cap) with
    cap = :func:`active_gap_cap_ms` (lease term, at most 5 minutes). ``counted_ms`` is the
    sum up to ``last_ms``, the latest point before now. Clock skew never makes it negative.
    """
    return max(0, counted_ms) + min(max(0, now_ms - last_ms), active_gap_cap_ms(term_ms))


@dataclass(frozen=True)
class Lease:
    """A live handout: ``worker_id`` holds ``task_id`` until ``expires_at_ms`` (epoch ms);
    a heartbeat restarts its term of ``term_ms``."""

    lease_id: str
    task_id: str
    job_id: str
    worker_id: str
    gold: bool
    leased_at_ms: int
    expires_at_ms: int
    term_ms: int
    # Active time counted up to ``last_active_ms`` (the grant or the last heartbeat).
    active_ms: int = 0
    last_active_ms: int = 0

    def active_ms_at(self, now_ms: int) -> int:
        """The lease's active time if the worker submits at ``now_ms``: see :func:`active_time_ms`."""
        return active_time_ms(self.active_ms, self.last_active_ms or self.leased_at_ms, now_ms, self.term_ms)

    def leased_at(self) -> dt.datetime:
        return from_epoch_ms(self.leased_at_ms)

    def expires_at(self) -> dt.datetime:
        return from_epoch_ms(self.expires_at_ms)


@dataclass(frozen=True)
class HandedOutTask:
    """What GetNextTask hands a worker: never the gold flag or any answer."""

    task_id: str
    lease_id: str
    job: JobRules
    content_type: str
    text: str | None
    data: bytes | None
    lease_expires_at: dt.datetime


@dataclass(frozen=True)
class SessionInfo:
    session_id: str
    worker_id: str
    started_at: dt.datetime


@dataclass(frozen=True)
class TaskingStats:
    tasks: int
    gold_tasks: int
    backlog: int
    answers: int
    active_leases: int
    workers: int
    created_per_minute: list[tuple[int, int]]
    answered_per_minute: list[tuple[int, int]]


def from_epoch_ms(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000.0, dt.UTC)


def minute_of(moment: dt.datetime) -> int:
    """Start of the minute holding ``moment``, in seconds since the epoch."""
    seconds = int(moment.timestamp())
    return seconds - seconds % 60


def minute_series(counts: Mapping[int, int], now: dt.datetime, minutes: int = SERIES_MINUTES) -> list[tuple[int, int]]:
    """The last ``minutes`` minutes up to ``now``, oldest first, as (minute start, count),
    zeros included. ``counts`` maps a minute start (epoch seconds) to its count; minutes
    outside the window are ignored."""
    last = minute_of(now)
    first = last - (minutes - 1) * 60
    return [(minute, int(counts.get(minute, 0))) for minute in range(first, last + 1, 60)]
