"""Garbage on every topic a service consumes: each service, started for real on the
Tansu broker, must stay healthy, dead-letter what it cannot decode, skip events that
name jobs or tasks it does not know, and go on to process the good event after them."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pytest
import sqlalchemy as sa
from grpc_health.v1 import health_pb2, health_pb2_grpc
from kafka import KafkaConsumer

from quorum.db import OutgoingEvent, add_messaging_tables, make_engine
from quorum.messaging import Publisher, Topics
from quorum.rpc import channel
from quorum.service import RunningService, ServiceContext, ServiceParts, start_service
from quorum.settings import ServiceName, Settings
from quorum.v1 import common_pb2, events_pb2
from services.access import bootstrap as access_bootstrap
from services.access.audit import audit_log
from services.consensus import bootstrap as consensus_bootstrap
from services.payments import bootstrap as payments_bootstrap
from services.tasking import bootstrap as tasking_bootstrap

pytestmark = [pytest.mark.timeout(120)]

BUILDS: dict[ServiceName, Callable[[ServiceContext], ServiceParts]] = {
    "tasking": tasking_bootstrap.build,
    "consensus": consensus_bootstrap.build,
    "payments": payments_bootstrap.build,
    "access": access_bootstrap.build,
}
# Every (service, topic) pair a service consumes, by Topics attribute.
# One topic per consumer: a consumer decodes every topic it reads alike, and the
# well-formed strangers published with the garbage carry every payload kind, so each
# service's handler meets unknown jobs and tasks of every kind it handles.
CONSUMED = [
    ("tasking", "task_requests"),
    ("consensus", "answers"),
    ("payments", "results"),
    ("access", "audit"),
]
HUGE = 700 * 1024


def eid() -> str:
    return uuid.uuid4().hex


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def with_unknown_field(event: events_pb2.Event, payload: bytes) -> bytes:
    """``event`` plus a length-delimited field 999, which no version of Event defines:
    what a newer producer's payload looks like to this consumer."""
    return event.SerializeToString() + varint(999 << 3 | 2) + varint(len(payload)) + payload


def malformed_records() -> list[bytes]:
    """Records no consumer can use: each must be dead-lettered."""
    return [
        b"\x0a\xff\x01truncated",  # a length prefix longer than the record
        b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",  # a tag that is not a varint
        b"",  # an empty record: an Event with neither id nor payload
        events_pb2.Event(event_id=eid()).SerializeToString(),  # an id, no payload
        with_unknown_field(events_pb2.Event(event_id=eid()), b"from the future"),  # an unknown payload
        events_pb2.Event(
            task_resolved=events_pb2.TaskResolved(task_id="t-1", job_id="j-1")
        ).SerializeToString(),  # a payload, no id
        b"\x0a" + varint(HUGE) + bytes(HUGE - 1),  # huge, and cut short
        with_unknown_field(events_pb2.Event(event_id=eid()), bytes(HUGE)),  # huge, unknown payload
    ]


def strangers() -> list[events_pb2.Event]:
    """Well-formed events naming jobs and tasks nobody created, or of a type the topic
    does not carry: consumers skip them (or keep them for a job that may come later)."""
    job, task = f"nojob-{eid()[:8]}", f"notask-{eid()[:8]}"
    return [
        events_pb2.Event(event_id=eid(), job_sealed=events_pb2.JobSealed(job_id=job, objects=3)),
        events_pb2.Event(event_id=eid(), job_paused=events_pb2.JobPaused(job_id=job)),
        events_pb2.Event(event_id=eid(), job_deleted=events_pb2.JobDeleted(job_id=job, org_id="acme")),
        events_pb2.Event(
            event_id=eid(),
            task_created=events_pb2.TaskCreated(task_id=task, job_id=job, item_id="i", object_name="o", text="x"),
        ),
        events_pb2.Event(
            event_id=eid(),
            answer_accepted=events_pb2.AnswerAccepted(
                answer_id=eid(),
                task_id=task,
                job_id=job,
                worker_id="w-1",
                answer=common_pb2.Answer(classification=common_pb2.ClassificationAnswer(label="cat")),
            ),
        ),
        events_pb2.Event(
            event_id=eid(),
            more_answers_requested=events_pb2.MoreAnswersRequested(task_id=task, job_id=job, answers_wanted=5),
        ),
        events_pb2.Event(event_id=eid(), task_resolved=events_pb2.TaskResolved(task_id=task, job_id=job, version=1)),
        # Big but well-formed: a field far larger than anything the services produce.
        events_pb2.Event(
            event_id=eid(), task_resolved=events_pb2.TaskResolved(task_id=task, job_id=job, object_name="x" * HUGE)
        ),
    ]


def good_event(topic: str) -> events_pb2.Event:
    """A valid event the topic carries, which the consumer records when it applies it."""
    job = f"job-{eid()[:8]}"
    if topic == "audit":
        recorded = events_pb2.AuditRecorded(
            actor="service:test", action="job.create", resource=f"job/{job}", org_id="acme", details_json="{}"
        )
        event = events_pb2.Event(event_id=eid(), audit_recorded=recorded)
        event.occurred_at.GetCurrentTime()
        return event
    if topic == "jobs":
        spec = common_pb2.JobSpec(
            name="good", client_id="acme", overlap=common_pb2.Overlap(min=1, max=3), pay_per_answer_cents=2
        )
        spec.text_classification.CopyFrom(common_pb2.ClassificationConfig(labels=["cat", "dog"]))
        return events_pb2.Event(event_id=eid(), job_created=events_pb2.JobCreated(job_id=job, spec=spec))
    # Consensus keeps a task or answer of a job yet to come, so these are applied too.
    if topic == "tasks":
        created = events_pb2.TaskCreated(task_id=f"task-{eid()[:8]}", job_id=job, item_id="i", object_name="o")
        return events_pb2.Event(event_id=eid(), task_created=created)
    if topic == "answers":
        return strangers()[4]
    if topic == "task_requests":
        return strangers()[5]
    return events_pb2.Event(event_id=eid(), task_resolved=events_pb2.TaskResolved(task_id="t", job_id=job))


@dataclass
class Started:
    settings: Settings
    running: RunningService


@pytest.fixture
def start(make_settings: Callable[..., Settings]) -> Iterator[Callable[[ServiceName], Started]]:
    services: list[RunningService] = []

    def start(name: ServiceName) -> Started:
        settings = make_settings()
        running = start_service(BUILDS[name], settings, address="127.0.0.1:0")
        services.append(running)
        return Started(settings, running)

    yield start
    for running in services:
        running.stop()


def applied(service: ServiceName, settings: Settings, event_id: str) -> bool:
    """Whether the service committed ``event_id`` as processed (access: as an audit entry)."""
    engine = make_engine(settings.access_database() if service == "access" else settings.database_url_for(service))
    try:
        table = audit_log if service == "access" else add_messaging_tables(sa.MetaData()).inbox
        with engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).where(table.c.event_id == event_id)).scalar_one() > 0
    finally:
        engine.dispose()


def dead_letters(bootstrap: str, topic: str, expected: int, timeout: float = 30.0) -> list[bytes]:
    """The values on ``topic``'s dead-letter topic, read until ``expected`` arrived."""
    consumer = KafkaConsumer(
        Topics.dead_letter(topic),
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=1000,
        fetch_max_bytes=4 * HUGE,
        max_partition_fetch_bytes=4 * HUGE,
    )
    values: list[bytes] = []
    deadline = time.monotonic() + timeout
    try:
        while len(values) < expected and time.monotonic() < deadline:
            values += [record.value or b"" for record in consumer]
    finally:
        consumer.close()
    return values


@pytest.mark.parametrize(("service", "topic_name"), CONSUMED)
def test_garbage_on_a_topic_is_dead_lettered_or_skipped(
    start: Callable[[ServiceName], Started], kafka_bootstrap: str, service: ServiceName, topic_name: str
) -> None:
    started = start(service)
    topic = getattr(Topics(started.settings.topic_prefix), topic_name)
    malformed = malformed_records()
    good = good_event(topic_name)
    # One key: one partition, so the good event is read after every bad one.
    records = [
        *(OutgoingEvent(topic, "k", eid(), value) for value in malformed),
        *(OutgoingEvent(topic, "k", e.event_id, e.SerializeToString()) for e in strangers()),
        OutgoingEvent(topic, "k", good.event_id, good.SerializeToString()),
    ]
    publisher = Publisher(kafka_bootstrap, linger_ms=0)
    try:
        publisher.send_all(records)
    finally:
        publisher.close()

    deadline = time.monotonic() + 60
    while not applied(service, started.settings, good.event_id):
        assert time.monotonic() < deadline, f"{service} never applied the good event after the garbage"
        time.sleep(0.2)

    (consumer,) = started.running.consumers
    assert consumer.dead_letters == len(malformed), "only undecodable or id-less records are dead-lettered"
    assert started.running.healthy()
    with channel(f"127.0.0.1:{started.running.port}") as ch:
        status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
    assert status == health_pb2.HealthCheckResponse.SERVING
    assert sorted(dead_letters(kafka_bootstrap, topic, len(malformed))) == sorted(malformed)
