"""The tasking service end to end: started with quorum.service.start_service on the
real Tansu broker, fed through Kafka, called through the generated stub."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pytest
from kafka import KafkaConsumer
from quorum_testing import admin_key, worker_key
from tasking_helpers import job_created, more_answers, resolved, task_created

from quorum.messaging import Publisher, Topics, outgoing
from quorum.objectstore import content_key, open_object_store
from quorum.rpc import channel
from quorum.service import RunningService, start_service
from quorum.settings import Settings
from quorum.v1 import common_pb2, events_pb2, tasking_pb2, tasking_pb2_grpc
from services.tasking.bootstrap import build

PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 4


class Harness:
    def __init__(self, settings: Settings, running: RunningService) -> None:
        self.settings = settings
        self.running = running
        self.topics = Topics(settings.topic_prefix)
        self.address = f"127.0.0.1:{running.port}"
        # The operator's view (stats); workers call through as_worker().
        self.channel = channel(self.address, api_key=admin_key(settings))
        self.stub = tasking_pb2_grpc.TaskingServiceStub(self.channel)
        self.publisher = Publisher(settings.require_kafka(), linger_ms=0)
        self._worker_channels: dict[str, grpc.Channel] = {}
        self._session_workers: dict[str, str] = {}

    def as_worker(self, worker_id: str) -> tasking_pb2_grpc.TaskingServiceStub:
        """A stub that calls with ``worker_id``'s own worker key (issued on first use)."""
        if worker_id not in self._worker_channels:
            self._worker_channels[worker_id] = channel(self.address, api_key=worker_key(self.settings, worker_id))
        return tasking_pb2_grpc.TaskingServiceStub(self._worker_channels[worker_id])

    def worker_of(self, session: str) -> tasking_pb2_grpc.TaskingServiceStub:
        """The stub of the worker who opened ``session`` through :meth:`session`."""
        return self.as_worker(self._session_workers[session])

    def publish(self, *events: events_pb2.Event) -> None:
        records = []
        for e in events:
            kind = e.WhichOneof("payload")
            payload = getattr(e, kind)
            topic = {
                "job_created": self.topics.jobs,
                "job_sealed": self.topics.jobs,
                "task_created": self.topics.tasks,
                "more_answers_requested": self.topics.task_requests,
                "task_resolved": self.topics.results,
            }[kind]
            key = payload.job_id if topic == self.topics.jobs else payload.task_id
            records.append(outgoing(topic, key, e))
        self.publisher.send_all(records)

    def session(self, worker_id: str) -> str:
        request = tasking_pb2.StartSessionRequest(worker_id=worker_id)
        session_id = self.as_worker(worker_id).StartSession(request, timeout=5).session_id
        self._session_workers[session_id] = worker_id
        return session_id

    def next_task(self, session: str, job_id: str = "") -> tasking_pb2.GetNextTaskResponse:
        request = tasking_pb2.GetNextTaskRequest(session_id=session, job_id=job_id)
        return self.worker_of(session).GetNextTask(request, timeout=5)

    def submit(self, session: str, lease_id: str, label: str) -> str:
        answer = common_pb2.Answer(classification=common_pb2.ClassificationAnswer(label=label))
        request = tasking_pb2.SubmitAnswerRequest(session_id=session, lease_id=lease_id, answer=answer)
        return self.worker_of(session).SubmitAnswer(request, timeout=5).answer_id

    def stats(self, job_id: str = "") -> tasking_pb2.TaskingStats:
        return self.stub.GetTaskingStats(tasking_pb2.GetTaskingStatsRequest(job_id=job_id), timeout=5)

    def wait_for(self, condition: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            time.sleep(0.05)

    def close(self) -> None:
        self.publisher.close()
        self.channel.close()
        for worker_channel in self._worker_channels.values():
            worker_channel.close()
        self.running.stop()


@pytest.fixture
def start(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Harness]]:
    """Starts tasking with settings overrides; stops it after the test."""
    started: list[Harness] = []

    def run(**overrides: Any) -> Harness:
        settings = make_settings(**overrides)
        harness = Harness(settings, start_service(build, settings, address="127.0.0.1:0"))
        started.append(harness)
        return harness

    yield run
    for harness in started:
        harness.close()


def rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


def answers_on_kafka(settings: Settings, count: int, timeout: float = 20.0) -> list[Any]:
    consumer = KafkaConsumer(
        Topics(settings.topic_prefix).answers,
        bootstrap_servers=settings.require_kafka(),
        group_id=f"test-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while len(records) < count and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=200).values():
                records.extend(batch)
    finally:
        consumer.close()
    return records


@pytest.mark.slow
def test_worker_flow(start: Callable[..., Harness]) -> None:
    h = start()
    # The task arrives before its job: it waits, then goes out once the job is known.
    h.publish(task_created("t1", "j1", text="a cat on a mat"), task_created("t2", "j1"))
    h.wait_for(lambda: h.stats().tasks == 2, "the tasks to be consumed")
    alice = h.session("alice")
    empty = h.next_task(alice)
    assert not empty.HasField("task") and empty.retry_after_ms > 0
    h.publish(job_created("j1", overlap=(2, 3), instructions="Which animal?"))
    h.wait_for(lambda: h.next_task(h.session("probe")).HasField("task"), "the job to be consumed")

    task = h.next_task(alice).task
    assert task.task_id == "t1" and task.job_id == "j1"
    assert task.instructions == "Which animal?"
    assert list(task.text_classification.labels) == ["cat", "dog", "bird"]
    assert task.WhichOneof("task") == "text_classification"
    assert (task.content.content_type, task.content.WhichOneof("body"), task.content.text) == (
        "text/plain",
        "text",
        "a cat on a mat",
    )
    assert task.lease_expires_at.ToSeconds() > time.time() + 100  # the default 120 s lease

    bad = rpc_error(lambda: h.submit(alice, task.lease_id, "horse"))
    assert bad.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "answer.classification.label" in (bad.details() or "")
    unset = rpc_error(
        lambda: h.worker_of(alice).SubmitAnswer(
            tasking_pb2.SubmitAnswerRequest(session_id=alice, lease_id=task.lease_id)
        )
    )
    assert unset.code() == grpc.StatusCode.INVALID_ARGUMENT and (unset.details() or "").startswith("answer:")
    answer_id = h.submit(alice, task.lease_id, "cat")
    again = rpc_error(lambda: h.submit(alice, task.lease_id, "cat"))
    assert again.code() == grpc.StatusCode.FAILED_PRECONDITION and "already answered" in (again.details() or "")
    nothing = rpc_error(lambda: h.submit(alice, "not-a-lease", "cat"))
    assert nothing.code() == grpc.StatusCode.FAILED_PRECONDITION and "no live lease" in (nothing.details() or "")

    (record,) = answers_on_kafka(h.settings, 1)
    assert record.key == b"t1"
    accepted = events_pb2.Event.FromString(record.value).answer_accepted
    assert (accepted.answer_id, accepted.task_id, accepted.job_id, accepted.worker_id) == (
        answer_id,
        "t1",
        "j1",
        "alice",
    )
    assert accepted.answer.classification.label == "cat" and not accepted.gold

    stats = h.stats("j1")
    assert (stats.tasks, stats.backlog, stats.answers, stats.active_leases) == (2, 2, 1, 1)
    assert stats.workers >= 1 and sum(m.count for m in stats.answered_per_minute) == 1


def test_bad_requests_name_the_field(start: Callable[..., Harness]) -> None:
    h = start()
    w = h.as_worker("w")
    cases: list[tuple[Callable[[], Any], grpc.StatusCode, str]] = [
        # A worker key opens sessions as its own worker only, whatever id the request names.
        (
            lambda: w.StartSession(tasking_pb2.StartSessionRequest(worker_id="has space")),
            grpc.StatusCode.PERMISSION_DENIED,
            "worker_id",
        ),
        (
            lambda: w.StartSession(tasking_pb2.StartSessionRequest(worker_id="someone-else")),
            grpc.StatusCode.PERMISSION_DENIED,
            "worker_id",
        ),
        (
            lambda: h.stub.StartSession(tasking_pb2.StartSessionRequest(worker_id="w")),
            grpc.StatusCode.PERMISSION_DENIED,
            "not to admin keys",
        ),
        (
            lambda: w.GetNextTask(tasking_pb2.GetNextTaskRequest(session_id="")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "session_id",
        ),
        (
            lambda: w.GetNextTask(tasking_pb2.GetNextTaskRequest(session_id="unknown")),
            grpc.StatusCode.NOT_FOUND,
            "session",
        ),
        (lambda: h.next_task(h.session("w"), job_id="j" * 300), grpc.StatusCode.INVALID_ARGUMENT, "job_id"),
        (
            lambda: w.Heartbeat(tasking_pb2.HeartbeatRequest(session_id=h.session("w"), lease_id="")),
            grpc.StatusCode.INVALID_ARGUMENT,
            "lease_id",
        ),
        (
            lambda: w.Heartbeat(tasking_pb2.HeartbeatRequest(session_id=h.session("w"), lease_id="gone")),
            grpc.StatusCode.FAILED_PRECONDITION,
            "no live lease",
        ),
        (
            lambda: w.SkipTask(tasking_pb2.SkipTaskRequest(session_id=h.session("w"), lease_id="gone")),
            grpc.StatusCode.FAILED_PRECONDITION,
            "no live lease",
        ),
        (
            lambda: h.stub.GetTaskingStats(tasking_pb2.GetTaskingStatsRequest(job_id="j" * 300)),
            grpc.StatusCode.INVALID_ARGUMENT,
            "job_id",
        ),
    ]
    for call, code, words in cases:
        error = rpc_error(call)
        assert error.code() == code, (words, error)
        assert words in (error.details() or ""), (words, error.details())
    # No worker id in the request: the session is the key's own worker's.
    own = w.StartSession(tasking_pb2.StartSessionRequest(worker_id=""), timeout=5).session_id
    assert not w.GetNextTask(tasking_pb2.GetNextTaskRequest(session_id=own), timeout=5).HasField("task")


@pytest.mark.slow
def test_leases_expire_and_consensus_events_steer_handouts(start: Callable[..., Harness]) -> None:
    h = start()
    h.publish(job_created("j1", overlap=(1, 3), lease_seconds=1), task_created("t1", "j1"))
    h.wait_for(lambda: h.stats("j1").backlog == 1, "the task")
    alice, bob, carol = h.session("alice"), h.session("bob"), h.session("carol")
    held = h.next_task(alice).task
    assert held.task_id == "t1"
    assert not h.next_task(bob).HasField("task")
    time.sleep(1.15)
    taken = h.next_task(bob).task
    assert taken.task_id == "t1"
    late = rpc_error(lambda: h.submit(alice, held.lease_id, "cat"))
    assert late.code() == grpc.StatusCode.FAILED_PRECONDITION
    beat = h.worker_of(bob).Heartbeat(tasking_pb2.HeartbeatRequest(session_id=bob, lease_id=taken.lease_id))
    assert beat.lease_expires_at.ToMilliseconds() >= taken.lease_expires_at.ToMilliseconds()
    h.submit(bob, taken.lease_id, "dog")
    assert not h.next_task(carol).HasField("task")

    # Consensus wants a second answer: the task goes out again, then is resolved.
    h.publish(more_answers("t1", "j1", 2))
    h.wait_for(lambda: h.next_task(carol).HasField("task"), "MoreAnswersRequested")
    h.publish(resolved("t1", "j1"))
    h.wait_for(lambda: h.stats("j1").backlog == 0, "TaskResolved")
    assert not h.next_task(h.session("dave")).HasField("task")
    assert not h.next_task(alice).HasField("task")  # its lease expired: never again for alice


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
def test_images_and_gold_on_postgres_redis_and_s3(
    start: Callable[..., Harness], postgres_settings: dict[str, Any], redis_url: str, s3_settings: dict[str, Any]
) -> None:
    h = start(redis_url=redis_url, **postgres_settings, **s3_settings)
    store = open_object_store(h.settings)
    gold_png = PNG + b"gold"
    plain_pngs = [PNG + bytes([i]) for i in range(4)]
    for data in (gold_png, *plain_pngs):
        store.put(content_key(data), data, "image/png")
    h.publish(
        # Gold is mixed into real work: with a share of 0.9 the gold task comes out within
        # the four real ones except with probability 0.1 ** 4.
        job_created("img", kind="image", overlap=(1, 1), gold_share=0.9),
        task_created("g1", "img", text="", gold=True, object_key=content_key(gold_png), content_type="image/png"),
        *(
            task_created(f"p{i}", "img", text="", object_key=content_key(data), content_type="image/png")
            for i, data in enumerate(plain_pngs)
        ),
    )
    h.wait_for(lambda: h.stats("img").tasks == 5, "the image tasks")
    worker = h.session("alice")
    by_id = {}
    while (response := h.next_task(worker)).HasField("task"):
        by_id[response.task.task_id] = response.task
    assert set(by_id) == {"g1", "p0", "p1", "p2", "p3"}
    assert by_id["g1"].content.data == gold_png
    assert [by_id[f"p{i}"].content.data for i in range(4)] == plain_pngs
    # Gold looks like any other task: the same fields set, no gold flag, no known answer.
    assert {f.name for f, _ in by_id["g1"].ListFields()} == {f.name for f, _ in by_id["p0"].ListFields()}
    assert {t.WhichOneof("task") for t in by_id.values()} == {"image_classification"}
    assert "gold" not in {f.name for f in tasking_pb2.WorkerTask.DESCRIPTOR.fields}
    assert all(t.content.content_type == "image/png" for t in by_id.values())
    for task in by_id.values():
        h.submit(worker, task.lease_id, "cat")
    records = answers_on_kafka(h.settings, 5)
    gold_flags = {r.key.decode(): events_pb2.Event.FromString(r.value).answer_accepted.gold for r in records}
    assert gold_flags == {"g1": True, "p0": False, "p1": False, "p2": False, "p3": False}
    assert h.stats().gold_tasks == 1


def test_staff_suspend_a_worker_who_is_then_told_why(start: Callable[..., Harness]) -> None:
    h = start()
    h.publish(job_created("j1", overlap=(2, 2)), task_created("t1", "j1"))
    h.wait_for(lambda: h.next_task(h.session("probe")).HasField("task"), "the job to be consumed")
    mallory = h.session("mallory")

    status = h.stub.SuspendWorker(
        tasking_pb2.SuspendWorkerRequest(worker_id="mallory", reason="bot answers"), timeout=5
    )
    assert (status.suspended, status.suspended_by_operator, status.reason) == (True, True, "bot answers")
    assert status.changed_by.startswith("admin:") and status.HasField("changed_at")
    refused = rpc_error(lambda: h.next_task(mallory))
    assert refused.code() == grpc.StatusCode.PERMISSION_DENIED
    assert refused.details() == "worker mallory is suspended: bot answers"
    no_reason = rpc_error(
        lambda: h.stub.SuspendWorker(tasking_pb2.SuspendWorkerRequest(worker_id="mallory"), timeout=5)
    )
    assert no_reason.code() == grpc.StatusCode.INVALID_ARGUMENT and (no_reason.details() or "").startswith("reason:")

    listed = h.stub.ListWorkerStatuses(tasking_pb2.ListWorkerStatusesRequest(suspended_only=True), timeout=5)
    assert [w.worker_id for w in listed.workers] == ["mallory"] and not listed.next_page_token
    h.stub.ReinstateWorker(tasking_pb2.ReinstateWorkerRequest(worker_id="mallory"), timeout=5)
    assert not h.stub.GetWorkerStatus(tasking_pb2.GetWorkerStatusRequest(worker_id="mallory"), timeout=5).suspended
    assert h.next_task(mallory).HasField("task")
