"""Kafka plumbing shared by the services.

Topics are named ``<prefix>.<stream>.v<version>`` (``quorum.tasks.v1``); each
record's value is a serialized :class:`quorum.v1.events_pb2.Event` and its key
is the id that must keep order (a task id, a job id). Consumers commit offsets
only after their handler has committed its database transaction; handlers
drop redelivered events by id (see :func:`quorum.db.claim_events`), so
delivery is at least once and effects happen once. Events that must not be
lost are written to the outbox in the same transaction as the state change
and published by :class:`OutboxRelay`.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import CommitFailedError, KafkaError, TopicAlreadyExistsError
from sqlalchemy.engine import Engine

from quorum.db import OutgoingEvent, reading, utcnow
from quorum.v1 import events_pb2

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Topics:
    """Every topic name, from one prefix."""

    prefix: str = "quorum"

    @property
    def jobs(self) -> str:
        """JobCreated, JobSealed; key job_id."""
        return f"{self.prefix}.jobs.v1"

    @property
    def tasks(self) -> str:
        """TaskCreated; key task_id."""
        return f"{self.prefix}.tasks.v1"

    @property
    def answers(self) -> str:
        """AnswerAccepted; key task_id."""
        return f"{self.prefix}.answers.v1"

    @property
    def task_requests(self) -> str:
        """MoreAnswersRequested; key task_id."""
        return f"{self.prefix}.task-requests.v1"

    @property
    def results(self) -> str:
        """TaskResolved; key task_id."""
        return f"{self.prefix}.results.v1"

    def all(self) -> list[str]:
        return [self.jobs, self.tasks, self.answers, self.task_requests, self.results]

    @staticmethod
    def dead_letter(topic: str) -> str:
        return f"{topic}.dlq"

    def group(self, consumer: str) -> str:
        return f"{self.prefix}.{consumer}"


def new_event_id() -> str:
    return uuid.uuid4().hex


def now_timestamp() -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(utcnow())
    return ts


def outgoing(topic: str, key: str, event: events_pb2.Event) -> OutgoingEvent:
    """Stamps an id and time on ``event`` if missing and wraps it for the outbox."""
    if not event.event_id:
        event.event_id = new_event_id()
    if not event.HasField("occurred_at"):
        event.occurred_at.CopyFrom(now_timestamp())
    return OutgoingEvent(topic=topic, key=key, event_id=event.event_id, payload=event.SerializeToString())


def ensure_topics(bootstrap: str, topics: Sequence[str], partitions: int, timeout_s: float = 30.0) -> None:
    """Creates the topics (and their dead-letter topics) that do not exist yet.

    Raises RuntimeError when the broker cannot be reached within ``timeout_s``.
    """
    wanted = [*topics, *(Topics.dead_letter(t) for t in topics)]
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
            break
        except KafkaError as exc:
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot reach the Kafka broker at {bootstrap}: {exc}") from exc
            time.sleep(0.2)
    try:
        existing = set(admin.list_topics())
        missing = [
            NewTopic(name=t, num_partitions=partitions, replication_factor=1) for t in wanted if t not in existing
        ]
        if missing:
            # Another process may win the race; its topics are as good as ours.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(missing)
    finally:
        admin.close()


class Publisher:
    """Publishes serialized events; ``send_all`` returns once the broker acknowledged all."""

    def __init__(self, bootstrap: str, linger_ms: int = 2) -> None:
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            linger_ms=linger_ms,
            retries=5,
            max_in_flight_requests_per_connection=1,
        )

    def send_all(self, records: Sequence[OutgoingEvent], timeout_s: float = 30.0) -> None:
        """Raises KafkaError when any record is not acknowledged."""
        futures = [self._producer.send(r.topic, key=r.key.encode(), value=r.payload) for r in records]
        self._producer.flush(timeout=timeout_s)
        for future in futures:
            future.get(timeout=timeout_s)

    def close(self) -> None:
        self._producer.close(timeout=5)


class OutboxRelay:
    """Publishes outbox rows in order and marks them published.

    Runs in its own thread. A row is marked only after the broker acknowledged it,
    so a crash in between publishes it again; consumers drop the duplicate by id.
    ``notify()`` wakes the relay right after a transaction wrote to the outbox.
    """

    def __init__(
        self,
        engine: Engine,
        outbox: sa.Table,
        publisher: Publisher,
        batch_size: int = 500,
        idle_poll_s: float = 0.2,
        keep_published_s: float = 3600.0,
    ) -> None:
        self._engine = engine
        self._outbox = outbox
        self._publisher = publisher
        self._batch_size = batch_size
        self._idle_poll_s = idle_poll_s
        self._keep_published_s = keep_published_s
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="outbox-relay", daemon=True)
        self.published = 0

    def start(self) -> None:
        self._thread.start()

    def notify(self) -> None:
        self._wake.set()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=10)

    def pending(self) -> int:
        with reading(self._engine) as conn:
            return int(
                conn.execute(
                    sa.select(sa.func.count()).select_from(self._outbox).where(self._outbox.c.published_at.is_(None))
                ).scalar_one()
            )

    def publish_pending(self) -> int:
        """Publishes one batch; returns how many rows it published."""
        o = self._outbox
        # A read-only connection: on SQLite a plain one would take the write lock to read.
        with reading(self._engine) as conn:
            rows = conn.execute(
                sa.select(o.c.id, o.c.event_id, o.c.topic, o.c.key, o.c.payload)
                .where(o.c.published_at.is_(None))
                .order_by(o.c.id)
                .limit(self._batch_size)
            ).all()
            conn.rollback()
        if not rows:
            return 0
        self._publisher.send_all([OutgoingEvent(r.topic, r.key, r.event_id, r.payload) for r in rows])
        with self._engine.begin() as conn:
            conn.execute(sa.update(o).where(o.c.id.in_([r.id for r in rows])).values(published_at=utcnow()))
        self.published += len(rows)
        return len(rows)

    def _purge_old(self) -> None:
        cutoff = utcnow().timestamp() - self._keep_published_s
        import datetime as dt

        with self._engine.begin() as conn:
            conn.execute(
                sa.delete(self._outbox).where(
                    self._outbox.c.published_at.is_not(None),
                    self._outbox.c.published_at < dt.datetime.fromtimestamp(cutoff, dt.UTC),
                )
            )

    def _run(self) -> None:
        last_purge = time.monotonic()
        while not self._stop.is_set():
            try:
                if self.publish_pending() >= self._batch_size:
                    continue
                if time.monotonic() - last_purge > 60:
                    self._purge_old()
                    last_purge = time.monotonic()
            except Exception:
                log.exception("outbox relay: publishing failed; retrying")
                self._stop.wait(1.0)
                continue
            self._wake.wait(self._idle_poll_s)
            self._wake.clear()
        # Drain what is already committed so a clean shutdown leaves nothing behind.
        try:
            while self.publish_pending():
                pass
        except Exception:
            log.exception("outbox relay: could not drain on shutdown; rows stay for the next start")


EventHandler = Callable[[list[events_pb2.Event]], None]


class TooManyDeadLetters(RuntimeError):
    """More poison messages than a healthy deployment produces: stop rather than drain the topic."""


class EventConsumer:
    """Consumes topics in a consumer group and hands decoded events to ``handler`` in batches.

    Offsets are committed after the handler returns, so a crash replays the batch
    (the handler must be idempotent). When a batch fails, its events are retried one
    by one; an event that still fails after ``attempts`` tries goes to the topic's
    dead-letter topic, up to ``max_dead_letters`` per process, after which the
    consumer stops with :class:`TooManyDeadLetters`.
    """

    def __init__(
        self,
        bootstrap: str,
        group_id: str,
        topics: Sequence[str],
        handler: EventHandler,
        name: str,
        max_batch: int = 500,
        attempts: int = 3,
        max_dead_letters: int = 100,
    ) -> None:
        self._bootstrap = bootstrap
        self._group_id = group_id
        self._topics = list(topics)
        self._handler = handler
        self._max_batch = max_batch
        self._attempts = attempts
        self._max_dead_letters = max_dead_letters
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"consumer-{name}", daemon=True)
        self._dead_letter_publisher: Publisher | None = None
        self.dead_letters = 0
        self.processed = 0
        self.error: BaseException | None = None
        self.ready = threading.Event()

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _consumer(self) -> KafkaConsumer:
        return KafkaConsumer(
            *self._topics,
            bootstrap_servers=self._bootstrap,
            group_id=self._group_id,
            enable_auto_commit=False,
            # "latest" is unreliable on some brokers; committed offsets make earliest safe.
            auto_offset_reset="earliest",
            session_timeout_ms=6000,
            heartbeat_interval_ms=1000,
            max_poll_records=self._max_batch,
            max_poll_interval_ms=300_000,
            fetch_max_wait_ms=100,
        )

    def _run(self) -> None:
        try:
            consumer = self._consumer()
        except Exception as exc:
            self.error = exc
            log.exception("consumer %s: cannot connect", self._group_id)
            return
        self.ready.set()
        try:
            while not self._stop.is_set():
                polled = consumer.poll(timeout_ms=200, max_records=self._max_batch)
                records = [r for batch in polled.values() for r in batch]
                if not records:
                    continue
                self._process(records)
                try:
                    consumer.commit()
                except CommitFailedError:
                    # A rebalance took the partitions away; their new owner replays the batch.
                    log.warning("consumer %s: commit failed after a rebalance", self._group_id)
        except BaseException as exc:
            self.error = exc
            log.exception("consumer %s stopped", self._group_id)
        finally:
            consumer.close(autocommit=False)
            if self._dead_letter_publisher:
                self._dead_letter_publisher.close()

    def _process(self, records: list[Any]) -> None:
        events: list[tuple[object, events_pb2.Event]] = []
        for record in records:
            event = events_pb2.Event()
            try:
                event.ParseFromString(record.value)
            except DecodeError as exc:
                self._dead_letter(record, f"undecodable: {exc}")
                continue
            if not event.event_id or event.WhichOneof("payload") is None:
                self._dead_letter(record, "event without id or payload")
                continue
            events.append((record, event))
        if not events:
            return
        try:
            self._handler([e for _, e in events])
            self.processed += len(events)
            return
        except Exception:
            log.exception("consumer %s: batch of %d failed; retrying one by one", self._group_id, len(events))
        for record, event in events:
            for attempt in range(1, self._attempts + 1):
                try:
                    self._handler([event])
                    self.processed += 1
                    break
                except Exception as exc:
                    if attempt == self._attempts:
                        self._dead_letter(record, f"handler failed {attempt} times: {exc!r}")
                    else:
                        time.sleep(0.1 * attempt)

    def _dead_letter(self, record: object, reason: str) -> None:
        self.dead_letters += 1
        topic = str(getattr(record, "topic", "unknown"))
        log.error("consumer %s: dead-lettering a record of %s: %s", self._group_id, topic, reason)
        if self.dead_letters > self._max_dead_letters:
            raise TooManyDeadLetters(f"{self.dead_letters} poison messages in {self._group_id}")
        if self._dead_letter_publisher is None:
            self._dead_letter_publisher = Publisher(self._bootstrap, linger_ms=0)
        key = getattr(record, "key", None)
        self._dead_letter_publisher.send_all(
            [
                OutgoingEvent(
                    topic=Topics.dead_letter(topic),
                    key=key.decode(errors="replace") if isinstance(key, bytes) else "",
                    event_id=new_event_id(),
                    payload=bytes(getattr(record, "value", b"") or b""),
                )
            ]
        )
