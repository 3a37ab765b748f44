"""JobDeleted in payments, organisations on ledger entries, and owner lookups, on
SQLite and PostgreSQL: the ledger keeps every entry and still verifies."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from payments_streams import answer_accepted, job_created, job_deleted, task_resolved
from sqlalchemy.engine import Engine

from quorum.db import add_missing_columns, make_engine
from quorum.errors import InvalidArgument
from services.payments import tables
from services.payments.handlers import DELETED_JOB_REASON, Ledger, verify_ledger


def postings(engine: Engine) -> list[sa.Row[object]]:
    p = tables.postings
    with engine.connect() as conn:
        return list(conn.execute(sa.select(p).order_by(p.c.entry_id)).all())


def assert_verifies(engine: Engine) -> None:
    verification = verify_ledger(engine)
    assert verification.balanced and verification.problems == [], verification.problems


def test_deletion_keeps_every_entry_and_bills_or_pays_nothing_more(ledger: Ledger, engine: Engine) -> None:
    ledger.handle_events(
        [
            job_created("j1", price=50, pay=10),
            task_resolved("t1", "j1", weights={"w1": 0.9}),
            answer_accepted("a1", "t1", "j1", "w1"),
            # Waits for its task's resolution when the job is deleted.
            answer_accepted("a2", "t2", "j1", "w2"),
        ]
    )
    before = postings(engine)
    assert [p.posting_key for p in before] == ["bill:t1", "pay:a1"]

    ledger.handle_events([job_deleted("j1")])
    # Consensus resolved t2 just before it saw the deletion; more answers were in flight.
    ledger.handle_events(
        [
            task_resolved("t2", "j1", weights={"w2": 0.9, "w3": 0.9}),
            answer_accepted("a3", "t2", "j1", "w3"),
        ]
    )

    assert postings(engine) == before
    summary = ledger.money_summary("j1")
    assert (summary.objects_billed, summary.billed_cents, summary.answers_paid) == (1, 50, 1)
    assert summary.answers_unpaid == 2
    statement = ledger.worker_statement("w2", 0, "")
    assert [(line.answer_id, line.settled, line.paid, line.unpaid_reason) for line in statement.lines] == [
        ("a2", True, False, DELETED_JOB_REASON)
    ]
    assert ledger.worker_balance("w3").answers_unpaid == 1
    assert ledger.invoice("j1").total_cents == 50
    assert_verifies(engine)


def test_the_deleted_jobs_labels_are_scrubbed(ledger: Ledger, engine: Engine) -> None:
    ledger.handle_events(
        [job_created("j1"), task_resolved("t1", "j1", weights={"w1": 1.0}), answer_accepted("a1", "t1", "j1", "w1")]
    )
    ledger.handle_events([job_created("j2"), answer_accepted("b1", "u1", "j2", "w1", label="dog")])
    ledger.handle_events([job_deleted("j1")])
    ledger.handle_events([answer_accepted("a2", "t2", "j1", "w2", label="dog"), task_resolved("t2", "j1")])

    a, t = tables.accepted_answers, tables.resolved_tasks
    with engine.connect() as conn:
        labels = dict(conn.execute(sa.select(a.c.answer_id, a.c.label)).all())
        tasks = {row.task_id: (row.label, row.verdicts) for row in conn.execute(sa.select(t))}
    assert labels == {"a1": "", "a2": "", "b1": "dog"}
    assert tasks == {"t1": ("", {}), "t2": ("", {})}
    assert_verifies(engine)


def test_a_redelivered_deletion_changes_nothing(ledger: Ledger, engine: Engine) -> None:
    ledger.handle_events([job_created("j1"), answer_accepted("a1", "t1", "j1", "w1")])
    deletion = job_deleted("j1")
    ledger.handle_events([deletion])
    first = ledger.money_summary("j1")
    ledger.handle_events([deletion, job_deleted("j1")])
    assert ledger.money_summary("j1") == first
    assert first.answers_unpaid == 1
    assert_verifies(engine)


def test_a_deleted_job_is_not_paused_by_its_budget(ledger: Ledger, engine: Engine) -> None:
    ledger.handle_events([job_created("j1", price=50, budget_cap=60), task_resolved("t1", "j1")])
    ledger.handle_events([job_deleted("j1"), task_resolved("t2", "j1")])
    assert not ledger.money_summary("j1").paused
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tables.messaging.outbox)).scalar_one() == 0


def test_entries_carry_the_organisation_and_list_by_it(ledger: Ledger, engine: Engine) -> None:
    ledger.handle_events(
        [
            job_created("j1", client_id="acme"),
            job_created("j2", client_id="globex"),
            *[task_resolved(f"t{i}", "j1") for i in range(3)],
            task_resolved("u1", "j2"),
            answer_accepted("b1", "u1", "j2", "w1"),
        ]
    )
    ledger.create_payout_batch("USD", 0)
    orgs = {p.posting_key: p.org_id for p in postings(engine)}
    assert {key: org for key, org in orgs.items() if not key.startswith("payout:")} == {
        "bill:t0": "acme",
        "bill:t1": "acme",
        "bill:t2": "acme",
        "bill:u1": "globex",
        "pay:b1": "globex",
    }
    assert {org for key, org in orgs.items() if key.startswith("payout:")} == {""}

    first = ledger.list_entries("", 2, "", org_id="acme")
    assert [e.posting.posting_key for e in first.entries] == ["bill:t0", "bill:t1"]
    second = ledger.list_entries("", 2, first.next_page_token, org_id="acme")
    assert [e.posting.posting_key for e in second.entries] == ["bill:t2"] and not second.next_page_token
    assert [e.posting.posting_key for e in ledger.list_entries("", 10, "", org_id="globex").entries] == [
        "bill:u1",
        "pay:b1",
    ]
    # A token is only good for the listing it came from.
    with pytest.raises(InvalidArgument, match="page_token"):
        ledger.list_entries("", 2, first.next_page_token, org_id="globex")
    with pytest.raises(InvalidArgument, match="page_token"):
        ledger.list_entries("", 2, first.next_page_token)


def test_owner_of_names_the_jobs_client(ledger: Ledger, engine: Engine) -> None:
    ledger.handle_events([answer_accepted("a1", "t1", "j1", "w1")])
    assert ledger.owner_of("job", "j1") is None  # its JobCreated has not arrived
    ledger.handle_events([job_created("j1", client_id="globex")])
    assert ledger.owner_of("job", "j1") == "globex"
    assert ledger.owner_of("job", "unknown") is None
    assert ledger.owner_of("worker", "w1") is None
    ledger.handle_events([job_deleted("j1", org_id="globex")])
    assert Ledger(engine).owner_of("job", "j1") == "globex"


def test_an_older_append_only_ledger_gains_the_organisation_and_stays_append_only(payments_db_url: str) -> None:
    old = sa.MetaData()
    current = tables.postings
    old_postings = sa.Table(
        "postings",
        old,
        *[sa.Column(c.name, c.type, nullable=c.nullable) for c in current.columns if c.name != "org_id"],
    )
    old_postings.c.entry_id.primary_key = True
    for trigger in current.dispatch.after_create:
        sa.event.listen(old_postings, "after_create", trigger)
    engine = make_engine(payments_db_url)
    try:
        old.create_all(engine)
        row = {
            "entry_id": 1,
            "posting_key": "payout:b1:w1",
            "kind": "payout",
            "ref_id": "b1:w1",
            "event_id": "b1",
            "job_id": "",
            "debit_account": "worker:w1:payable",
            "credit_account": "platform:payouts",
            "amount_cents": 5,
            "currency": "USD",
            "memo": "m",
            "posted_at": sa.func.now(),
        }
        with engine.begin() as conn:
            conn.execute(sa.insert(old_postings).values(row))

        tables.metadata.create_all(engine)
        assert add_missing_columns(engine, tables.metadata) == ["postings.org_id"]

        with engine.connect() as conn:
            assert conn.execute(sa.select(current.c.posting_key, current.c.org_id)).all() == [("payout:b1:w1", "")]
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(sa.update(current).values(org_id="acme"))
    finally:
        engine.dispose()
