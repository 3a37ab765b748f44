"""Redis connections: a real server when ``QUORUM_REDIS_URL`` is set, else an
in-process Redis (fakeredis, with Lua). The services themselves open one only with a
URL: without it they keep leases and rate-limit counts in memory, which costs a
fraction of fakeredis's command and script emulation."""

from __future__ import annotations

import redis


def connect_redis(url: str | None) -> redis.Redis:
    """Returns a client with str responses. Raises redis.ConnectionError if the server is down."""
    if url:
        client: redis.Redis = redis.Redis.from_url(url, decode_responses=True, health_check_interval=30)
        client.ping()
        return client
    import fakeredis

    return fakeredis.FakeRedis(decode_responses=True)
