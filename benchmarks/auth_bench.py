"""What authentication and rate limiting cost per call.

    python benchmarks/auth_bench.py [--redis redis://127.0.0.1:6379/15] [--calls 20000] [--keys 50]

Prints the time of a first check of a key in a process for both stored forms: the keyed
hash (HMAC-SHA256) keys are stored as now, and the scrypt rows of databases from before it,
which the first check also re-hashes (one write); the hash check alone for each; then a
cached check, and one rate-limit count in the in-process Redis and, with --redis, in a
real one. The access database is SQLite in a temporary folder.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import sqlalchemy as sa

from quorum.cache import connect_redis
from quorum.db import make_engine
from quorum.security.keyhash import KeyHasher, legacy_scrypt_hash
from quorum.security.keys import Authenticator, KeyStore, api_keys, metadata, parse_key
from quorum.security.principal import Role
from quorum.security.ratelimit import FixedWindowLimiter


def per_call_us(run: Callable[[], object], calls: int) -> float:
    started = time.perf_counter()
    for _ in range(calls):
        run()
    return (time.perf_counter() - started) / calls * 1e6


def first_checks_ms(engine: sa.Engine, hasher: KeyHasher, warm_up: str, keys: list[str]) -> list[float]:
    """Each key's first check in a new process's authenticator: a cache miss, one lookup and
    the hash. ``warm_up`` goes first, so that the process's revocation poll (a query every
    2 s, not one per key) is not counted."""
    auth = Authenticator(engine, hasher, poll_seconds=3600)
    auth.authenticate(warm_up)
    times = []
    for key in keys:
        started = time.perf_counter()
        auth.authenticate(key)
        times.append((time.perf_counter() - started) * 1000)
    return times


def hash_checks_us(hasher: KeyHasher, keys: list[str], stored: dict[str, str]) -> list[float]:
    times = []
    for key in keys:
        key_id, secret = parse_key(key)
        started = time.perf_counter()
        if not hasher.check(key_id, secret, stored[key_id]).verified:
            raise AssertionError(f"key {key_id} did not verify")
        times.append((time.perf_counter() - started) * 1e6)
    return times


def stored_hashes(engine: sa.Engine) -> dict[str, str]:
    with engine.connect() as conn:
        return {key_id: stored for key_id, stored in conn.execute(sa.select(api_keys.c.key_id, api_keys.c.secret_hash))}


def as_scrypt_rows(engine: sa.Engine, keys: list[str]) -> None:
    """Stores ``keys`` as a database from before the keyed hash holds them."""
    with engine.begin() as conn:
        for key in keys:
            key_id, secret = parse_key(key)
            conn.execute(
                api_keys.update().where(api_keys.c.key_id == key_id).values(secret_hash=legacy_scrypt_hash(secret))
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--keys", type=int, default=50, help="keys of each stored form")
    parser.add_argument("--redis", default="", help="also time a real Redis at this URL")
    args = parser.parse_args()
    median = statistics.median
    with tempfile.TemporaryDirectory() as folder:
        engine = make_engine(f"sqlite:///{Path(folder) / 'access.db'}")
        metadata.create_all(engine)
        hasher = KeyHasher(os.urandom(32))
        store = KeyStore(engine, hasher)
        warm_up = store.create(Role.WORKER, subject="warm-up")[1]
        keyed = [store.create(Role.WORKER, subject=f"k{i}")[1] for i in range(args.keys)]
        scrypt = [store.create(Role.WORKER, subject=f"s{i}")[1] for i in range(args.keys)]
        as_scrypt_rows(engine, scrypt)
        before = stored_hashes(engine)

        print(f"first check of a key in a process, median over {args.keys} keys (lookup in SQLite + hash):")
        keyed_first = first_checks_ms(engine, hasher, warm_up, keyed)
        print(f"  keyed hash (HMAC-SHA256):                    {median(keyed_first):.3f} ms")
        rehashed = first_checks_ms(engine, hasher, warm_up, scrypt)
        print(f"  scrypt row from before (+ re-hash, 1 write): {median(rehashed):.3f} ms")
        next_process = first_checks_ms(engine, hasher, warm_up, scrypt)
        print(f"  the same keys in the next process:           {median(next_process):.3f} ms")
        print("the hash check alone, median:")
        print(f"  keyed hash (HMAC-SHA256): {median(hash_checks_us(hasher, keyed, before)):.1f} us")
        print(f"  scrypt (N=2^12, r=8, p=1): {median(hash_checks_us(hasher, scrypt, before)):.1f} us")

        auth = Authenticator(engine, hasher)
        principal = auth.authenticate(keyed[0])
        print(f"cached check: {per_call_us(lambda: auth.authenticate(keyed[0]), args.calls):.1f} us per call")
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
