"""JobDeleted in tasking, organisations on jobs and tasks, and owner lookups, on
SQLite and PostgreSQL with fakeredis and the machine's Redis."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from tasking_helpers import Built, event, job_created, label, more_answers, task_created

from quorum.errors import FailedPrecondition
from quorum.v1 import events_pb2
from services.tasking import tables


def job_deleted(job_id: str, org_id: str = "acme") -> events_pb2.Event:
    return event(job_deleted=events_pb2.JobDeleted(job_id=job_id, org_id=org_id))


def load(built: Built, job_id: str, tasks: int) -> list[str]:
    ids = [f"{job_id}-t{i}" for i in range(tasks)]
    built.service.handle_events([job_created(job_id, overlap=(2, 2)), *[task_created(i, job_id) for i in ids]])
    return ids


def count(built: Built, table: sa.Table, job_id: str) -> int:
    return len(built.rows(table, table.c.job_id == job_id))


def test_a_deleted_jobs_tasks_answers_and_leases_are_gone(tasking: Built) -> None:
    load(tasking, "j1", 3)
    kept = load(tasking, "j2", 1)
    alice, bob = tasking.session("alice"), tasking.session("bob")
    answered = tasking.service.next_task(alice, job_id="j1")
    assert answered is not None
    tasking.service.submit_answer(alice, answered.lease_id, label("cat"))
    held = tasking.service.next_task(bob, job_id="j1")
    other = tasking.service.next_task(bob, job_id="j2")
    assert held is not None and other is not None
    assert tasking.service.stats().active_leases == 2

    tasking.service.handle_events([job_deleted("j1")])

    for table in (tables.tasks, tables.answers, tables.assignments):
        assert count(tasking, table, "j1") == 0
    (job,) = tasking.rows(tables.jobs, tables.jobs.c.job_id == "j1")
    assert job.deleted and job.instructions == "" and job.org_id == "acme"
    assert tasking.service.stats(job_id="j1").active_leases == 0
    assert tasking.service.next_task(tasking.session("carol"), job_id="j1") is None
    with pytest.raises(FailedPrecondition):
        tasking.service.submit_answer(bob, held.lease_id, label("dog"))
    with pytest.raises(FailedPrecondition):
        tasking.service.heartbeat(bob, held.lease_id)
    # The other job is untouched.
    assert [row.task_id for row in tasking.rows(tables.tasks)] == kept
    tasking.service.submit_answer(bob, other.lease_id, label("dog"))
    assert count(tasking, tables.answers, "j2") == 1
    # The deleted job's answer left the outbox with the answer itself.
    sent = [e.answer_accepted.job_id for _, _, e in tasking.outbox_events() if e.HasField("answer_accepted")]
    assert sent == ["j2"]


def test_an_answer_racing_the_deletion_is_refused(tasking_db: Built) -> None:
    load(tasking_db, "j1", 1)
    session = tasking_db.session("alice")
    task = tasking_db.service.next_task(session)
    assert task is not None
    lease = tasking_db.leases.get(task.lease_id)
    assert lease is not None
    tasking_db.service.handle_events([job_deleted("j1")])
    # As if the lease had been read just before the deletion dropped it.
    tasking_db.leases.restore(lease, counted_answer=False)

    with pytest.raises(FailedPrecondition, match="no longer exists"):
        tasking_db.service.submit_answer(session, task.lease_id, label("cat"))
    assert tasking_db.rows(tables.answers) == []
    assert tasking_db.outbox_events() == []


def test_events_of_a_deleted_job_change_nothing_whatever_their_order(tasking_db: Built) -> None:
    load(tasking_db, "j1", 1)
    tasking_db.service.handle_events([job_deleted("j1"), task_created("late", "j1")])
    tasking_db.service.handle_events([task_created("later", "j1"), more_answers("later", "j1", 4)])
    assert count(tasking_db, tables.tasks, "j1") == 0
    assert tasking_db.rows(tables.task_updates) == []

    # Deleted before its JobCreated arrived: the JobCreated does not bring it back.
    tasking_db.service.handle_events([job_deleted("j2", org_id="globex")])
    tasking_db.service.handle_events([job_created("j2"), task_created("t", "j2")])
    (job,) = tasking_db.rows(tables.jobs, tables.jobs.c.job_id == "j2")
    assert job.deleted and not job.known and job.org_id == "globex"
    assert count(tasking_db, tables.tasks, "j2") == 0


def test_a_redelivered_or_repeated_deletion_is_harmless(tasking_db: Built) -> None:
    load(tasking_db, "j1", 2)
    deletion = job_deleted("j1")
    tasking_db.service.handle_events([deletion])
    tasking_db.service.handle_events([deletion, job_deleted("j1")])
    (job,) = tasking_db.rows(tables.jobs, tables.jobs.c.job_id == "j1")
    assert job.deleted and count(tasking_db, tables.tasks, "j1") == 0


def test_jobs_and_tasks_carry_the_organisation(tasking_db: Built) -> None:
    # Tasks that come before their job learn its organisation when it arrives.
    tasking_db.service.handle_events([task_created("early", "j1")])
    assert tasking_db.task_row("early").org_id == ""
    tasking_db.service.handle_events([job_created("j1")])
    tasking_db.service.handle_events([task_created("late", "j1")])
    assert tasking_db.task_row("early").org_id == tasking_db.task_row("late").org_id == "acme"
    (job,) = tasking_db.rows(tables.jobs)
    assert job.org_id == "acme"


def test_owner_of_jobs_and_sessions(tasking_db: Built) -> None:
    tasking_db.service.handle_events([task_created("t", "j1")])
    # A job whose JobCreated has not arrived has no known owner yet, and that is not kept.
    assert tasking_db.service.owner_of("job", "j1") is None
    tasking_db.service.handle_events([job_created("j1")])
    assert tasking_db.service.owner_of("job", "j1") == "acme"
    session = tasking_db.session("alice")
    assert tasking_db.service.owner_of("session", session) == "alice"
    assert tasking_db.service.owner_of("session", "no-such-session") is None
    assert tasking_db.service.owner_of("job", "no-such-job") is None
    assert tasking_db.service.owner_of("task", "t") is None

    tasking_db.service.handle_events([job_deleted("j1")])
    assert tasking_db.service.owner_of("job", "j1") == "acme"
    with tasking_db.engine.begin() as conn:
        conn.execute(sa.update(tables.sessions).values(worker_id="mallory"))
    # Owners never change, so the first answer is kept in memory.
    assert tasking_db.service.owner_of("session", session) == "alice"
