"""Per-principal rate limits in Redis, shared by every replica of a service."""

from __future__ import annotations

import time
from collections.abc import Callable

import redis

from quorum.errors import ResourceExhausted
from quorum.security.principal import Principal


class FixedWindowLimiter:
    """At most ``per_second`` calls per principal and service in each wall-clock second.

    One pipelined INCR + EXPIRE per call: cheap enough for the hottest RPCs. A fixed
    window admits up to twice the rate across a second's boundary, which is fine for
    stopping abuse; it is not a billing meter.
    """

    def __init__(
        self,
        client: redis.Redis,
        service: str,
        per_second: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = client
        self._service = service
        self._per_second = per_second
        self._clock = clock

    def check(self, principal: Principal) -> None:
        now = self._clock()
        window = int(now)
        key = f"quorum:ratelimit:{self._service}:{principal.key_id}:{window}"
        pipe = self._redis.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, 2)
        count = int(pipe.execute()[0])
        if count > self._per_second:
            retry_ms = max(1, int((window + 1 - now) * 1000))
            raise ResourceExhausted(
                f"rate limit: at most {self._per_second} calls per second per key on {self._service}",
                retry_after_ms=retry_ms,
            )
