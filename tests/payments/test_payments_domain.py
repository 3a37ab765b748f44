"""Unit tests of the pure payments domain: terms, postings, invoices, page tokens and the audit."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import pytest

from quorum.errors import InvalidArgument
from services.payments import domain
from services.payments.domain import (
    PLATFORM_PILOT_SUBSIDY,
    PLATFORM_REVENUE,
    PLATFORM_WORKER_COST,
    JobCounters,
    JobRecord,
    JobTerms,
    LedgerAuditor,
    Posting,
)


def terms(**overrides: object) -> JobTerms:
    values: dict[str, object] = {
        "job_id": "j1",
        "client_id": "acme",
        "task_type": "image_classification",
        "price_per_object_cents": 40,
        "pay_per_answer_cents": 6,
        "currency": "usd",
        "pilot": False,
        "pilot_allowance": 0,
    }
    values.update(overrides)
    return JobTerms.create(**values)  # type: ignore[arg-type]


def test_terms_apply_the_jobspec_defaults() -> None:
    plain = terms(currency="", pilot_allowance=7)
    assert plain.currency == "USD"
    assert plain.pilot_allowance == 0  # not a pilot: nothing is free
    assert terms(pilot=True, pilot_allowance=0).pilot_allowance == 100
    assert terms(pilot=True, pilot_allowance=-3).pilot_allowance == 100
    assert terms(pilot=True, pilot_allowance=5).pilot_allowance == 5
    assert terms(currency=" eur ").currency == "EUR"
    assert domain.bill_object(terms(client_id=""), "t", "e", 1).posting.debit_account == "client:unknown:receivable"  # type: ignore[union-attr]
    negative = terms(price_per_object_cents=-5, pay_per_answer_cents=-1)
    assert (negative.price_per_object_cents, negative.pay_per_answer_cents) == (0, 0)


@pytest.mark.parametrize(
    ("account", "kind"),
    [
        ("client:acme:receivable", "client"),
        ("worker:w:1:payable", "worker"),
        (PLATFORM_REVENUE, "platform"),
        (PLATFORM_PILOT_SUBSIDY, "platform"),
        (PLATFORM_WORKER_COST, "platform"),
        ("client::receivable", None),
        ("worker:w1", None),
        ("platform:cash", None),
        ("", None),
    ],
)
def test_account_kinds(account: str, kind: str | None) -> None:
    assert domain.account_kind(account) == kind


def test_an_object_past_the_allowance_is_charged_to_the_client() -> None:
    decision = domain.bill_object(terms(), "t9", "e9", ordinal=1)
    assert not decision.pilot
    assert decision.posting == Posting(
        posting_key="bill:t9",
        kind="bill",
        ref_id="t9",
        event_id="e9",
        job_id="j1",
        debit_account="client:acme:receivable",
        credit_account=PLATFORM_REVENUE,
        amount_cents=40,
        currency="USD",
        memo="Labeled object t9 (image classification)",
    )


def test_pilot_objects_are_paid_by_the_subsidy_up_to_the_allowance() -> None:
    pilot = terms(pilot=True, pilot_allowance=2)
    debits = []
    for ordinal in (1, 2, 3):
        decision = domain.bill_object(pilot, f"t{ordinal}", "e", ordinal)
        assert decision.posting is not None
        debits.append((decision.pilot, decision.posting.debit_account))
    assert debits == [(True, PLATFORM_PILOT_SUBSIDY), (True, PLATFORM_PILOT_SUBSIDY), (False, "client:acme:receivable")]


def test_a_free_object_posts_nothing_but_still_uses_the_allowance() -> None:
    decision = domain.bill_object(terms(price_per_object_cents=0, pilot=True, pilot_allowance=1), "t", "e", 1)
    assert decision.pilot and decision.posting is None
    counters = JobCounters()
    counters.count_object(decision)
    assert (counters.objects_billed, counters.pilot_objects, counters.pilot_subsidy_cents) == (1, 1, 0)


def test_answers_pay_the_worker_unless_the_job_pays_nothing() -> None:
    posting = domain.pay_answer(terms(), "a1", "t1", "w7", "e1")
    assert posting is not None
    assert (posting.posting_key, posting.debit_account, posting.credit_account, posting.amount_cents) == (
        "pay:a1",
        PLATFORM_WORKER_COST,
        "worker:w7:payable",
        6,
    )
    assert domain.pay_answer(terms(pay_per_answer_cents=0), "a1", "t1", "w7", "e1") is None


def test_invoice_lines_add_up_to_the_charge() -> None:
    pilot = terms(pilot=True, pilot_allowance=3, task_type="text_classification")
    counters = JobCounters(objects_billed=5, pilot_objects=3, billed_cents=80)
    lines = domain.invoice_lines(pilot, counters)
    assert [(line.description, line.quantity, line.unit_price_cents, line.amount_cents) for line in lines] == [
        ("Labeled objects (text classification)", 5, 40, 200),
        ("Pilot allowance (first 3 objects free)", 3, -40, -120),
    ]
    assert sum(line.amount_cents for line in lines) == counters.billed_cents
    assert len(domain.invoice_lines(terms(), JobCounters(objects_billed=2))) == 1


def test_most_common_currency_breaks_ties_alphabetically() -> None:
    assert domain.most_common_currency({"USD": 2, "EUR": 3}) == "EUR"
    assert domain.most_common_currency({"USD": 2, "EUR": 2}) == "EUR"
    assert domain.most_common_currency({}) == "USD"


def test_page_tokens_round_trip_and_reject_garbage() -> None:
    token = domain.encode_page_token("job|with|bars", 42)
    assert domain.decode_page_token(token, "job|with|bars") == 42
    assert domain.decode_page_token("", "anything") == 0
    for bad in ("%%%", "bm9wZQ", domain.encode_page_token("j", 1)[:-2] + "!!", "MnwxfGo"):
        with pytest.raises(InvalidArgument) as info:
            domain.decode_page_token(bad, "j")
        assert info.value.field == "page_token"
    with pytest.raises(InvalidArgument, match="another job_id"):
        domain.decode_page_token(domain.encode_page_token("j1", 5), "j2")


@pytest.mark.parametrize(("size", "expected"), [(0, 100), (1, 1), (1000, 1000)])
def test_page_size_defaults(size: int, expected: int) -> None:
    assert domain.page_size_or_default(size) == expected


@pytest.mark.parametrize("size", [-1, 1001])
def test_page_size_out_of_range_names_the_field(size: int) -> None:
    with pytest.raises(InvalidArgument) as info:
        domain.page_size_or_default(size)
    assert info.value.field == "page_size"


def _audit(postings: list[Posting], record: JobRecord, objects: int, answers: int) -> domain.Verification:
    auditor = LedgerAuditor({"j1": record})
    for entry_id, posting in enumerate(postings, start=1):
        auditor.add(entry_id, posting)
    return auditor.finish({"j1": objects}, {"j1": answers})


def _sound_ledger() -> tuple[list[Posting], JobRecord]:
    job = terms(pilot=True, pilot_allowance=1)
    counters = JobCounters()
    postings = []
    for ordinal, task in enumerate(("t1", "t2"), start=1):
        decision = domain.bill_object(job, task, "e", ordinal)
        counters.count_object(decision)
        assert decision.posting is not None
        postings.append(decision.posting)
    pay = domain.pay_answer(job, "a1", "t1", "w1", "e")
    counters.count_answer(pay)
    assert pay is not None
    postings.append(pay)
    return postings, JobRecord(job, counters)


def test_the_audit_passes_a_sound_ledger_and_reports_balances() -> None:
    postings, record = _sound_ledger()
    result = _audit(postings, record, objects=2, answers=1)
    assert result.problems == []
    assert result.balanced
    assert result.entries == 3
    assert result.totals == [domain.CurrencyTotals("USD", 86, 86)]
    balances = {a.account: a.balance_cents for a in result.accounts}
    assert balances == {
        "client:acme:receivable": 40,
        PLATFORM_PILOT_SUBSIDY: 40,
        PLATFORM_REVENUE: -80,
        PLATFORM_WORKER_COST: 6,
        "worker:w1:payable": -6,
    }


def _replace(posting: Posting, **changes: Any) -> Posting:
    return dataclasses.replace(posting, **changes)


@pytest.mark.parametrize(
    ("tamper", "expected"),
    [
        (lambda p: [*p, _replace(p[1], posting_key="bill:t2#2")], "task 't2' has 2 bill postings"),
        (lambda p: [*p, _replace(p[2], posting_key="pay:a1 ", amount_cents=6)], "answer 'a1' has 2 pay postings"),
        (lambda p: [p[0], _replace(p[1], amount_cents=41), p[2]], "amount 41 but job 'j1' sets 40"),
        (lambda p: [p[0], _replace(p[1], amount_cents=-40), p[2]], "amount -40 is not positive"),
        (lambda p: [p[0], _replace(p[1], debit_account=PLATFORM_PILOT_SUBSIDY), p[2]], "pilot-subsidised objects"),
        (lambda p: [p[0], _replace(p[1], currency="EUR"), p[2]], "currency EUR but job 'j1' is in USD"),
        (lambda p: [p[0], _replace(p[1], debit_account="bank:x"), p[2]], "unknown account 'bank:x'"),
        (lambda p: [p[0], _replace(p[1], kind="gift"), p[2]], "unknown kind 'gift'"),
        (lambda p: [p[0], p[1]], "counter of paid cents is 6, the ledger says 0"),
        (lambda p: [*p, _replace(p[2], job_id="ghost", posting_key="pay:a9", ref_id="a9")], "'ghost' has no terms"),
    ],
)
def test_the_audit_names_what_is_wrong(tamper: Callable[[list[Posting]], list[Posting]], expected: str) -> None:
    postings, record = _sound_ledger()
    result = _audit(tamper(postings), record, objects=2, answers=1)
    assert not result.balanced
    assert any(expected in problem for problem in result.problems), result.problems


def test_the_audit_checks_counters_against_settled_facts() -> None:
    postings, record = _sound_ledger()
    result = _audit(postings, record, objects=3, answers=1)
    assert result.problems == ["job 'j1': counter of objects billed is 2, the ledger says 3"]


def test_the_audit_caps_its_report() -> None:
    postings, record = _sound_ledger()
    many = [_replace(postings[2], posting_key=f"junk{i}") for i in range(domain.MAX_PROBLEMS + 50)]
    result = _audit(many, record, objects=2, answers=1)
    assert len(result.problems) == domain.MAX_PROBLEMS + 1
    assert result.problems[-1].startswith("... and ")
