"""A task whose lease expired unanswered can go back to the same worker, on every lease
store (memory, fakeredis, Redis): a worker never gets a task it answered, skipped or
holds, never answers one twice, and the sweeper recovers the leases a flushed or
restarted lease store lost."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable

import pytest
import redis
import sqlalchemy as sa
from tasking_helpers import Built, label, load, more_answers

from quorum.errors import FailedPrecondition
from services.tasking import handlers, tables

NO_GRACE = dt.timedelta(0)
Stores = tuple[str, redis.Redis | None]


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


def test_the_sweeper_recovers_the_leases_a_lease_store_lost(build: Callable[..., Built], paired_stores: Stores) -> None:
    database_url, client = paired_stores
    before = build(database_url, client)
    tasks = load(before, "j1", 2, overlap=(1, 1))
    alice = before.session("alice")
    held = [before.service.next_task(alice) for _ in tasks]
    assert [h.task_id if h else None for h in held] == tasks
    # Redis flushed, or (leases in memory) the service restarted: the leases are gone, the
    # rows still say "leased".
    if client is not None:
        client.flushdb()
    after = build(database_url, client, orphan_grace=NO_GRACE)
    if client is not None:
        # Rows younger than the grace are left alone: their lease may be being granted.
        assert before.service.sweep_expired() == 0
    assert set(states(after).values()) == {"leased"}
    assert after.service.next_task(alice) is None

    assert after.service.sweep_expired() == 2
    assert set(states(after).values()) == {"expired"}
    assert after.service.sweep_expired() == 0
    again = [after.service.next_task(alice) for _ in tasks]
    assert sorted(a.task_id for a in again if a is not None) == tasks
    for old in held:
        assert old is not None
        with pytest.raises(FailedPrecondition, match="expired or was never granted"):
            after.service.submit_answer(alice, old.lease_id, label("cat"))
    for new in again:
        assert new is not None
        after.service.submit_answer(alice, new.lease_id, label("cat"))
    assert [after.task_row(t).answers_received for t in tasks] == [1, 1]


def test_the_sweeper_finds_lost_leases_behind_many_live_ones(
    build: Callable[..., Built], paired_stores: Stores, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(handlers, "SWEEP_BATCH", 2)
    built = build(*paired_stores, orphan_grace=NO_GRACE)
    tasks = load(built, "j1", 5, overlap=(1, 1))
    workers = [built.session(f"w{i}") for i in range(5)]
    handed = []
    for i, session in enumerate(workers):
        if i == 2:
            time.sleep(0.01)  # the live leases sort first, by leased_at
        task = built.service.next_task(session)
        assert task is not None
        handed.append(task)
    # The lease store loses the last three (the first two stay live).
    for i, task in enumerate(handed[2:], start=2):
        lease = built.leases.get(task.lease_id)
        assert lease is not None
        built.leases.take(lease, f"w{i}", count_answer=False)

    assert sum(built.service.sweep_expired() for _ in range(3)) == 3
    assert states(built) == {(task_id, f"w{i}"): "leased" if i < 2 else "expired" for i, task_id in enumerate(tasks)}


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
