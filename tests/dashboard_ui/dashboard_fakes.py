"""Fake Quorum services with canned figures, served over real gRPC.

:func:`start_fake_quorum` runs one in-process ``grpc.server`` on a free port with
fake Ingest, Tasking, Consensus and Payments servicers; each records the
``job_id`` it was asked for.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from concurrent import futures
from dataclasses import dataclass, field
from typing import TypeVar

import grpc
from google.protobuf.timestamp_pb2 import Timestamp

from dashboard.data import ServiceAddrs
from quorum.v1 import (
    common_pb2,
    consensus_pb2,
    consensus_pb2_grpc,
    ingest_pb2,
    ingest_pb2_grpc,
    payments_pb2,
    payments_pb2_grpc,
    tasking_pb2,
    tasking_pb2_grpc,
)

T = TypeVar("T")

# A minute boundary: 2025-11-14 22:00 UTC.
T0 = 1_763_157_600
CATS = "job-cats"
NEWS = "job-news"


def _ts(seconds: int) -> Timestamp:
    return Timestamp(seconds=seconds)


def _series(counts: dict[int, int]) -> list[common_pb2.MinuteCount]:
    return [common_pb2.MinuteCount(minute=T0 + 60 * i, count=c) for i, c in counts.items()]


JOBS = {
    CATS: ingest_pb2.Job(
        job_id=CATS,
        spec=common_pb2.JobSpec(
            name="Cats vs dogs",
            client_id="acme",
            image_classification=common_pb2.ClassificationConfig(labels=["cat", "dog"]),
            sla_deadline=_ts(T0 + 86_400),
        ),
        state=ingest_pb2.JOB_STATE_SEALED,
        objects=400,
        gold_objects=20,
        rejected=3,
        created_at=_ts(T0 - 3_600),
    ),
    NEWS: ingest_pb2.Job(
        job_id=NEWS,
        spec=common_pb2.JobSpec(
            name="News topics",
            client_id="globex",
            text_classification=common_pb2.ClassificationConfig(labels=["sport", "politics"]),
            pilot=True,
        ),
        state=ingest_pb2.JOB_STATE_OPEN,
        objects=100,
        gold_objects=5,
        created_at=_ts(T0 - 600),
    ),
}

TASKING = {
    "": tasking_pb2.TaskingStats(
        tasks=525,
        gold_tasks=25,
        backlog=137,
        answers=1_204,
        active_leases=9,
        workers=3,
        created_per_minute=_series({0: 300, 1: 125, 3: 100}),
        answered_per_minute=_series({0: 200, 1: 400, 2: 350, 3: 254}),
    ),
    CATS: tasking_pb2.TaskingStats(
        tasks=420,
        gold_tasks=20,
        backlog=80,
        answers=1_000,
        active_leases=7,
        workers=3,
        created_per_minute=_series({0: 300, 1: 120}),
        answered_per_minute=_series({0: 200, 1: 400, 2: 400}),
    ),
}

QUALITY = {
    "": consensus_pb2.JobQuality(
        krippendorff_alpha=0.612,
        fleiss_kappa=0.6049,
        tasks=525,
        resolved=350,
        low_confidence=12,
        answers=1_204,
        agreement=0.874,
        gold_accuracy=0.9125,
        gold_answers=80,
        estimated_accuracy=0.931,
        mean_confidence=0.931,
        ttr_p50_seconds=42.0,
        ttr_p90_seconds=185.0,
        ttr_p99_seconds=7_380.0,
        resolved_per_minute=_series({1: 100, 2: 150, 3: 100}),
    ),
    CATS: consensus_pb2.JobQuality(
        tasks=420,
        resolved=300,
        low_confidence=10,
        answers=1_000,
        agreement=0.9,
        gold_accuracy=0.95,
        gold_answers=60,
        estimated_accuracy=0.94,
        ttr_p50_seconds=30.0,
        ttr_p90_seconds=120.0,
        ttr_p99_seconds=600.0,
        resolved_per_minute=_series({1: 100, 2: 200}),
    ),
}

WORKERS = {
    "": [
        consensus_pb2.WorkerQuality(
            worker_id="w-bob",
            answers=300,
            gold_answers=20,
            gold_correct=14,
            reliability=0.71,
            agreement=0.75,
            spam_score=0.93,
            spammer=True,
        ),
        consensus_pb2.WorkerQuality(
            worker_id="w-alice",
            answers=500,
            gold_answers=40,
            gold_correct=39,
            reliability=0.97,
            agreement=0.95,
        ),
        consensus_pb2.WorkerQuality(
            worker_id="w-carol", answers=404, gold_answers=0, gold_correct=0, reliability=0.85, agreement=0.88
        ),
    ],
    CATS: [
        consensus_pb2.WorkerQuality(
            worker_id="w-alice",
            answers=450,
            gold_answers=30,
            gold_correct=29,
            reliability=0.96,
            agreement=0.94,
        ),
    ],
}

MONEY = {
    "": payments_pb2.MoneySummary(
        currency="USD",
        billed_cents=1_234,
        paid_cents=1_000,
        margin_cents=234,
        pilot_subsidy_cents=500,
        objects_billed=350,
        answers_paid=1_000,
    ),
    CATS: payments_pb2.MoneySummary(
        currency="USD",
        billed_cents=150_000,
        paid_cents=160_025,
        margin_cents=-10_025,
        objects_billed=300,
        answers_paid=1_000,
        answers_unpaid=42,
        paused=True,
        pause_reason="budget cap of $1,500.00 reached",
    ),
}


@dataclass
class Calls:
    """``(method, job_id)`` of every request the fakes served, thread-safe."""

    seen: list[tuple[str, str]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, method: str, job_id: str) -> None:
        with self.lock:
            self.seen.append((method, job_id))

    def job_ids(self, method: str) -> list[str]:
        with self.lock:
            return [job_id for m, job_id in self.seen if m == method]


def _lookup(table: Mapping[str, T], job_id: str, context: grpc.ServicerContext) -> T:
    if job_id not in table:
        context.abort(grpc.StatusCode.NOT_FOUND, f"no job {job_id!r}")
    return table[job_id]


class FakeIngest(ingest_pb2_grpc.IngestServiceServicer):
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    def ListJobs(self, request, context):
        self.calls.record("ListJobs", "")
        return ingest_pb2.ListJobsResponse(jobs=list(JOBS.values()))

    def GetJob(self, request, context):
        self.calls.record("GetJob", request.job_id)
        return _lookup(JOBS, request.job_id, context)


class FakeTasking(tasking_pb2_grpc.TaskingServiceServicer):
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    def GetTaskingStats(self, request, context):
        self.calls.record("GetTaskingStats", request.job_id)
        return _lookup(TASKING, request.job_id, context)


class FakeConsensus(consensus_pb2_grpc.ConsensusServiceServicer):
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    def GetJobQuality(self, request, context):
        self.calls.record("GetJobQuality", request.job_id)
        return _lookup(QUALITY, request.job_id, context)

    def ListWorkers(self, request, context):
        self.calls.record("ListWorkers", request.job_id)
        return consensus_pb2.ListWorkersResponse(workers=_lookup(WORKERS, request.job_id, context))


class FakePayments(payments_pb2_grpc.PaymentsServiceServicer):
    def __init__(self, calls: Calls) -> None:
        self.calls = calls

    def GetMoneySummary(self, request, context):
        self.calls.record("GetMoneySummary", request.job_id)
        return _lookup(MONEY, request.job_id, context)


@dataclass
class FakeQuorum:
    """All four fake services on one address."""

    addr: str
    calls: Calls

    def addrs(self, **overrides: str) -> ServiceAddrs:
        base = {name: self.addr for name in ServiceAddrs.ENV}
        return ServiceAddrs(**(base | overrides))


def start_fake_quorum() -> tuple[grpc.Server, FakeQuorum]:
    calls = Calls()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
    ingest_pb2_grpc.add_IngestServiceServicer_to_server(FakeIngest(calls), server)
    tasking_pb2_grpc.add_TaskingServiceServicer_to_server(FakeTasking(calls), server)
    consensus_pb2_grpc.add_ConsensusServiceServicer_to_server(FakeConsensus(calls), server)
    payments_pb2_grpc.add_PaymentsServiceServicer_to_server(FakePayments(calls), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, FakeQuorum(f"127.0.0.1:{port}", calls)
