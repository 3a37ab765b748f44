"""An operator and consensus changing one worker's standing at the same moment, on
PostgreSQL, with the two transactions really interleaved: both wait behind a lock the
test holds on the standings table and go on together when it lets go. Neither change
may be lost, and neither writer may fail."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Connection
from tasking_helpers import Built
from test_tasking_workers import verdict

from services.tasking.handlers import TaskingService

pytestmark = pytest.mark.postgres


def waiting_behind(watcher: Connection, holder_pid: int) -> int:
    """How many backends wait for the locks ``holder_pid`` holds, directly or behind
    another such waiter."""
    rows = watcher.execute(
        sa.text("SELECT pid, pg_blocking_pids(pid) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
    ).all()
    behind = {holder_pid}
    grew = True
    while grew:
        grew = False
        for pid, blockers in rows:
            if pid not in behind and behind & set(blockers):
                behind.add(pid)
                grew = True
    return len(behind) - 1


def run_together(built: Built, *writers: Callable[[], object]) -> list[BaseException]:
    """Starts the writers while the test holds the standings table (readable, not
    writable), waits until every one of them waits for that lock, then lets go; returns
    what they raised."""
    raised: list[BaseException] = []

    def run(writer: Callable[[], object]) -> None:
        try:
            writer()
        except BaseException as error:  # reported by the test
            raised.append(error)

    threads = [threading.Thread(target=run, args=(writer,)) for writer in writers]
    with (
        built.engine.connect() as holder,
        built.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as watcher,
    ):
        holder_pid = holder.execute(sa.text("SELECT pg_backend_pid()")).scalar_one()
        holder.execute(sa.text("LOCK TABLE worker_standing IN SHARE ROW EXCLUSIVE MODE"))
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 30
        while waiting_behind(watcher, holder_pid) < len(writers):
            assert time.monotonic() < deadline, "the writers never both waited for the standings table"
            time.sleep(0.02)
        holder.rollback()
    for thread in threads:
        thread.join(30)
    return raised


def suspend(service: TaskingService) -> object:
    return service.suspend_worker("w-x", "bot answers")


def reinstate(service: TaskingService) -> object:
    return service.reinstate_worker("w-x", "appeal upheld")


def flag(service: TaskingService) -> None:
    service.handle_events([verdict("w-x", True)])


def lift(service: TaskingService) -> None:
    service.handle_events([verdict("w-x", False)])


Step = Callable[[TaskingService], object]


@pytest.mark.parametrize(
    ("before", "writers", "after"),
    [
        # (suspended by an operator, flagged, flag overridden) once both committed.
        pytest.param([], (suspend, flag), (True, True, False), id="suspension-and-flag-first-row"),
        pytest.param([suspend, reinstate], (suspend, flag), (True, True, False), id="suspension-and-flag"),
        pytest.param([flag, suspend], (reinstate, lift), (False, False, False), id="reinstatement-and-lift"),
    ],
)
def test_an_operator_and_consensus_at_once_neither_change_is_lost(
    build: Callable[..., Built],
    postgres_url: str,
    before: list[Step],
    writers: tuple[Step, Step],
    after: tuple[bool, bool, bool],
) -> None:
    built = build(postgres_url, None)
    service = built.service
    for step in before:
        step(service)

    raised = run_together(built, *(functools.partial(writer, service) for writer in writers))

    assert raised == []
    status = service.worker_standing("w-x")
    assert (status.suspended_by_operator, status.spam_flagged, status.flag_overridden) == after
    if status.suspended_by_operator:
        assert status.reason == "bot answers"
    if status.spam_flagged:
        assert status.spam_reason == "answers at chance level"
    # The handout's table agrees.
    suspended = [(s.worker_id, s.reason) for s in service.worker_standings(suspended_only=True)[0]]
    assert suspended == ([("w-x", status.reason)] if status.suspended else [])
