"""Staff managing the crowd: suspending and reinstating workers, on SQLite and PostgreSQL,
with the leases in memory, in fakeredis and in the machine's Redis; and how an operator's
decision meets consensus's spam verdicts."""

from __future__ import annotations

import datetime as dt
import json

import pytest
import sqlalchemy as sa
from tasking_helpers import Built, event, label, load

from quorum.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from quorum.security.principal import Principal, Role, acting_as
from quorum.v1 import events_pb2
from services.tasking import tables
from services.tasking.domain import WorkerStanding

OPERATOR = Principal(key_id="k-op", role=Role.OPERATOR, org_id="", subject="ops-ann")
T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def verdict(worker_id: str, spammer: bool) -> events_pb2.Event:
    return event(
        worker_flagged=events_pb2.WorkerFlagged(
            worker_id=worker_id, spammer=spammer, spam_score=0.97, reason="answers at chance level"
        )
    )


def audited(built: Built) -> list[tuple[str, str, dict[str, object], str]]:
    """(action, resource, details, actor) of the audit events in tasking's outbox."""
    return [
        (
            e.audit_recorded.action,
            e.audit_recorded.resource,
            json.loads(e.audit_recorded.details_json),
            e.audit_recorded.actor,
        )
        for _, _, e in built.outbox_events()
        if e.WhichOneof("payload") == "audit_recorded"
    ]


def test_a_suspended_worker_is_handed_nothing_and_told_why(tasking_db: Built) -> None:
    load(tasking_db, "j1", 3, overlap=(3, 3))
    service = tasking_db.service
    suspect, honest = tasking_db.session("w-sus"), tasking_db.session("w-ok")
    with acting_as(OPERATOR):
        status = service.suspend_worker("w-sus", "  copied answers from a bot  ")
    assert (status.suspended, status.suspended_by_operator, status.reason) == (True, True, "copied answers from a bot")
    assert status.changed_by == "operator:ops-ann"
    with pytest.raises(PermissionDenied, match="w-sus is suspended: copied answers from a bot"):
        service.next_task(suspect)
    assert service.next_task(honest) is not None

    with acting_as(OPERATOR):
        status = service.reinstate_worker("w-sus", "appeal upheld")
    assert not status.suspended and not status.suspended_by_operator
    assert service.next_task(suspect) is not None
    assert [(action, resource) for action, resource, _, _ in audited(tasking_db)] == [
        ("worker.suspended", "worker/w-sus"),
        ("worker.reinstated", "worker/w-sus"),
    ]
    (suspended, reinstated) = audited(tasking_db)
    assert suspended[2]["reason"] == "copied answers from a bot" and suspended[3] == "operator:ops-ann"
    assert reinstated[2] == {"was_suspended": True, "flag_overridden": False, "note": "appeal upheld"}


def test_a_suspension_ends_the_workers_live_leases_and_their_tasks_go_to_others(tasking: Built) -> None:
    (task_id,) = load(tasking, "j1", 1, overlap=(1, 1))
    service = tasking.service
    suspect, other = tasking.session("w-sus"), tasking.session("w-ok")
    held = service.next_task(suspect)
    assert held is not None and held.task_id == task_id
    assert service.next_task(other) is None  # the only slot is held

    service.suspend_worker("w-sus", "fraud")

    for call in (
        lambda: service.submit_answer(suspect, held.lease_id, label("cat")),
        lambda: service.heartbeat(suspect, held.lease_id),
    ):
        with pytest.raises(
            FailedPrecondition, match=f"no live lease '{held.lease_id}': worker w-sus is suspended: fraud"
        ):
            call()
    # Back in play at once, not when the lease would have expired.
    again = service.next_task(other)
    assert again is not None and again.task_id == task_id
    service.submit_answer(other, again.lease_id, label("dog"))
    (assignment,) = tasking.rows(tables.assignments, tables.assignments.c.worker_id == "w-sus")
    assert assignment.state == "expired"


def test_a_reinstatement_overrides_the_spam_flag_until_consensus_lifts_it(tasking_db: Built) -> None:
    load(tasking_db, "j1", 4, overlap=(3, 3))
    service = tasking_db.service
    session = tasking_db.session("w-spam")
    service.handle_events([verdict("w-spam", True)])
    with pytest.raises(PermissionDenied, match="answers at chance level"):
        service.next_task(session)

    status = service.reinstate_worker("w-spam")
    assert (status.suspended, status.spam_flagged, status.flag_overridden) == (False, True, True)
    assert service.next_task(session) is not None
    # The standing flag again (a replay by another id): the same verdict, still overridden.
    service.handle_events([verdict("w-spam", True)])
    assert service.worker_standing("w-spam").flag_overridden
    assert service.next_task(session) is not None

    # Consensus lifts the flag: the override ends with it...
    service.handle_events([verdict("w-spam", False)])
    status = service.worker_standing("w-spam")
    assert (status.suspended, status.spam_flagged, status.flag_overridden) == (False, False, False)
    # ...so a new flag, a verdict the operator has not seen, suspends the worker again.
    service.handle_events([verdict("w-spam", True)])
    with pytest.raises(PermissionDenied, match="answers at chance level"):
        service.next_task(session)


def test_an_operators_suspension_outlasts_consensus_lifting_its_flag(tasking_db: Built) -> None:
    load(tasking_db, "j1", 2, overlap=(3, 3))
    service = tasking_db.service
    session = tasking_db.session("w-x")
    service.handle_events([verdict("w-x", True)])
    service.suspend_worker("w-x", "identity check pending")
    service.handle_events([verdict("w-x", False)])
    status = service.worker_standing("w-x")
    assert (status.suspended, status.spam_flagged, status.reason) == (True, False, "identity check pending")
    assert status.changed_by == "consensus"
    with pytest.raises(PermissionDenied, match="identity check pending"):
        service.next_task(session)


def test_a_worker_suspended_before_standings_were_kept_counts_as_flagged(tasking_db: Built) -> None:
    load(tasking_db, "j1", 2, overlap=(3, 3))
    with tasking_db.engine.begin() as conn:
        conn.execute(sa.insert(tables.suspended_workers).values(worker_id="w-old", reason="old flag", suspended_at=T0))
    service = tasking_db.service
    status = service.worker_standing("w-old")
    assert status == WorkerStanding(
        "w-old", spam_flagged=True, spam_reason="old flag", changed_by="consensus", changed_at=T0
    )
    assert status.suspended
    assert [s.worker_id for s in service.worker_standings(suspended_only=True)[0]] == ["w-old"]
    service.reinstate_worker("w-old")
    assert service.next_task(tasking_db.session("w-old")) is not None


def test_listing_pages_through_the_workers_on_record(tasking_db: Built) -> None:
    service = tasking_db.service
    for worker in ("w-a", "w-b", "w-c", "w-d"):
        service.suspend_worker(worker, f"reason {worker}")
    service.reinstate_worker("w-b")
    service.handle_events([verdict("w-e", True)])

    page, after = service.worker_standings(page_size=3)
    assert [s.worker_id for s in page] == ["w-a", "w-b", "w-c"] and after == "w-c"
    page, after = service.worker_standings(page_size=3, after=after)
    assert [s.worker_id for s in page] == ["w-d", "w-e"] and after == ""
    suspended, _ = service.worker_standings(suspended_only=True)
    assert [(s.worker_id, s.reason) for s in suspended] == [
        ("w-a", "reason w-a"),
        ("w-c", "reason w-c"),
        ("w-d", "reason w-d"),
        ("w-e", "answers at chance level"),
    ]
    assert service.worker_standing("w-never-seen") == WorkerStanding("w-never-seen")


def test_bad_requests_name_the_field(tasking_db: Built) -> None:
    service = tasking_db.service
    for call, field in (
        (lambda: service.suspend_worker("w-1", "   "), "reason"),
        (lambda: service.suspend_worker("w-1", "x" * 501), "reason"),
        (lambda: service.suspend_worker("not a worker id", "spam"), "worker_id"),
        (lambda: service.reinstate_worker(""), "worker_id"),
        (lambda: service.worker_standings(page_size=0), "page_size"),
    ):
        with pytest.raises(InvalidArgument) as raised:
            call()
        assert raised.value.field == field
    assert audited(tasking_db) == []


def test_reinstating_a_worker_with_nothing_on_record_leaves_no_record(tasking_db: Built) -> None:
    service = tasking_db.service
    with acting_as(OPERATOR):
        status = service.reinstate_worker("w-new", "checked on request")
    assert status == WorkerStanding("w-new") and not status.suspended
    assert service.worker_standings() == ([], "")
    assert service.worker_standing("w-new") == WorkerStanding("w-new")
    # Still in the audit trail.
    assert audited(tasking_db) == [
        (
            "worker.reinstated",
            "worker/w-new",
            {"was_suspended": False, "flag_overridden": False, "note": "checked on request"},
            "operator:ops-ann",
        )
    ]


def lifted_flags(built: Built) -> list[tuple[str, str, events_pb2.Event]]:
    return [(topic, key, e) for topic, key, e in built.outbox_events() if e.WhichOneof("payload") == "worker_flagged"]


def test_overriding_a_spam_flag_lifts_it_for_payments_too(tasking_db: Built) -> None:
    service = tasking_db.service
    service.handle_events([verdict("w-spam", True)])
    service.suspend_worker("w-op", "identity check pending")
    with acting_as(OPERATOR):
        service.reinstate_worker("w-op")  # no flag to override: nothing for payments
        assert lifted_flags(tasking_db) == []
        status = service.reinstate_worker("w-spam", "  reviewed by hand: honest  ")

    # On the answers topic, which payments reads and tasking does not: tasking never takes
    # its own override for consensus lifting the flag.
    ((topic, key, event),) = lifted_flags(tasking_db)
    assert (topic, key) == (tasking_db.topics.answers, "w-spam")
    assert event.worker_flagged == events_pb2.WorkerFlagged(
        worker_id="w-spam", spammer=False, reason="reinstated by an operator: reviewed by hand: honest"
    )
    # As of the reinstatement: a flag consensus raises later is newer and stands again.
    assert event.occurred_at.ToDatetime(tzinfo=dt.UTC) == status.changed_at
    assert (status.spam_flagged, status.flag_overridden) == (True, True)


def test_a_spam_flag_is_not_named_for_a_lease_it_did_not_end(tasking_db: Built) -> None:
    load(tasking_db, "j1", 2, overlap=(3, 3))
    service = tasking_db.service
    session = tasking_db.session("w-spam")
    first, second = service.next_task(session), service.next_task(session)
    assert first is not None and second is not None
    service.handle_events([verdict("w-spam", True)])
    # A flag ends no lease: the worker may still answer what it holds.
    service.submit_answer(session, first.lease_id, label("cat"))
    service.skip_task(session, second.lease_id)
    with pytest.raises(FailedPrecondition, match=f"no live lease '{second.lease_id}': it expired or was never granted"):
        service.heartbeat(session, second.lease_id)


@pytest.mark.parametrize("call", ["submit", "heartbeat"])
def test_an_answer_or_heartbeat_that_loses_the_race_to_a_suspension_names_it(
    tasking: Built, monkeypatch: pytest.MonkeyPatch, call: str
) -> None:
    load(tasking, "j1", 1, overlap=(1, 1))
    service = tasking.service
    session = tasking.session("w-sus")
    held = service.next_task(session)
    assert held is not None
    # The suspension ends the lease after the call found it live, before the call uses it.
    method = "take" if call == "submit" else "extend"
    unpatched = getattr(tasking.leases, method)

    def suspended_first(*args: object, **kwargs: object) -> object:
        monkeypatch.setattr(tasking.leases, method, unpatched)
        service.suspend_worker("w-sus", "fraud")
        return unpatched(*args, **kwargs)

    monkeypatch.setattr(tasking.leases, method, suspended_first)
    with pytest.raises(FailedPrecondition, match=f"no live lease '{held.lease_id}': worker w-sus is suspended: fraud"):
        if call == "submit":
            service.submit_answer(session, held.lease_id, label("cat"))
        else:
            service.heartbeat(session, held.lease_id)
