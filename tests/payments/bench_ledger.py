"""Ledger throughput on SQLite and PostgreSQL: postings per second through
``Ledger.handle_events`` in consumer-sized batches, and query latencies.

Run: .venv/bin/python tests/payments/bench_ledger.py [--objects 2000] [--answers 4] [--batch 500]
PostgreSQL is taken from QUORUM_TEST_POSTGRES_URL (default the local test database)
and skipped when unreachable.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).parent))

from payments_streams import answer_accepted, job_created, task_resolved

from quorum.db import make_engine
from quorum.v1 import events_pb2
from services.payments import tables
from services.payments.handlers import Ledger, verify_ledger

POSTGRES_URL = os.environ.get("QUORUM_TEST_POSTGRES_URL", "postgresql+psycopg://root@127.0.0.1:5432/test")


def stream(objects: int, answers: int, jobs: int = 4) -> list[events_pb2.Event]:
    """The demo's shape: answers arrive interleaved with resolutions, a job spec per job first."""
    events = [job_created(f"job{j}", price=30, pay=5, pilot=j == 0, allowance=100) for j in range(jobs)]
    body = []
    for i in range(objects):
        job = f"job{i % jobs}"
        task = f"{job}-t{i}"
        body += [answer_accepted(f"{task}-a{a}", task, job, f"w{random.randrange(100)}") for a in range(answers)]
        body.append(task_resolved(task, job))
    return events + body


def timed(call: Callable[[], object], repeat: int = 200) -> float:
    start = time.perf_counter()
    for _ in range(repeat):
        call()
    return (time.perf_counter() - start) / repeat * 1000


def bench(name: str, url: str, events: list[events_pb2.Event], batch: int) -> None:
    engine = make_engine(url)
    tables.metadata.create_all(engine)
    ledger = Ledger(engine)
    start = time.perf_counter()
    for offset in range(0, len(events), batch):
        ledger.handle_events(events[offset : offset + batch])
    elapsed = time.perf_counter() - start
    with engine.connect() as conn:
        postings = conn.execute(sa.select(sa.func.count()).select_from(tables.postings)).scalar_one()
    print(
        f"{name:10s} {len(events):6d} events -> {postings:6d} postings in {elapsed:5.2f} s: "
        f"{postings / elapsed:7.0f} postings/s, {len(events) / elapsed:7.0f} events/s"
    )
    replay_start = time.perf_counter()
    for offset in range(0, len(events), batch):
        ledger.handle_events(events[offset : offset + batch])
    print(f"{'':10s} replay of every event (all duplicates): {time.perf_counter() - replay_start:5.2f} s")
    print(
        f"{'':10s} money summary one job {timed(lambda: ledger.money_summary('job1')):.2f} ms, "
        f"all jobs {timed(lambda: ledger.money_summary()):.2f} ms, "
        f"invoice {timed(lambda: ledger.invoice('job0')):.2f} ms, "
        f"worker balance {timed(lambda: ledger.worker_balance('w7')):.2f} ms, "
        f"ledger page of 100 {timed(lambda: ledger.list_entries('job2', 100, '')):.2f} ms"
    )
    verify_start = time.perf_counter()
    verification = verify_ledger(engine)
    print(
        f"{'':10s} verify {verification.entries} entries: {time.perf_counter() - verify_start:5.2f} s, "
        f"balanced={verification.balanced} problems={verification.problems[:3]}"
    )
    engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=2000)
    parser.add_argument("--answers", type=int, default=4)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    random.seed(7)
    events = stream(args.objects, args.answers)
    with tempfile.TemporaryDirectory() as folder:
        bench("sqlite", f"sqlite:///{folder}/payments.db", events, args.batch)
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as error:
        print(f"postgresql skipped: {error.orig}")
        return
    try:
        bench("postgresql", f"{POSTGRES_URL}?options=-csearch_path%3D{schema}", events, args.batch)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


if __name__ == "__main__":
    main()
