"""Event builders and a service factory shared by the tasking tests."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import redis
import sqlalchemy as sa

from quorum.db import make_engine
from quorum.messaging import Topics
from quorum.objectstore import LocalDiskStore, ObjectStore
from quorum.v1 import common_pb2, events_pb2
from services.tasking import tables
from services.tasking.domain import SubmittedAnswer
from services.tasking.handlers import ORPHAN_GRACE, TaskingService
from services.tasking.leases import Leases, LeaseStore, MemoryLeaseStore

LABELS = ("cat", "dog", "bird")


def event(**payload: Any) -> events_pb2.Event:
    return events_pb2.Event(event_id=uuid.uuid4().hex, **payload)


def job_created(
    job_id: str,
    *,
    kind: str = "text",
    labels: tuple[str, ...] = LABELS,
    overlap: tuple[int, int] = (1, 3),
    gold_share: float = 0.0,
    lease_seconds: int = 0,
    instructions: str = "Pick the animal.",
    created_at_s: int = 0,
) -> events_pb2.Event:
    config = common_pb2.ClassificationConfig(labels=list(labels))
    spec = common_pb2.JobSpec(
        name=f"job {job_id}",
        client_id="acme",
        instructions=instructions,
        overlap=common_pb2.Overlap(min=overlap[0], max=overlap[1]),
        gold_share=gold_share,
        lease_seconds=lease_seconds,
    )
    getattr(spec, f"{kind}_classification").CopyFrom(config)
    created = events_pb2.JobCreated(job_id=job_id, spec=spec)
    if created_at_s:
        created.created_at.FromSeconds(created_at_s)
    return event(job_created=created)


def task_created(
    task_id: str,
    job_id: str,
    *,
    text: str | None = None,
    gold: bool = False,
    object_key: str = "",
    content_type: str = "text/plain",
    gold_label: str = "",
) -> events_pb2.Event:
    created = events_pb2.TaskCreated(
        task_id=task_id,
        job_id=job_id,
        item_id=f"item-{task_id}",
        object_name=f"{task_id}.txt",
        object_key=object_key,
        content_type=content_type,
        text=text if text is not None else f"the text of {task_id}",
        gold=gold,
    )
    if gold_label:
        created.gold_answer.classification.label = gold_label
    return event(task_created=created)


def more_answers(task_id: str, job_id: str, wanted: int) -> events_pb2.Event:
    return event(
        more_answers_requested=events_pb2.MoreAnswersRequested(task_id=task_id, job_id=job_id, answers_wanted=wanted)
    )


def resolved(task_id: str, job_id: str) -> events_pb2.Event:
    return event(task_resolved=events_pb2.TaskResolved(task_id=task_id, job_id=job_id))


def sealed(job_id: str, objects: int, gold_objects: int = 0) -> events_pb2.Event:
    return event(job_sealed=events_pb2.JobSealed(job_id=job_id, objects=objects, gold_objects=gold_objects))


def load(built: Built, job_id: str, tasks: int, gold: int = 0, **job: object) -> list[str]:
    """Sends a job and its tasks (ids <job>-t000.., gold <job>-g000..); returns the regular ids."""
    ids = [f"{job_id}-t{i:03d}" for i in range(tasks)]
    events = [task_created(task_id, job_id) for task_id in ids]
    events += [task_created(f"{job_id}-g{i:03d}", job_id, gold=True, gold_label="cat") for i in range(gold)]
    built.service.handle_events([job_created(job_id, **job), *events])  # type: ignore[arg-type]
    return ids


def label(value: str) -> SubmittedAnswer:
    return SubmittedAnswer(kind="classification", label=value)


class Built:
    """A TaskingService with the pieces a test inspects; leases in ``client``, or in
    memory (the embedded default) when it is None."""

    def __init__(
        self,
        database_url: str,
        client: redis.Redis | None,
        home: Path,
        prefix: str,
        seed: int = 7,
        orphan_grace: dt.timedelta = ORPHAN_GRACE,
    ) -> None:
        import random

        self.engine = make_engine(database_url)
        tables.metadata.create_all(self.engine)
        self.redis = client
        self.leases: Leases = MemoryLeaseStore() if client is None else LeaseStore(client, prefix=f"{prefix}:tasking")
        self.objects: ObjectStore = LocalDiskStore(home / "objects")
        self.topics = Topics(prefix)
        self.wakeups = 0
        self.service = TaskingService(
            engine=self.engine,
            leases=self.leases,
            objects=self.objects,
            topics=self.topics,
            outbox_written=self._woken,
            rng=random.Random(seed),
            orphan_grace=orphan_grace,
        )

    def _woken(self) -> None:
        self.wakeups += 1

    def session(self, worker_id: str) -> str:
        return self.service.start_session(worker_id).session_id

    def rows(self, table: sa.Table, *where: Any) -> list[Any]:
        with self.engine.connect() as conn:
            return list(conn.execute(sa.select(table).where(*where)).all())

    def task_row(self, task_id: str) -> Any:
        (row,) = self.rows(tables.tasks, tables.tasks.c.task_id == task_id)
        return row

    def outbox_events(self) -> list[tuple[str, str, events_pb2.Event]]:
        found = []
        for row in self.rows(tables.outbox):
            parsed = events_pb2.Event()
            parsed.ParseFromString(row.payload)
            found.append((row.topic, row.key, parsed))
        return found
