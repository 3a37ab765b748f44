"""The quality bonus on gold accuracy: the rule, its postings on SQLite and PostgreSQL,
idempotency under replays and duplicates, the statement and the ledger audit."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from payments_streams import answer_accepted, job_created, job_sealed, task_resolved
from sqlalchemy.engine import Engine

from quorum.v1 import events_pb2
from services.payments import domain, tables
from services.payments.domain import GoldRecord, JobCounters, JobRecord, JobTerms, LedgerAuditor
from services.payments.handlers import Ledger, verify_ledger


def bonus_terms(bonus: int = 3, threshold: float = 0.9, min_answers: int = 0) -> JobTerms:
    return JobTerms.create(
        job_id="j",
        client_id="acme",
        task_type="text_classification",
        price_per_object_cents=50,
        pay_per_answer_cents=10,
        currency="USD",
        pilot=False,
        pilot_allowance=0,
        gold_bonus_cents=bonus,
        gold_bonus_threshold=threshold,
        gold_bonus_min_answers=min_answers,
    )


# ----------------------------------------------------------------------------- the rule


def test_terms_default_the_threshold_and_minimum() -> None:
    terms = bonus_terms(threshold=0, min_answers=0)
    assert (terms.gold_bonus_threshold, terms.gold_bonus_min_answers) == (0.9, 5)
    assert bonus_terms(threshold=1.5).gold_bonus_threshold == 0.9
    assert bonus_terms(bonus=-4).gold_bonus_cents == 0


def test_at_or_above_the_threshold_earns_the_bonus_per_paid_answer() -> None:
    decision = domain.quality_bonus(
        bonus_terms(), GoldRecord("w1", paid_answers=40, gold_answers=10, gold_correct=9), "e"
    )
    assert decision.amount_cents == 3 * 40 and decision.reason == ""
    posting = decision.posting
    assert posting is not None
    assert (posting.posting_key, posting.kind, posting.amount_cents) == ("bonus:j:w1", domain.BONUS, 120)
    assert (posting.debit_account, posting.credit_account) == (domain.PLATFORM_QUALITY_BONUS, "worker:w1:payable")


@pytest.mark.parametrize("threshold", [0.3, 0.7, 0.9, 1.0])
def test_an_accuracy_exactly_at_the_threshold_qualifies(threshold: float) -> None:
    correct = round(threshold * 10)
    record = GoldRecord("w", paid_answers=5, gold_answers=10, gold_correct=correct)
    assert domain.quality_bonus(bonus_terms(threshold=threshold), record, "e").posting is not None
    below = GoldRecord("w", paid_answers=5, gold_answers=10, gold_correct=correct - 1)
    assert domain.quality_bonus(bonus_terms(threshold=threshold), below, "e").posting is None


def test_below_the_threshold_earns_nothing_and_says_why_in_totals() -> None:
    decision = domain.quality_bonus(bonus_terms(), GoldRecord("w1", 40, 10, 8), "e")
    assert decision.posting is None and decision.amount_cents == 0
    assert decision.reason == "8 of 10 quality-check answers right (80.0%); the bonus needs 90%"


def test_too_few_gold_answers_earn_nothing_even_all_right() -> None:
    decision = domain.quality_bonus(bonus_terms(min_answers=5), GoldRecord("w1", 40, 4, 4), "e")
    assert decision.posting is None
    assert "4 quality-check answers" in decision.reason and "at least 5" in decision.reason
    assert domain.quality_bonus(bonus_terms(min_answers=5), GoldRecord("w1", 40, 5, 5), "e").posting is not None


def test_no_bonus_without_bonus_terms_or_paid_answers() -> None:
    assert domain.quality_bonus(bonus_terms(bonus=0), GoldRecord("w", 9, 9, 9), "e").posting is None
    assert domain.quality_bonus(bonus_terms(), GoldRecord("w", 0, 9, 9), "e").posting is None


def test_a_job_is_finished_once_sealed_and_every_object_billed() -> None:
    assert not domain.job_finished(None, 10)
    assert not domain.job_finished(3, 2)
    assert domain.job_finished(3, 3)
    assert domain.job_finished(0, 0)


def test_quote_gives_the_largest_possible_bonus() -> None:
    quote = domain.quote(bonus_terms(bonus=2), 100, 3, 3, 0, 0)
    assert quote.expected_answers == 300
    assert quote.max_gold_bonus_cents == 600
    assert quote.margin_cents == quote.client_cents - quote.worker_cents


# ----------------------------------------------------------------------------- the audit


def audited(postings: list[domain.Posting], bonus_cents: int, bonuses: int, decided: int) -> domain.Verification:
    terms = bonus_terms()
    counters = JobCounters(bonus_cents=bonus_cents, bonuses_paid=bonuses)
    auditor = LedgerAuditor({"j": JobRecord(terms, counters)})
    for entry_id, posting in enumerate(postings, 1):
        auditor.add(entry_id, posting)
    return auditor.finish({}, {}, {}, {}, {"j": decided})


def test_the_audit_accepts_one_bonus_per_worker_and_job() -> None:
    decision = domain.quality_bonus(bonus_terms(), GoldRecord("w1", 4, 5, 5), "e")
    assert decision.posting is not None
    result = audited([decision.posting], 12, 1, 12)
    assert result.balanced, result.problems
    assert domain.AccountBalance(domain.PLATFORM_QUALITY_BONUS, "USD", 12) in result.accounts


def test_the_audit_flags_a_bonus_paid_twice() -> None:
    decision = domain.quality_bonus(bonus_terms(), GoldRecord("w1", 4, 5, 5), "e")
    assert decision.posting is not None
    result = audited([decision.posting, decision.posting], 24, 2, 24)
    assert not result.balanced
    assert "job and worker 'j:w1' has 2 bonus postings" in result.problems


def test_the_audit_flags_a_bonus_off_the_terms_or_the_counters() -> None:
    decision = domain.quality_bonus(bonus_terms(), GoldRecord("w1", 4, 5, 5), "e")
    assert decision.posting is not None
    odd = decision.posting.__class__(**{**decision.posting.__dict__, "amount_cents": 13})
    problems = audited([odd], 13, 1, 13).problems
    assert any("not a multiple" in p for p in problems)
    stolen = decision.posting.__class__(**{**decision.posting.__dict__, "credit_account": "worker:w2:payable"})
    assert any("keyed by its job and the worker" in p for p in audited([stolen], 12, 1, 12).problems)
    assert any("quality bonuses" in p for p in audited([decision.posting], 12, 1, 0).problems)
    assert any("quality bonuses" in p for p in audited([decision.posting], 0, 0, 12).problems)


# ----------------------------------------------------------------------------- the ledger


def graded_job(job_id: str = "j", workers: dict[str, tuple[int, int]] | None = None) -> list[events_pb2.Event]:
    """A job with bonus 3 (threshold 0.9, at least 5 gold answers) and 4 objects each
    answered by every worker; ``workers`` maps a worker to (gold answers, right ones)."""
    workers = workers if workers is not None else {"ace": (10, 9), "meh": (10, 8), "new": (4, 4)}
    events = [job_created(job_id, price=50, pay=10, gold_bonus=3, gold_bonus_threshold=0.9)]
    for worker, (gold, right) in workers.items():
        for i in range(gold):
            events.append(
                answer_accepted(f"{job_id}-{worker}-g{i}", f"{job_id}-g{i}", job_id, worker, gold=True, right=i < right)
            )
        for t in range(4):
            events.append(answer_accepted(f"{job_id}-{worker}-t{t}", f"{job_id}-t{t}", job_id, worker))
    events += [task_resolved(f"{job_id}-t{t}", job_id) for t in range(4)]
    return events


def bonus_keys(engine: Engine) -> list[str]:
    p = tables.postings
    with engine.connect() as conn:
        return list(
            conn.execute(sa.select(p.c.posting_key).where(p.c.kind == "bonus").order_by(p.c.posting_key)).scalars()
        )


def test_the_bonus_is_decided_when_the_sealed_job_is_labeled(ledger: Ledger, engine: Engine) -> None:
    events = graded_job()
    ledger.handle_events([job_sealed("j", 4), *events[:-1]])
    assert bonus_keys(engine) == [], "one object is still unlabeled"
    ledger.handle_events(events[-1:])
    assert bonus_keys(engine) == ["bonus:j:ace"]
    # ace: 9 right gold + 4 regular paid answers, each earning 3 cents more; the wrong gold
    # answers are not paid.
    assert ledger.worker_balance("ace").earned_cents == 13 * 10 + 13 * 3
    assert ledger.worker_balance("meh").earned_cents == 12 * 10
    summary = ledger.money_summary("j")
    assert (summary.gold_bonus_cents, summary.paid_cents) == (39, 10 * (13 + 12 + 8))
    assert summary.margin_cents == summary.billed_cents - summary.paid_cents - 39
    result = verify_ledger(engine)
    assert result.balanced, result.problems


def test_the_statement_shows_each_decision_without_naming_gold_tasks(ledger: Ledger) -> None:
    ledger.handle_events([job_sealed("j", 4), *graded_job()])
    ace = ledger.worker_statement("ace", 100, "")
    (line,) = ace.bonuses
    assert (line.job_id, line.amount_cents, line.currency, line.paid_answers) == ("j", 39, "USD", 13)
    assert (line.gold_answers, line.gold_correct, line.reason) == (10, 9, "")
    (missed,) = ledger.worker_statement("meh", 100, "").bonuses
    assert missed.amount_cents == 0 and "8 of 10" in missed.reason
    (fresh,) = ledger.worker_statement("new", 100, "").bonuses
    assert fresh.amount_cents == 0 and "at least 5" in fresh.reason
    first = ledger.worker_statement("ace", 5, "")
    assert first.bonuses == ace.bonuses and first.next_page_token
    second = ledger.worker_statement("ace", 5, first.next_page_token)
    assert second.lines and second.bonuses == [], "only the first page carries the bonuses"


def test_replayed_and_duplicated_events_pay_the_bonus_once(ledger: Ledger, engine: Engine) -> None:
    events = [job_sealed("j", 4), *graded_job()]
    ledger.handle_events(events)
    ledger.handle_events(events)  # redelivery: same event ids
    again = graded_job()  # the same facts under new event ids
    ledger.handle_events([job_sealed("j", 4), *again, task_resolved("j-t0", "j", version=2)])
    ledger.handle_events([answer_accepted("j-ace-late", "j-t3", "j", "ace")])  # a late answer
    assert bonus_keys(engine) == ["bonus:j:ace"]
    assert ledger.worker_balance("ace").earned_cents == 14 * 10 + 13 * 3
    result = verify_ledger(engine)
    assert result.balanced, result.problems


@pytest.mark.parametrize("last", ["job_created", "job_sealed"])
def test_the_event_that_completes_the_job_triggers_the_decision(ledger: Ledger, engine: Engine, last: str) -> None:
    created, *facts = graded_job()
    sealed = job_sealed("j", 4)
    first, final = ([sealed, *facts], created) if last == "job_created" else ([created, *facts], sealed)
    ledger.handle_events(first)
    assert bonus_keys(engine) == []
    ledger.handle_events([final])
    assert bonus_keys(engine) == ["bonus:j:ace"]
    assert verify_ledger(engine).balanced


def test_ungraded_gold_answers_do_not_count(ledger: Ledger, engine: Engine) -> None:
    events = [job_created("j", gold_bonus=3), job_sealed("j", 1), task_resolved("t", "j")]
    events += [answer_accepted(f"g{i}", f"gt{i}", "j", "w", gold=True, right=None) for i in range(4)]
    events += [answer_accepted(f"g{i}", f"gt{i}", "j", "w", gold=True, right=True) for i in range(4, 9)]
    ledger.handle_events(events)
    (line,) = ledger.worker_statement("w", 100, "").bonuses
    assert (line.gold_answers, line.gold_correct, line.paid_answers, line.amount_cents) == (5, 5, 9, 27)


def test_a_deleted_job_pays_no_bonus(ledger: Ledger, engine: Engine) -> None:
    created, *facts = graded_job()
    deleted = events_pb2.Event(event_id="del", job_deleted=events_pb2.JobDeleted(job_id="j", org_id="acme"))
    ledger.handle_events([created, job_sealed("j", 4), deleted, *facts])
    assert bonus_keys(engine) == []
    assert verify_ledger(engine).balanced


def test_a_job_without_a_bonus_records_no_decision(ledger: Ledger, engine: Engine) -> None:
    events = [job_created("j"), job_sealed("j", 1), task_resolved("t", "j")]
    events += [answer_accepted(f"g{i}", f"gt{i}", "j", "w", gold=True, right=True) for i in range(6)]
    ledger.handle_events(events)
    assert ledger.worker_statement("w", 100, "").bonuses == []
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tables.quality_bonuses)).scalar_one() == 0


def test_payouts_include_the_bonus(ledger: Ledger, engine: Engine) -> None:
    ledger.handle_events([job_sealed("j", 4), *graded_job()])
    batch = ledger.create_payout_batch("USD", 0)
    assert {p.worker_id: p.amount_cents for p in batch.payouts}["ace"] == 13 * 10 + 39
    assert ledger.worker_balance("ace").owed_cents == 0
    result = verify_ledger(engine)
    assert result.balanced, result.problems
