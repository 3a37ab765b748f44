"""What authentication and rate limiting cost per call.

    python benchmarks/auth_bench.py [--redis redis://127.0.0.1:6379/15] [--calls 20000]

Prints the time of a first check of a key (the scrypt hash), of a cached check, and of
one rate-limit count in the in-process Redis and, with --redis, in a real one.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from quorum.cache import connect_redis
from quorum.db import make_engine
from quorum.security.keys import Authenticator, KeyStore, metadata
from quorum.security.principal import Role
from quorum.security.ratelimit import FixedWindowLimiter


def per_call_us(run: Callable[[], object], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        run()
    return (time.perf_counter() - started) / calls * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--redis", default="", help="also time a real Redis at this URL")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        engine = make_engine(f"sqlite:///{Path(folder) / 'access.db'}")
        metadata.create_all(engine)
        store = KeyStore(engine)
        keys = [store.create(Role.WORKER, subject=f"w{i}")[1] for i in range(50)]
        first = []
        for key in keys:
            auth = Authenticator(engine)
            started = time.perf_counter()
            auth.authenticate(key)
            first.append((time.perf_counter() - started) * 1000)
        print(f"first check of a key (scrypt + lookup): median {statistics.median(first):.2f} ms over {len(keys)} keys")
        auth = Authenticator(engine)
        principal = auth.authenticate(keys[0])
        print(f"cached check: {per_call_us(lambda: auth.authenticate(keys[0]), args.calls):.1f} us per call")
        redis_urls = {"in-process Redis (fakeredis)": None}
        if args.redis:
            redis_urls[f"Redis at {args.redis}"] = args.redis
        for label, url in redis_urls.items():
            limiter = FixedWindowLimiter(connect_redis(url), "bench", per_second=10**9)
            cost = per_call_us(partial(limiter.check, principal), args.calls)
            print(f"rate-limit count, {label}: {cost:.1f} us per call")
        engine.dispose()


if __name__ == "__main__":
    main()
