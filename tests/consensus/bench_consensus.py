"""Throughput of the consensus event handler: feeds a simulated crowd's answers through
``ConsensusEvents.handle`` in consumer-sized batches and prints answers per second.

    .venv/bin/python tests/consensus/bench_consensus.py [--tasks 2000] [--batch 500] [--url URL]

Without ``--url`` it uses a fresh SQLite file. Kafka is not involved: this measures the handler
(decoding excluded, database included), the part that runs once per batch in the service.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa
from consensus_helpers import answer_accepted, job_created, simulate_crowd, task_created

from quorum.db import make_engine
from quorum.messaging import Topics
from services.consensus import tables
from services.consensus.handlers import ConsensusEvents


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--answers-per-task", type=int, default=5)
    parser.add_argument("--workers", type=int, default=100)
    parser.add_argument("--batch", type=int, default=500, help="events per handler call (the consumer's max)")
    parser.add_argument("--url", help="SQLAlchemy URL of an empty database; default: a new SQLite file")
    args = parser.parse_args()

    crowd = simulate_crowd(seed=1, n_tasks=args.tasks, n_workers=args.workers, answers_per_task=args.answers_per_task)
    setup = [job_created("bench", crowd.labels, overlap=(3, args.answers_per_task), target=0.9)]
    setup += [task_created(task, "bench", gold_label=crowd.gold.get(task)) for task in crowd.truth]
    answers = [answer_accepted(t, "bench", w, label) for t, w, label in crowd.answers]

    with tempfile.TemporaryDirectory() as folder:
        url = args.url or f"sqlite:///{Path(folder) / 'consensus.db'}"
        engine = make_engine(url)
        tables.metadata.create_all(engine)
        handler = ConsensusEvents(engine, Topics("bench"))
        handler.load()
        for start in range(0, len(setup), args.batch):
            handler.handle(setup[start : start + args.batch])

        began = time.perf_counter()
        for start in range(0, len(answers), args.batch):
            handler.handle(answers[start : start + args.batch])
        elapsed = time.perf_counter() - began

        with engine.connect() as conn:
            resolved = conn.execute(sa.select(sa.func.count()).select_from(tables.results)).scalar_one()
            outbox = conn.execute(sa.select(sa.func.count()).select_from(tables.outbox)).scalar_one()
        engine.dispose()

    backend = sa.engine.make_url(url).get_backend_name()
    print(
        f"{backend}: {len(answers)} answers in {elapsed:.2f} s = {len(answers) / elapsed:,.0f} answers/s "
        f"(batches of {args.batch}); {resolved} tasks resolved, {outbox} outbox events"
    )


if __name__ == "__main__":
    main()
