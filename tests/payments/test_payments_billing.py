"""Per-hour billing and pay, budget caps, payouts, quotes and invoice documents, on
SQLite and PostgreSQL (unpaid answers: test_payments_unpaid)."""

from __future__ import annotations

import datetime as dt

import pytest
import sqlalchemy as sa
from payments_streams import answer_accepted, job_created, task_resolved
from sqlalchemy.engine import Engine

from quorum.cli import main as cli_main
from quorum.errors import InvalidArgument
from quorum.v1 import events_pb2
from services.payments import documents, domain, tables
from services.payments.handlers import Ledger, verify_ledger

HOUR = 3_600_000


def outbox_events(engine: Engine) -> list[events_pb2.Event]:
    o = tables.messaging.outbox
    with engine.connect() as conn:
        return [events_pb2.Event.FromString(row.payload) for row in conn.execute(sa.select(o).order_by(o.c.id))]


def test_per_hour_jobs_bill_and_pay_active_time_exactly(ledger: Ledger, engine: Engine) -> None:
    ledger.handle_events(
        [
            job_created("j1", price=0, pay=0, price_per_hour=1000, pay_per_hour=600),
            answer_accepted("a1", "t1", "j1", "w1", active_ms=HOUR // 3),
            answer_accepted("a2", "t1", "j1", "w2", active_ms=HOUR // 3),
            answer_accepted("a3", "t1", "j1", "w3", active_ms=HOUR // 3 + 1),
        ]
    )
    # Nothing is paid or billed before consensus has judged the answers.
    assert ledger.money_summary("j1").answers_paid == 0
    ledger.handle_events([task_resolved("t1", "j1")])
    summary = ledger.money_summary("j1")
    # One hour and 1 ms at 10.00/h: exactly 1000, the fractions never lost nor doubled.
    assert summary.billed_cents == 1000
    assert summary.paid_cents == 3 * (HOUR // 3 * 600 // HOUR)
    assert (summary.objects_billed, summary.answers_paid, summary.active_ms) == (1, 3, HOUR + 1)
    invoice = ledger.invoice("j1")
    assert invoice.total_cents == sum(line.amount_cents for line in invoice.lines) == 1000
    assert verify_ledger(engine).problems == []


def test_a_low_confidence_resolution_rejects_nobody(ledger: Ledger) -> None:
    ledger.handle_events(
        [
            job_created("j1", pay=10),
            answer_accepted("a1", "t1", "j1", "w1", label="dog"),
            task_resolved("t1", "j1", low_confidence=True),
        ]
    )
    assert ledger.money_summary("j1").answers_paid == 1


def test_the_budget_cap_pauses_the_job_and_raising_it_resumes(ledger: Ledger, engine: Engine) -> None:
    ledger.handle_events([job_created("j1", price=50, pay=10, budget_cap=100), task_resolved("t1", "j1")])
    assert not ledger.money_summary("j1").paused and outbox_events(engine) == []
    ledger.handle_events([task_resolved("t2", "j1")])
    summary = ledger.money_summary("j1")
    assert summary.paused and "budget cap reached" in summary.pause_reason
    (paused,) = outbox_events(engine)
    assert paused.job_paused.job_id == "j1" and paused.job_paused.charged_cents == 100
    # Work in flight is still billed; the job is paused only once.
    ledger.handle_events([task_resolved("t3", "j1")])
    assert len(outbox_events(engine)) == 1
    assert ledger.set_budget_cap("j1", 150).paused  # 150 charged: still at the cap
    resumed = ledger.set_budget_cap("j1", 500)
    assert not resumed.paused and resumed.budget_cap_cents == 500
    assert outbox_events(engine)[-1].job_resumed.job_id == "j1"
    with pytest.raises(InvalidArgument) as caught:
        ledger.set_budget_cap("j1", -1)
    assert caught.value.field == "budget_cap_cents"


def test_payout_batches_pay_each_owed_cent_once_above_the_minimum(ledger: Ledger, engine: Engine) -> None:
    ledger.handle_events(
        [
            job_created("j1", price=50, pay=700),
            answer_accepted("a1", "t1", "j1", "rich"),
            answer_accepted("a2", "t2", "j1", "rich"),
            answer_accepted("a3", "t1", "j1", "poor", active_ms=5),
            task_resolved("t1", "j1"),
            task_resolved("t2", "j1"),
        ]
    )
    batch = ledger.create_payout_batch("usd", 1000)
    assert [(p.worker_id, p.amount_cents) for p in batch.payouts] == [("rich", 1400)]
    assert domain.payout_csv(batch).splitlines()[1] == f"rich,1400,USD,{batch.batch_id}"
    assert ledger.create_payout_batch("USD", 1000).payouts == []
    assert ledger.worker_balance("rich").owed_cents == 0
    assert verify_ledger(engine).problems == []


def test_quotes_follow_the_price_mode() -> None:
    per_object = domain.JobTerms.create("", "acme", "t", 50, 10, "USD", True, 10, "per_object", 0, "per_answer", 0)
    q = domain.quote(per_object, 100, 3, 5, 4.0, 0)
    assert (q.expected_answers, q.client_cents, q.pilot_discount_cents, q.worker_cents) == (400, 4500, 500, 4000)
    per_hour = domain.JobTerms.create("", "acme", "t", 0, 0, "USD", False, 0, "per_hour", 1200, "per_hour", 900)
    q = domain.quote(per_hour, 10, 1, 1, 0, 60)
    assert (q.expected_active_ms, q.client_cents, q.worker_cents, q.margin_cents) == (600_000, 200, 150, 50)
    with pytest.raises(InvalidArgument):
        domain.quote(per_hour, -1, 1, 1, 0, 60)


def test_invoice_documents() -> None:
    invoice = domain.Invoice(
        "j1", "acme", "USD", [domain.InvoiceLine("Labeled objects", 3, 50, 150)], 3, 0, 150, dt.datetime.now(dt.UTC)
    )
    assert documents.invoice_csv(invoice).splitlines()[-1] == "j1,acme,USD,Total,,,150"
    pdf = documents.invoice_pdf(invoice)
    assert pdf.startswith(b"%PDF-1.4") and pdf.rstrip().endswith(b"%%EOF") and b"1.50 USD" in pdf


def test_ledger_verify_runs_offline_on_the_database(
    ledger: Ledger, engine: Engine, payments_db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    ledger.handle_events([job_created("j1"), answer_accepted("a1", "t1", "j1", "w1"), task_resolved("t1", "j1")])
    assert cli_main(["ledger", "verify", "--database-url", payments_db_url]) == 0
    assert "ledger balanced" in capsys.readouterr().out
