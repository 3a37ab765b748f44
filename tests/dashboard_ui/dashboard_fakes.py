"""Fake Quorum services with canned figures, served over real gRPC behind the real
authentication.

:func:`start_fake_quorum` runs one in-process server (:func:`quorum.rpc.start_server`)
on a free port with fake Ingest, Tasking, Consensus and Payments servicers and the
real Access servicer. Every call passes the real :class:`AuthInterceptor` with each
service's real policy table and a real key store in a SQLite access database, so a
call without a valid key is refused and a client key is held to its organisation
exactly as in production. Each fake records the ``job_id`` it was asked for and the
key that asked.
"""

from __future__ import annotations

import datetime as dt
import os
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc
import pyotp
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from google.protobuf.timestamp_pb2 import Timestamp
from sqlalchemy.engine import Engine

from dashboard.data import ServiceAddrs
from quorum.db import make_engine
from quorum.rpc import RunningServer, start_server
from quorum.security import keys
from quorum.security.keyhash import KeyHasher
from quorum.security.policy import AuthInterceptor
from quorum.security.principal import Role, current_principal
from quorum.settings import Settings
from quorum.v1 import (
    access_pb2_grpc,
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
from services.access import audit as access_audit
from services.access.handlers import AccessHandlers
from services.access.policy import POLICY as ACCESS_POLICY
from services.access.servicer import SERVICE_NAME as ACCESS_SERVICE
from services.access.servicer import AccessServicer
from services.consensus.policy import POLICY as CONSENSUS_POLICY
from services.ingest.policy import POLICY as INGEST_POLICY
from services.payments.policy import POLICY as PAYMENTS_POLICY
from services.tasking.policy import POLICY as TASKING_POLICY

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
    """``(method, job_id)`` of every request the fakes served, and the key id that made
    it (the interceptor admitted it), thread-safe."""

    seen: list[tuple[str, str]] = field(default_factory=list)
    key_ids: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, method: str, job_id: str) -> None:
        principal = current_principal()
        with self.lock:
            self.seen.append((method, job_id))
            self.key_ids.append(principal.key_id if principal else "")

    def methods(self) -> set[str]:
        with self.lock:
            return {m for m, _ in self.seen}

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
        # As the real service: an organisation named (a client's always is) narrows the list.
        jobs = [job for job in JOBS.values() if request.client_id in ("", job.spec.client_id)]
        return ingest_pb2.ListJobsResponse(jobs=jobs)

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


class TestSecretBox:
    """Seals TOTP secrets with AES-GCM under a fixed test key, standing in for the master keyring."""

    __test__ = False  # not a pytest class

    def __init__(self) -> None:
        self._aead = AESGCM(bytes(range(32)))

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plaintext, aad)

    def open(self, blob: bytes, aad: bytes) -> bytes:
        return self._aead.decrypt(blob[:12], blob[12:], aad)


def _owner_of(kind: str, ident: str) -> str | None:
    if kind == "job" and ident in JOBS:
        return JOBS[ident].spec.client_id
    return None


@dataclass
class FakeQuorum:
    """All five services on one address, and the key store they check keys against."""

    addr: str
    calls: Calls
    keys: keys.KeyStore
    engine: Engine

    def addrs(self, **overrides: str) -> ServiceAddrs:
        base = {name: self.addr for name in ServiceAddrs.ENV}
        return ServiceAddrs(**(base | overrides))

    def issue(self, role: Role, *, org_id: str = "", subject: str = "", totp_secret: str | None = None) -> str:
        """A new key (the whole ``qk_...`` string)."""
        _, key = self.keys.create(role, org_id=org_id, subject=subject, name="test", totp_secret=totp_secret)
        return key


def start_fake_quorum(access_db: Path, second_factor_roles: Collection[Role] = ()) -> tuple[RunningServer, FakeQuorum]:
    """Serves the fakes; keys live in the SQLite database ``access_db``. Keys and sessions
    are re-checked on every call, so a revocation or a sign-out takes effect at once.
    Keys of ``second_factor_roles`` are refused without a session, as with
    QUORUM_REQUIRE_MFA_ROLES."""
    engine = make_engine(f"sqlite:///{access_db}")
    keys.create_tables(engine)
    access_audit.metadata.create_all(engine)
    hasher = KeyHasher(os.urandom(32))
    store = keys.KeyStore(engine, hasher, TestSecretBox())
    trail = access_audit.AuditTrail(engine)
    calls = Calls()
    registrations = [
        (ingest_pb2_grpc.add_IngestServiceServicer_to_server, FakeIngest(calls), INGEST_POLICY.service),
        (tasking_pb2_grpc.add_TaskingServiceServicer_to_server, FakeTasking(calls), TASKING_POLICY.service),
        (consensus_pb2_grpc.add_ConsensusServiceServicer_to_server, FakeConsensus(calls), CONSENSUS_POLICY.service),
        (payments_pb2_grpc.add_PaymentsServiceServicer_to_server, FakePayments(calls), PAYMENTS_POLICY.service),
        (
            access_pb2_grpc.add_AccessServiceServicer_to_server,
            AccessServicer(
                AccessHandlers(
                    store,
                    trail,
                    session_ttl=dt.timedelta(seconds=Settings().session_ttl_s),
                    second_factor_roles=second_factor_roles,
                ),
                trail,
            ),
            ACCESS_SERVICE,
        ),
    ]
    auth = AuthInterceptor(
        [INGEST_POLICY, TASKING_POLICY, CONSENSUS_POLICY, PAYMENTS_POLICY, ACCESS_POLICY],
        keys.Authenticator(engine, hasher, poll_seconds=0.0),
        _owner_of,
        second_factor_roles=second_factor_roles,
    )
    server = start_server(registrations, "127.0.0.1:0", max_workers=8, interceptors=[auth])
    return server, FakeQuorum(f"127.0.0.1:{server.port}", calls, store, engine)


def wrong_totp_code(secret: str) -> str:
    """A well-formed code the server refuses: none of the time steps around now produce
    it (two steps either way, wider than the one the server accepts)."""
    totp = pyotp.TOTP(secret)
    now = time.time()
    near = {totp.at(now + 30 * step) for step in range(-2, 3)}
    return next(code for code in ("000000", "111111", "222222", "333333", "444444", "555555") if code not in near)
