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
import datetime as dt
import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import sqlalchemy as sa
from google.protobuf.message import DecodeError
from google.protobuf.timestamp_pb2 import Timestamp
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import CommitFailedError, KafkaError, TopicAlreadyExistsError
from sqlalchemy.engine import Engine

from quorum.db import OutgoingEvent, messaging_state, reading, utcnow
from quorum.v1 import events_pb2

log = logging.getLogger(__name__)

# kafka-python backs off up to 30 s between reconnects by default: after a broker restart
# a service would sit idle that long. One second costs nothing on loopback or in a cluster.
RECONNECT_BACKOFF_MAX_MS = 1000


@dataclass(frozen=True)
class Topics:
    """Every topic name, from one prefix."""

    prefix: str = "quorum"

    @property
    def jobs(self) -> str:
        """JobCreated, JobSealed, JobDeleted (and JobPaused, JobResumed from payments); key job_id."""
        return f"{self.prefix}.jobs.v1"

    @property
    def tasks(self) -> str:
        """TaskCreated; key task_id."""
        return f"{self.prefix}.tasks.v1"

    @property
    def answers(self) -> str:
        """AnswerAccepted, key task_id; WorkerFlagged from an operator's override of a spam
        flag (for payments), key worker_id."""
        return f"{self.prefix}.answers.v1"

    @property
    def task_requests(self) -> str:
        """MoreAnswersRequested; key task_id."""
        return f"{self.prefix}.task-requests.v1"

    @property
    def results(self) -> str:
        """TaskResolved; key task_id."""
        return f"{self.prefix}.results.v1"

    @property
    def audit(self) -> str:
        """AuditRecorded; key org_id."""
        return f"{self.prefix}.audit.v1"

    @property
    def generation(self) -> str:
        """One partition whose first record names the broker's current life (see BrokerGeneration)."""
        return f"{self.prefix}.broker-generation.v1"

    def all(self) -> list[str]:
        return [self.jobs, self.tasks, self.answers, self.task_requests, self.results, self.audit]

    @staticmethod
    def dead_letter(topic: str) -> str:
        return f"{topic}.dlq"

    def group(self, consumer: str, generation: str = "") -> str:
        """``<prefix>.<consumer>``, plus ``.g<generation>`` when given: a broker that lost its
        state gets a new generation, so the group starts afresh at the earliest offsets."""
        base = f"{self.prefix}.{consumer}"
        return f"{base}.g{generation[:12]}" if generation else base


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


class BrokerGeneration:
    """Tells one life of the broker from the next.

    A broker with in-memory storage (the embedded one) forgets every topic, record, group
    and committed offset when it restarts; a deployment can lose a cluster the same way.
    The first record of partition 0 of ``topic`` is the generation: whoever finds the
    partition empty proposes a random id, and everyone adopts the first record, so every
    process agrees without coordination. A new generation means the services must
    republish from their outboxes and consume from the earliest offsets again.
    """

    def __init__(self, bootstrap: str, topic: str) -> None:
        self._bootstrap = bootstrap
        self._partition = TopicPartition(topic, 0)

    def _first(self, wait_ms: int) -> str | None:
        consumer = KafkaConsumer(
            bootstrap_servers=self._bootstrap,
            group_id=None,
            enable_auto_commit=False,
            request_timeout_ms=5000,
            bootstrap_timeout_ms=3000,
            reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
        )
        try:
            consumer.assign([self._partition])
            consumer.seek_to_beginning(self._partition)
            polled = consumer.poll(timeout_ms=wait_ms, max_records=1)
            for records in polled.values():
                for record in records:
                    return bytes(record.value).decode(errors="replace")
            return None
        finally:
            consumer.close(autocommit=False)

    def current(self, timeout_s: float = 15.0) -> str:
        """The broker's generation, proposing one when there is none yet. Raises
        RuntimeError when the broker does not answer within ``timeout_s``. About 10 ms
        when the generation exists; about 1 s when this call proposes it."""
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                found = self._first(wait_ms=300)
                if found is None:
                    producer = KafkaProducer(
                        bootstrap_servers=self._bootstrap,
                        acks="all",
                        linger_ms=0,
                        bootstrap_timeout_ms=3000,
                        max_block_ms=5000,
                    )
                    try:
                        producer.send(self._partition.topic, uuid.uuid4().hex.encode(), partition=0).get(timeout=5)
                    finally:
                        producer.close(timeout=2)
                    found = self._first(wait_ms=2000)
                if found:
                    return found
            except KafkaError as exc:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"cannot read the broker generation at {self._bootstrap}: {exc}") from exc
            if time.monotonic() > deadline:
                raise RuntimeError(f"cannot read the broker generation at {self._bootstrap}")
            time.sleep(0.2)


class Publisher:
    """Publishes serialized events; ``send_all`` returns once the broker acknowledged all."""

    def __init__(self, bootstrap: str, linger_ms: int = 2) -> None:
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap,
            acks="all",
            linger_ms=linger_ms,
            retries=5,
            max_in_flight_requests_per_connection=1,
            reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
            # Bounded, so that a relay facing a dead broker fails and retries instead of hanging.
            max_block_ms=10_000,
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
    ``notify()`` wakes the relay right after a transaction wrote to the outbox. While
    events keep coming, batches go out at most every ``min_interval_s``: each batch costs
    a read, a produce round trip and a write transaction whatever its size, and a service
    taking many small transactions would otherwise pay all three for every one of them.
    """

    def __init__(
        self,
        engine: Engine,
        outbox: sa.Table,
        publisher: Publisher,
        batch_size: int = 500,
        idle_poll_s: float = 0.2,
        min_interval_s: float = 0.05,
        keep_published_s: float = 24 * 3600.0,
        reconnect: Callable[[], Publisher] | None = None,
    ) -> None:
        self._engine = engine
        self._outbox = outbox
        self._publisher = publisher
        # A producer whose broker restarted can stay wedged (its producer id is unknown
        # there): after a failure the relay builds a fresh one when it can.
        self._reconnect = reconnect
        self._replay_for: str | None = None
        # Unpublished rows as last counted (about twice a second); read it for backpressure.
        self.backlog = 0
        self._batch_size = batch_size
        self._idle_poll_s = idle_poll_s
        self._min_interval_s = min_interval_s
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

    @property
    def publisher(self) -> Publisher:
        return self._publisher

    def adopt_generation(self, generation: str) -> bool:
        """Records the broker generation the outbox publishes to. When it differs from the
        one recorded before, every row still kept is marked unpublished, so the relay
        publishes it again to the new broker (consumers drop what they had by event id).
        Returns whether rows were marked. Call before :meth:`start`; afterwards use
        :meth:`replay_for`, which does it in the relay's thread."""
        state = messaging_state(self._outbox.metadata)
        with self._engine.begin() as conn:
            before = conn.execute(sa.select(state.c.value).where(state.c.name == "broker_generation")).scalar()
            if before == generation:
                return False
            if before is None:
                conn.execute(sa.insert(state).values(name="broker_generation", value=generation))
            else:
                conn.execute(sa.update(state).where(state.c.name == "broker_generation").values(value=generation))
            if before is None:
                return False
            marked = conn.execute(
                sa.update(self._outbox).where(self._outbox.c.published_at.is_not(None)).values(published_at=None)
            ).rowcount
        log.warning("outbox: the broker is new (generation %s); republishing %d kept events", generation, marked)
        return True

    def replay_for(self, generation: str) -> None:
        """Asks the relay thread to :meth:`adopt_generation` between two batches, so a batch
        sent to the old broker cannot be marked published after the rows were reset."""
        self._replay_for = generation
        self._wake.set()

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
        cutoff = utcnow() - dt.timedelta(seconds=self._keep_published_s)
        with self._engine.begin() as conn:
            conn.execute(
                sa.delete(self._outbox).where(
                    self._outbox.c.published_at.is_not(None), self._outbox.c.published_at < cutoff
                )
            )

    def _fresh_publisher(self) -> None:
        if self._reconnect is None:
            return
        old = self._publisher
        try:
            self._publisher = self._reconnect()
        except Exception:
            log.exception("outbox relay: cannot reconnect to the broker yet")
            return
        with contextlib.suppress(Exception):
            old.close()

    def _count_backlog(self) -> None:
        try:
            self.backlog = self.pending()
        except Exception:
            log.exception("outbox relay: cannot count the backlog")

    def _run(self) -> None:
        last_purge = last_count = time.monotonic()
        last_sent = -math.inf
        while not self._stop.is_set():
            if time.monotonic() - last_count > 0.5:
                self._count_backlog()
                last_count = time.monotonic()
            try:
                generation = self._replay_for
                if generation is not None:
                    if self.adopt_generation(generation):
                        self._fresh_publisher()
                    if self._replay_for == generation:
                        self._replay_for = None
                # Woken soon after the last batch: let this one gather what commits meanwhile.
                self._stop.wait(last_sent + self._min_interval_s - time.monotonic())
                published = self.publish_pending()
                if published:
                    last_sent = time.monotonic()
                if published >= self._batch_size:
                    last_sent = -math.inf  # a backlog: the next batch is already waiting
                    continue
                if time.monotonic() - last_purge > 60:
                    self._purge_old()
                    last_purge = time.monotonic()
            except Exception:
                log.exception("outbox relay: publishing failed; retrying")
                self._stop.wait(1.0)
                self._fresh_publisher()
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


class _Stopped(Exception):
    """The consumer was stopped while it waited out a transient failure."""


# A database or Redis that is down, busy or restarting: the event is not at fault.
_TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    sa.exc.OperationalError,
    sa.exc.InterfaceError,
    sa.exc.TimeoutError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    KafkaError,
    ConnectionError,
    TimeoutError,
)
# PostgreSQL's serialization failure and deadlock: the transaction may simply be run again.
_RETRY_SQLSTATES = frozenset({"40001", "40P01"})


def is_transient(error: BaseException) -> bool:
    """Whether ``error`` says the infrastructure failed (retry later) rather than the event
    (dead-letter it). Follows the ``__cause__`` chain, since handlers may wrap errors."""
    seen: BaseException | None = error
    while seen is not None:
        if isinstance(seen, _TRANSIENT_ERRORS):
            return True
        if isinstance(seen, sa.exc.DBAPIError) and (
            seen.connection_invalidated or getattr(seen.orig, "sqlstate", None) in _RETRY_SQLSTATES
        ):
            return True
        seen = seen.__cause__
    return False


class EventConsumer:
    """Consumes topics in a consumer group and hands decoded events to ``handler`` in batches.

    Offsets are committed after the handler returns, so a crash replays the batch
    (the handler must be idempotent). When a batch fails, its events are retried one
    by one; an event that still fails after ``attempts`` tries goes to the topic's
    dead-letter topic, up to ``max_dead_letters`` per process, after which the
    consumer stops with :class:`TooManyDeadLetters`. A transient failure
    (:func:`is_transient`: the database or Redis down or busy) is no fault of the
    events: the call is retried, backing off up to ``max_backoff_s``, for as long as
    it takes, and nothing is dead-lettered or committed meanwhile.
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
        max_backoff_s: float = 5.0,
        commit_timeout_ms: int = 10_000,
    ) -> None:
        self._bootstrap = bootstrap
        self._max_backoff_s = max_backoff_s
        # A commit waits this long for a broker that went away, then gives up (the batch is
        # replayed): the consumer keeps polling, and a stop is not held up by an outage.
        self._commit_timeout_ms = commit_timeout_ms
        self._group_id = group_id
        self._topics = list(topics)
        self._handler = handler
        self._max_batch = max_batch
        self._attempts = attempts
        self._max_dead_letters = max_dead_letters
        self._stop = threading.Event()
        self._name = name
        self._thread = threading.Thread(target=self._run, name=f"consumer-{name}", daemon=True)
        self._dead_letter_publisher: Publisher | None = None
        self.dead_letters = 0
        self.processed = 0
        # Batches applied whose offsets could not be committed (they are read again).
        self.commit_failures = 0
        self.error: BaseException | None = None
        self.ready = threading.Event()
        self._regroup_to: str | None = None

    def start(self) -> None:
        self._thread.start()

    @property
    def group_id(self) -> str:
        return self._group_id

    def regroup(self, group_id: str) -> None:
        """Moves to consumer group ``group_id`` after the current batch: the consumer leaves
        its group without committing and consumes the topics from the new group's committed
        offsets, or from the earliest when it has none (a broker that lost its state)."""
        self._regroup_to = group_id

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
            # A consumer far behind holds at most one fetch response in memory (the client
            # fetches a partition again only once its records were handed out): cap it well
            # below the client's 50 MB default. One partition still gets up to 1 MB.
            fetch_max_bytes=8 * 1024 * 1024,
            max_poll_interval_ms=300_000,
            fetch_max_wait_ms=100,
            reconnect_backoff_max_ms=RECONNECT_BACKOFF_MAX_MS,
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
                if self._regroup_to is not None:
                    consumer.close(autocommit=False)
                    self._group_id, self._regroup_to = self._regroup_to, None
                    log.warning("consumer %s: consuming from the start as group %s", self._name, self._group_id)
                    if self._dead_letter_publisher:
                        self._dead_letter_publisher.close()
                        self._dead_letter_publisher = None
                    consumer = self._consumer()
                try:
                    polled = consumer.poll(timeout_ms=200, max_records=self._max_batch)
                except KafkaError as exc:
                    # The broker is down or restarting; nothing reached the handler. Dying here
                    # would make the service exit (its watchdog), so wait for the broker instead.
                    log.warning("consumer %s: polling failed, retrying: %s", self._group_id, exc)
                    self._stop.wait(1.0)
                    continue
                records = [r for batch in polled.values() for r in batch]
                if not records:
                    continue
                try:
                    self._process(records)
                except _Stopped:
                    break  # uncommitted: the batch is read again after a restart
                try:
                    consumer.commit(timeout_ms=self._commit_timeout_ms)
                except CommitFailedError:
                    # A rebalance took the partitions away; their new owner replays the batch.
                    self.commit_failures += 1
                    log.warning("consumer %s: commit failed after a rebalance", self._group_id)
                except KafkaError as exc:
                    self.commit_failures += 1
                    # The batch is applied but its offsets are not committed: it is read again
                    # later, and the handler drops what it already applied by event id.
                    log.warning("consumer %s: commit failed, the batch will be replayed: %s", self._group_id, exc)
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
            self._handle([e for _, e in events])
            self.processed += len(events)
            return
        except _Stopped:
            raise
        except Exception:
            log.exception("consumer %s: batch of %d failed; retrying one by one", self._group_id, len(events))
        for record, event in events:
            for attempt in range(1, self._attempts + 1):
                try:
                    self._handle([event])
                    self.processed += 1
                    break
                except _Stopped:
                    raise
                except Exception as exc:
                    if attempt == self._attempts:
                        self._dead_letter(record, f"handler failed {attempt} times: {exc!r}")
                    else:
                        time.sleep(0.1 * attempt)

    def _handle(self, events: list[events_pb2.Event]) -> None:
        """Calls the handler, waiting out transient failures; raises :class:`_Stopped` when the
        consumer is stopped meanwhile, and any other failure as it is."""
        delay = 0.2
        while True:
            try:
                self._handler(events)
                return
            except Exception as exc:
                if not is_transient(exc):
                    raise
                log.warning("consumer %s: transient failure, retrying in %.1f s: %r", self._group_id, delay, exc)
                if self._stop.wait(delay):
                    raise _Stopped from exc
                delay = min(delay * 2, self._max_backoff_s)

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
