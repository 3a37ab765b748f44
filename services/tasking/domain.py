"""Tasking's rules, free of I/O: who may take what, what an answer must look like,
and the value objects the service layer passes around.

Nothing here imports grpc, protobuf, Kafka or SQLAlchemy; the service layer
translates to and from those.
"""

from __future__ import annotations

import datetime as dt
import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from quorum.errors import InvalidArgument
from quorum.tasktypes import DEFAULT_TRANSCRIPTION_CHARS, PAIRWISE_WINNERS, TASK_TYPES

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
ANSWER_KIND_FOR_TASK_TYPE: Mapping[str, str] = {name: kind.answer_kind for name, kind in TASK_TYPES.items()}
# Objects one answer may hold (boxes, points, polygons, spans): more is a client bug or abuse.
MAX_ANSWER_OBJECTS = 1000
MAX_POLYGON_POINTS = 1000
# Relative coordinates are compared with this much slack so that a box drawn to the edge
# through float rounding (x + w = 1.0000000001) is still inside the image.
EDGE_SLACK = 1e-6


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
    # The task config's fields other than labels (transcription's max_chars, ...).
    options: tuple[tuple[str, Any], ...] = ()

    def option(self, name: str, default: Any = None) -> Any:
        """The config field ``name``, or ``default`` when the spec left it unset."""
        return dict(self.options).get(name, default)

    @property
    def media(self) -> str:
        """What the job's objects are: "image", "text" or "any" (told apart by content type)."""
        kind = TASK_TYPES.get(self.task_type)
        return kind.media if kind else "image"

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
    """A worker's answer as received: ``kind`` is the Answer oneof member set (None when unset),
    ``label`` the label of a classification answer, ``body`` any other member as plain values
    (the protobuf JSON mapping with proto field names; fields at their zero value may be
    absent) and ``text`` its stored form (see :func:`quorum.taskmessages.answer_text`)."""

    kind: str | None
    label: str = ""
    body: Mapping[str, Any] = field(default_factory=dict)
    text: str = ""

    @property
    def stored(self) -> str:
        """What the answers table keeps: the label of a classification answer, else ``text``."""
        return self.label if self.kind == "classification" else self.text


def validate_answer(job: JobRules, answer: SubmittedAnswer, text_length: int | None = None) -> None:
    """Checks an answer against its job's task type and schema. ``text_length`` is the length
    of the task's text in code points, which spans must stay within (None: not checked).

    Raises InvalidArgument("answer") when no answer or the wrong kind is set, and
    InvalidArgument naming the offending field otherwise, e.g.
    "answer.classification.label" for a label outside the job's labels,
    "answer.boxes.boxes[2].w" for a box of no width, "answer.spans.spans[0].end" for a span
    past the end of the text. Costs O(objects in the answer), polygons O(their points).
    """
    if answer.kind is None:
        raise InvalidArgument("answer", "is required: set one answer member (e.g. classification)")
    wanted = ANSWER_KIND_FOR_TASK_TYPE.get(job.task_type)
    if wanted is None:
        raise InvalidArgument("answer", f"job {job.job_id!r} has a task type tasking does not support")
    if answer.kind != wanted:
        raise InvalidArgument("answer", f"a {job.task_type} task takes answer.{wanted}, not answer.{answer.kind}")
    if wanted == "classification":
        _check_label(job, "answer.classification.label", answer.label)
        return
    _CHECKS[wanted](job, answer.body, text_length)


def _check_label(job: JobRules, path: str, label: Any) -> None:
    if label not in job.labels:
        allowed = ", ".join(repr(known) for known in job.labels)
        raise InvalidArgument(path, f"{label!r} is not one of the job's labels ({allowed})")


def _objects(body: Mapping[str, Any], name: str, path: str) -> Sequence[Mapping[str, Any]]:
    objects: Sequence[Mapping[str, Any]] = body.get(name, [])
    if len(objects) > MAX_ANSWER_OBJECTS:
        raise InvalidArgument(path, f"at most {MAX_ANSWER_OBJECTS} per answer (got {len(objects)})")
    return objects


def _coordinate(path: str, value: Any) -> float:
    """A relative coordinate: finite and within [0, 1]."""
    number = float(value)
    if not math.isfinite(number) or not -EDGE_SLACK <= number <= 1 + EDGE_SLACK:
        raise InvalidArgument(path, f"must be within the image, in [0, 1] relative to its size (got {value})")
    return number


def _check_multi_label(job: JobRules, body: Mapping[str, Any], _: int | None) -> None:
    labels = body.get("labels", [])
    for index, label in enumerate(labels):
        _check_label(job, f"answer.multi_label.labels[{index}]", label)
    if len(set(labels)) != len(labels):
        raise InvalidArgument("answer.multi_label.labels", "a label appears twice")


def _check_boxes(job: JobRules, body: Mapping[str, Any], _: int | None) -> None:
    for index, box in enumerate(_objects(body, "boxes", "answer.boxes.boxes")):
        path = f"answer.boxes.boxes[{index}]"
        _check_label(job, f"{path}.label", box.get("label", ""))
        x, y = _coordinate(f"{path}.x", box.get("x", 0.0)), _coordinate(f"{path}.y", box.get("y", 0.0))
        for name, start in (("w", x), ("h", y)):
            size = float(box.get(name, 0.0))
            if not math.isfinite(size) or size <= 0:
                raise InvalidArgument(f"{path}.{name}", f"must be > 0 (got {size})")
            if start + size > 1 + EDGE_SLACK:
                edge = "right" if name == "w" else "bottom"
                raise InvalidArgument(
                    f"{path}.{name}", f"the box reaches past the image's {edge} edge ({start + size})"
                )


def _check_keypoints(job: JobRules, body: Mapping[str, Any], _: int | None) -> None:
    seen: set[str] = set()
    for index, point in enumerate(_objects(body, "points", "answer.keypoints.points")):
        path = f"answer.keypoints.points[{index}]"
        label = point.get("label", "")
        _check_label(job, f"{path}.label", label)
        if label in seen:
            raise InvalidArgument(f"{path}.label", f"point {label!r} is placed twice")
        seen.add(label)
        _coordinate(f"{path}.x", point.get("x", 0.0))
        _coordinate(f"{path}.y", point.get("y", 0.0))


def _check_polygons(job: JobRules, body: Mapping[str, Any], _: int | None) -> None:
    for index, polygon in enumerate(_objects(body, "polygons", "answer.polygons.polygons")):
        path = f"answer.polygons.polygons[{index}]"
        _check_label(job, f"{path}.label", polygon.get("label", ""))
        points = polygon.get("points", [])
        if not 3 <= len(points) <= MAX_POLYGON_POINTS:
            raise InvalidArgument(f"{path}.points", f"needs 3 to {MAX_POLYGON_POINTS} vertices (got {len(points)})")
        for k, point in enumerate(points):
            _coordinate(f"{path}.points[{k}].x", point.get("x", 0.0))
            _coordinate(f"{path}.points[{k}].y", point.get("y", 0.0))


def _check_spans(job: JobRules, body: Mapping[str, Any], text_length: int | None) -> None:
    taken: list[tuple[int, int, int]] = []
    for index, span in enumerate(_objects(body, "spans", "answer.spans.spans")):
        path = f"answer.spans.spans[{index}]"
        _check_label(job, f"{path}.label", span.get("label", ""))
        start, end = int(span.get("start", 0)), int(span.get("end", 0))
        if start < 0:
            raise InvalidArgument(f"{path}.start", f"must be >= 0 (got {start})")
        if end <= start:
            raise InvalidArgument(f"{path}.end", f"must be > start {start} (got {end})")
        if text_length is not None and end > text_length:
            raise InvalidArgument(f"{path}.end", f"past the end of the text ({text_length} characters; got {end})")
        taken.append((start, end, index))
    taken.sort()
    for (_, end, _), (start, _, index) in itertools.pairwise(taken):
        if start < end:
            raise InvalidArgument(f"answer.spans.spans[{index}]", "overlaps another span")


def _check_transcription(job: JobRules, body: Mapping[str, Any], _: int | None) -> None:
    limit = int(job.option("max_chars", 0)) or DEFAULT_TRANSCRIPTION_CHARS
    length = len(body.get("text", ""))
    if length > limit:
        raise InvalidArgument("answer.transcription.text", f"at most {limit} characters (got {length})")


def _check_pairwise(job: JobRules, body: Mapping[str, Any], _: int | None) -> None:
    winner = body.get("winner", "")
    allowed = PAIRWISE_WINNERS if job.option("allow_tie") else PAIRWISE_WINNERS[:2]
    if winner not in allowed:
        raise InvalidArgument("answer.pairwise.winner", f"must be one of {', '.join(allowed)} (got {winner!r})")


_CHECKS = {
    "multi_label": _check_multi_label,
    "boxes": _check_boxes,
    "keypoints": _check_keypoints,
    "polygons": _check_polygons,
    "spans": _check_spans,
    "transcription": _check_transcription,
    "pairwise": _check_pairwise,
}


# Longest reason kept for a suspension or a spam flag.
MAX_REASON_CHARS = 500
# Who changes a worker's standing when no operator does: consensus's spam verdicts.
CONSENSUS = "consensus"


@dataclass(frozen=True)
class WorkerStanding:
    """Whether tasking hands a worker tasks. Two things can stop it: an operator's
    suspension, and consensus's spam flag. An operator's reinstatement lifts the first
    and overrides the second as it stands; the override ends when consensus lifts the
    flag, so a later flag (a new verdict) suspends the worker again. Consensus sends a
    verdict only when it changes, so a flag that arrives while one stands is the same
    verdict and keeps the override."""

    worker_id: str
    suspended_by_operator: bool = False
    suspension_reason: str = ""
    spam_flagged: bool = False
    spam_reason: str = ""
    flag_overridden: bool = False
    changed_by: str = ""
    changed_at: dt.datetime | None = None

    @property
    def suspended(self) -> bool:
        """Handed no tasks now."""
        return self.suspended_by_operator or (self.spam_flagged and not self.flag_overridden)

    @property
    def reason(self) -> str:
        """What the worker is told when refused: the operator's reason first."""
        if self.suspended_by_operator:
            return self.suspension_reason
        return self.spam_reason if self.suspended else ""

    def suspend(self, reason: str, by: str, at: dt.datetime) -> WorkerStanding:
        """Suspended by an operator. Raises InvalidArgument("reason") when it is blank or
        longer than MAX_REASON_CHARS."""
        return replace(
            self,
            suspended_by_operator=True,
            suspension_reason=suspension_reason(reason),
            changed_by=by,
            changed_at=at,
        )

    def reinstate(self, by: str, at: dt.datetime) -> WorkerStanding:
        """An operator's suspension lifted and the standing spam flag, if any, overridden."""
        return replace(
            self,
            suspended_by_operator=False,
            suspension_reason="",
            flag_overridden=self.spam_flagged,
            changed_by=by,
            changed_at=at,
        )

    def verdict(self, spammer: bool, reason: str, at: dt.datetime) -> WorkerStanding:
        """Consensus's verdict changed. A lifted flag ends the override with it, so an
        override only ever stands against the flag it was given for, and a later flag
        suspends the worker again (see the class docstring)."""
        if spammer:
            return replace(
                self, spam_flagged=True, spam_reason=reason[:MAX_REASON_CHARS], changed_by=CONSENSUS, changed_at=at
            )
        return replace(
            self, spam_flagged=False, spam_reason="", flag_overridden=False, changed_by=CONSENSUS, changed_at=at
        )


def suspension_reason(reason: str) -> str:
    """The reason, stripped; raises InvalidArgument("reason") when blank or too long."""
    reason = reason.strip()
    if not reason:
        raise InvalidArgument("reason", "is required: say why (the worker is shown it)")
    if len(reason) > MAX_REASON_CHARS:
        raise InvalidArgument("reason", f"at most {MAX_REASON_CHARS} characters (got {len(reason)})")
    return reason


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
