"""Corrections of the ledger (AdjustLedger) on SQLite and PostgreSQL: new postings between
named accounts, once per request id, shown on invoices, balances and statements, recorded
in the audit trail and counted by the ledger's verification."""

from __future__ import annotations

import datetime as dt
import json
import threading
from typing import Any

import pytest
import sqlalchemy as sa
from payments_streams import answer_accepted, job_created, task_resolved
from sqlalchemy.engine import Engine

from quorum.db import make_engine, utcnow
from quorum.errors import FailedPrecondition, InvalidArgument, NotFound
from quorum.security.principal import Principal, Role, acting_as
from quorum.v1 import events_pb2, payments_pb2
from services.payments import domain, tables
from services.payments.domain import AdjustmentRequest
from services.payments.handlers import Ledger
from services.payments.servicer import PaymentsServicer

REFUND = {"debit_account": "platform:revenue", "credit_account": "client:acme:receivable"}
PAY_OWED = {"debit_account": "platform:worker_cost", "credit_account": "worker:w2:payable"}
TAKE_BACK = {"debit_account": "worker:w1:payable", "credit_account": "platform:worker_cost"}


def request(
    request_id: str, accounts: dict[str, str], amount: int, job_id: str = "j", **more: Any
) -> AdjustmentRequest:
    values: dict[str, Any] = {"currency": "", "reason": "a correction", **more}
    return AdjustmentRequest(request_id=request_id, amount_cents=amount, job_id=job_id, **accounts, **values)


def labeled(ledger: Ledger) -> None:
    """Job j of acme: one object billed 50; w1's answer paid 10, w2's settled unpaid."""
    ledger.handle_events(
        [
            job_created("j", price=50, pay=10),
            task_resolved("t1", "j"),
            answer_accepted("a1", "t1", "j", "w1"),
            answer_accepted("a2", "t1", "j", "w2", label="dog"),
        ]
    )


def postings(engine: Engine, kind: str = domain.ADJUST) -> list[Any]:
    p = tables.postings
    with engine.connect() as conn:
        return list(conn.execute(sa.select(p).where(p.c.kind == kind).order_by(p.c.entry_id)))


def audited(engine: Engine) -> list[events_pb2.AuditRecorded]:
    o = tables.messaging.outbox
    with engine.connect() as conn:
        events = [events_pb2.Event.FromString(row.payload) for row in conn.execute(sa.select(o).order_by(o.c.id))]
    return [e.audit_recorded for e in events if e.WhichOneof("payload") == "audit_recorded"]


def test_a_client_credit_lowers_the_jobs_invoice_and_the_period_invoice(ledger: Ledger, engine: Engine) -> None:
    labeled(ledger)
    credit = ledger.adjust(request("late-1", REFUND, 15, reason="  delivered   late "))
    assert credit.created and credit.reason == "delivered late"
    posting = credit.entry.posting
    assert (posting.posting_key, posting.debit_account, posting.credit_account) == (
        "adjust:late-1",
        "platform:revenue",
        "client:acme:receivable",
    )
    assert (posting.amount_cents, posting.currency, posting.job_id) == (15, "USD", "j")

    invoice = ledger.invoice("j")
    assert [(line.description, line.quantity, line.amount_cents) for line in invoice.lines] == [
        ("Labeled objects (text classification)", 1, 50),
        ("Adjustment: delivered late", 1, -15),
    ]
    assert invoice.total_cents == sum(line.amount_cents for line in invoice.lines) == 35
    now = utcnow()
    period = ledger.period_invoice("acme", now - dt.timedelta(hours=1), now + dt.timedelta(hours=1))
    assert [(line.job_id, line.description, line.amount_cents) for line in period.lines][-1] == (
        "j",
        "Adjustment: delivered late",
        -15,
    )
    assert period.total_cents == 35
    # The job's own figures (what its work cost) are left alone.
    assert ledger.money_summary("j").billed_cents == 50

    result = ledger.verify()
    assert result.problems == []
    balances = {a.account: a.balance_cents for a in result.accounts}
    assert (balances["client:acme:receivable"], balances["platform:revenue"]) == (35, -35)


def test_a_credit_tied_to_no_job_shows_last_on_the_period_invoice(ledger: Ledger) -> None:
    labeled(ledger)
    ledger.adjust(request("goodwill", REFUND, 7, job_id="", reason="goodwill"))
    now = utcnow()
    period = ledger.period_invoice("acme", now - dt.timedelta(hours=1), now + dt.timedelta(hours=1))
    assert [(line.job_id, line.description, line.amount_cents) for line in period.lines] == [
        ("j", "Labeled objects (text classification)", 50),
        ("", "Adjustment: goodwill", -7),
    ]
    assert period.total_cents == 43
    assert ledger.invoice("j").total_cents == 50
    assert ledger.verify().problems == []


def test_pay_owed_reaches_the_balance_the_statement_and_the_next_payout(ledger: Ledger, engine: Engine) -> None:
    labeled(ledger)
    assert ledger.worker_balance("w2").earned_cents == 0
    ledger.adjust(request("pay-a2", PAY_OWED, 10, reason="answer a2 agreed with the corrected label"))
    balance = ledger.worker_balance("w2")
    assert (balance.earned_cents, balance.answers_paid, balance.answers_unpaid) == (10, 0, 1)
    statement = ledger.worker_statement("w2", 0, "")
    (shown,) = statement.adjustments
    assert (shown.request_id, shown.reason, shown.entry.posting.amount_cents) == (
        "pay-a2",
        "answer a2 agreed with the corrected label",
        10,
    )
    assert statement.balances[0].owed_cents == 10
    batch = ledger.create_payout_batch("USD", 0)
    assert sorted((p.worker_id, p.amount_cents) for p in batch.payouts) == [("w1", 10), ("w2", 10)]
    assert ledger.verify().problems == []


def test_pay_taken_back_never_exceeds_what_the_worker_is_owed(ledger: Ledger, engine: Engine) -> None:
    labeled(ledger)
    with pytest.raises(FailedPrecondition, match="owed 10"):
        ledger.adjust(request("back-1", TAKE_BACK, 11))
    ledger.adjust(request("back-2", TAKE_BACK, 4, reason="paid twice for one answer"))
    assert ledger.worker_balance("w1").owed_cents == 6
    assert [p.amount_cents for p in ledger.create_payout_batch("USD", 0).payouts if p.worker_id == "w1"] == [6]
    # Everything earned was paid out: nothing more can be taken back.
    with pytest.raises(FailedPrecondition, match="owed 0"):
        ledger.adjust(request("back-3", TAKE_BACK, 1))
    assert [p.posting_key for p in postings(engine)] == ["adjust:back-2"]
    assert ledger.verify().problems == []


def test_the_same_request_id_posts_once(ledger: Ledger, engine: Engine) -> None:
    labeled(ledger)
    first = ledger.adjust(request("once", PAY_OWED, 10))
    again = ledger.adjust(request("once", PAY_OWED, 10, currency="usd"))
    assert first.created and not again.created
    assert again.entry.entry_id == first.entry.entry_id
    with pytest.raises(FailedPrecondition, match="request_id 'once' already posted another adjustment"):
        ledger.adjust(request("once", PAY_OWED, 11))
    assert len(postings(engine)) == 1
    assert ledger.worker_balance("w2").earned_cents == 10
    assert len(audited(engine)) == 1


def test_concurrent_retries_of_one_request_post_once(payments_db_url: str, engine: Engine) -> None:
    ledger = Ledger(engine)
    labeled(ledger)
    engines = [make_engine(payments_db_url) for _ in range(4)]
    barrier = threading.Barrier(len(engines))
    results: list[domain.Adjustment] = []
    errors: list[BaseException] = []

    def retry(eng: Engine) -> None:
        barrier.wait()
        try:
            results.append(Ledger(eng).adjust(request("raced", PAY_OWED, 10)))
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=retry, args=(eng,)) for eng in engines]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    for eng in engines:
        eng.dispose()
    assert errors == []
    assert sum(result.created for result in results) == 1
    assert {result.entry.entry_id for result in results} == {postings(engine)[0].entry_id}
    assert ledger.worker_balance("w2").earned_cents == 10
    assert ledger.verify().problems == []


def test_each_adjustment_is_in_the_audit_trail(ledger: Ledger, engine: Engine) -> None:
    labeled(ledger)
    credit = ledger.adjust(request("late-1", REFUND, 15, reason="delivered late"))
    ledger.adjust(request("pay-a2", PAY_OWED, 10, reason="answer a2 was right"))
    refund, pay = audited(engine)
    assert (refund.action, refund.resource, refund.org_id, refund.actor) == (
        "ledger.adjusted",
        "adjustment/late-1",
        "acme",
        "service:payments",
    )
    assert json.loads(refund.details_json) == {
        "request_id": "late-1",
        "debit_account": "platform:revenue",
        "credit_account": "client:acme:receivable",
        "amount_cents": 15,
        "currency": "USD",
        "job_id": "j",
        "reason": "delivered late",
        "entry_id": credit.entry.entry_id,
    }
    assert (pay.resource, json.loads(pay.details_json)["credit_account"]) == ("adjustment/pay-a2", "worker:w2:payable")


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"request_id": ""}, "request_id"),
        ({"request_id": "x" * 201}, "request_id"),
        ({"reason": "   "}, "reason"),
        ({"reason": "x" * 401}, "reason"),
        ({"amount_cents": 0}, "amount_cents"),
        ({"amount_cents": -5}, "amount_cents"),
        ({"debit_account": "bank:x"}, "debit_account"),
        ({"credit_account": "platform:pilot_subsidy"}, "credit_account"),
        ({"debit_account": "platform:worker_cost"}, "debit_account"),
        ({"credit_account": "worker:w1:payable"}, "debit_account"),
        ({"credit_account": "client:other:receivable"}, "credit_account"),
        ({"currency": "EUR"}, "currency"),
        ({"currency": "dollars"}, "currency"),
    ],
)
def test_bad_adjustments_name_the_field_and_post_nothing(
    ledger: Ledger, engine: Engine, changes: dict[str, Any], field: str
) -> None:
    labeled(ledger)
    values: dict[str, Any] = {
        "request_id": "bad",
        "amount_cents": 5,
        "currency": "",
        "job_id": "j",
        "reason": "a correction",
        **REFUND,
    }
    with pytest.raises(InvalidArgument) as caught:
        ledger.adjust(AdjustmentRequest(**{**values, **changes}))
    assert caught.value.field == field
    with pytest.raises(NotFound):
        ledger.adjust(AdjustmentRequest(**{**values, "job_id": "nope"}))
    assert postings(engine) == [] and audited(engine) == []


def test_verify_checks_adjustment_postings(ledger: Ledger, engine: Engine) -> None:
    labeled(ledger)
    ledger.adjust(request("ok", REFUND, 5))
    assert ledger.verify().problems == []
    forged = {
        "posting_key": "adjust:forged",
        "kind": "adjust",
        "ref_id": "forged",
        "event_id": "forged",
        "job_id": "j",
        # Revenue moved straight to a worker: no correction may do that.
        "debit_account": "platform:revenue",
        "credit_account": "worker:w1:payable",
        "amount_cents": 500,
        "currency": "USD",
        "memo": "Adjustment: by hand",
        "posted_at": utcnow(),
    }
    with engine.begin() as conn:
        conn.execute(sa.insert(tables.postings).values(forged))
    problems = ledger.verify().problems
    assert any("(adjust:forged): not a valid adjustment: debit_account" in p for p in problems), problems
    # And the worker's stored totals no longer match its postings.
    assert any(p.startswith("worker 'w1' (USD): stored totals say earned 10") for p in problems), problems


@pytest.mark.parametrize(
    ("accounts", "field"),
    [
        # Longer than a client id can be (the postings' organisation column holds 128).
        ({"debit_account": "platform:revenue", "credit_account": f"client:{'c' * 150}:receivable"}, "credit_account"),
        ({"debit_account": f"client:{'c' * 129}:receivable", "credit_account": "platform:revenue"}, "debit_account"),
        ({"debit_account": "platform:revenue", "credit_account": "client:two words:receivable"}, "credit_account"),
        ({"debit_account": "platform:revenue", "credit_account": "client:a:b:receivable"}, "credit_account"),
        # Longer than a worker id can be (the worker totals' column holds 200).
        ({"debit_account": "platform:worker_cost", "credit_account": f"worker:{'w' * 220}:payable"}, "credit_account"),
        ({"debit_account": f"worker:{'w' * 201}:payable", "credit_account": "platform:worker_cost"}, "debit_account"),
    ],
)
@pytest.mark.parametrize("job_id", ["", "j"])
def test_an_account_whose_id_could_name_nobody_is_refused_by_field(
    ledger: Ledger, engine: Engine, accounts: dict[str, str], field: str, job_id: str
) -> None:
    labeled(ledger)
    with pytest.raises(InvalidArgument) as caught:
        ledger.adjust(request("long", accounts, 5, job_id=job_id))
    assert caught.value.field == field
    assert postings(engine) == [] and audited(engine) == []
    # The longest ids the platform issues still pass.
    longest_worker = f"worker:{'w' * 200}:payable"
    assert domain.adjusted_account("platform:worker_cost", longest_worker) == longest_worker
    longest_client = f"client:{'c' * 128}:receivable"
    assert domain.adjusted_account(longest_client, "platform:revenue") == longest_client


def test_a_correction_tied_to_no_job_must_name_a_client_or_worker_the_ledger_knows(
    ledger: Ledger, engine: Engine
) -> None:
    labeled(ledger)
    # A typo posts nothing: no account is opened for nobody.
    typo = {"debit_account": "platform:revenue", "credit_account": "client:acme-typo:receivable"}
    with pytest.raises(NotFound, match="client 'acme-typo'"):
        ledger.adjust(request("typo", typo, 5, job_id=""))
    stranger = {"debit_account": "platform:worker_cost", "credit_account": "worker:w9:payable"}
    with pytest.raises(NotFound, match="worker 'w9'"):
        ledger.adjust(request("stranger", stranger, 5, job_id=""))
    # A job whose JobCreated has not arrived makes nobody known.
    ledger.handle_events([answer_accepted("x1", "u1", "later", "w9")])
    with pytest.raises(NotFound):
        ledger.adjust(request("stranger", stranger, 5, job_id=""))
    assert postings(engine) == [] and audited(engine) == []

    # acme has a job; w2's answer was settled (unpaid), so w2 has totals.
    ledger.adjust(request("goodwill", REFUND, 5, job_id=""))
    ledger.adjust(request("owed", PAY_OWED, 10, job_id=""))
    assert [p.posting_key for p in postings(engine)] == ["adjust:goodwill", "adjust:owed"]
    assert ledger.worker_balance("w2").earned_cents == 10
    assert ledger.verify().problems == []


def test_a_workers_correction_belongs_to_the_worker_and_stays_off_the_clients_listing(
    ledger: Ledger, engine: Engine
) -> None:
    labeled(ledger)
    ledger.adjust(request("late-1", REFUND, 15, reason="delivered late"))
    ledger.adjust(request("pay-a2", PAY_OWED, 10, reason="w2 was right, the crowd was not"))
    assert {p.ref_id: p.org_id for p in postings(engine)} == {"late-1": "acme", "pay-a2": ""}
    refund_audit, pay_audit = audited(engine)
    assert (refund_audit.org_id, pay_audit.org_id) == ("acme", "")

    servicer = PaymentsServicer(ledger)
    listing = payments_pb2.ListLedgerEntriesRequest(job_id="j")
    with acting_as(Principal(key_id="k1", role=Role.CLIENT, org_id="acme", subject="acme-app")):
        seen = [entry.memo for entry in servicer.ListLedgerEntries(listing, None).entries]
    assert "Adjustment: delivered late" in seen
    assert not any("w2 was right" in memo for memo in seen), seen
    with acting_as(Principal(key_id="k2", role=Role.OPERATOR, org_id="", subject="ops")):
        everything = [entry.memo for entry in servicer.ListLedgerEntries(listing, None).entries]
    assert everything == [*seen[:-1], "Adjustment: delivered late", "Adjustment: w2 was right, the crowd was not"]
    # The worker reads it on its statement.
    (shown,) = ledger.worker_statement("w2", 0, "").adjustments
    assert shown.reason == "w2 was right, the crowd was not"
