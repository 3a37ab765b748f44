"""Per-hour billing and pay, budget caps, payouts, quotes and invoice documents, on
SQLite and PostgreSQL (unpaid answers: test_payments_unpaid)."""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import io
from typing import Any

import pytest
import sqlalchemy as sa
from payments_streams import answer_accepted, job_created, task_resolved
from sqlalchemy.engine import Engine

from quorum.cli import main as cli_main
from quorum.db import utcnow
from quorum.errors import FailedPrecondition, InvalidArgument
from quorum.jobspecs import JobSpec, TaskType
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


def box_terms(**overrides: Any) -> domain.JobTerms:
    values: dict[str, Any] = {
        "job_id": "",
        "client_id": "acme",
        "task_type": "bounding_boxes",
        "price_per_object_cents": 50,
        "pay_per_answer_cents": 10,
        "currency": "USD",
        "pilot": True,
        "pilot_allowance": 10,
        "price_per_annotation_cents": 5,
        **overrides,
    }
    return domain.JobTerms.create(**values)


def test_quotes_charge_the_expected_annotations_and_give_the_free_objects_theirs() -> None:
    q = domain.quote(box_terms(), 100, 3, 5, 3.0, 0, annotations_per_object=2.5)
    assert (q.expected_annotations, q.annotation_cents) == (250, 1250)
    # 100 objects at 50 and 250 boxes at 5, less 10 free objects at 50 and their 25 boxes at 5.
    assert (q.pilot_discount_cents, q.client_cents) == (10 * 50 + 25 * 5, 5000 + 1250 - 625)
    assert q.worker_cents == 300 * 10
    no_boxes = domain.quote(box_terms(), 100, 3, 5, 3.0, 0, annotations_per_object=0)
    assert no_boxes.client_cents == 5000 - 500
    # A per-hour job bills time, not annotations.
    hourly = box_terms(price_mode="per_hour", price_per_hour_cents=600, pilot=False)
    assert domain.quote(hourly, 10, 1, 1, 0, 60).annotation_cents == 0


@pytest.mark.parametrize(
    ("terms", "arguments", "field"),
    [
        (box_terms(), {}, "expected_annotations_per_object"),
        (box_terms(), {"annotations_per_object": -1.0}, "expected_annotations_per_object"),
        (box_terms(), {"annotations_per_object": float("nan")}, "expected_annotations_per_object"),
        (box_terms(price_per_annotation_cents=0), {"expected_overlap_per_object": float("nan")}, "expected_overlap"),
        (box_terms(price_per_annotation_cents=0), {"objects": -1}, "objects"),
        (box_terms(price_per_annotation_cents=0), {"seconds_per_answer": 86_401}, "seconds_per_answer"),
    ],
)
def test_bad_quote_input_names_the_field(terms: domain.JobTerms, arguments: dict[str, Any], field: str) -> None:
    values: dict[str, Any] = {
        "objects": 10,
        "overlap_min": 3,
        "overlap_max": 5,
        "expected_overlap_per_object": 0.0,
        "seconds_per_answer": 0,
        **arguments,
    }
    with pytest.raises(InvalidArgument) as caught:
        domain.quote(terms, **values)
    assert caught.value.field == field


def test_without_an_expected_overlap_the_quote_estimates_it_from_the_dynamic_overlap() -> None:
    plain = box_terms(price_per_annotation_cents=0, pilot=False)
    # Unanimous after 3 answers (0.7**3 + 0.3**3 of objects) reaches 0.9; the rest need 5.
    unanimous = 0.7**3 + 0.3**3
    assert domain.expected_overlap(3, 5, 0.9) == pytest.approx(3 * unanimous + 5 * (1 - unanimous))
    q = domain.quote(plain, 1000, 3, 5, 0, 0)
    assert q.expected_overlap == pytest.approx(4.26) and q.expected_answers == 4260
    # Never above overlap.max, never below overlap.min, and the default overlap is 3..5.
    assert domain.quote(plain, 1000, 3, 5, 0, 0, target_confidence=1.0).expected_answers == 5000
    assert domain.quote(plain, 1000, 3, 3, 0, 0).expected_answers == 3000
    boxes = JobSpec(client_id="acme", task_type=TaskType.BOUNDING_BOXES, labels=("car",))
    assert domain.quote_job(boxes, 1000, 0, 0).expected_answers == 4260
    # A lower target resolves more objects early; a caller's figure wins, clamped to the overlap.
    assert domain.expected_overlap(3, 5, 0.5) == 3
    assert 3 < domain.expected_overlap(2, 7, 0.95) < 7
    assert domain.quote(plain, 1000, 3, 5, 9.0, 0).expected_answers == 5000
    assert domain.quote(plain, 1000, 3, 5, 3.5, 0).expected_answers == 3500


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
    ledger.handle_events(
        [
            job_created("j1"),
            job_created("e1", price=30, pay=4, currency="EUR"),
            answer_accepted("a1", "t1", "j1", "w1"),
            task_resolved("t1", "j1"),
            task_resolved("et", "e1"),
        ]
    )
    assert cli_main(["ledger", "verify", "--database-url", payments_db_url]) == 0
    out = capsys.readouterr().out
    assert "ledger balanced" in out and "PROBLEM" not in out
    # Totals per currency, never one sum of cents and euro cents.
    assert "  EUR: debits 30, credits 30\n" in out and "  USD: debits 60, credits 60\n" in out

    w = tables.worker_totals
    with engine.begin() as conn:
        conn.execute(sa.update(w).where(w.c.worker_id == "w1").values(earned_cents=5000))
    assert cli_main(["ledger", "verify", "--database-url", payments_db_url]) == 1
    out = capsys.readouterr().out
    assert "PROBLEM: worker 'w1' (USD): stored totals say earned 5000" in out
    assert "ledger NOT balanced" in out


def _period_lines(invoice: domain.PeriodInvoice, job_id: str) -> list[domain.InvoiceLine]:
    return [dataclasses.replace(line, job_id="") for line in invoice.lines if line.job_id == job_id]


def test_the_period_invoice_itemises_each_job_like_its_own_invoice(ledger: Ledger) -> None:
    ledger.handle_events(
        [
            job_created("pilot", price=40, pilot=True, allowance=2),
            job_created("boxes", price=25, task="bounding_boxes", price_per_annotation=3),
            job_created("hours", price=0, pay=0, price_per_hour=1200, pilot=True, allowance=1),
            job_created("euro", price=99, currency="EUR"),
            job_created("theirs", client_id="other", price=70),
            *[task_resolved(f"p{i}", "pilot") for i in range(3)],
            task_resolved("b0", "boxes", boxes=2),
            answer_accepted("h1", "ht", "hours", "w1", active_ms=HOUR // 2),
            answer_accepted("h2", "ht", "hours", "w2", active_ms=HOUR // 4),
            task_resolved("ht", "hours"),
            task_resolved("e0", "euro"),
            task_resolved("x0", "theirs"),
        ]
    )
    mid = utcnow()
    ledger.handle_events(
        [
            task_resolved("p3", "pilot"),
            task_resolved("b1", "boxes", boxes=4),
            answer_accepted("h3", "ht2", "hours", "w1", active_ms=HOUR // 4),
            task_resolved("ht2", "hours"),
        ]
    )
    start, end = mid - dt.timedelta(hours=1), mid + dt.timedelta(hours=1)
    whole = ledger.period_invoice("acme", start, end, currency="USD")
    # Over the whole life of its jobs, a period invoice has each job's own invoice lines; jobs
    # first charged together come in id order.
    assert [line.job_id for line in whole.lines] == ["boxes", "boxes", "hours", "hours", "pilot", "pilot"]
    for job_id in ("pilot", "boxes", "hours"):
        assert _period_lines(whole, job_id) == ledger.invoice(job_id).lines
    assert whole.total_cents == sum(ledger.invoice(job_id).total_cents for job_id in ("pilot", "boxes", "hours"))
    # Objects past the allowance, boxes, their annotations, and an hour less the half hour free.
    assert whole.total_cents == (4 - 2) * 40 + 2 * 25 + 6 * 3 + 1200 - 1200 // 2

    later = ledger.period_invoice("acme", mid, end, currency="USD")
    assert [(line.job_id, line.description, line.quantity, line.amount_cents) for line in later.lines] == [
        ("boxes", "Labeled objects (bounding boxes)", 1, 25),
        ("boxes", "Annotations", 4, 12),
        ("hours", "Annotation time (0.25 h, quantity in seconds, price per hour)", 900, 300),
        ("pilot", "Labeled objects (text classification)", 1, 40),
    ]
    assert later.total_cents == 40 + 25 + 12 + 300
    euro = ledger.period_invoice("acme", start, end, currency="EUR")
    assert [(line.job_id, line.amount_cents) for line in euro.lines] == [("euro", 99)]
    with pytest.raises(FailedPrecondition, match="EUR, USD"):
        ledger.period_invoice("acme", start, end)


def test_period_invoice_documents() -> None:
    start = dt.datetime(2026, 11, 1, tzinfo=dt.UTC)
    invoice = domain.PeriodInvoice(
        client_id="acme",
        currency="EUR",
        period_start=start,
        period_end=start + dt.timedelta(days=30),
        lines=[
            domain.InvoiceLine("Labeled objects (bounding boxes)", 3, 50, 150, job_id="j1"),
            domain.InvoiceLine("Annotations", 9, 7, 63, job_id="j1"),
            domain.InvoiceLine("Pilot allowance (first 1 objects free)", 1, -50, -50, job_id="j1"),
            domain.InvoiceLine("Labeled objects (text classification)", 2, 1234, 2468, job_id="j2"),
        ],
        total_cents=2631,
        issued_at=start + dt.timedelta(days=31),
    )
    rows = list(csv.DictReader(io.StringIO(documents.period_invoice_csv(invoice))))
    assert [(r["job_id"], r["description"], r["quantity"], r["amount_cents"]) for r in rows] == [
        ("j1", "Labeled objects (bounding boxes)", "3", "150"),
        ("j1", "Annotations", "9", "63"),
        ("j1", "Pilot allowance (first 1 objects free)", "1", "-50"),
        ("j2", "Labeled objects (text classification)", "2", "2468"),
        ("", "Total", "", "2631"),
    ]
    assert {(r["client_id"], r["currency"], r["period_start"], r["period_end"]) for r in rows} == {
        ("acme", "EUR", "2026-11-01T00:00:00+00:00", "2026-12-01T00:00:00+00:00")
    }
    assert sum(int(r["amount_cents"]) for r in rows[:-1]) == int(rows[-1]["amount_cents"])
    text = documents.period_invoice_text_lines(invoice)
    assert text.index("Job j1") < text.index("Job j2") and text[-1].endswith("26.31 EUR")
    pdf = documents.period_invoice_pdf(invoice)
    assert pdf.startswith(b"%PDF-1.4") and pdf.rstrip().endswith(b"%%EOF")
    assert b"26.31 EUR" in pdf and b"Job j2" in pdf and b"-0.50 EUR" in pdf


def test_ledger_verify_of_a_database_without_a_ledger_does_not_print_its_password(
    postgres_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # The fixture's schema is new and empty; the server trusts local connections, so any
    # password gets in.
    url = postgres_url.replace("://root@", "://root:pg-secret-pw@", 1)
    assert cli_main(["ledger", "verify", "--database-url", url]) == 2
    err = capsys.readouterr().err
    assert "no payments ledger at postgresql+psycopg://root:***@127.0.0.1" in err
    assert "pg-secret-pw" not in err
