"""The runtime every service shares: one gRPC server, its Kafka consumers, the
outbox relay and background loops, started and stopped together.

A service's ``bootstrap.build(context)`` is its composition root: it opens the
database, Redis and object store it needs and returns :class:`ServiceParts`;
nothing connects at import time. :func:`start_service` runs those parts.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from quorum.cache import connect_redis
from quorum.db import make_engine
from quorum.lag import ConsumerLagReader, Downstream, LagMonitor
from quorum.messaging import (
    BrokerGeneration,
    EventConsumer,
    EventHandler,
    OutboxRelay,
    Publisher,
    Topics,
    ensure_topics,
)
from quorum.owners import IngestJobOwners
from quorum.rpc import BackpressureInterceptor, RunningServer, check_transport, start_server
from quorum.security import keys
from quorum.security.keyhash import KeyHasher, load_key_hasher
from quorum.security.policy import AuthInterceptor, OwnerLookup, ServicePolicy, no_owner
from quorum.security.ratelimit import FixedWindowLimiter
from quorum.settings import ServiceName, Settings
from quorum.tls import client_tls, server_tls

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
    # Hashes and checks API key secrets (QUORUM_API_KEY_HASH_KEY); every service checks keys.
    key_hasher: KeyHasher


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
    # Who may call each RPC (quorum.security.policy); a method without a rule is refused.
    policies: list[ServicePolicy] = field(default_factory=list)
    # Who owns a job, task or session, for the policies' scopes.
    owner_of: OwnerLookup = no_owner
    # Ask ingest who owns a job that owner_of does not know (yet): services that hear of
    # jobs through Kafka, so that a client reading its new job at once is not refused.
    job_owners_from_ingest: bool = False
    # Consumers of other services that read what this one produces, and the RPCs that bring
    # in the work they read: those RPCs are refused while a consumer is more than
    # QUORUM_MAX_CONSUMER_LAG records behind (quorum.lag).
    downstream: list[Downstream] = field(default_factory=list)
    intake_methods: frozenset[str] = frozenset()


def run_periodically(stop: threading.Event, interval_s: float, name: str, *rounds: Callable[[], object]) -> None:
    """Runs each of ``rounds`` every ``interval_s`` seconds until ``stop`` is set, as a
    service's background loop. A round that fails is logged and tried again next time."""
    while not stop.wait(interval_s):
        for round_ in rounds:
            try:
                round_()
            except Exception:
                log.exception("%s: a periodic round failed; trying again in %.0f s", name, interval_s)


class BrokerWatch:
    """Notices that the broker lost its state (a new :class:`BrokerGeneration`) and
    recovers from the service's own database: recreates the topics, republishes every
    outbox row still kept, and moves each consumer to a group of the new generation, so
    it reads the new topics from the start. Consumers drop what they already applied by
    event id, so replaying is safe; this is what makes an in-memory broker restart lose
    nothing."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        topics: Topics,
        generation: str,
        relay: OutboxRelay | None,
        consumers: list[tuple[EventConsumer, str]],
        interval_s: float = 2.0,
    ) -> None:
        self.generation = generation
        self._name = name
        self._settings = settings
        self._topics = topics
        self._relay = relay
        self._consumers = consumers
        self._interval_s = interval_s
        self._reader = BrokerGeneration(settings.require_kafka(), topics.generation)
        self.recoveries = 0

    def check(self) -> bool:
        """Reads the generation once; recovers when it changed. Returns whether it did.
        Raises RuntimeError when the broker does not answer."""
        current = self._reader.current(timeout_s=5.0)
        if current == self.generation:
            return False
        log.warning(
            "%s: the broker lost its state (generation %s -> %s); recovering", self._name, self.generation, current
        )
        ensure_topics(self._settings.require_kafka(), self._topics.all(), self._settings.kafka_partitions)
        if self._relay is not None:
            self._relay.replay_for(current)
        for consumer, name in self._consumers:
            consumer.regroup(self._topics.group(name, current))
        self.generation = current
        self.recoveries += 1
        return True

    def loop(self, stop: threading.Event) -> None:
        while not stop.wait(self._interval_s):
            try:
                self.check()
            except Exception as exc:  # the broker is down or restarting: try again later
                log.info("%s: broker generation unknown for now: %s", self._name, exc)


@dataclass
class RunningService:
    parts: ServiceParts
    server: RunningServer
    relay: OutboxRelay | None
    publisher: Publisher | None
    consumers: list[EventConsumer]
    stop_event: threading.Event
    threads: list[threading.Thread]
    watch: BrokerWatch | None = None
    lag: LagMonitor | None = None

    @property
    def port(self) -> int:
        return self.server.port

    def healthy(self) -> bool:
        return all(c.alive for c in self.consumers) and all(t.is_alive() for t in self.threads)

    def stop(self, drain_delay_s: float = 0.0, grace_s: float = 5.0) -> None:
        """Drains and stops: health turns NOT_SERVING, ``drain_delay_s`` later new calls are
        refused and in-flight ones get ``grace_s`` to finish (the handlers of calls cut off
        then get up to ``grace_s`` more: a task leased for a call that can no longer be
        answered is released at once, see TaskingServicer.GetNextTask); then the consumers
        finish their batch and commit its offsets, background loops end, and the outbox
        relay publishes what is committed. Leases that reached their workers live in Redis
        and are kept on purpose: the worker is still at work, and its answer is accepted
        by the other replicas, or by this one restarted, until the lease expires."""
        self.server.set_serving(False)
        if drain_delay_s:
            time.sleep(drain_delay_s)
        self.server.stop(grace_s)
        self.stop_event.set()
        for consumer in self.consumers:
            consumer.stop()
        for thread in self.threads:
            thread.join(timeout=10)
        if self.relay:
            self.relay.stop()
            self.relay.publisher.close()
        elif self.publisher:
            self.publisher.close()
        for close in reversed(self.parts.closers):
            try:
                close()
            except Exception:
                log.exception("%s: error while closing", self.parts.name)
        self.parts.engine.dispose()


def auth_interceptor(settings: Settings, parts: ServiceParts, hasher: KeyHasher) -> AuthInterceptor:
    """Checks every call against the access database's keys and sessions and the service's
    policies; keys of QUORUM_REQUIRE_MFA_ROLES are refused without a session. With
    ``parts.job_owners_from_ingest``, a channel to ingest for the owners of jobs the service
    does not know (opened at the first such call)."""
    access_engine = make_engine(settings.access_database())
    keys.create_tables(access_engine)
    parts.closers.append(access_engine.dispose)
    limiter = None
    if settings.rate_limit_per_second:
        client = connect_redis(settings.redis_url) if settings.redis_url else None
        limiter = FixedWindowLimiter(client, parts.name, settings.rate_limit_per_second)
    remote_owners = None
    if parts.job_owners_from_ingest:
        remote_owners = IngestJobOwners(settings.service_addr("ingest"), client_tls(settings))
        parts.closers.append(remote_owners.close)
    return AuthInterceptor(
        parts.policies,
        keys.Authenticator(access_engine, hasher, poll_seconds=settings.auth_poll_seconds),
        parts.owner_of,
        limiter,
        second_factor_roles=settings.require_mfa_roles,
        remote_owner_of=remote_owners,
    )


def keep_start_up_out_of_collections() -> None:
    """Freezes what start-up built (modules, compiled statements, clients), which lives as
    long as the process, so the collector's full passes no longer walk it. Under load they
    did, for 50-180 ms each with the GIL held, and every call in flight waited. For a
    service's own process only: a test process that starts services in-process would
    keep its cyclic garbage for good."""
    gc.collect()
    gc.freeze()


def start_service(
    build: Callable[[ServiceContext], ServiceParts],
    settings: Settings,
    address: str | None = None,
) -> RunningService:
    """Builds a service and starts everything it needs. ``address`` overrides the
    configured ``host:port`` (``127.0.0.1:0`` picks a free port). The server speaks TLS
    when ``settings`` name a certificate (:func:`quorum.tls.server_tls`). Raises
    RuntimeError when the broker is unreachable or the port is taken, and, before
    connecting to anything, :class:`quorum.rpc.PlaintextRefused` for plaintext on an
    address other machines can reach and quorum.crypto.KeyConfigError (a RuntimeError)
    when the API key hashing key is missing or malformed."""
    tls = server_tls(settings)
    # Only the host decides whether plaintext is allowed; the port comes from build() below.
    check_transport(address or f"{settings.bind_host}:0", tls, settings.allow_plaintext_off_loopback)
    key_hasher = load_key_hasher(settings)
    bootstrap_servers = settings.require_kafka()
    topics = Topics(settings.topic_prefix)
    ensure_topics(bootstrap_servers, topics.all(), settings.kafka_partitions)
    generation = BrokerGeneration(bootstrap_servers, topics.generation).current()
    signal = OutboxSignal()
    parts = build(ServiceContext(settings=settings, topics=topics, outbox_written=signal, key_hasher=key_hasher))

    publisher = relay = None
    if parts.outbox is not None:
        publisher = Publisher(bootstrap_servers)
        relay = OutboxRelay(parts.engine, parts.outbox, publisher, reconnect=lambda: Publisher(bootstrap_servers))
        # The broker may have lost its state while this service was down.
        relay.adopt_generation(generation)
        signal.connect(relay.notify)
        relay.start()

    named = [(spec, f"{parts.name}.{spec.name}") for spec in parts.consumers]
    consumers = [
        EventConsumer(
            bootstrap_servers,
            group_id=topics.group(name, generation),
            topics=spec.topics,
            handler=spec.handler,
            name=name,
        )
        for spec, name in named
    ]
    for consumer in consumers:
        consumer.start()
    watch = BrokerWatch(
        parts.name,
        settings,
        topics,
        generation,
        relay,
        [(c, name) for c, (_, name) in zip(consumers, named, strict=True)],
    )

    lag = lag_monitor(settings, parts, topics, watch)
    stop_event = threading.Event()
    loops = [*parts.background, watch.loop, *([lag.loop] if lag else [])]
    threads = [
        threading.Thread(target=loop, args=(stop_event,), name=f"{parts.name}-bg{i}", daemon=True)
        for i, loop in enumerate(loops)
    ]
    for thread in threads:
        thread.start()

    def overloaded() -> int | None:
        if relay is not None and relay.backlog > settings.max_outbox_backlog:
            return 1000
        return None

    interceptors: list[grpc.ServerInterceptor] = [
        auth_interceptor(settings, parts, key_hasher),
        BackpressureInterceptor(overloaded),
    ]
    if lag is not None:
        interceptors.append(
            BackpressureInterceptor(
                lag.overloaded, "the services downstream are behind on this work", methods=parts.intake_methods
            )
        )
    port = settings.service_port(parts.name)
    listen = address or f"{settings.bind_host}:{port}"
    server = start_server(
        parts.registrations,
        listen,
        max_workers=settings.grpc_workers,
        interceptors=interceptors,
        tls=tls,
        allow_plaintext_off_loopback=settings.allow_plaintext_off_loopback,
        health_address=f"{listen.rsplit(':', 1)[0]}:{settings.health_port}" if settings.health_port else None,
    )
    return RunningService(parts, server, relay, publisher, consumers, stop_event, threads, watch, lag)


def lag_monitor(settings: Settings, parts: ServiceParts, topics: Topics, watch: BrokerWatch) -> LagMonitor | None:
    """Watches the lag of ``parts.downstream`` (their groups of the broker generation
    ``watch`` follows), or None when the service has no intake to hold back or
    QUORUM_MAX_CONSUMER_LAG is 0. Closes its admin client with the service."""
    if not parts.downstream or not parts.intake_methods or settings.max_consumer_lag == 0:
        return None
    reader = ConsumerLagReader(settings.require_kafka())
    parts.closers.append(reader.close)

    def groups() -> dict[str, tuple[str, ...]]:
        return {topics.group(d.consumer, watch.generation): d.topics for d in parts.downstream}

    return LagMonitor(reader.read, groups, settings.max_consumer_lag, settings.consumer_lag_poll_s)
