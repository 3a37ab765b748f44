"""Backpressure from consumer lag: the lag read from the real broker, the monitor's
decisions, and tasking and ingest refusing new work (RESOURCE_EXHAUSTED with a
``retry-after-ms`` hint) while the consumers downstream are behind, then accepting it
again once they caught up, with nothing accepted lost."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import grpc
import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata
from quorum_testing import admin_key, worker_key

from quorum.lag import ConsumerLagReader, LagMonitor, partition_lag, retry_after_ms
from quorum.messaging import EventConsumer, Publisher, Topics, ensure_topics, outgoing
from quorum.rpc import channel
from quorum.security.keyhash import load_key_hasher
from quorum.service import OutboxSignal, RunningService, ServiceContext, start_service
from quorum.settings import Settings
from quorum.v1 import common_pb2, events_pb2, ingest_pb2, ingest_pb2_grpc, tasking_pb2, tasking_pb2_grpc
from services.ingest.bootstrap import build as build_ingest
from services.tasking.bootstrap import build as build_tasking

pytestmark = [pytest.mark.timeout(120)]


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def published(service: RunningService) -> None:
    """Waits until the service's outbox is empty. Publishing one event at a time keeps each
    in a batch of its own: Tansu reports the end of a partition as the start of its last
    batch plus one, so records batched together would count as one (see quorum.lag)."""
    relay = service.relay
    assert relay is not None
    wait_until(lambda: relay.pending() == 0, "the outbox to be published")


def refusal(call: Callable[[], Any]) -> tuple[grpc.StatusCode, dict[str, str]]:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    error: Any = caught.value
    return error.code(), dict(error.trailing_metadata() or ())


# ------------------------------------------------------------------------ the pure parts


@pytest.mark.parametrize(
    ("committed", "earliest", "latest", "lag"),
    [(None, 0, 10, 10), (-1, 3, 10, 7), (4, 0, 10, 6), (10, 0, 10, 0), (12, 0, 10, 0)],
)
def test_partition_lag_counts_from_the_commit_or_the_start(
    committed: int | None, earliest: int, latest: int, lag: int
) -> None:
    assert partition_lag(committed, earliest, latest) == lag


@pytest.mark.parametrize(
    ("excess", "rate", "interval_s", "hint"),
    [
        (500, None, 2.0, 2000),  # no rate yet: one reading interval
        (500, -10.0, 2.0, 2000),  # the lag grew
        (500, 100.0, 2.0, 5000),  # 5 s at 100 records/s
        (10, 100.0, 2.0, 2000),  # never sooner than the next reading
        (10**6, 1.0, 2.0, 30_000),  # never longer than 30 s
    ],
)
def test_the_retry_hint_follows_how_fast_the_consumers_drain(
    excess: int, rate: float | None, interval_s: float, hint: int
) -> None:
    assert retry_after_ms(excess, rate, interval_s) == hint


class Readings:
    """Lag readings to hand out in turn, an exception standing for a broker that is down."""

    def __init__(self, *readings: dict[str, int] | Exception) -> None:
        self._readings = list(readings)
        self.asked: list[Mapping[str, Sequence[str]]] = []

    def __call__(self, groups: Mapping[str, Sequence[str]]) -> dict[str, int]:
        self.asked.append(groups)
        reading = self._readings.pop(0)
        if isinstance(reading, Exception):
            raise reading
        return reading


def test_the_monitor_refuses_above_the_limit_and_fails_open_when_blind(caplog: pytest.LogCaptureFixture) -> None:
    now = [100.0]
    readings = Readings(
        {"a": 5, "b": 0},
        {"a": 30, "b": 0},
        {"a": 20, "b": 0},
        ConnectionError("broker down"),
        ConnectionError("still down"),
        {"a": 11, "b": 12},
    )
    monitor = LagMonitor(
        readings, lambda: {"a": ["answers"], "b": ["answers"]}, max_lag=10, interval_s=1.0, clock=lambda: now[0]
    )
    assert monitor.overloaded() is None, "nothing read yet: accept"
    assert monitor.poll_once() and monitor.overloaded() is None
    now[0] += 1
    assert monitor.poll_once() and monitor.overloaded() == 1000  # grew: one interval
    now[0] += 2
    # 10 records drained in 2 s, 10 over the limit: 2 s.
    assert monitor.poll_once() and monitor.overloaded() == 2000
    assert monitor.lag == {"a": 20, "b": 0}
    now[0] += 100
    assert monitor.overloaded() is None, "a reading this old says nothing: accept"
    now[0] -= 100

    with caplog.at_level(logging.WARNING, logger="quorum.lag"):
        assert not monitor.poll_once() and not monitor.poll_once()
    assert monitor.overloaded() is None and monitor.failing and monitor.lag == {}
    assert [r.getMessage() for r in caplog.records].count(
        "consumer lag unknown, accepting work until it can be read again: broker down"
    ) == 1, "one warning per outage"
    assert monitor.poll_once() and not monitor.failing
    assert monitor.overloaded() == 1000, "b is the furthest over; no rate across the outage"
    assert readings.asked == [{"a": ["answers"], "b": ["answers"]}] * 6


# ------------------------------------------------------------------ reading lag from the broker


def test_lag_is_read_from_committed_offsets_on_the_real_broker(kafka_bootstrap: str, topic_prefix: str) -> None:
    topics = Topics(topic_prefix)
    ensure_topics(kafka_bootstrap, [topics.answers, topics.tasks], partitions=3)
    zero, one = TopicPartition(topics.answers, 0), TopicPartition(topics.answers, 1)
    producer = KafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", linger_ms=50)
    try:
        for _ in range(5):  # one batch each
            producer.send(topics.answers, b"x", partition=0).get(timeout=10)
        # One batch of ten: Tansu's ListOffsets "latest" then says 1, not 10.
        batch = [producer.send(topics.answers, b"y", partition=1) for _ in range(10)]
        producer.flush()
        assert [f.get(timeout=10).offset for f in batch] == list(range(10))
        producer.send(topics.tasks, b"z", partition=2).get(timeout=10)
    finally:
        producer.close()
    done, half, nobody = (f"{topic_prefix}.{name}" for name in ("done", "half", "nobody"))
    commit(kafka_bootstrap, done, {zero: 5, one: 10})
    commit(kafka_bootstrap, half, {zero: 2})

    reader = ConsumerLagReader(kafka_bootstrap)
    try:
        lag = reader.read({done: [topics.answers], half: [topics.answers], nobody: [topics.answers, topics.tasks]})
    finally:
        reader.close()
    # The end of partition 1 is known from the group that consumed all of it.
    assert lag == {done: 0, half: 3 + 10, nobody: 5 + 10 + 1}


def commit(bootstrap: str, group: str, offsets: dict[TopicPartition, int]) -> None:
    committer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    try:
        committer.assign(list(offsets))
        committer.commit({tp: OffsetAndMetadata(offset, "", -1) for tp, offset in offsets.items()})
    finally:
        committer.close(autocommit=False)


def test_reading_lag_from_a_broker_that_is_down_raises() -> None:
    from kafka.errors import KafkaError

    from quorum.broker import free_port

    reader = ConsumerLagReader(f"127.0.0.1:{free_port()}", request_timeout_ms=1000)
    with pytest.raises((KafkaError, OSError)):
        reader.read({"g": ["answers"]})
    reader.close()


# ------------------------------------------------------------- the services holding back work


def test_every_downstream_consumer_is_one_a_service_runs(make_settings: Callable[..., Settings]) -> None:
    """A misspelt group would never commit: its lag would grow until the intake closed."""
    from services.access.bootstrap import build as build_access
    from services.consensus.bootstrap import build as build_consensus
    from services.payments.bootstrap import build as build_payments

    settings = make_settings()
    context = ServiceContext(settings, Topics(settings.topic_prefix), OutboxSignal(), load_key_hasher(settings))
    built = [build(context) for build in (build_ingest, build_tasking, build_consensus, build_payments, build_access)]
    try:
        consumed = {f"{parts.name}.{spec.name}": set(spec.topics) for parts in built for spec in parts.consumers}
        watched = [(parts.name, d) for parts in built for d in parts.downstream]
        assert {name for name, _ in watched} == {"ingest", "tasking"}
        for name, d in watched:
            assert d.consumer in consumed, f"{name} watches {d.consumer}, which no service runs"
            assert set(d.topics) <= consumed[d.consumer], f"{d.consumer} does not read all of {d.topics}"
    finally:
        for parts in built:
            for close in parts.closers:
                close()
            parts.engine.dispose()


def answer_event(answer_id: str) -> events_pb2.Event:
    return events_pb2.Event(
        event_id=uuid.uuid4().hex, answer_accepted=events_pb2.AnswerAccepted(answer_id=answer_id, task_id=answer_id)
    )


class Downstream:
    """Real consumers standing in for another service's: groups named as that service's
    are, collecting every event they are handed."""

    def __init__(self, bootstrap: str, topics: Topics, generation: str) -> None:
        self._bootstrap = bootstrap
        self._topics = topics
        self._generation = generation
        self.consumers: list[EventConsumer] = []
        self.seen: dict[str, list[events_pb2.Event]] = {}

    def start(self, consumer: str, topics: Sequence[str]) -> None:
        seen = self.seen.setdefault(consumer, [])
        started = EventConsumer(
            self._bootstrap, self._topics.group(consumer, self._generation), topics, seen.extend, name=consumer
        )
        started.start()
        self.consumers.append(started)

    def stop(self) -> None:
        for consumer in self.consumers:
            consumer.stop()


@pytest.fixture
def downstream() -> Iterator[Callable[[RunningService, Settings], Downstream]]:
    made: list[Downstream] = []

    def make(service: RunningService, settings: Settings) -> Downstream:
        assert service.watch is not None
        made.append(Downstream(settings.require_kafka(), Topics(settings.topic_prefix), service.watch.generation))
        return made[-1]

    yield make
    for d in made:
        d.stop()


def test_tasking_stops_handing_out_tasks_while_consensus_and_payments_are_behind(
    make_settings: Callable[..., Settings], downstream: Callable[[RunningService, Settings], Downstream]
) -> None:
    settings = make_settings(max_consumer_lag=2, consumer_lag_poll_s=0.1)
    topics = Topics(settings.topic_prefix)
    service = start_service(build_tasking, settings, address="127.0.0.1:0")
    publisher = Publisher(settings.require_kafka(), linger_ms=0)
    try:
        spec = common_pb2.JobSpec(
            name="lag", client_id="acme", overlap=common_pb2.Overlap(min=1, max=1), instructions="Pick one."
        )
        spec.text_classification.labels.extend(["yes", "no"])
        job = events_pb2.Event(event_id=uuid.uuid4().hex, job_created=events_pb2.JobCreated(job_id="j", spec=spec))
        records = [outgoing(topics.jobs, "j", job)]
        for i in range(6):
            task = events_pb2.TaskCreated(task_id=f"t{i}", job_id="j", item_id=f"i{i}", text=f"text {i}")
            records.append(
                outgoing(topics.tasks, f"t{i}", events_pb2.Event(event_id=uuid.uuid4().hex, task_created=task))
            )
        publisher.send_all(records)
        with channel(f"127.0.0.1:{service.port}", api_key=worker_key(settings, "w")) as ch:
            stub = tasking_pb2_grpc.TaskingServiceStub(ch)
            session = stub.StartSession(tasking_pb2.StartSessionRequest(worker_id="w"), timeout=5).session_id

            def next_task() -> tasking_pb2.GetNextTaskResponse:
                return stub.GetNextTask(tasking_pb2.GetNextTaskRequest(session_id=session), timeout=5)

            def submit(lease_id: str) -> str:
                answer = common_pb2.Answer(classification=common_pb2.ClassificationAnswer(label="yes"))
                request = tasking_pb2.SubmitAnswerRequest(session_id=session, lease_id=lease_id, answer=answer)
                return stub.SubmitAnswer(request, timeout=5).answer_id

            wait_until(lambda: service.lag is not None and service.lag.lag != {}, "a first lag reading")
            leases: list[str] = []
            while len(leases) < 4:
                reply = next_task()
                if reply.HasField("task"):
                    leases.append(reply.task.lease_id)
                else:
                    time.sleep(0.05)  # the tasks are still on their way from the broker
            accepted = []
            for lease in leases[:3]:
                accepted.append(submit(lease))
                published(service)
            lag = service.lag
            assert lag is not None
            wait_until(lambda: lag.overloaded() is not None, "the answers to count as lag")

            code, trailers = refusal(next_task)
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert int(trailers["retry-after-ms"]) >= 100
            # Work already handed out is still taken.
            accepted.append(submit(leases[3]))

            late = downstream(service, settings)
            late.start("consensus.events", [topics.answers])
            late.start("payments.ledger", [topics.answers])
            wait_until(lambda: lag.overloaded() is None, "consensus and payments to catch up")
            assert next_task().HasField("task")

        for consumer in ("consensus.events", "payments.ledger"):
            got = sorted({e.answer_accepted.answer_id for e in late.seen[consumer]})
            assert got == sorted(accepted), f"{consumer} did not get every accepted answer"
    finally:
        publisher.close()
        service.stop()


def test_ingest_refuses_new_objects_while_tasking_and_consensus_are_behind(
    make_settings: Callable[..., Settings], downstream: Callable[[RunningService, Settings], Downstream]
) -> None:
    settings = make_settings(max_consumer_lag=2, consumer_lag_poll_s=0.1)
    topics = Topics(settings.topic_prefix)
    service = start_service(build_ingest, settings, address="127.0.0.1:0")
    try:
        with channel(f"127.0.0.1:{service.port}", api_key=admin_key(settings)) as ch:
            stub = ingest_pb2_grpc.IngestServiceStub(ch)
            spec = common_pb2.JobSpec(name="lag", client_id="acme", overlap=common_pb2.Overlap(min=1, max=1))
            spec.text_classification.labels.extend(["yes", "no"])
            job_id = stub.CreateJob(ingest_pb2.CreateJobRequest(spec=spec), timeout=10).job_id

            def manifest(*ids: str) -> ingest_pb2.ImportManifestRequest:
                lines = "\n".join(json.dumps({"id": i, "text": f"the text {i}"}) for i in ids)
                return ingest_pb2.ImportManifestRequest(
                    job_id=job_id, format=ingest_pb2.MANIFEST_FORMAT_JSONL, content=lines.encode()
                )

            first = []
            for name in ("a", "b", "c"):
                first.extend(stub.ImportManifest(manifest(name), timeout=10).items)
                published(service)
            lag = service.lag
            assert lag is not None
            wait_until(lambda: lag.overloaded() is not None, "the tasks to count as lag")

            code, trailers = refusal(lambda: stub.ImportManifest(manifest("d"), timeout=10))
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and int(trailers["retry-after-ms"]) >= 100
            upload = ingest_pb2.UploadChunk(job_id=job_id, filename="e.txt", data=b"e", end_of_file=True)
            code, trailers = refusal(lambda: stub.UploadFiles(iter([upload]), timeout=10))
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "retry-after-ms" in trailers
            assert stub.GetJob(ingest_pb2.GetJobRequest(job_id=job_id), timeout=5).job_id == job_id

            late = downstream(service, settings)
            late.start("tasking.events", [topics.tasks])
            late.start("consensus.events", [topics.tasks])
            wait_until(lambda: lag.overloaded() is None, "tasking and consensus to catch up")
            second = stub.ImportManifest(manifest("d"), timeout=10)

        imported = sorted(item.name for item in [*first, *second.items])
        assert imported == ["a", "b", "c", "d"]
        items = sorted(item.item_id for item in [*first, *second.items])

        def read_by(consumer: str) -> list[str]:
            return sorted(e.task_created.item_id for e in late.seen[consumer])

        wait_until(lambda: all(len(read_by(c)) >= 4 for c in late.seen), "tasking and consensus to read every task")
        assert read_by("tasking.events") == items and read_by("consensus.events") == items
    finally:
        service.stop()
