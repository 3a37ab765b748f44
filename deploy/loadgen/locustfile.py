"""Load on Quorum's public gRPC API: workers lease and answer tasks, clients create and
fill jobs, operators watch the numbers.

    QUORUM_TASKING_ADDR=... QUORUM_INGEST_ADDR=... QUORUM_CONSENSUS_ADDR=... \\
    QUORUM_PAYMENTS_ADDR=... locust -f deploy/loadgen/locustfile.py --headless -u 505 -r 100 -t 60s

It dials over TLS when the ``QUORUM_TLS_*`` variables say so (:func:`quorum.tls.client_tls`).

``-u 505`` gives 500 workers, 2 clients and 3 operators. At start one big text job (``QUORUM_LOAD_OBJECTS`` objects, default 5000) is created
and sealed so workers have work from the first second; ``WorkerUser`` think time is
``QUORUM_LOAD_THINK_MS`` (``low,high``, default ``200,800``). At the end the number of
objects labeled during the run is printed as objects/s. Each request is reported under
its method name; a gRPC error counts as a failure, except an empty GetNextTask, which is
a normal answer.

gRPC runs on gevent here: ``init_gevent`` must run before any channel is created, or
calls run one at a time.
"""

from __future__ import annotations

import grpc.experimental.gevent as grpc_gevent

grpc_gevent.init_gevent()

import json  # noqa: E402
import os  # noqa: E402
import random  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
import uuid  # noqa: E402
from collections.abc import Callable  # noqa: E402
from typing import Any, TypeVar  # noqa: E402

import grpc  # noqa: E402
from locust import User, between, events, task  # noqa: E402
from locust.env import Environment  # noqa: E402

from quorum.rpc import channel  # noqa: E402
from quorum.settings import Settings  # noqa: E402
from quorum.tls import ClientTls, client_tls  # noqa: E402
from quorum.v1 import (  # noqa: E402
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

LABELS = ["positive", "negative", "neutral"]
T = TypeVar("T")

_channels: dict[str, grpc.Channel] = {}
_transport: list[ClientTls | None] = []
_lock = threading.Lock()
_run: dict[str, Any] = {"job_id": "", "resolved_at_start": 0, "started": 0.0}


def _address(service: str) -> str:
    return os.environ.get(f"QUORUM_{service.upper()}_ADDR", "127.0.0.1:" + _DEFAULT_PORTS[service])


_DEFAULT_PORTS = {"ingest": "50051", "tasking": "50052", "consensus": "50053", "payments": "50054"}


def _channel(service: str) -> grpc.Channel:
    """One HTTP/2 connection per service per locust process, shared by its users."""
    with _lock:
        if not _transport:
            _transport.append(client_tls(Settings()))
        if service not in _channels:
            _channels[service] = channel(_address(service), tls=_transport[0])
        return _channels[service]


def _spec(name: str) -> common_pb2.JobSpec:
    spec = common_pb2.JobSpec(
        name=name,
        client_id="loadgen",
        overlap=common_pb2.Overlap(min=3, max=5),
        target_confidence=0.9,
        price_per_object_cents=10,
        pay_per_answer_cents=2,
        lease_seconds=60,
    )
    spec.text_classification.CopyFrom(common_pb2.ClassificationConfig(labels=LABELS))
    return spec


def _manifest(n: int, prefix: str) -> bytes:
    return "".join(
        json.dumps({"id": f"{prefix}-{i}", "text": f"{prefix} review {i}: {random.choice(LABELS)} {uuid.uuid4().hex}"})
        + "\n"
        for i in range(n)
    ).encode()


def _create_job(ingest: ingest_pb2_grpc.IngestServiceStub, objects: int, name: str) -> str:
    job_id = ingest.CreateJob(ingest_pb2.CreateJobRequest(spec=_spec(name)), timeout=30).job_id
    ingest.ImportManifest(
        ingest_pb2.ImportManifestRequest(
            job_id=job_id, format=ingest_pb2.MANIFEST_FORMAT_JSONL, content=_manifest(objects, name)
        ),
        timeout=300,
    )
    ingest.SealJob(ingest_pb2.SealJobRequest(job_id=job_id), timeout=30)
    return job_id


def _resolved() -> int:
    stub = consensus_pb2_grpc.ConsensusServiceStub(_channel("consensus"))
    return int(stub.GetJobQuality(consensus_pb2.GetJobQualityRequest(), timeout=30).resolved)


@events.test_start.add_listener
def _seed(environment: Environment, **_: Any) -> None:
    objects = int(os.environ.get("QUORUM_LOAD_OBJECTS", "5000"))
    ingest = ingest_pb2_grpc.IngestServiceStub(_channel("ingest"))
    _run["job_id"] = _create_job(ingest, objects, f"load-{uuid.uuid4().hex[:6]}")
    _run["resolved_at_start"] = _resolved()
    _run["started"] = time.monotonic()


@events.test_stop.add_listener
def _report(environment: Environment, **_: Any) -> None:
    elapsed = max(time.monotonic() - _run["started"], 1e-9)
    labeled = _resolved() - _run["resolved_at_start"]
    print(f"labeled objects: {labeled} in {elapsed:.1f} s = {labeled / elapsed:.1f} objects/s")


class GrpcUser(User):
    """A user whose calls are timed and reported to locust by method name."""

    abstract = True

    def call(self, name: str, fn: Callable[[], T], ok_codes: tuple[grpc.StatusCode, ...] = ()) -> T | None:
        start = time.perf_counter()
        error: BaseException | None = None
        result: T | None = None
        size = 0
        try:
            result = fn()
            size = result.ByteSize() if hasattr(result, "ByteSize") else 0
        except grpc.RpcError as exc:
            if exc.code() not in ok_codes:
                error = exc
        self.environment.events.request.fire(
            request_type="grpc",
            name=name,
            response_time=(time.perf_counter() - start) * 1000.0,
            response_length=size,
            exception=error,
            context={},
        )
        return result


def _think() -> tuple[float, float]:
    low, high = (int(v) for v in os.environ.get("QUORUM_LOAD_THINK_MS", "200,800").split(","))
    return low / 1000.0, high / 1000.0


class WorkerUser(GrpcUser):
    """A crowd worker: lease the next task, think, answer (or now and then skip)."""

    weight = 100
    wait_time = between(0.0, 0.0)

    def on_start(self) -> None:
        self.stub = tasking_pb2_grpc.TaskingServiceStub(_channel("tasking"))
        self.worker_id = f"load-{uuid.uuid4().hex[:12]}"
        self.think = _think()
        self.session_id = ""
        session = self.call(
            "StartSession",
            lambda: self.stub.StartSession(tasking_pb2.StartSessionRequest(worker_id=self.worker_id), timeout=10),
        )
        self.session_id = session.session_id if session else ""

    @task
    def work(self) -> None:
        if not self.session_id:
            self.on_start()
            return
        request = tasking_pb2.GetNextTaskRequest(session_id=self.session_id)
        reply = self.call("GetNextTask", lambda: self.stub.GetNextTask(request, timeout=10))
        if reply is None or not reply.HasField("task"):
            time.sleep((reply.retry_after_ms if reply else 1000) / 1000.0)
            return
        leased = reply.task
        time.sleep(random.uniform(*self.think))
        if random.random() < 0.02:
            skip = tasking_pb2.SkipTaskRequest(session_id=self.session_id, lease_id=leased.lease_id, reason="load")
            self.call("SkipTask", lambda: self.stub.SkipTask(skip, timeout=10))
            return
        labels = list(leased.text_classification.labels) or LABELS
        answer = common_pb2.Answer(classification=common_pb2.ClassificationAnswer(label=random.choice(labels)))
        submit = tasking_pb2.SubmitAnswerRequest(session_id=self.session_id, lease_id=leased.lease_id, answer=answer)
        self.call("SubmitAnswer", lambda: self.stub.SubmitAnswer(submit, timeout=10))


class ClientUser(GrpcUser):
    """A paying client: now and then a small job with a manifest, then its status."""

    fixed_count = 2
    wait_time = between(5.0, 10.0)

    def on_start(self) -> None:
        self.ingest = ingest_pb2_grpc.IngestServiceStub(_channel("ingest"))
        self.consensus = consensus_pb2_grpc.ConsensusServiceStub(_channel("consensus"))
        self.jobs: list[str] = []

    @task(1)
    def submit_job(self) -> None:
        name = f"client-{uuid.uuid4().hex[:6]}"
        job = self.call("CreateJob+Import+Seal", lambda: _create_job(self.ingest, 100, name))
        if job:
            self.jobs.append(str(job))

    @task(3)
    def job_status(self) -> None:
        if self.jobs:
            job_id = random.choice(self.jobs)
            self.call("GetJob", lambda: self.ingest.GetJob(ingest_pb2.GetJobRequest(job_id=job_id), timeout=10))


class OperatorUser(GrpcUser):
    """An operator with the dashboard open: the numbers every couple of seconds."""

    fixed_count = 3
    wait_time = between(1.0, 3.0)

    def on_start(self) -> None:
        self.tasking = tasking_pb2_grpc.TaskingServiceStub(_channel("tasking"))
        self.consensus = consensus_pb2_grpc.ConsensusServiceStub(_channel("consensus"))
        self.payments = payments_pb2_grpc.PaymentsServiceStub(_channel("payments"))

    @task
    def dashboard(self) -> None:
        job_id = _run["job_id"]
        self.call(
            "GetTaskingStats",
            lambda: self.tasking.GetTaskingStats(tasking_pb2.GetTaskingStatsRequest(job_id=job_id), timeout=10),
        )
        self.call(
            "GetJobQuality",
            lambda: self.consensus.GetJobQuality(consensus_pb2.GetJobQualityRequest(job_id=job_id), timeout=10),
        )
        self.call(
            "GetMoneySummary",
            lambda: self.payments.GetMoneySummary(payments_pb2.GetMoneySummaryRequest(job_id=job_id), timeout=10),
        )
