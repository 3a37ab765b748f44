"""The runtime every service shares: one gRPC server, its Kafka consumers, the
outbox relay and background loops, started and stopped together.

A service's ``bootstrap.build(context)`` is its composition root: it opens the
database, Redis and object store it needs and returns :class:`ServiceParts`;
nothing connects at import time. :func:`start_service` runs those parts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from quorum.messaging import EventConsumer, EventHandler, OutboxRelay, Publisher, Topics, ensure_topics
from quorum.rpc import RunningServer, start_server
from quorum.settings import ServiceName, Settings

log = logging.getLogger(__name__)


class OutboxSignal:
    """Handlers call it after committing outbox rows; it wakes the relay so events go out at once."""

    def __init__(self) -> None:
        self._target: Callable[[], None] = lambda: None

    def connect(self, target: Callable[[], None]) -> None:
        self._target = target

    def __call__(self) -> None:
        self._target()


@dataclass(frozen=True)
class ServiceContext:
    """What a composition root gets: configuration and the hooks the runtime provides."""

    settings: Settings
    topics: Topics
    outbox_written: OutboxSignal


@dataclass(frozen=True)
class ConsumerSpec:
    """A consumer group of this service: the group id is ``<prefix>.<service>.<name>``."""

    name: str
    topics: Sequence[str]
    handler: EventHandler


Registration = tuple[Callable[[Any, Any], None], Any, str]


@dataclass
class ServiceParts:
    name: ServiceName
    registrations: list[Registration]
    engine: Engine
    outbox: sa.Table | None = None
    consumers: list[ConsumerSpec] = field(default_factory=list)
    # Loops run in their own threads until the event is set (lease sweeps, refits...).
    background: list[Callable[[threading.Event], None]] = field(default_factory=list)
    # Called last on stop, to close what build() opened.
    closers: list[Callable[[], None]] = field(default_factory=list)


@dataclass
class RunningService:
    parts: ServiceParts
    server: RunningServer
    relay: OutboxRelay | None
    publisher: Publisher | None
    consumers: list[EventConsumer]
    stop_event: threading.Event
    threads: list[threading.Thread]

    @property
    def port(self) -> int:
        return self.server.port

    def healthy(self) -> bool:
        return all(c.alive for c in self.consumers) and all(t.is_alive() for t in self.threads)

    def stop(self) -> None:
        """Stops taking calls, then consumers (committing what they processed), then drains the outbox."""
        self.server.set_serving(False)
        self.server.server.stop(2.0).wait()
        self.stop_event.set()
        for consumer in self.consumers:
            consumer.stop()
        for thread in self.threads:
            thread.join(timeout=10)
        if self.relay:
            self.relay.stop()
        if self.publisher:
            self.publisher.close()
        for close in reversed(self.parts.closers):
            try:
                close()
            except Exception:
                log.exception("%s: error while closing", self.parts.name)
        self.parts.engine.dispose()


def start_service(
    build: Callable[[ServiceContext], ServiceParts],
    settings: Settings,
    address: str | None = None,
) -> RunningService:
    """Builds a service and starts everything it needs. ``address`` overrides the
    configured ``host:port`` (``127.0.0.1:0`` picks a free port). Raises RuntimeError
    when the broker is unreachable or the port is taken."""
    bootstrap_servers = settings.require_kafka()
    topics = Topics(settings.topic_prefix)
    ensure_topics(bootstrap_servers, topics.all(), settings.kafka_partitions)
    signal = OutboxSignal()
    parts = build(ServiceContext(settings=settings, topics=topics, outbox_written=signal))

    publisher = relay = None
    if parts.outbox is not None:
        publisher = Publisher(bootstrap_servers)
        relay = OutboxRelay(parts.engine, parts.outbox, publisher)
        signal.connect(relay.notify)
        relay.start()

    consumers = [
        EventConsumer(
            bootstrap_servers,
            group_id=topics.group(f"{parts.name}.{spec.name}"),
            topics=spec.topics,
            handler=spec.handler,
            name=f"{parts.name}.{spec.name}",
        )
        for spec in parts.consumers
    ]
    for consumer in consumers:
        consumer.start()

    stop_event = threading.Event()
    threads = [
        threading.Thread(target=loop, args=(stop_event,), name=f"{parts.name}-bg{i}", daemon=True)
        for i, loop in enumerate(parts.background)
    ]
    for thread in threads:
        thread.start()

    port = settings.service_port(parts.name)
    server = start_server(
        parts.registrations,
        address or f"{settings.bind_host}:{port}",
        max_workers=settings.grpc_workers,
    )
    return RunningService(parts, server, relay, publisher, consumers, stop_event, threads)
