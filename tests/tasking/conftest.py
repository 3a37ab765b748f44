"""Fixtures of the tasking tests: the service layer on SQLite or PostgreSQL, with its
leases in memory (the embedded default), in fakeredis or in the machine's Redis."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
from tasking_helpers import Built


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Tasking's database: a SQLite file, or a fresh PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'tasking.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'tasking.db'}"


def _redis_client(request: pytest.FixtureRequest, kind: str) -> Iterator[redis.Redis]:
    if kind == "fakeredis":
        client: redis.Redis = fakeredis.FakeRedis(decode_responses=True)
    else:
        client = redis.Redis.from_url(str(request.getfixturevalue("redis_url")), decode_responses=True)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(params=["fakeredis", pytest.param("redis", marks=pytest.mark.redis)])
def redis_client(request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    """An in-process fakeredis, or a flushed database of the machine's Redis (see redis_url)."""
    yield from _redis_client(request, request.param)


@pytest.fixture
def fake_redis(request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    yield from _redis_client(request, "fakeredis")


@pytest.fixture(params=["memory", "fakeredis", pytest.param("redis", marks=pytest.mark.redis)])
def lease_backend(request: pytest.FixtureRequest) -> Iterator[redis.Redis | None]:
    """Where leases live: None for this process's memory, else a Redis client."""
    if request.param == "memory":
        yield None
    else:
        yield from _redis_client(request, request.param)


@pytest.fixture
def build(tmp_path: Path) -> Iterator[Callable[..., Built]]:
    """Builds TaskingService instances (replicas when called twice with the same
    database and Redis) and disposes of their engines afterwards."""
    built: list[Built] = []
    prefix = f"t{uuid.uuid4().hex[:10]}"

    def make(database_url: str, client: redis.Redis | None, seed: int = 7, **options: Any) -> Built:
        b = Built(database_url, client, tmp_path, prefix, seed=seed, **options)
        built.append(b)
        return b

    yield make
    for b in built:
        b.engine.dispose()


@pytest.fixture
def tasking(build: Callable[..., Built], database_url: str, lease_backend: redis.Redis | None) -> Built:
    """The service layer on every database x lease store pairing."""
    return build(database_url, lease_backend)


@pytest.fixture
def tasking_db(build: Callable[..., Built], database_url: str, fake_redis: redis.Redis) -> Built:
    """The service layer on every database, with fakeredis."""
    return build(database_url, fake_redis)


@pytest.fixture
def tasking_redis(build: Callable[..., Built], sqlite_url: str, lease_backend: redis.Redis | None) -> Built:
    """The service layer on SQLite, with each lease store."""
    return build(sqlite_url, lease_backend)


@pytest.fixture(
    params=[
        pytest.param(("sqlite", "memory"), id="sqlite-memory"),
        pytest.param(("sqlite", "fakeredis"), id="sqlite-fakeredis"),
        pytest.param(("postgres", "redis"), id="postgres-redis", marks=[pytest.mark.postgres, pytest.mark.redis]),
    ]
)
def paired_stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, redis.Redis | None]]:
    """A database URL and a Redis client (None: leases in memory): each database and each
    Redis once, paired."""
    database, kind = request.param
    url = (
        f"sqlite:///{tmp_path / 'tasking.db'}" if database == "sqlite" else str(request.getfixturevalue("postgres_url"))
    )
    if kind == "memory":
        yield url, None
        return
    for client in _redis_client(request, kind):
        yield url, client


@pytest.fixture
def tasking_paired(build: Callable[..., Built], paired_stores: tuple[str, redis.Redis | None]) -> Built:
    """For tests that wait for leases to expire: each database and each Redis once, paired."""
    return build(*paired_stores)
