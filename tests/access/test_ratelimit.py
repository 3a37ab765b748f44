"""The per-key rate limit, counted in this process's memory and in Redis."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
import redis

from quorum.errors import ResourceExhausted
from quorum.security.principal import Principal, Role
from quorum.security.ratelimit import FixedWindowLimiter


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
def client(request: pytest.FixtureRequest) -> Iterator[redis.Redis | None]:
    if request.param == "memory":
        yield None
        return
    connected = redis.Redis.from_url(str(request.getfixturevalue("redis_url")))
    yield connected
    connected.close()


def test_each_key_gets_its_own_count_per_second(client: redis.Redis | None) -> None:
    clock = Clock(1_900_000_000.25)
    limiter = FixedWindowLimiter(client, "tasking", per_second=3, clock=clock)
    # Key ids of their own: the machine's Redis database is shared with other test runs.
    alice = Principal(key_id=uuid.uuid4().hex, role=Role.WORKER, org_id="", subject="alice")
    bob = Principal(key_id=uuid.uuid4().hex, role=Role.WORKER, org_id="", subject="bob")
    for _ in range(3):
        limiter.check(alice)
    with pytest.raises(ResourceExhausted) as refused:
        limiter.check(alice)
    assert refused.value.retry_after_ms == 750
    limiter.check(bob)  # another key is counted apart
    clock.now += 1.0  # the next second starts a new count
    for _ in range(3):
        limiter.check(alice)
    with pytest.raises(ResourceExhausted):
        limiter.check(alice)
