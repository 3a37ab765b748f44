"""What the dashboard shows, read through the services' gRPC APIs.

:func:`load_snapshot` makes every call with the signed-in user's API key and
returns a :class:`Snapshot` of plain values and pandas DataFrames, which the
Streamlit app only renders. Nothing here imports Streamlit, and nothing reads a
database: the services own their data and decide what each key may see.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, ClassVar, TypeVar

import grpc
import pandas as pd

from dashboard.auth import transport
from quorum.rpc import channel
from quorum.v1 import (
    consensus_pb2,
    consensus_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
    payments_pb2,
    payments_pb2_grpc,
    tasking_pb2,
    tasking_pb2_grpc,
)

R = TypeVar("R")

DEFAULT_TIMEOUT_S = 2.0
# Keeps the throughput chart bounded however far back the services' series go.
MAX_CHART_MINUTES = 24 * 60

JOB_COLUMNS = [
    "job_id",
    "name",
    "client_id",
    "state",
    "objects",
    "gold",
    "rejected",
    "sla_deadline",
    "created_at",
]
WORKER_COLUMNS = [
    "worker_id",
    "answers",
    "gold_answers",
    "gold_accuracy",
    "reliability",
    "agreement",
    "spam_score",
    "spammer",
]
THROUGHPUT_COLUMNS = ["created", "answered", "resolved"]

# The parts of a snapshot that a caller's role may be unable to read.
TASKING, QUALITY, MONEY, WORKERS = "tasking", "quality", "money", "workers"
# A client reads these for one of its jobs at a time, never summed over every job.
JOB_SCOPED_PARTS = frozenset({TASKING, QUALITY, MONEY})

_JOB_STATES = {
    ingest_pb2.JOB_STATE_OPEN: "open",
    ingest_pb2.JOB_STATE_SEALED: "sealed",
}
# A service that cannot be reached at all: further calls to it would only wait again.
_UNREACHABLE = {"UNAVAILABLE", "DEADLINE_EXCEEDED"}


@dataclass(frozen=True)
class ServiceAddrs:
    """``host:port`` of each service the dashboard reads, and of the access service it signs in with."""

    ingest: str = "127.0.0.1:50051"
    tasking: str = "127.0.0.1:50052"
    consensus: str = "127.0.0.1:50053"
    payments: str = "127.0.0.1:50054"
    access: str = "127.0.0.1:50055"

    ENV: ClassVar[dict[str, str]] = {
        "ingest": "QUORUM_INGEST_ADDR",
        "tasking": "QUORUM_TASKING_ADDR",
        "consensus": "QUORUM_CONSENSUS_ADDR",
        "payments": "QUORUM_PAYMENTS_ADDR",
        "access": "QUORUM_ACCESS_ADDR",
    }

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> ServiceAddrs:
        """Reads ``QUORUM_*_ADDR``; an unset or blank variable keeps the default."""
        env = os.environ if environ is None else environ
        overrides = {name: env[var].strip() for name, var in cls.ENV.items() if env.get(var, "").strip()}
        return cls(**overrides)


@dataclass(frozen=True)
class ServiceProblem:
    """A call that failed, kept so the page can say which service and where."""

    service: str
    addr: str
    method: str
    code: str
    detail: str

    @property
    def unreachable(self) -> bool:
        return self.code in _UNREACHABLE

    def message(self) -> str:
        if self.unreachable:
            return f"{self.service} service at {self.addr} is unreachable ({self.code}): {self.detail}"
        return f"{self.service} service at {self.addr}: {self.method} failed ({self.code}): {self.detail}"


@dataclass(frozen=True)
class TaskingFigures:
    tasks: int
    gold_tasks: int
    backlog: int
    answers: int
    active_leases: int
    workers: int


@dataclass(frozen=True)
class QualityFigures:
    tasks: int
    resolved: int
    low_confidence: int
    answers: int
    agreement: float
    gold_accuracy: float
    gold_answers: int
    estimated_accuracy: float
    mean_confidence: float
    ttr_p50_seconds: float
    ttr_p90_seconds: float
    ttr_p99_seconds: float
    krippendorff_alpha: float = 0.0
    fleiss_kappa: float = 0.0


@dataclass(frozen=True)
class MoneyFigures:
    """Amounts in integer minor units of ``currency``, as the payments service keeps them."""

    currency: str
    billed_cents: int
    paid_cents: int
    margin_cents: int
    pilot_subsidy_cents: int
    objects_billed: int
    answers_paid: int
    answers_unpaid: int = 0
    # Set only for one job: paused because its budget cap is reached.
    paused: bool = False
    pause_reason: str = ""


def _empty(columns: list[str]) -> pd.DataFrame:
    return pd.DataFrame({name: pd.Series(dtype="object") for name in columns})


# eq=False: DataFrames have no single truth value, so generated __eq__ would raise.
@dataclass(frozen=True, eq=False)
class Snapshot:
    """Everything on the page for one job (or every job when ``job_id`` is empty).

    A part is ``None`` (or an empty frame) when its service failed; ``problems``
    then says why.
    """

    job_id: str
    taken_at: datetime
    # Every job, whatever ``job_id`` is: the job picker needs them all.
    jobs: pd.DataFrame = field(default_factory=lambda: _empty(JOB_COLUMNS))
    # Objects to label in scope (gold excluded).
    objects: int | None = None
    tasking: TaskingFigures | None = None
    quality: QualityFigures | None = None
    money: MoneyFigures | None = None
    # One row per worker, most reliable first.
    workers: pd.DataFrame = field(default_factory=lambda: _empty(WORKER_COLUMNS))
    # Per-minute counts indexed by the minute's start (UTC), one column per available series.
    throughput: pd.DataFrame = field(default_factory=pd.DataFrame)
    problems: tuple[ServiceProblem, ...] = ()
    # Parts not asked for because the caller's role cannot read them in this scope
    # (e.g. a client's workers, or its figures summed over every job).
    withheld: frozenset[str] = frozenset()

    @property
    def resolved(self) -> int | None:
        return None if self.quality is None else self.quality.resolved

    @property
    def progress(self) -> float | None:
        """Share of objects resolved in [0, 1], or None when unknown."""
        if self.objects is None or self.resolved is None:
            return None
        if self.objects == 0:
            return 0.0
        return min(1.0, self.resolved / self.objects)

    def scoped_jobs(self) -> pd.DataFrame:
        """The jobs table for this snapshot's scope."""
        if not self.job_id:
            return self.jobs
        return self.jobs[self.jobs["job_id"] == self.job_id].reset_index(drop=True)


class _Calls:
    """Unary calls to one service that record failures instead of raising.

    After the service proves unreachable the remaining calls are skipped, so a
    dead service costs one deadline and one warning, not one per method.
    """

    def __init__(self, service: str, addr: str, timeout: float) -> None:
        self.service = service
        self.addr = addr
        self.timeout = timeout
        self.problems: list[ServiceProblem] = []

    def __call__(self, method: Callable[..., R], request: Any) -> R | None:
        if any(p.unreachable for p in self.problems):
            return None
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as err:
            code, detail = "UNKNOWN", str(err)
            if isinstance(err, grpc.Call):
                code, detail = err.code().name, err.details() or ""
            # Every request message is named after its method: ListJobsRequest -> ListJobs.
            method_name = type(request).__name__.removesuffix("Request")
            self.problems.append(ServiceProblem(self.service, self.addr, method_name, code, detail))
            return None


@dataclass
class _Part:
    """What one service contributed to a snapshot."""

    problems: list[ServiceProblem]
    values: dict[str, Any] = field(default_factory=dict)
    series: dict[str, Iterable[Any]] = field(default_factory=dict)


def _timestamp(ts: Any, present: bool) -> pd.Timestamp:
    return pd.Timestamp(ts.ToDatetime(tzinfo=UTC)) if present else pd.NaT


def _jobs_frame(jobs: Iterable[ingest_pb2.Job]) -> pd.DataFrame:
    rows = [
        {
            "job_id": job.job_id,
            "name": job.spec.name,
            "client_id": job.spec.client_id,
            "state": _JOB_STATES.get(job.state, "unknown"),
            "objects": job.objects,
            "gold": job.gold_objects,
            "rejected": job.rejected,
            "sla_deadline": _timestamp(job.spec.sla_deadline, job.spec.HasField("sla_deadline")),
            "created_at": _timestamp(job.created_at, job.HasField("created_at")),
        }
        for job in jobs
    ]
    if not rows:
        return _empty(JOB_COLUMNS)
    frame = pd.DataFrame(rows, columns=JOB_COLUMNS)
    return frame.sort_values(["created_at", "job_id"], ascending=[False, True], na_position="last").reset_index(
        drop=True
    )


def _workers_frame(workers: Iterable[consensus_pb2.WorkerQuality]) -> pd.DataFrame:
    rows = [
        {
            "worker_id": w.worker_id,
            "answers": w.answers,
            "gold_answers": w.gold_answers,
            # None rather than 0 %: a worker with no gold answers has no gold record yet.
            "gold_accuracy": w.gold_correct / w.gold_answers if w.gold_answers else None,
            "reliability": w.reliability,
            "agreement": w.agreement,
            "spam_score": w.spam_score,
            "spammer": w.spammer,
        }
        for w in workers
    ]
    if not rows:
        return _empty(WORKER_COLUMNS)
    frame = pd.DataFrame(rows, columns=WORKER_COLUMNS)
    frame["gold_accuracy"] = frame["gold_accuracy"].astype("float64")
    return frame.sort_values(
        ["reliability", "answers", "worker_id"], ascending=[False, False, True], kind="stable"
    ).reset_index(drop=True)


def _throughput_frame(series: Mapping[str, Iterable[Any]]) -> pd.DataFrame:
    """Per-minute counts on one contiguous UTC minute index; a missing minute counted nothing."""
    counts = {name: {int(mc.minute): int(mc.count) for mc in values} for name, values in series.items()}
    minutes = [m for per_minute in counts.values() for m in per_minute]
    if not minutes:
        return pd.DataFrame(columns=[c for c in THROUGHPUT_COLUMNS if c in counts])
    last = max(minutes) // 60 * 60
    first = max(min(minutes) // 60 * 60, last - (MAX_CHART_MINUTES - 1) * 60)
    index = range(first, last + 60, 60)
    frame = pd.DataFrame(
        {name: [counts[name].get(m, 0) for m in index] for name in THROUGHPUT_COLUMNS if name in counts},
        index=pd.DatetimeIndex(pd.to_datetime(list(index), unit="s", utc=True), name="minute"),
    )
    return frame


@dataclass(frozen=True)
class _Request:
    """What every reader needs: where, as whom, for which job, and what to leave out."""

    api_key: str = field(repr=False)
    job_id: str
    timeout: float
    withheld: frozenset[str]


def _read_ingest(addr: str, req: _Request) -> _Part:
    calls = _Calls("Ingest", addr, req.timeout)
    part = _Part(calls.problems)
    job_id = req.job_id
    # A client's ListJobs is narrowed to its own organisation by the service.
    with channel(addr, api_key=req.api_key, tls=transport()) as ch:
        stub = ingest_pb2_grpc.IngestServiceStub(ch)
        listed = calls(stub.ListJobs, ingest_pb2.ListJobsRequest())
        if listed is not None:
            part.values["jobs"] = _jobs_frame(listed.jobs)
            if not job_id:
                part.values["objects"] = sum(job.objects for job in listed.jobs)
        if job_id:
            # GetJob rather than the listed row: it also names a job ListJobs did not return.
            job = calls(stub.GetJob, ingest_pb2.GetJobRequest(job_id=job_id))
            if job is not None:
                part.values["objects"] = job.objects
    return part


def _read_tasking(addr: str, req: _Request) -> _Part:
    calls = _Calls("Tasking", addr, req.timeout)
    part = _Part(calls.problems)
    if TASKING in req.withheld:
        return part
    with channel(addr, api_key=req.api_key, tls=transport()) as ch:
        stub = tasking_pb2_grpc.TaskingServiceStub(ch)
        stats = calls(stub.GetTaskingStats, tasking_pb2.GetTaskingStatsRequest(job_id=req.job_id))
        if stats is not None:
            part.values["tasking"] = TaskingFigures(
                tasks=stats.tasks,
                gold_tasks=stats.gold_tasks,
                backlog=stats.backlog,
                answers=stats.answers,
                active_leases=stats.active_leases,
                workers=stats.workers,
            )
            part.series["created"] = stats.created_per_minute
            part.series["answered"] = stats.answered_per_minute
    return part


def _read_consensus(addr: str, req: _Request) -> _Part:
    calls = _Calls("Consensus", addr, req.timeout)
    part = _Part(calls.problems)
    if {QUALITY, WORKERS} <= req.withheld:
        return part
    with channel(addr, api_key=req.api_key, tls=transport()) as ch:
        stub = consensus_pb2_grpc.ConsensusServiceStub(ch)
        q = None
        if QUALITY not in req.withheld:
            q = calls(stub.GetJobQuality, consensus_pb2.GetJobQualityRequest(job_id=req.job_id))
        if q is not None:
            part.values["quality"] = QualityFigures(
                tasks=q.tasks,
                resolved=q.resolved,
                low_confidence=q.low_confidence,
                answers=q.answers,
                agreement=q.agreement,
                gold_accuracy=q.gold_accuracy,
                gold_answers=q.gold_answers,
                estimated_accuracy=q.estimated_accuracy,
                mean_confidence=q.mean_confidence,
                ttr_p50_seconds=q.ttr_p50_seconds,
                ttr_p90_seconds=q.ttr_p90_seconds,
                ttr_p99_seconds=q.ttr_p99_seconds,
                krippendorff_alpha=q.krippendorff_alpha,
                fleiss_kappa=q.fleiss_kappa,
            )
            part.series["resolved"] = q.resolved_per_minute
        if WORKERS not in req.withheld:
            listed = calls(stub.ListWorkers, consensus_pb2.ListWorkersRequest(job_id=req.job_id))
            if listed is not None:
                part.values["workers"] = _workers_frame(listed.workers)
    return part


def _read_payments(addr: str, req: _Request) -> _Part:
    calls = _Calls("Payments", addr, req.timeout)
    part = _Part(calls.problems)
    if MONEY in req.withheld:
        return part
    with channel(addr, api_key=req.api_key, tls=transport()) as ch:
        stub = payments_pb2_grpc.PaymentsServiceStub(ch)
        m = calls(stub.GetMoneySummary, payments_pb2.GetMoneySummaryRequest(job_id=req.job_id))
        if m is not None:
            part.values["money"] = MoneyFigures(
                currency=m.currency or "USD",
                billed_cents=m.billed_cents,
                paid_cents=m.paid_cents,
                margin_cents=m.margin_cents,
                pilot_subsidy_cents=m.pilot_subsidy_cents,
                objects_billed=m.objects_billed,
                answers_paid=m.answers_paid,
                answers_unpaid=m.answers_unpaid,
                paused=m.paused,
                pause_reason=m.pause_reason,
            )
    return part


def withheld_parts(job_id: str, staff: bool) -> frozenset[str]:
    """The parts a caller cannot read: operators and admins read everything; a client
    reads no workers (they label for every organisation) and its figures only per job."""
    if staff:
        return frozenset()
    return frozenset({WORKERS}) | (frozenset() if job_id else JOB_SCOPED_PARTS)


def load_snapshot(
    addrs: ServiceAddrs,
    api_key: str,
    job_id: str = "",
    *,
    staff: bool,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Snapshot:
    """Reads one consistent-enough view of ``job_id`` (every job when empty) from the four
    services, every call carrying ``api_key``.

    ``staff`` (an operator or admin key) reads everything; otherwise the parts in
    :func:`withheld_parts` are not asked for and are named in ``Snapshot.withheld``.
    The services enforce the same limits whatever is asked. Never raises for a failed
    call: the failure lands in ``Snapshot.problems`` (an UNAUTHENTICATED one means the
    key stopped working) and that service's part stays empty. The services are asked
    in parallel, each call with a ``timeout``-second deadline, so a hung service costs
    at most about ``2 * timeout`` seconds in total.
    """
    req = _Request(api_key=api_key, job_id=job_id, timeout=timeout, withheld=withheld_parts(job_id, staff))
    readers = [
        (_read_ingest, addrs.ingest),
        (_read_tasking, addrs.tasking),
        (_read_consensus, addrs.consensus),
        (_read_payments, addrs.payments),
    ]
    with ThreadPoolExecutor(max_workers=len(readers), thread_name_prefix="dashboard-read") as pool:
        parts = list(pool.map(lambda reader: reader[0](reader[1], req), readers))

    values: dict[str, Any] = {}
    series: dict[str, Iterable[Any]] = {}
    problems: list[ServiceProblem] = []
    for part in parts:
        values.update(part.values)
        series.update(part.series)
        problems.extend(part.problems)
    return Snapshot(
        job_id=job_id,
        taken_at=datetime.now(UTC),
        throughput=_throughput_frame(series),
        problems=tuple(problems),
        withheld=req.withheld,
        **values,
    )
