"""A task whose lease expired unanswered can go back to the same worker, on every lease
store (memory, fakeredis, Redis): a worker never gets a task it answered, skipped or
holds, and never answers one twice."""

from __future__ import annotations

import datetime as dt
import time

import pytest
import sqlalchemy as sa
from tasking_helpers import Built, label, load, more_answers

from quorum.errors import FailedPrecondition
from services.tasking import tables


def states(built: Built) -> dict[tuple[str, str], str]:
    return {(row.task_id, row.worker_id): row.state for row in built.rows(tables.assignments)}


def test_a_lone_worker_gets_the_task_again_after_its_lease_expired(tasking_paired: Built) -> None:
    (task_id,) = load(tasking_paired, "j1", 1, overlap=(1, 1), lease_seconds=1)
    alice = tasking_paired.session("alice")
    first = tasking_paired.service.next_task(alice)
    assert first is not None
    time.sleep(1.15)
    assert tasking_paired.service.sweep_expired() == 1
    again = tasking_paired.service.next_task(alice)
    assert again is not None and again.task_id == task_id and again.lease_id != first.lease_id
    # The handout reused the worker's row of the task.
    (row,) = tasking_paired.rows(tables.assignments)
    assert (row.lease_id, row.state) == (again.lease_id, "leased")

    tasking_paired.service.submit_answer(alice, again.lease_id, label("dog"))
    with pytest.raises(FailedPrecondition, match="expired or was never granted"):
        tasking_paired.service.submit_answer(alice, first.lease_id, label("cat"))
    assert tasking_paired.service.next_task(alice) is None
    assert tasking_paired.task_row(task_id).answers_received == 1
    assert [a.label for a in tasking_paired.rows(tables.answers)] == ["dog"]
    assert states(tasking_paired) == {(task_id, "alice"): "answered"}
    # The answer's time is the new lease's, not the expired one's.
    ((_, _, accepted),) = tasking_paired.outbox_events()
    assert accepted.answer_accepted.leased_at.ToDatetime(tzinfo=dt.UTC) >= first.lease_expires_at


def test_a_worker_who_answered_or_skipped_never_gets_the_task_again(tasking_paired: Built) -> None:
    (task_id,) = load(tasking_paired, "j1", 1, overlap=(3, 3), lease_seconds=1)
    alice, bob, carol = (tasking_paired.session(w) for w in ("alice", "bob", "carol"))
    answered, skipped, expired = (tasking_paired.service.next_task(s) for s in (alice, bob, carol))
    assert answered is not None and skipped is not None and expired is not None
    tasking_paired.service.submit_answer(alice, answered.lease_id, label("cat"))
    tasking_paired.service.skip_task(bob, skipped.lease_id, "cannot read it")
    time.sleep(1.15)
    tasking_paired.service.sweep_expired()
    tasking_paired.service.handle_events([more_answers(task_id, "j1", 5)])

    assert tasking_paired.service.next_task(alice) is None
    assert tasking_paired.service.next_task(bob) is None
    again = tasking_paired.service.next_task(carol)
    assert again is not None and again.task_id == task_id
    assert states(tasking_paired) == {
        (task_id, "alice"): "answered",
        (task_id, "bob"): "skipped",
        (task_id, "carol"): "leased",
    }


def test_tasks_a_worker_let_expire_come_after_the_ones_it_never_had(tasking_paired: Built) -> None:
    first_task, second_task = load(tasking_paired, "j1", 2, overlap=(1, 1), lease_seconds=1)
    alice = tasking_paired.session("alice")
    first = tasking_paired.service.next_task(alice)
    assert first is not None and first.task_id == first_task
    time.sleep(1.15)
    tasking_paired.service.sweep_expired()
    # The first task still ranks first, but alice gets the one she never had...
    fresh = tasking_paired.service.next_task(alice)
    assert fresh is not None and fresh.task_id == second_task
    # ...and hers back when nothing else is left for her.
    again = tasking_paired.service.next_task(alice)
    assert again is not None and again.task_id == first_task


def test_a_worker_never_answers_a_task_twice(tasking_paired: Built) -> None:
    (task_id,) = load(tasking_paired, "j1", 1, overlap=(2, 2))
    alice = tasking_paired.session("alice")
    first = tasking_paired.service.next_task(alice)
    assert first is not None
    # Should the row say "expired" while the lease lives on (the sweeper found the lease
    # gone while an answer had taken it, and the answer failed and gave it back), the
    # worker is handed the task a second time...
    a = tables.assignments
    with tasking_paired.engine.begin() as conn:
        conn.execute(sa.update(a).where(a.c.lease_id == first.lease_id).values(state="expired"))
    second = tasking_paired.service.next_task(alice)
    assert second is not None and second.task_id == task_id
    # ...but answers only once, and the row, reused by the second lease, says so.
    tasking_paired.service.submit_answer(alice, first.lease_id, label("cat"))
    with pytest.raises(FailedPrecondition, match="already answered"):
        tasking_paired.service.submit_answer(alice, second.lease_id, label("dog"))
    assert tasking_paired.task_row(task_id).answers_received == 1
    assert [row.label for row in tasking_paired.rows(tables.answers)] == ["cat"]
    assert states(tasking_paired) == {(task_id, "alice"): "answered"}
    assert tasking_paired.service.next_task(alice) is None
