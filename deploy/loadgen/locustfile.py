"""Load on Quorum's public gRPC API: workers lease and answer tasks, clients create and
fill jobs, operators watch the numbers.

    QUORUM_TASKING_ADDR=... QUORUM_INGEST_ADDR=... QUORUM_CONSENSUS_ADDR=... \\
    QUORUM_PAYMENTS_ADDR=... QUORUM_ACCESS_ADDR=... QUORUM_API_KEY=<admin key> \\
    locust -f deploy/loadgen/locustfile.py --headless -u 505 -r 100 -t 60s

Every call carries an API key, as real callers' do. At start the admin key
(``QUORUM_API_KEY``, else the local user's key that ``quorum up`` stored under
``QUORUM_HOME``) issues, through the access service, a client key for the load's
organisation, an operator key, and a worker key per worker user.

It dials over TLS when the ``QUORUM_TLS_*`` variables say so (:func:`quorum.tls.client_tls`).

``-u 505`` gives 500 workers, 2 clients and 3 operators. Before the run (locust's
``init``, so outside the ``-t`` time) the keys are issued and one big text job
(``QUORUM_LOAD_OBJECTS`` objects, default 5000) is created and sealed so workers have
work from the first second; ``WorkerUser`` think time is
``QUORUM_LOAD_THINK_MS`` (``low,high`` in ms, default ``2000,8000``: a person reading a
short text and picking a label, so 500 workers want about 100 tasks a second; ``200,800``
makes each user ten people, to find where the stack saturates). At the end the number of
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
from locust.runners import MasterRunner  # noqa: E402

from quorum.rpc import channel  # noqa: E402
from quorum.settings import Settings  # noqa: E402
from quorum.tls import ClientTls, client_tls  # noqa: E402
from quorum.v1 import (  # noqa: E402
    access_pb2,
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

LABELS = ["positive", "negative", "neutral"]
# How long after its batch starts a worker may arrive (see WorkerUser.on_start).
ARRIVAL_SPREAD_S = 1.0
# The organisation the client users act for; every job of the load belongs to it.
ORG = "loadgen"
T = TypeVar("T")
Metadata = tuple[tuple[str, str], ...]

_channels: dict[str, grpc.Channel] = {}
_transport: list[ClientTls | None] = []
_lock = threading.Lock()
_run: dict[str, Any] = {"job_id": "", "resolved_at_start": 0, "started": 0.0}
# Keys issued at start, as call metadata: "admin", "client" and "operator".
_auth: dict[str, Metadata] = {}
# (worker id, its metadata) issued at start and not yet taken by a worker user.
_worker_keys: list[tuple[str, Metadata]] = []


def _address(service: str) -> str:
    return os.environ.get(f"QUORUM_{service.upper()}_ADDR", "127.0.0.1:" + _DEFAULT_PORTS[service])


_DEFAULT_PORTS = {"ingest": "50051", "tasking": "50052", "consensus": "50053", "payments": "50054", "access": "50055"}


def _channel(service: str) -> grpc.Channel:
    """One HTTP/2 connection per service per locust process, shared by its users."""
    with _lock:
        if not _transport:
            _transport.append(client_tls(Settings()))
        if service not in _channels:
            _channels[service] = channel(_address(service), tls=_transport[0])
        return _channels[service]


def _bearer(key: str) -> Metadata:
    return (("authorization", f"Bearer {key}"),)


def _admin_key() -> str:
    """QUORUM_API_KEY, else the key ``quorum up`` stored in QUORUM_HOME/credentials.
    Raises RuntimeError when there is neither."""
    key = Settings().client_api_key()
    if not key:
        raise RuntimeError(
            "no admin key: set QUORUM_API_KEY, or QUORUM_HOME to the home of the `quorum up` stack under load"
        )
    return key


def _create_key(role: access_pb2.Role, *, org_id: str = "", subject: str = "", name: str) -> Metadata:
    """Issues a key with the admin key; waits out the rate limit when issuing many at once."""
    access = access_pb2_grpc.AccessServiceStub(_channel("access"))
    request = access_pb2.CreateKeyRequest(role=role, org_id=org_id, subject=subject, name=name)
    while True:
        try:
            return _bearer(access.CreateKey(request, timeout=30, metadata=_auth["admin"]).secret)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.RESOURCE_EXHAUSTED:
                raise
            retry_ms = dict(exc.trailing_metadata() or ()).get("retry-after-ms", "1000")
            time.sleep(int(retry_ms) / 1000.0)


def _new_worker() -> tuple[str, Metadata]:
    worker_id = f"load-{uuid.uuid4().hex[:12]}"
    return worker_id, _create_key(access_pb2.ROLE_WORKER, subject=worker_id, name="load worker")


def _take_worker() -> tuple[str, Metadata]:
    """A worker identity issued at start; a new one once those are taken (users added later)."""
    with _lock:
        if _worker_keys:
            return _worker_keys.pop()
    return _new_worker()


def _spec(name: str) -> common_pb2.JobSpec:
    spec = common_pb2.JobSpec(
        name=name,
        client_id=ORG,
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
    """Creates, fills and seals a job as the load's client."""
    auth = _auth["client"]
    job_id = ingest.CreateJob(ingest_pb2.CreateJobRequest(spec=_spec(name)), timeout=30, metadata=auth).job_id
    ingest.ImportManifest(
        ingest_pb2.ImportManifestRequest(
            job_id=job_id, format=ingest_pb2.MANIFEST_FORMAT_JSONL, content=_manifest(objects, name)
        ),
        timeout=300,
        metadata=auth,
    )
    ingest.SealJob(ingest_pb2.SealJobRequest(job_id=job_id), timeout=30, metadata=auth)
    return job_id


def _wait_until_taken_in(job_id: str, objects: int, timeout_s: float = 300.0) -> None:
    """Waits until tasking and consensus hold every task of the job and payments knows it.
    Each learns of the job from events: until then payments answers NOT_FOUND, which the
    operators' first looks would count as failures, and the services would still be
    taking in thousands of TaskCreated events while the first workers are timed."""
    auth = _auth["operator"]
    tasking = tasking_pb2_grpc.TaskingServiceStub(_channel("tasking"))
    consensus = consensus_pb2_grpc.ConsensusServiceStub(_channel("consensus"))
    payments = payments_pb2_grpc.PaymentsServiceStub(_channel("payments"))

    def taken_in() -> bool:
        stats = tasking.GetTaskingStats(tasking_pb2.GetTaskingStatsRequest(job_id=job_id), timeout=10, metadata=auth)
        quality = consensus.GetJobQuality(consensus_pb2.GetJobQualityRequest(job_id=job_id), timeout=10, metadata=auth)
        if stats.tasks < objects or quality.tasks < objects:
            return False
        try:
            payments.GetMoneySummary(payments_pb2.GetMoneySummaryRequest(job_id=job_id), timeout=10, metadata=auth)
        except grpc.RpcError as exc:
            if exc.code() != grpc.StatusCode.NOT_FOUND:
                raise
            return False
        return True

    deadline = time.monotonic() + timeout_s
    while not taken_in():
        if time.monotonic() > deadline:
            raise RuntimeError(f"job {job_id}: not taken in by tasking, consensus and payments in {timeout_s:.0f} s")
        time.sleep(0.5)


def _resolved() -> int:
    """Objects resolved across every job, as the operator sees them."""
    stub = consensus_pb2_grpc.ConsensusServiceStub(_channel("consensus"))
    request = consensus_pb2.GetJobQualityRequest()
    return int(stub.GetJobQuality(request, timeout=30, metadata=_auth["operator"]).resolved)


def _expected_workers(environment: Environment) -> int:
    """Worker users this run will start: every user but the fixed clients and operators."""
    options = environment.parsed_options
    users = int(getattr(options, "num_users", 0) or 0) if options is not None else 0
    return max(users - ClientUser.fixed_count - OperatorUser.fixed_count, 0)


@events.init.add_listener
def _seed(environment: Environment, runner: Any = None, **_: Any) -> None:
    """Keys and the big job, made before the run: ``init`` fires before locust starts the
    ``-t`` clock, so the run time is all load (issuing 500 keys and importing the job
    take tens of seconds on a small machine). A distributed run's master has no users."""
    if isinstance(runner, MasterRunner):
        return
    _auth["admin"] = _bearer(_admin_key())
    _auth["client"] = _create_key(access_pb2.ROLE_CLIENT, org_id=ORG, name="load client")
    _auth["operator"] = _create_key(access_pb2.ROLE_OPERATOR, name="load operator")
    # Issued before the users start, so that key creation does not count as load.
    workers = [_new_worker() for _ in range(_expected_workers(environment))]
    with _lock:
        _worker_keys.extend(workers)
    objects = int(os.environ.get("QUORUM_LOAD_OBJECTS", "5000"))
    ingest = ingest_pb2_grpc.IngestServiceStub(_channel("ingest"))
    _run["job_id"] = _create_job(ingest, objects, f"load-{uuid.uuid4().hex[:6]}")
    _wait_until_taken_in(_run["job_id"], objects)


@events.test_start.add_listener
def _start(environment: Environment, **_: Any) -> None:
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
    low, high = (int(v) for v in os.environ.get("QUORUM_LOAD_THINK_MS", "2000,8000").split(","))
    return low / 1000.0, high / 1000.0


def _answer_for(leased: tasking_pb2.WorkerTask) -> str:
    """What a careful worker answers: the label the text names (see _manifest), nine
    times in ten, else any label. Workers answering at random would be what they look
    like to consensus, spammers, and be suspended partway through the run."""
    labels = list(leased.text_classification.labels) or LABELS
    named = [label for label in labels if f" {label} " in leased.content.text]
    if named and random.random() < 0.9:
        return named[0]
    return random.choice(labels)


class WorkerUser(GrpcUser):
    """A crowd worker: lease the next task, think, answer (or now and then skip), right
    nine times in ten."""

    weight = 100
    wait_time = between(0.0, 0.0)

    def on_start(self) -> None:
        self.stub = tasking_pb2_grpc.TaskingServiceStub(_channel("tasking"))
        self.worker_id, self.auth = _take_worker()
        self.think = _think()
        # Locust starts users in batches, a spawn rate's worth at the same instant once a
        # second: without this, -r 100 had 100 workers sign in at the same millisecond.
        # People arrive spread out.
        time.sleep(random.uniform(0.0, ARRIVAL_SPREAD_S))
        self.start_session()

    def start_session(self) -> None:
        request = tasking_pb2.StartSessionRequest(worker_id=self.worker_id)
        session = self.call("StartSession", lambda: self.stub.StartSession(request, timeout=10, metadata=self.auth))
        self.session_id = session.session_id if session else ""

    @task
    def work(self) -> None:
        if not self.session_id:
            self.start_session()
            return
        request = tasking_pb2.GetNextTaskRequest(session_id=self.session_id)
        reply = self.call("GetNextTask", lambda: self.stub.GetNextTask(request, timeout=10, metadata=self.auth))
        if reply is None or not reply.HasField("task"):
            time.sleep((reply.retry_after_ms if reply else 1000) / 1000.0)
            return
        leased = reply.task
        time.sleep(random.uniform(*self.think))
        if random.random() < 0.02:
            skip = tasking_pb2.SkipTaskRequest(session_id=self.session_id, lease_id=leased.lease_id, reason="load")
            self.call("SkipTask", lambda: self.stub.SkipTask(skip, timeout=10, metadata=self.auth))
            return
        label = _answer_for(leased)
        answer = common_pb2.Answer(classification=common_pb2.ClassificationAnswer(label=label))
        submit = tasking_pb2.SubmitAnswerRequest(session_id=self.session_id, lease_id=leased.lease_id, answer=answer)
        self.call("SubmitAnswer", lambda: self.stub.SubmitAnswer(submit, timeout=10, metadata=self.auth))


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
            request = ingest_pb2.GetJobRequest(job_id=job_id)
            self.call("GetJob", lambda: self.ingest.GetJob(request, timeout=10, metadata=_auth["client"]))


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
        auth = _auth["operator"]
        stats = tasking_pb2.GetTaskingStatsRequest(job_id=job_id)
        self.call("GetTaskingStats", lambda: self.tasking.GetTaskingStats(stats, timeout=10, metadata=auth))
        quality = consensus_pb2.GetJobQualityRequest(job_id=job_id)
        self.call("GetJobQuality", lambda: self.consensus.GetJobQuality(quality, timeout=10, metadata=auth))
        money = payments_pb2.GetMoneySummaryRequest(job_id=job_id)
        self.call("GetMoneySummary", lambda: self.payments.GetMoneySummary(money, timeout=10, metadata=auth))
