"""Per-principal rate limits: in Redis, shared by every replica of a service, or in the
process's memory when there is no Redis (the embedded default runs one process per
service)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import redis

from quorum.errors import ResourceExhausted
from quorum.security.principal import Principal


class FixedWindowLimiter:
    """At most ``per_second`` calls per principal and service in each wall-clock second.

    With ``client``, one pipelined INCR + EXPIRE per call in that Redis; with None, a
    counter in this process's memory (a few microseconds). Cheap enough for the
    hottest RPCs either way. A fixed window admits up to twice the rate across a
    second's boundary, which is fine for stopping abuse; it is not a billing meter.
    """

    def __init__(
        self,
        client: redis.Redis | None,
        service: str,
        per_second: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = client
        self._service = service
        self._per_second = per_second
        self._clock = clock
        self._lock = threading.Lock()
        # Without Redis: the current window and its count per key id.
        self._window = 0
        self._counts: dict[str, int] = {}

    def _count(self, key_id: str, window: int) -> int:
        if self._redis is not None:
            key = f"quorum:ratelimit:{self._service}:{key_id}:{window}"
            pipe = self._redis.pipeline(transaction=False)
            pipe.incr(key)
            pipe.expire(key, 2)
            return int(pipe.execute()[0])
        with self._lock:
            if window != self._window:
                self._window, self._counts = window, {}
            count = self._counts.get(key_id, 0) + 1
            self._counts[key_id] = count
            return count

    def check(self, principal: Principal) -> None:
        now = self._clock()
        window = int(now)
        if self._count(principal.key_id, window) > self._per_second:
            retry_ms = max(1, int((window + 1 - now) * 1000))
            raise ResourceExhausted(
                f"rate limit: at most {self._per_second} calls per second per key on {self._service}",
                retry_after_ms=retry_ms,
            )
