"""The per-annotation price: counting a resolved label's annotations, the annotations
posting next to each bill, pilots, invoices, the ledger audit and the schema upgrade."""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from payments_streams import answer_accepted, job_created, task_resolved
from sqlalchemy.engine import Engine

from quorum.db import add_missing_columns, make_engine, utcnow
from quorum.v1 import common_pb2, events_pb2
from services.payments import domain, tables
from services.payments.domain import (
    PLATFORM_PILOT_SUBSIDY,
    PLATFORM_REVENUE,
    JobCounters,
    JobRecord,
    JobTerms,
    LedgerAuditor,
    Posting,
)
from services.payments.handlers import Ledger, annotation_count, verify_ledger


def box_terms(**overrides: object) -> JobTerms:
    values: dict[str, object] = {
        "job_id": "j",
        "client_id": "acme",
        "task_type": "bounding_boxes",
        "price_per_object_cents": 50,
        "pay_per_answer_cents": 10,
        "currency": "USD",
        "pilot": False,
        "pilot_allowance": 0,
        "price_per_annotation_cents": 7,
    }
    values.update(overrides)
    return JobTerms.create(**values)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- counting


def _label(kind: str, count: int) -> common_pb2.Answer:
    label = common_pb2.Answer()
    if kind == "boxes":
        label.boxes.SetInParent()
        for _ in range(count):
            label.boxes.boxes.add(label="cat", x=0.1, y=0.1, w=0.2, h=0.2)
    elif kind == "spans":
        label.spans.SetInParent()
        for i in range(count):
            label.spans.spans.add(start=i * 2, end=i * 2 + 1)
    elif kind == "keypoints":
        label.keypoints.SetInParent()
        for i in range(count):
            label.keypoints.points.add(label=f"p{i}")
    elif kind == "polygons":
        label.polygons.SetInParent()
        for _ in range(count):
            label.polygons.polygons.add()
    elif kind == "masks":
        label.masks.SetInParent()
        for _ in range(count):
            label.masks.masks.add()
    elif kind == "multi_label":
        label.multi_label.labels[:] = [f"l{i}" for i in range(count)]
    return label


@pytest.mark.parametrize("kind", ["boxes", "spans", "keypoints", "polygons", "masks", "multi_label"])
@pytest.mark.parametrize("count", [0, 1, 4])
def test_annotations_are_counted_in_every_kind_of_label(kind: str, count: int) -> None:
    assert annotation_count(_label(kind, count)) == count


def test_single_answer_labels_have_no_annotations() -> None:
    classification = common_pb2.Answer()
    classification.classification.label = "cat"
    transcription = common_pb2.Answer()
    transcription.transcription.text = "three words here"
    pairwise = common_pb2.Answer()
    pairwise.pairwise.SetInParent()
    for label in (classification, transcription, pairwise, common_pb2.Answer()):
        assert annotation_count(label) == 0


# ----------------------------------------------------------------------------- the rule


def test_terms_take_a_negative_annotation_price_as_zero() -> None:
    assert box_terms(price_per_annotation_cents=-3).price_per_annotation_cents == 0
    assert box_terms().price_per_annotation_cents == 7


def test_annotations_are_charged_to_whoever_pays_the_object() -> None:
    paid = domain.bill_annotations(box_terms(), "t1", "e1", 3, pilot=False)
    assert paid is not None
    assert (paid.posting_key, paid.kind, paid.ref_id, paid.amount_cents) == ("annotations:t1", "annotations", "t1", 21)
    assert (paid.debit_account, paid.credit_account) == ("client:acme:receivable", PLATFORM_REVENUE)
    free = domain.bill_annotations(box_terms(), "t1", "e1", 3, pilot=True)
    assert free is not None
    assert (free.debit_account, free.amount_cents) == (PLATFORM_PILOT_SUBSIDY, 21)
    assert free.memo.startswith("Pilot allowance")


def test_nothing_is_charged_without_annotations_a_price_or_on_a_per_hour_job() -> None:
    assert domain.bill_annotations(box_terms(), "t1", "e", 0, pilot=False) is None
    assert domain.bill_annotations(box_terms(price_per_annotation_cents=0), "t1", "e", 3, pilot=False) is None
    hourly = box_terms(price_mode=domain.PER_HOUR, price_per_hour_cents=1200)
    assert domain.bill_annotations(hourly, "t1", "e", 3, pilot=False) is None


def test_invoice_lines_show_annotations_and_their_pilot_discount() -> None:
    terms = box_terms(pilot=True, pilot_allowance=1)
    counters = JobCounters()
    for ordinal, (task, boxes) in enumerate((("t1", 2), ("t2", 3)), start=1):
        decision = domain.bill_object(terms, task, "e", ordinal)
        counters.count_object(decision)
        counters.count_annotations(terms, domain.bill_annotations(terms, task, "e", boxes, decision.pilot))
    assert (counters.annotations_billed, counters.pilot_annotations) == (5, 2)
    assert (counters.billed_cents, counters.pilot_subsidy_cents) == (50 + 21, 50 + 14)
    lines = domain.invoice_lines(terms, counters)
    assert [(line.description, line.quantity, line.unit_price_cents, line.amount_cents) for line in lines] == [
        ("Labeled objects (bounding boxes)", 2, 50, 100),
        ("Annotations", 5, 7, 35),
        ("Pilot allowance (first 1 objects free)", 1, -50, -50),
        ("Pilot allowance (annotations of the free objects)", 2, -7, -14),
    ]
    assert sum(line.amount_cents for line in lines) == counters.billed_cents


# ----------------------------------------------------------------------------- the audit


def _sound() -> tuple[list[Posting], JobRecord]:
    terms = box_terms(pilot=True, pilot_allowance=1)
    counters = JobCounters()
    postings: list[Posting] = []
    for ordinal, (task, boxes) in enumerate((("t1", 2), ("t2", 3)), start=1):
        decision = domain.bill_object(terms, task, "e", ordinal)
        counters.count_object(decision)
        charge = domain.bill_annotations(terms, task, "e", boxes, decision.pilot)
        counters.count_annotations(terms, charge)
        assert decision.posting is not None and charge is not None
        postings += [decision.posting, charge]
    return postings, JobRecord(terms, counters)


def _audit(postings: list[Posting], record: JobRecord) -> domain.Verification:
    auditor = LedgerAuditor({"j": record})
    for entry_id, posting in enumerate(postings, start=1):
        auditor.add(entry_id, posting)
    return auditor.finish({"j": 2}, {})


def test_the_audit_passes_annotation_postings_that_follow_the_terms() -> None:
    postings, record = _sound()
    result = _audit(postings, record)
    assert result.problems == []
    balances = {a.account: a.balance_cents for a in result.accounts}
    assert balances == {"client:acme:receivable": 71, PLATFORM_PILOT_SUBSIDY: 64, PLATFORM_REVENUE: -135}


def _forge(posting: Posting, **changes: Any) -> Posting:
    return dataclasses.replace(posting, **changes)


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (lambda p: [*p, _forge(p[3], posting_key="annotations:t2 ")], "task 't2' has 2 annotations postings"),
        (lambda p: [*p[:3], _forge(p[3], amount_cents=22)], "not a positive multiple of the per-annotation price 7"),
        (lambda p: [*p[:3], _forge(p[3], debit_account="client:other:receivable")], "a bill must move money"),
        (lambda p: [*p[:3], _forge(p[3], credit_account="worker:w1:payable")], "a bill must move money"),
        (lambda p: [*p[:3], _forge(p[3], amount_cents=28)], "counters of annotations billed are 5 (2 pilot)"),
        (lambda p: [*p[:3], _forge(p[3], debit_account=PLATFORM_PILOT_SUBSIDY)], "annotations postings (2 subsidised)"),
        (lambda p: [*p[:3], _forge(p[3], currency="EUR")], "currency EUR but job 'j' is in USD"),
        (lambda p: [*p, _forge(p[3], posting_key="annotations:t9", ref_id="t9")], "for 2 billed objects"),
    ],
)
def test_the_audit_flags_a_forged_annotation_posting(
    tamper: Callable[[list[Posting]], list[Posting]], expected: str
) -> None:
    postings, record = _sound()
    result = _audit(tamper(postings), record)
    assert not result.balanced
    assert any(expected in problem for problem in result.problems), result.problems


def test_the_audit_flags_annotation_postings_on_a_job_without_the_price() -> None:
    postings, record = _sound()
    assert record.terms is not None
    unpriced = JobRecord(dataclasses.replace(record.terms, price_per_annotation_cents=0), record.counters)
    problems = _audit(postings, unpriced).problems
    assert any("which has no per-annotation price" in p for p in problems), problems


def test_the_objects_billed_invariants_ignore_annotation_postings() -> None:
    postings, record = _sound()
    # Without their bills, annotation postings alone do not count as billed objects.
    only_annotations = [p for p in postings if p.kind == domain.ANNOTATIONS]
    problems = _audit(only_annotations, record).problems
    assert any("counter of charged cents" in p for p in problems), problems
    assert not any("bill postings" in p for p in problems)


# ----------------------------------------------------------------------------- the ledger


def kinds_and_amounts(engine: Engine, job_id: str = "j") -> list[tuple[str, int, str]]:
    p = tables.postings
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(p.c.posting_key, p.c.amount_cents, p.c.debit_account)
            .where(p.c.job_id == job_id, p.c.kind.in_(["bill", "annotations"]))
            .order_by(p.c.entry_id)
        ).all()
    return [(row.posting_key, int(row.amount_cents), row.debit_account) for row in rows]


def box_job(**overrides: Any) -> events_pb2.Event:
    values: dict[str, Any] = {"price": 50, "pay": 10, "task": "bounding_boxes", "price_per_annotation": 7}
    values.update(overrides)
    return job_created("j", **values)


def test_a_boxed_object_is_billed_with_its_boxes(ledger: Ledger, engine: Engine) -> None:
    ledger.handle_events([box_job(), task_resolved("t1", "j", boxes=3), answer_accepted("a1", "t1", "j", "w1")])
    receivable = "client:acme:receivable"
    assert kinds_and_amounts(engine) == [("bill:t1", 50, receivable), ("annotations:t1", 21, receivable)]
    invoice = ledger.invoice("j")
    assert [(line.description, line.quantity, line.unit_price_cents, line.amount_cents) for line in invoice.lines] == [
        ("Labeled objects (bounding boxes)", 1, 50, 50),
        ("Annotations", 3, 7, 21),
    ]
    assert invoice.total_cents == 71
    summary = ledger.money_summary("j")
    assert (summary.billed_cents, summary.paid_cents, summary.margin_cents) == (71, 10, 61)
    assert ledger.money_summary().billed_cents == 71
    assert verify_ledger(engine).problems == []


def test_redelivered_replayed_and_re_resolved_tasks_bill_their_annotations_once(ledger: Ledger, engine: Engine) -> None:
    job = box_job()
    first = task_resolved("t1", "j", boxes=3)
    ledger.handle_events([job, first, first])
    ledger.handle_events([first, job])
    # A later resolution with another box count, under a new event id, changes nothing.
    ledger.handle_events([task_resolved("t1", "j", version=2, boxes=5)])
    receivable = "client:acme:receivable"
    assert kinds_and_amounts(engine) == [("bill:t1", 50, receivable), ("annotations:t1", 21, receivable)]
    assert ledger.invoice("j").lines[1].quantity == 3
    assert verify_ledger(engine).problems == []


def test_a_resolution_before_its_job_is_billed_with_its_annotations_when_the_job_arrives(
    ledger: Ledger, engine: Engine
) -> None:
    ledger.handle_events([task_resolved("t1", "j", boxes=4)])
    assert kinds_and_amounts(engine) == []
    ledger.handle_events([box_job()])
    assert [key for key, _, _ in kinds_and_amounts(engine)] == ["bill:t1", "annotations:t1"]
    assert ledger.invoice("j").total_cents == 50 + 28


def test_pilot_objects_annotations_go_to_the_subsidy(ledger: Ledger, engine: Engine) -> None:
    ledger.handle_events([box_job(pilot=True, allowance=1)])
    ledger.handle_events([task_resolved("t1", "j", boxes=2)])
    ledger.handle_events([task_resolved("t2", "j", boxes=3)])
    receivable = "client:acme:receivable"
    assert kinds_and_amounts(engine) == [
        ("bill:t1", 50, PLATFORM_PILOT_SUBSIDY),
        ("annotations:t1", 14, PLATFORM_PILOT_SUBSIDY),
        ("bill:t2", 50, receivable),
        ("annotations:t2", 21, receivable),
    ]
    summary = ledger.money_summary("j")
    assert (summary.billed_cents, summary.pilot_subsidy_cents) == (71, 64)
    invoice = ledger.invoice("j")
    assert invoice.total_cents == sum(line.amount_cents for line in invoice.lines) == 71
    assert verify_ledger(engine).problems == []


def test_no_annotation_postings_without_boxes_a_price_or_on_per_hour_jobs(ledger: Ledger, engine: Engine) -> None:
    ledger.handle_events([box_job(), task_resolved("t1", "j", boxes=0)])
    ledger.handle_events([job_created("free", task="bounding_boxes"), task_resolved("f1", "free", boxes=3)])
    hourly = job_created("hour", task="bounding_boxes", price_per_hour=1200, price_per_annotation=7)
    ledger.handle_events(
        [hourly, task_resolved("h1", "hour", boxes=3), answer_accepted("ha", "h1", "hour", "w1", active_ms=60_000)]
    )
    p = tables.postings
    with engine.connect() as conn:
        kinds = set(conn.execute(sa.select(p.c.kind).distinct()).scalars())
    assert domain.ANNOTATIONS not in kinds
    assert [line.description for line in ledger.invoice("j").lines] == ["Labeled objects (bounding boxes)"]
    assert ledger.invoice("hour").total_cents == 20
    assert verify_ledger(engine).problems == []


def test_the_audit_catches_an_annotation_posting_written_behind_the_ledgers_back(
    ledger: Ledger, engine: Engine
) -> None:
    ledger.handle_events([box_job(), task_resolved("t1", "j", boxes=3)])
    ledger.handle_events([job_created("plain", price=50), task_resolved("p1", "plain")])
    assert verify_ledger(engine).problems == []
    forged = {
        "posting_key": "annotations:p1",
        "kind": "annotations",
        "ref_id": "p1",
        "event_id": "forged",
        "job_id": "plain",
        "org_id": "acme",
        "debit_account": "client:acme:receivable",
        "credit_account": PLATFORM_REVENUE,
        "amount_cents": 14,
        "currency": "USD",
        "memo": "2 annotations",
        "posted_at": utcnow(),
    }
    with engine.begin() as conn:
        conn.execute(sa.insert(tables.postings), [forged])
    problems = verify_ledger(engine).problems
    assert any("'plain', which has no per-annotation price" in p for p in problems), problems
    assert any("counter of charged cents is 50, the ledger says 64" in p for p in problems), problems


def test_the_period_invoice_has_a_line_for_each_jobs_annotations(ledger: Ledger) -> None:
    ledger.handle_events([box_job(), task_resolved("t1", "j", boxes=3), task_resolved("t2", "j", boxes=1)])
    ledger.handle_events([job_created("plain", price=30), task_resolved("p1", "plain")])
    now = utcnow()
    invoice = ledger.period_invoice("acme", now - dt.timedelta(hours=1), now + dt.timedelta(hours=1))
    lines = [
        (line.job_id, line.description, line.quantity, line.unit_price_cents, line.amount_cents)
        for line in invoice.lines
    ]
    assert lines == [
        ("j", "Labeled objects (bounding boxes)", 2, 50, 100),
        ("j", "Annotations", 4, 7, 28),
        ("plain", "Labeled objects (text classification)", 1, 30, 30),
    ]
    assert invoice.total_cents == 158


def test_an_old_database_gains_the_annotation_columns_and_bills_them(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    try:
        tables.metadata.create_all(engine)
        Ledger(engine).handle_events([job_created("old", price=40), task_resolved("o1", "old")])
        new_columns = [
            ("jobs", "price_per_annotation_cents"),
            ("jobs", "annotations_billed"),
            ("jobs", "pilot_annotations"),
            ("resolved_tasks", "annotations"),
        ]
        with engine.begin() as conn:
            for table, column in new_columns:
                conn.exec_driver_sql(f"ALTER TABLE {table} DROP COLUMN {column}")
        assert sorted(add_missing_columns(engine, tables.metadata)) == sorted(f"{t}.{c}" for t, c in new_columns)
        ledger = Ledger(engine)
        ledger.handle_events([task_resolved("o2", "old"), box_job(), task_resolved("t1", "j", boxes=2)])
        assert ledger.invoice("old").total_cents == 80
        assert ledger.invoice("j").total_cents == 64
        assert verify_ledger(engine).problems == []
    finally:
        engine.dispose()
