"""The Kafka plumbing against the real Tansu broker, and the inbox/outbox
against SQLite and PostgreSQL."""

from __future__ import annotations

import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import sqlalchemy as sa
from kafka import KafkaConsumer

from quorum.db import OutgoingEvent, add_messaging_tables, claim_events, enqueue, make_engine
from quorum.messaging import (
    EventConsumer,
    OutboxRelay,
    Publisher,
    Topics,
    ensure_topics,
    is_transient,
    outgoing,
)
from quorum.v1 import events_pb2


def task_event(task_id: str) -> events_pb2.Event:
    return events_pb2.Event(task_created=events_pb2.TaskCreated(task_id=task_id, job_id="job"))


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


@pytest.fixture
def topics(kafka_bootstrap: str, topic_prefix: str) -> Topics:
    topics = Topics(topic_prefix)
    ensure_topics(kafka_bootstrap, topics.all(), partitions=3)
    return topics


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> sa.Engine:
    url = (
        f"sqlite:///{tmp_path / 'db.sqlite'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    )
    engine = make_engine(url)
    yield engine
    engine.dispose()


def test_claim_events_applies_each_event_once(engine: sa.Engine) -> None:
    metadata = sa.MetaData()
    tables = add_messaging_tables(metadata)
    metadata.create_all(engine)
    with engine.begin() as conn:
        assert claim_events(conn, tables.inbox, "c", ["a", "b", "a"]) == {"a", "b"}
    with engine.begin() as conn:
        assert claim_events(conn, tables.inbox, "c", ["b", "c"]) == {"c"}
        # Another consumer keeps its own record.
        assert claim_events(conn, tables.inbox, "other", ["b"]) == {"b"}
    # A rolled-back transaction forgets the claim, so the event is applied on redelivery.
    with pytest.raises(RuntimeError), engine.begin() as conn:
        claim_events(conn, tables.inbox, "c", ["d"])
        raise RuntimeError("handler failed")
    with engine.begin() as conn:
        assert claim_events(conn, tables.inbox, "c", ["d"]) == {"d"}


@pytest.mark.slow
def test_consumer_redelivers_what_the_handler_did_not_finish(kafka_bootstrap: str, topics: Topics) -> None:
    publisher = Publisher(kafka_bootstrap)
    publisher.send_all([outgoing(topics.tasks, f"t{i}", task_event(f"t{i}")) for i in range(20)])
    group = f"g-{uuid.uuid4().hex}"
    seen: list[str] = []
    failed_once = threading.Event()

    def flaky(events: list[events_pb2.Event]) -> None:
        # The first batch fails entirely, then each event alone succeeds: nothing may be skipped.
        if not failed_once.is_set():
            failed_once.set()
            raise RuntimeError("transient")
        seen.extend(e.task_created.task_id for e in events)

    consumer = EventConsumer(kafka_bootstrap, group, [topics.tasks], flaky, name="flaky")
    consumer.start()
    try:
        wait_until(lambda: len(set(seen)) == 20)
    finally:
        consumer.stop()
    assert consumer.dead_letters == 0

    # Offsets were committed after processing: a new member of the group sees nothing again.
    again: list[str] = []
    consumer = EventConsumer(
        kafka_bootstrap, group, [topics.tasks], lambda es: again.extend("x" for _ in es), name="again"
    )
    consumer.start()
    try:
        publisher.send_all([outgoing(topics.tasks, "late", task_event("late"))])
        wait_until(lambda: len(again) >= 1)
        time.sleep(0.5)
    finally:
        consumer.stop()
        publisher.close()
    assert again == ["x"]


def test_a_locked_database_holds_events_back_and_never_dead_letters_them(
    kafka_bootstrap: str, topics: Topics, tmp_path: Path
) -> None:
    """A database that refuses writes for a while is no fault of the events: the consumer waits
    it out and applies every event once, instead of giving up and dead-lettering them."""
    path = tmp_path / "locked.sqlite"
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0.01})
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE seen (task_id TEXT PRIMARY KEY)")
    calls: list[int] = []

    def record(events: list[events_pb2.Event]) -> None:
        calls.append(len(events))
        with engine.begin() as conn:
            for event in events:
                conn.exec_driver_sql("INSERT INTO seen VALUES (?)", (event.task_created.task_id,))

    locker = sqlite3.connect(path, isolation_level=None)
    locker.execute("BEGIN EXCLUSIVE")
    publisher = Publisher(kafka_bootstrap)
    publisher.send_all([outgoing(topics.tasks, f"t{i}", task_event(f"t{i}")) for i in range(5)])
    consumer = EventConsumer(
        kafka_bootstrap, f"g-{uuid.uuid4().hex}", [topics.tasks], record, name="locked", max_backoff_s=0.1
    )
    consumer.start()
    try:
        # Far more failed calls than the attempts a poison event gets before it is dead-lettered.
        wait_until(lambda: len(calls) >= 10)
        locker.execute("ROLLBACK")
        # Read on a connection of its own that waits for the consumer's commits: the engine's
        # 10 ms timeout, there so that writes fail fast while locked, made this read fail too.
        checker = sqlite3.connect(path, timeout=5)
        try:
            wait_until(lambda: checker.execute("SELECT count(*) FROM seen").fetchone()[0] == 5)
        finally:
            checker.close()
    finally:
        consumer.stop()
        publisher.close()
        locker.close()
        engine.dispose()
    assert consumer.dead_letters == 0
    assert consumer.processed == 5


def test_only_infrastructure_failures_count_as_transient() -> None:
    locked = sa.exc.OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))
    duplicate = sa.exc.IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed"))
    assert is_transient(locked)
    assert not is_transient(duplicate)
    assert not is_transient(ValueError("bad payload"))
    try:
        raise RuntimeError("settling failed") from locked
    except RuntimeError as wrapped:
        assert is_transient(wrapped)


@pytest.mark.slow
def test_poison_messages_go_to_the_dead_letter_topic(kafka_bootstrap: str, topics: Topics) -> None:
    publisher = Publisher(kafka_bootstrap)
    from quorum.db import OutgoingEvent

    publisher.send_all(
        [
            OutgoingEvent(topics.tasks, "k", "raw", b"\xff\xff not a protobuf"),
            outgoing(topics.tasks, "ok", task_event("ok")),
        ]
    )
    handled: list[str] = []
    consumer = EventConsumer(
        kafka_bootstrap,
        f"g-{uuid.uuid4().hex}",
        [topics.tasks],
        lambda es: handled.extend(e.event_id for e in es),
        "p",
    )
    consumer.start()
    try:
        wait_until(lambda: len(handled) == 1 and consumer.dead_letters == 1)
    finally:
        consumer.stop()
        publisher.close()
    dlq = KafkaConsumer(
        Topics.dead_letter(topics.tasks),
        bootstrap_servers=kafka_bootstrap,
        group_id=f"dlq-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        consumer_timeout_ms=8000,
    )
    values = [record.value for record in dlq]
    dlq.close()
    assert values == [b"\xff\xff not a protobuf"]


@pytest.mark.slow
def test_outbox_relay_publishes_committed_rows_once(engine: sa.Engine, kafka_bootstrap: str, topics: Topics) -> None:
    metadata = sa.MetaData()
    tables = add_messaging_tables(metadata)
    metadata.create_all(engine)
    events = [outgoing(topics.results, f"t{i}", task_event(f"t{i}")) for i in range(30)]
    with engine.begin() as conn:
        enqueue(conn, tables.outbox, events)
    # A transaction that rolls back leaves nothing to publish.
    with pytest.raises(RuntimeError), engine.begin() as conn:
        enqueue(conn, tables.outbox, [outgoing(topics.results, "ghost", task_event("ghost"))])
        raise RuntimeError("rolled back")

    publisher = Publisher(kafka_bootstrap)
    relay = OutboxRelay(engine, tables.outbox, publisher)
    relay.start()
    try:
        relay.notify()
        wait_until(lambda: relay.pending() == 0)
    finally:
        relay.stop()
        publisher.close()
    consumer = KafkaConsumer(
        topics.results,
        bootstrap_servers=kafka_bootstrap,
        group_id=f"check-{uuid.uuid4().hex}",
        auto_offset_reset="earliest",
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        consumer_timeout_ms=8000,
    )
    received = []
    for record in consumer:
        event = events_pb2.Event()
        event.ParseFromString(record.value)
        received.append((record.key.decode(), event.task_created.task_id))
    consumer.close()
    assert sorted(received) == sorted((f"t{i}", f"t{i}") for i in range(30))


class _CountingPublisher(Publisher):
    """A real publisher that records the size of every batch it is given."""

    def __init__(self, bootstrap: str) -> None:
        super().__init__(bootstrap)
        self.batches: list[int] = []

    def send_all(self, records: Sequence[OutgoingEvent], timeout_s: float = 30.0) -> None:
        self.batches.append(len(records))
        super().send_all(records, timeout_s)


def test_the_relay_gathers_a_stream_of_small_commits_into_few_batches(
    engine: sa.Engine, kafka_bootstrap: str, topics: Topics
) -> None:
    metadata = sa.MetaData()
    tables = add_messaging_tables(metadata)
    metadata.create_all(engine)
    publisher = _CountingPublisher(kafka_bootstrap)
    relay = OutboxRelay(engine, tables.outbox, publisher, min_interval_s=0.5)
    relay.start()
    try:
        # 40 commits over about a second, each waking the relay, as a busy service's do.
        for i in range(40):
            with engine.begin() as conn:
                enqueue(conn, tables.outbox, [outgoing(topics.results, f"t{i}", task_event(f"t{i}"))])
            relay.notify()
            time.sleep(0.02)
        wait_until(lambda: relay.pending() == 0)
    finally:
        relay.stop()
        publisher.close()
    assert sum(publisher.batches) == 40
    # One batch per commit would be 40; at most one per half second is a handful.
    assert len(publisher.batches) < 10, publisher.batches


def test_two_replicas_never_both_claim_an_event(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    metadata = sa.MetaData()
    tables = add_messaging_tables(metadata)
    metadata.create_all(engine)
    claimed: dict[str, set[str]] = {}
    first_claimed = threading.Event()

    def replica(name: str, hold: float) -> None:
        with engine.begin() as conn:
            claimed[name] = claim_events(conn, tables.inbox, "c", ["e1", "e2"])
            first_claimed.set()
            time.sleep(hold)  # the other replica's insert waits on our uncommitted rows

    a = threading.Thread(target=replica, args=("a", 0.5))
    a.start()
    first_claimed.wait(5)
    b = threading.Thread(target=replica, args=("b", 0))
    b.start()
    a.join()
    b.join()
    engine.dispose()
    assert claimed == {"a": {"e1", "e2"}, "b": set()}
