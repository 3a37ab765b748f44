"""End to end: the consensus service with a real broker and database, fed through Kafka and
queried over gRPC, the way tasking, payments and the dashboard use it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import closing

import grpc
import pytest
from consensus_helpers import answer_accepted, job_created, task_created
from kafka import KafkaConsumer
from quorum_testing import admin_key

from quorum.messaging import Publisher, Topics, outgoing
from quorum.rpc import channel
from quorum.service import RunningService, start_service
from quorum.settings import Settings
from quorum.v1 import common_pb2, consensus_pb2, consensus_pb2_grpc, events_pb2
from services.consensus.bootstrap import build


@pytest.fixture(params=["sqlite", "postgres"])
def settings(request: pytest.FixtureRequest, make_settings: Callable[..., Settings]) -> Settings:
    if request.param == "postgres":
        return make_settings(**request.getfixturevalue("postgres_settings"))
    return make_settings()


@pytest.fixture
def running(settings: Settings, kafka_bootstrap: str) -> Iterator[RunningService]:
    service = start_service(build, settings, address="127.0.0.1:0")
    try:
        # Wait until the consumer has joined its group and handed a batch to the handler: an
        # event consensus ignores proves it, and stopping mid-join would stall the teardown.
        probe = events_pb2.Event(job_sealed=events_pb2.JobSealed(job_id="probe"))
        with closing(Publisher(kafka_bootstrap, linger_ms=0)) as pub:
            pub.send_all([outgoing(Topics(settings.topic_prefix).jobs, "probe", probe)])
        deadline = time.monotonic() + 30
        while not service.consumers[0].processed:
            assert time.monotonic() < deadline, "the consensus consumer never received the probe"
            assert service.healthy(), "a consumer or background thread died"
            time.sleep(0.05)
        yield service
    finally:
        service.stop()


@pytest.fixture
def stub(running: RunningService, settings: Settings) -> Iterator[consensus_pb2_grpc.ConsensusServiceStub]:
    with channel(f"127.0.0.1:{running.port}", api_key=admin_key(settings)) as ch:
        yield consensus_pb2_grpc.ConsensusServiceStub(ch)


@pytest.fixture
def publisher(kafka_bootstrap: str) -> Iterator[Publisher]:
    pub = Publisher(kafka_bootstrap, linger_ms=0)
    try:
        yield pub
    finally:
        pub.close()


class Observer:
    """Reads what the service publishes on the task-requests and results topics."""

    def __init__(self, bootstrap: str, topics: Topics) -> None:
        self.consumer = KafkaConsumer(
            topics.task_requests,
            topics.results,
            bootstrap_servers=bootstrap,
            group_id=f"{topics.prefix}.observer.{uuid.uuid4().hex[:8]}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
        )
        self.seen: list[tuple[str, str, events_pb2.Event]] = []

    def wait_for(
        self, ready: Callable[[list[events_pb2.Event]], bool], timeout: float = 30.0
    ) -> list[events_pb2.Event]:
        deadline = time.monotonic() + timeout
        while not ready([e for _, _, e in self.seen]):
            if time.monotonic() > deadline:
                kinds = [e.WhichOneof("payload") for _, _, e in self.seen]
                raise AssertionError(f"timed out; saw {kinds}")
            for records in self.consumer.poll(timeout_ms=200).values():
                for record in records:
                    self.seen.append((record.topic, record.key.decode(), events_pb2.Event.FromString(record.value)))
        return [e for _, _, e in self.seen]

    def close(self) -> None:
        self.consumer.close(autocommit=False)


@pytest.fixture
def observer(kafka_bootstrap: str, settings: Settings) -> Iterator[Observer]:
    obs = Observer(kafka_bootstrap, Topics(settings.topic_prefix))
    try:
        yield obs
    finally:
        obs.close()


def publish(publisher: Publisher, topics: Topics, events: list[events_pb2.Event]) -> None:
    records = []
    for event in events:
        kind = event.WhichOneof("payload")
        if kind == "job_created":
            records.append(outgoing(topics.jobs, event.job_created.job_id, event))
        elif kind == "task_created":
            records.append(outgoing(topics.tasks, event.task_created.task_id, event))
        else:
            records.append(outgoing(topics.answers, event.answer_accepted.task_id, event))
    publisher.send_all(records)


def resolved_ids(events: list[events_pb2.Event]) -> set[str]:
    return {e.task_resolved.task_id for e in events if e.WhichOneof("payload") == "task_resolved"}


@pytest.mark.slow
def test_answers_through_kafka_become_labels_and_figures(
    running: RunningService,
    stub: consensus_pb2_grpc.ConsensusServiceStub,
    publisher: Publisher,
    observer: Observer,
    settings: Settings,
) -> None:
    topics = Topics(settings.topic_prefix)
    # t3's answers come before its task, and everything comes before the job.
    publish(
        publisher,
        topics,
        [
            *(answer_accepted("t3", "j1", w, "bird") for w in ("w1", "w2", "w3")),
            task_created("g1", "j1", gold_label="cat"),
            task_created("t1", "j1"),
            task_created("t2", "j1"),
            answer_accepted("g1", "j1", "w1", "cat"),
            answer_accepted("g1", "j1", "w2", "cat"),
            *(answer_accepted("t1", "j1", w, "dog") for w in ("w1", "w2", "w3")),
            answer_accepted("t2", "j1", "w1", "cat"),
            answer_accepted("t2", "j1", "w2", "dog"),
            answer_accepted("t2", "j1", "w3", "cat"),
        ],
    )
    publish(publisher, topics, [job_created("j1", overlap=(3, 4), target=0.9), task_created("t3", "j1")])

    seen = observer.wait_for(
        lambda es: {"t1", "t3"} <= resolved_ids(es) and any(e.HasField("more_answers_requested") for e in es)
    )
    [request] = [e.more_answers_requested for e in seen if e.HasField("more_answers_requested")]
    assert (request.task_id, request.job_id, request.answers_wanted) == ("t2", "j1", 4)
    assert {(topic, key) for topic, key, e in observer.seen if e.HasField("more_answers_requested")} == {
        (topics.task_requests, "t2")
    }

    # Tasking hands the task to a fourth worker, who disagrees: resolved at overlap.max.
    publish(publisher, topics, [answer_accepted("t2", "j1", "w4", "bird")])
    seen = observer.wait_for(lambda es: "t2" in resolved_ids(es))
    resolved = {e.task_resolved.task_id: e.task_resolved for e in seen if e.HasField("task_resolved")}
    assert set(resolved) == {"t1", "t2", "t3"}  # never the gold task
    assert resolved["t2"].low_confidence and resolved["t2"].label.classification.label == "cat"
    assert {(topic, key) for topic, key, e in observer.seen if e.HasField("task_resolved")} == {
        (topics.results, t) for t in ("t1", "t2", "t3")
    }

    result = stub.GetResult(consensus_pb2.GetResultRequest(task_id="t1"), timeout=5)
    assert result.label.classification.label == "dog" and result.majority_label.classification.label == "dog"
    assert (result.job_id, result.item_id, result.object_name, result.version) == ("j1", "item-t1", "t1.jpg", 1)
    assert [a.worker_id for a in result.answers] == ["w1", "w2", "w3"]
    assert all(0 < a.weight < 1 for a in result.answers)
    assert result.resolved_at.seconds > 0

    exported = list(stub.ExportResults(consensus_pb2.ExportResultsRequest(job_id="j1"), timeout=5))
    assert [(r.task_id, r.label.classification.label) for r in exported] == [
        ("t1", "dog"),
        ("t2", "cat"),
        ("t3", "bird"),
    ]

    quality = stub.GetJobQuality(consensus_pb2.GetJobQualityRequest(job_id="j1"), timeout=5)
    assert (quality.tasks, quality.resolved, quality.low_confidence, quality.answers) == (3, 3, 1, 10)
    assert (quality.gold_answers, quality.gold_accuracy) == (2, 1.0)
    assert quality.agreement == pytest.approx((1 + 0.5 + 1) / 3)
    assert 0.5 < quality.mean_confidence == quality.estimated_accuracy < 1
    assert quality.ttr_p99_seconds >= quality.ttr_p50_seconds >= 0
    assert sum(m.count for m in quality.resolved_per_minute) == 3
    assert stub.GetJobQuality(consensus_pb2.GetJobQualityRequest(), timeout=5) == quality

    workers = {w.worker_id: w for w in stub.ListWorkers(consensus_pb2.ListWorkersRequest(job_id="j1")).workers}
    assert set(workers) == {"w1", "w2", "w3", "w4"}
    assert (workers["w1"].answers, workers["w1"].gold_answers, workers["w1"].gold_correct) == (4, 1, 1)
    assert workers["w4"].agreement == 0.0 and workers["w1"].agreement == 1.0
    assert workers["w1"].reliability > workers["w4"].reliability
    assert running.healthy()


@pytest.mark.slow
@pytest.mark.parametrize("settings", ["sqlite"], indirect=True)
def test_bad_requests_get_clear_errors(stub: consensus_pb2_grpc.ConsensusServiceStub) -> None:
    cases: list[tuple[Callable[..., object], object, grpc.StatusCode, str]] = [
        (stub.GetResult, consensus_pb2.GetResultRequest(), grpc.StatusCode.INVALID_ARGUMENT, "task_id: required"),
        (
            stub.GetResult,
            consensus_pb2.GetResultRequest(task_id="x" * 201),
            grpc.StatusCode.INVALID_ARGUMENT,
            "task_id: longer than 200",
        ),
        (stub.GetResult, consensus_pb2.GetResultRequest(task_id="nope"), grpc.StatusCode.NOT_FOUND, "nope"),
        (
            lambda r, timeout: list(stub.ExportResults(r, timeout=timeout)),
            consensus_pb2.ExportResultsRequest(),
            grpc.StatusCode.INVALID_ARGUMENT,
            "job_id: required",
        ),
        (
            lambda r, timeout: list(stub.ExportResults(r, timeout=timeout)),
            consensus_pb2.ExportResultsRequest(job_id="nope"),
            grpc.StatusCode.NOT_FOUND,
            "job 'nope'",
        ),
        (
            stub.GetJobQuality,
            consensus_pb2.GetJobQualityRequest(job_id=" j1"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "job_id: has leading or trailing whitespace",
        ),
        (
            stub.ListWorkers,
            consensus_pb2.ListWorkersRequest(job_id="x" * 300),
            grpc.StatusCode.INVALID_ARGUMENT,
            "job_id: longer than 200",
        ),
        (
            stub.ListReviewTasks,
            consensus_pb2.ListReviewTasksRequest(page_size=5000),
            grpc.StatusCode.INVALID_ARGUMENT,
            "page_size",
        ),
        (
            stub.SubmitReview,
            consensus_pb2.SubmitReviewRequest(task_id="t", reviewer_id="r"),
            grpc.StatusCode.INVALID_ARGUMENT,
            "label: an answer is required",
        ),
        (
            stub.SubmitReview,
            consensus_pb2.SubmitReviewRequest(
                task_id="nope",
                reviewer_id="r",
                label=common_pb2.Answer(classification=common_pb2.ClassificationAnswer(label="cat")),
            ),
            grpc.StatusCode.NOT_FOUND,
            "task 'nope'",
        ),
    ]
    for call, request, code, detail in cases:
        with pytest.raises(grpc.RpcError) as failure:
            call(request, timeout=5)
        assert failure.value.code() == code, detail
        assert detail in failure.value.details()
    # An unknown job has no figures yet, which is not an error for a dashboard.
    assert stub.GetJobQuality(consensus_pb2.GetJobQualityRequest(job_id="nope"), timeout=5).tasks == 0
    assert len(stub.ListWorkers(consensus_pb2.ListWorkersRequest(), timeout=5).workers) == 0
