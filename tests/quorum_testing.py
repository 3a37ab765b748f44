"""Helpers shared by the fixtures: reaching the machine's PostgreSQL and Redis,
making throwaway schemas, API keys for services started by the tests, waiting for
something to happen, and running a simulated crowd until it has."""

from __future__ import annotations

import base64
import contextlib
import fcntl
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

import grpc
import pytest
import sqlalchemy as sa

from quorum.db import make_engine, utcnow
from quorum.security import keys
from quorum.security.keyhash import load_key_hasher
from quorum.security.keys import KeyStore, ensure_local_key
from quorum.security.principal import Role
from quorum.settings import ServiceName, Settings
from quorum.v1 import access_pb2_grpc, consensus_pb2_grpc, ingest_pb2_grpc, payments_pb2_grpc, tasking_pb2_grpc

# The gRPC stub class of each service, for tests that call every service.
SERVICE_STUBS: dict[ServiceName, Any] = {
    "ingest": ingest_pb2_grpc.IngestServiceStub,
    "tasking": tasking_pb2_grpc.TaskingServiceStub,
    "consensus": consensus_pb2_grpc.ConsensusServiceStub,
    "payments": payments_pb2_grpc.PaymentsServiceStub,
    "access": access_pb2_grpc.AccessServiceStub,
}

if TYPE_CHECKING:
    from quorum.demo.crowd import CrowdReport, SimulatedCrowd

POSTGRES_URL = os.environ.get("QUORUM_TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")
REDIS_URL = os.environ.get("QUORUM_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
IN_CI = os.environ.get("CI", "").lower() == "true"


def reachable(url: str, default_port: int) -> bool:
    parsed = urlparse(url.replace("+psycopg", ""))
    try:
        with socket.create_connection((parsed.hostname or "127.0.0.1", parsed.port or default_port), timeout=1):
            return True
    except OSError:
        return False


def require(service: str, url: str, default_port: int) -> None:
    """Skips the test when ``service`` is unreachable, saying why; fails instead under CI=true."""
    if reachable(url, default_port):
        return
    message = f"{service} is not reachable at {url}"
    if IN_CI:
        pytest.fail(f"{message}; CI=true requires it")
    pytest.skip(f"{message}; start it or set the test URL variable")


@contextlib.contextmanager
def postgres_schema() -> Iterator[str]:
    """A fresh schema; yields a URL whose connections use it. Dropped afterwards."""
    require("PostgreSQL", POSTGRES_URL, 5432)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    separator = "&" if "?" in POSTGRES_URL else "?"
    try:
        yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


# Redis databases the tests may empty, tried from the named one downwards.
_SPARE_REDIS_DATABASES = 8


@contextlib.contextmanager
def redis_database(url: str = REDIS_URL) -> Iterator[str]:
    """A database of the machine's Redis for this test alone, emptied before and after: the
    one ``url`` names or, while another test run on this machine holds that one, the next free
    one below it (a lock file per database), so two runs at once do not empty each other's."""
    require("Redis", url, 6379)
    import redis

    base, _, named = url.rpartition("/")
    first = int(named or 0)
    with contextlib.ExitStack() as held:
        for db in range(first, max(first - _SPARE_REDIS_DATABASES, -1), -1):
            lock = held.enter_context(open(f"/tmp/quorum-test-redis-{urlparse(url).port or 6379}-{db}.lock", "w"))
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue
            chosen = f"{base}/{db}"
            break
        else:
            raise RuntimeError(f"every Redis database from {first} down is in use by another test run")
        client = redis.Redis.from_url(chosen)
        client.flushdb()
        try:
            yield chosen
        finally:
            client.flushdb()
            client.close()


def b64(key: bytes) -> str:
    """A key as the settings take it: base64 text."""
    return base64.b64encode(key).decode()


def deployment_settings(home: Path, kafka_bootstrap: str, **overrides: Any) -> Settings:
    """Settings for a test's in-process deployment of several services: topics of its own,
    one partition, 8 handler threads, no periodic refit and no rate limit, so that only
    what the test does happens; keyword arguments override fields."""
    values: dict[str, Any] = {
        "home": home,
        "kafka_bootstrap": kafka_bootstrap,
        "topic_prefix": f"t{uuid.uuid4().hex[:12]}",
        "kafka_partitions": 1,
        "grpc_workers": 8,
        "consensus_refit_seconds": 0,
        "rate_limit_per_second": 0,
    }
    values.update(overrides)
    return Settings(**values)


def admin_key(settings: Settings) -> str:
    """An admin key valid for services started with ``settings`` (the local user's key,
    created in their access database on first use)."""
    engine = make_engine(settings.access_database())
    try:
        # Not audited, like worker_key's: the tests' own entries stay the only ones.
        return ensure_local_key(engine, settings.home, load_key_hasher(settings), recorded=None)
    finally:
        engine.dispose()


def worker_key(settings: Settings, worker_id: str) -> str:
    """A new worker key acting as ``worker_id``, valid for services started with ``settings``."""
    engine = make_engine(settings.access_database())
    try:
        keys.metadata.create_all(engine)
        store = KeyStore(engine, load_key_hasher(settings))
        _, key = store.create(Role.WORKER, subject=worker_id, name="test worker")
        return key
    finally:
        engine.dispose()


def client_key(settings: Settings, org_id: str) -> str:
    """A new client key acting for ``org_id``, valid for services started with ``settings``."""
    engine = make_engine(settings.access_database())
    try:
        keys.metadata.create_all(engine)
        store = KeyStore(engine, load_key_hasher(settings))
        _, key = store.create(Role.CLIENT, org_id=org_id, subject=f"{org_id}-app", name="test client")
        return key
    finally:
        engine.dispose()


def insert_key_row(engine: sa.Engine, key_id: str, secret_hash: str, role: Role = Role.WORKER) -> None:
    """A key row written straight into an access database, as an older version (or a
    process with another hashing key) left it."""
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(
            keys.api_keys.insert().values(
                key_id=key_id,
                secret_hash=secret_hash,
                role=role.value,
                org_id="",
                subject=f"{role.value}-{key_id}",
                name="",
                created_by="",
                created_at=now,
                changed_at=now,
            )
        )


def wait_until(condition: Callable[[], bool], timeout: float, what: str) -> None:
    """Polls ``condition`` every 0.25 s; raises AssertionError naming ``what`` after ``timeout``
    seconds without it holding. NOT_FOUND counts as "not yet": a service hears of a job one
    Kafka hop after ingest, and only once its consumer group has formed."""
    deadline = time.monotonic() + timeout
    while not holds(condition):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.25)


def holds(condition: Callable[[], bool]) -> bool:
    """``condition()``, False where it fails with NOT_FOUND."""
    try:
        return condition()
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return False
        raise


def crowd_until(crowd: SimulatedCrowd, condition: Callable[[], bool], timeout: float, what: str) -> CrowdReport:
    """Runs ``crowd`` in a thread until ``condition`` holds (polled as :func:`wait_until`
    does), then stops it and returns its report. Raises AssertionError naming ``what`` when
    ``condition`` does not hold within ``timeout`` seconds (the crowd is stopped first)."""
    done = threading.Event()
    outcome: list[CrowdReport] = []
    worker = threading.Thread(target=lambda: outcome.append(crowd.run(done.is_set, timeout)))
    worker.start()
    try:
        wait_until(condition, timeout, what)
    finally:
        done.set()
        worker.join()
    return outcome[0]
