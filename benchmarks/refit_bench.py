"""Cost of the periodic refit of one structured job: a seeded box job fed through the real
handler into a temporary SQLite database, then one :meth:`Refit.refit_job`.

    .venv/bin/python benchmarks/refit_bench.py [--tasks 500] [--answers 5] [--workers 20]

Each task shows one car; workers draw it with a little noise, and a quarter of them also draw
a stray box on a third of their tasks. Prints the time to feed the job (streaming), the time of
the pure fit (:func:`services.consensus.domain.refit_structured`: agreement of every answer
with its current label, then one fusion per task and round) and of the whole refit (reads, fit,
write), with the rounds run and the labels changed. No network.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from quorum.db import make_engine
from quorum.messaging import Topics
from quorum.v1 import common_pb2, events_pb2
from services.consensus import tables as t
from services.consensus.domain import Vote, refit_structured
from services.consensus.handlers import ConsensusEvents, job_spec_of_row
from services.consensus.refit import Refit


def _events(n_tasks: int, n_answers: int, n_workers: int, seed: int) -> list[events_pb2.Event]:
    rng = np.random.default_rng(seed)
    workers = [f"w{i:02d}" for i in range(n_workers)]
    careless = set(workers[: n_workers // 4])
    spec = common_pb2.JobSpec(
        name="bench",
        client_id="bench",
        overlap=common_pb2.Overlap(min=n_answers, max=n_answers),
        target_confidence=0.9,
        bounding_boxes=common_pb2.BoundingBoxConfig(labels=["car"]),
    )
    events = [events_pb2.Event(event_id=uuid.uuid4().hex, job_created=events_pb2.JobCreated(job_id="j", spec=spec))]
    for k in range(n_tasks):
        task = f"t{k:04d}"
        events.append(
            events_pb2.Event(
                event_id=uuid.uuid4().hex,
                task_created=events_pb2.TaskCreated(task_id=task, job_id="j", item_id=task, object_name=task),
            )
        )
        x, y = rng.uniform(0.1, 0.6, 2)
        for worker in rng.choice(workers, n_answers, replace=False):
            drawn = [common_pb2.Box(label="car", x=x + rng.normal(0, 0.005), y=y + rng.normal(0, 0.005), w=0.2, h=0.15)]
            if worker in careless and rng.random() < 1 / 3:
                drawn.append(common_pb2.Box(label="car", x=rng.uniform(0, 0.8), y=rng.uniform(0, 0.8), w=0.1, h=0.1))
            events.append(
                events_pb2.Event(
                    event_id=uuid.uuid4().hex,
                    answer_accepted=events_pb2.AnswerAccepted(
                        answer_id=uuid.uuid4().hex,
                        task_id=task,
                        job_id="j",
                        worker_id=str(worker),
                        answer=common_pb2.Answer(boxes=common_pb2.BoxesAnswer(boxes=drawn)),
                    ),
                )
            )
    return events


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=500)
    parser.add_argument("--answers", type=int, default=5, help="answers per task (overlap min = max)")
    parser.add_argument("--workers", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    topics = Topics("bench")
    with tempfile.TemporaryDirectory() as folder:
        engine = make_engine(f"sqlite:///{folder}/consensus.db")
        t.metadata.create_all(engine)
        handler = ConsensusEvents(engine, topics)
        handler.load()
        events = _events(args.tasks, args.answers, args.workers, args.seed)
        start = time.perf_counter()
        for first in range(0, len(events), 500):
            handler.handle(events[first : first + 500])
        fed = time.perf_counter() - start

        with engine.connect() as conn:
            job = job_spec_of_row(conn.execute(sa.select(t.jobs)).one())
            answers = conn.execute(sa.select(t.answers).order_by(t.answers.c.id)).all()
            resolved = dict(conn.execute(sa.select(t.results.c.task_id, t.results.c.label)).all())
        votes: dict[str, list[Vote]] = {}
        for row in answers:
            votes.setdefault(row.task_id, []).append(Vote(row.worker_id, row.label))
        start = time.perf_counter()
        fitted = refit_structured(job, votes, {}, resolved)
        fit = time.perf_counter() - start

        start = time.perf_counter()
        changed = Refit(engine, topics, lambda: None).refit_job("j")
        whole = time.perf_counter() - start
        engine.dispose()
    print(json.dumps({"tasks": args.tasks, "answers_per_task": args.answers, "resolved": len(resolved)}))
    print(f"feeding the job through the handler   {fed:8.2f} s")
    print(f"pure fit (refit_structured)            {fit:8.2f} s   {fitted.rounds} rounds")
    print(f"whole refit_job (read, fit, write)     {whole:8.2f} s   {changed} labels changed")
    print(f"per resolved task                      {1000 * whole / max(len(resolved), 1):8.2f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
