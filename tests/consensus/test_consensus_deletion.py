"""JobDeleted in consensus, organisations on jobs, tasks and results, and owner lookups,
against SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
import sqlalchemy as sa
from consensus_helpers import answer_accepted, job_created, outbox_events, task_created

from quorum.errors import NotFound
from quorum.messaging import Topics
from quorum.v1 import events_pb2
from services.consensus import tables
from services.consensus.handlers import ConsensusEvents, ConsensusQueries

TOPICS = Topics("test")
NOW = dt.datetime(2030, 5, 1, 12, 0, 30, tzinfo=dt.UTC)


@pytest.fixture
def handler(engine: sa.Engine) -> ConsensusEvents:
    events = ConsensusEvents(engine, TOPICS, clock=lambda: NOW)
    events.load()
    return events


@pytest.fixture
def queries(engine: sa.Engine) -> ConsensusQueries:
    return ConsensusQueries(engine, clock=lambda: NOW)


def job_deleted(job_id: str, org_id: str = "client-1") -> events_pb2.Event:
    return events_pb2.Event(event_id=uuid.uuid4().hex, job_deleted=events_pb2.JobDeleted(job_id=job_id, org_id=org_id))


def resolve(handler: ConsensusEvents, job_id: str, task_id: str) -> None:
    handler.handle(
        [
            task_created(task_id, job_id),
            *[answer_accepted(task_id, job_id, worker, "cat") for worker in ("w1", "w2", "w3")],
        ]
    )


def rows(engine: sa.Engine, table: sa.Table, job_id: str) -> list[sa.Row[object]]:
    with engine.connect() as conn:
        return list(conn.execute(sa.select(table).where(table.c.job_id == job_id)).all())


def test_a_deleted_jobs_answers_results_and_tasks_are_purged(
    handler: ConsensusEvents, queries: ConsensusQueries, engine: sa.Engine
) -> None:
    handler.handle([job_created("j1"), job_created("j2")])
    resolve(handler, "j1", "t1")
    # Split answers: consensus asks for more.
    handler.handle(
        [
            task_created("t2", "j1"),
            *[
                answer_accepted("t2", "j1", worker, said)
                for worker, said in (("w1", "dog"), ("w2", "cat"), ("w3", "bird"))
            ],
        ]
    )
    assert [
        e.more_answers_requested.task_id for _, _, e in outbox_events(engine) if e.HasField("more_answers_requested")
    ] == ["t2"]
    resolve(handler, "j2", "kept")
    assert queries.get_result("t1").label == "cat"

    assert {e.task_resolved.job_id for _, _, e in outbox_events(engine) if e.HasField("task_resolved")} == {"j1", "j2"}

    handler.handle([job_deleted("j1")])

    for table in (tables.answers, tables.results, tables.tasks, tables.jobs):
        assert rows(engine, table, "j1") == []
    # Events naming the deleted job's objects are not sent or replayed either.
    assert {e.task_resolved.job_id for _, _, e in outbox_events(engine) if e.HasField("task_resolved")} == {"j2"}
    assert [e for _, _, e in outbox_events(engine) if e.HasField("more_answers_requested")] == []
    with pytest.raises(NotFound):
        queries.get_result("t1")
    with pytest.raises(NotFound):
        queries.export_results("j1")
    # The other job and the workers' evidence stay.
    assert [r.task_id for r in queries.export_results("j2")] == ["kept"]
    assert {w.worker_id for w in queries.list_workers()} == {"w1", "w2", "w3"}


def test_events_of_a_deleted_job_change_nothing_whatever_their_order(
    handler: ConsensusEvents, queries: ConsensusQueries, engine: sa.Engine
) -> None:
    handler.handle([job_created("j1"), task_created("t1", "j1"), job_deleted("j1")])
    before = len(outbox_events(engine))
    resolve(handler, "j1", "t2")
    handler.handle([job_created("j1")])
    for table in (tables.answers, tables.results, tables.tasks, tables.jobs):
        assert rows(engine, table, "j1") == []
    assert len(outbox_events(engine)) == before
    with pytest.raises(NotFound):
        queries.export_results("j1")


def test_a_restarted_handler_still_drops_the_deleted_job(engine: sa.Engine) -> None:
    first = ConsensusEvents(engine, TOPICS, clock=lambda: NOW)
    first.load()
    first.handle([job_created("j1"), job_deleted("j1")])
    restarted = ConsensusEvents(engine, TOPICS, clock=lambda: NOW)
    restarted.load()
    resolve(restarted, "j1", "t1")
    assert rows(engine, tables.tasks, "j1") == [] and rows(engine, tables.answers, "j1") == []


def test_a_redelivered_deletion_is_harmless(handler: ConsensusEvents, engine: sa.Engine) -> None:
    handler.handle([job_created("j1")])
    deletion = job_deleted("j1")
    handler.handle([deletion])
    handler.handle([deletion, job_deleted("j1")])
    with engine.connect() as conn:
        deleted = conn.execute(sa.select(tables.deleted_jobs)).all()
    assert [(row.job_id, row.org_id) for row in deleted] == [("j1", "client-1")]


def test_jobs_tasks_and_results_carry_the_organisation(handler: ConsensusEvents, engine: sa.Engine) -> None:
    # The task arrives before its job and learns the organisation when the job does.
    handler.handle([task_created("t1", "j1")])
    assert [row.org_id for row in rows(engine, tables.tasks, "j1")] == [""]
    handler.handle([job_created("j1")])
    handler.handle([answer_accepted("t1", "j1", w, "cat") for w in ("w1", "w2", "w3")])
    assert [row.org_id for row in rows(engine, tables.jobs, "j1")] == ["client-1"]
    assert [row.org_id for row in rows(engine, tables.tasks, "j1")] == ["client-1"]
    assert [row.org_id for row in rows(engine, tables.results, "j1")] == ["client-1"]


def test_owner_of_jobs_and_tasks(handler: ConsensusEvents, queries: ConsensusQueries, engine: sa.Engine) -> None:
    handler.handle([task_created("t1", "j1")])
    assert queries.owner_of("task", "t1") is None  # its job is not known yet, so neither is its owner
    handler.handle([job_created("j1"), task_created("t2", "j1")])
    assert queries.owner_of("job", "j1") == "client-1"
    assert queries.owner_of("task", "t1") == queries.owner_of("task", "t2") == "client-1"
    assert queries.owner_of("job", "nope") is None
    assert queries.owner_of("task", "nope") is None
    assert queries.owner_of("result", "t1") is None

    handler.handle([job_deleted("j1")])
    fresh = ConsensusQueries(engine, clock=lambda: NOW)
    # A deleted job keeps its owner; its tasks are gone.
    assert fresh.owner_of("job", "j1") == "client-1"
    assert fresh.owner_of("task", "t2") is None
    # Answers already given are kept: owners never change.
    assert queries.owner_of("task", "t2") == "client-1"
