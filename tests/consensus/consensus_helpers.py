"""Event builders and a seeded simulated crowd for the consensus tests and benchmark."""

from __future__ import annotations

import datetime as dt
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from google.protobuf.timestamp_pb2 import Timestamp

from quorum.messaging import Topics
from quorum.v1 import common_pb2, events_pb2
from services.consensus import tables

LABELS = ("cat", "dog", "bird")
TOPICS = Topics("test")
NOW = dt.datetime(2030, 5, 1, 12, 0, 30, tzinfo=dt.UTC)
"""The time the handler and queries of the tests see."""


def _ts(moment: dt.datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(moment)
    return ts


def _answer(label: str) -> common_pb2.Answer:
    return common_pb2.Answer(classification=common_pb2.ClassificationAnswer(label=label))


def job_created(
    job_id: str,
    labels: Sequence[str] = LABELS,
    overlap: tuple[int, int] = (3, 5),
    target: float = 0.9,
    expert_review: bool = False,
) -> events_pb2.Event:
    spec = common_pb2.JobSpec(
        name=job_id,
        client_id="client-1",
        image_classification=common_pb2.ClassificationConfig(labels=list(labels)),
        overlap=common_pb2.Overlap(min=overlap[0], max=overlap[1]),
        target_confidence=target,
        expert_review=expert_review,
    )
    return events_pb2.Event(event_id=uuid.uuid4().hex, job_created=events_pb2.JobCreated(job_id=job_id, spec=spec))


def task_created(
    task_id: str, job_id: str, gold_label: str | None = None, created_at: dt.datetime | None = None
) -> events_pb2.Event:
    task = events_pb2.TaskCreated(
        task_id=task_id,
        job_id=job_id,
        item_id=f"item-{task_id}",
        object_name=f"{task_id}.jpg",
        gold=gold_label is not None,
        created_at=_ts(created_at or dt.datetime.now(dt.UTC)),
    )
    if gold_label is not None:
        task.gold_answer.CopyFrom(_answer(gold_label))
    return events_pb2.Event(event_id=uuid.uuid4().hex, task_created=task)


def answer_accepted(task_id: str, job_id: str, worker_id: str, label: str, gold: bool = False) -> events_pb2.Event:
    return answered(task_id, job_id, worker_id, gold, classification=common_pb2.ClassificationAnswer(label=label))


def structured_job_created(
    job_id: str, overlap: tuple[int, int] = (3, 5), expert_review: bool = False, target: float = 0.9, **task: Any
) -> events_pb2.Event:
    """A JobCreated whose task type is given as a JobSpec member, e.g.
    ``bounding_boxes=common_pb2.BoundingBoxConfig(labels=["car"])``."""
    spec = common_pb2.JobSpec(
        name=job_id,
        client_id="client-1",
        overlap=common_pb2.Overlap(min=overlap[0], max=overlap[1]),
        target_confidence=target,
        expert_review=expert_review,
        **task,
    )
    return events_pb2.Event(event_id=uuid.uuid4().hex, job_created=events_pb2.JobCreated(job_id=job_id, spec=spec))


def answered(task_id: str, job_id: str, worker_id: str, gold: bool = False, **answer: Any) -> events_pb2.Event:
    """An AnswerAccepted whose answer is given as Answer members, e.g. ``boxes=boxes(CAR)``."""
    return events_pb2.Event(
        event_id=uuid.uuid4().hex,
        answer_accepted=events_pb2.AnswerAccepted(
            answer_id=uuid.uuid4().hex,
            task_id=task_id,
            job_id=job_id,
            worker_id=worker_id,
            answer=common_pb2.Answer(**answer),
            gold=gold,
            submitted_at=_ts(dt.datetime.now(dt.UTC)),
        ),
    )


def boxes(*coords: tuple[float, float, float, float]) -> common_pb2.BoxesAnswer:
    """A boxes answer of "car" boxes at the given (x, y, w, h)."""
    return common_pb2.BoxesAnswer(boxes=[common_pb2.Box(label="car", x=x, y=y, w=w, h=h) for x, y, w, h in coords])


CAR = (0.10, 0.20, 0.30, 0.20)
NEAR_CAR = (0.11, 0.21, 0.29, 0.20)
STRAY = (0.70, 0.70, 0.10, 0.10)


def outbox_events(engine: sa.Engine) -> list[tuple[str, str, events_pb2.Event]]:
    """(topic, key, event) of every outbox row, in order."""
    o = tables.outbox
    with engine.connect() as conn:
        rows = conn.execute(sa.select(o.c.topic, o.c.key, o.c.payload).order_by(o.c.id)).all()
    return [(r.topic, r.key, events_pb2.Event.FromString(r.payload)) for r in rows]


def emitted_payloads(engine: sa.Engine, kind: str) -> list[Any]:
    """The ``kind`` payloads (e.g. "task_resolved") of the outbox's events, in order."""
    return [getattr(e, kind) for _, _, e in outbox_events(engine) if e.HasField(kind)]


@dataclass(frozen=True)
class Crowd:
    """A seeded labeling run: ground truth, gold tasks and answers in arrival order."""

    labels: tuple[str, ...]
    truth: dict[str, str]
    gold: dict[str, str]
    accuracy: dict[str, float]
    spammers: frozenset[str]
    answers: list[tuple[str, str, str]]


def simulate_crowd(
    seed: int = 7,
    n_tasks: int = 300,
    n_workers: int = 30,
    labels: Sequence[str] = LABELS,
    answers_per_task: int = 5,
    spammer_share: float = 0.15,
    gold_share: float = 0.05,
) -> Crowd:
    """Honest workers are right with an accuracy drawn from [0.5, 0.95], otherwise pick another
    label uniformly; spammers answer uniformly at random. Each task gets ``answers_per_task``
    distinct workers. Answers come in rounds (every task's first answer, then every second...)
    with gold tasks spread through the run, like a crowd working through a queue."""
    rng = random.Random(seed)
    labels = tuple(labels)
    workers = [f"w{i:02d}" for i in range(n_workers)]
    spammers = frozenset(rng.sample(workers, round(spammer_share * n_workers)))
    accuracy = {w: (1.0 / len(labels) if w in spammers else rng.uniform(0.5, 0.95)) for w in workers}
    tasks = [f"t{i:04d}" for i in range(n_tasks)]
    truth = {task: rng.choice(labels) for task in tasks}
    gold_every = max(1, round(1 / gold_share)) if gold_share else 0
    gold = {task: truth[task] for i, task in enumerate(tasks) if gold_every and i % gold_every == 0}
    assigned = {task: rng.sample(workers, answers_per_task) for task in tasks}
    answers = []
    for round_ in range(answers_per_task):
        for task in tasks:
            worker = assigned[task][round_]
            if worker in spammers:
                label = rng.choice(labels)
            elif rng.random() < accuracy[worker]:
                label = truth[task]
            else:
                label = rng.choice([x for x in labels if x != truth[task]])
            answers.append((task, worker, label))
    return Crowd(labels, truth, gold, accuracy, spammers, answers)
