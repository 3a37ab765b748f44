"""Answers settled unpaid, on SQLite and PostgreSQL: workers consensus flagged as spammers
(WorkerFlagged), answers consensus rejected (classification and structured kinds alike), and
gold answers, which a worker's statement must not tell apart from the others."""

from __future__ import annotations

import datetime as dt

import sqlalchemy as sa
from payments_streams import REJECTED, answer_accepted, job_created, job_sealed, task_resolved, worker_flagged
from sqlalchemy.engine import Engine

from quorum.db import add_missing_columns, make_engine
from quorum.v1 import events_pb2
from services.payments import tables
from services.payments.domain import StatementLine
from services.payments.handlers import Ledger, verify_ledger

CHANCE = "answers at chance level: spam score 0.91 above 0.5"
LIFTED = "spam score 0.31 is back under 0.5"
T0 = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


def lines(ledger: Ledger, worker: str) -> dict[str, StatementLine]:
    return {line.answer_id: line for line in ledger.worker_statement(worker, 0, "").lines}


def postings(engine: Engine) -> list[str]:
    p = tables.postings
    with engine.connect() as conn:
        return sorted(conn.execute(sa.select(p.c.posting_key)).scalars())


def assert_verifies(engine: Engine) -> None:
    verification = verify_ledger(engine)
    assert verification.balanced and verification.problems == [], verification.problems


def resolved_task(task: str, job: str, workers: list[str]) -> list[events_pb2.Event]:
    """Answers of ``workers`` to ``task`` and its resolution."""
    answers = [answer_accepted(f"{task}-{w}", task, job, w) for w in workers]
    return [*answers, task_resolved(task, job, weights=dict.fromkeys(workers, 0.9))]


# ----------------------------------------------------------------------------- spammers


def test_a_flagged_spammers_later_answers_are_unpaid_with_the_reason_on_the_statement(
    ledger: Ledger, engine: Engine
) -> None:
    ledger.handle_events([job_created("j", price=50, pay=10), *resolved_task("t1", "j", ["spam", "good"])])
    ledger.handle_events([worker_flagged("spam", reason=CHANCE, at=T0)])
    # Consensus still weighs a spammer's answers a little: the flag decides, not the weight.
    ledger.handle_events(resolved_task("t2", "j", ["spam", "good"]))

    own = lines(ledger, "spam")
    before, after = own["t1-spam"], own["t2-spam"]
    assert (before.settled, before.paid, before.amount_cents, before.unpaid_reason) == (True, True, 10, "")
    assert (after.settled, after.paid, after.amount_cents) == (True, False, 0)
    assert after.unpaid_reason == f"spammer: {CHANCE}"
    assert lines(ledger, "good")["t2-good"].paid
    balance = ledger.worker_balance("spam")
    assert (balance.earned_cents, balance.answers_paid, balance.answers_unpaid) == (10, 1, 1)
    summary = ledger.money_summary("j")
    assert (summary.answers_paid, summary.answers_unpaid, summary.paid_cents) == (3, 1, 30)
    assert "pay:t2-spam" not in postings(engine)
    assert_verifies(engine)


def test_lifting_the_flag_restores_pay_for_answers_settled_afterwards(ledger: Ledger, engine: Engine) -> None:
    ledger.handle_events([job_created("j", pay=10), worker_flagged("w", reason=CHANCE, at=T0)])
    ledger.handle_events(resolved_task("t1", "j", ["w"]))
    ledger.handle_events([worker_flagged("w", spammer=False, reason=LIFTED, at=T0 + dt.timedelta(hours=1))])
    ledger.handle_events(resolved_task("t2", "j", ["w"]))

    own = lines(ledger, "w")
    assert own["t1-w"].unpaid_reason == f"spammer: {CHANCE}", "settled while flagged: stays unpaid"
    assert own["t2-w"].paid and own["t2-w"].amount_cents == 10
    assert postings(engine) == ["bill:t1", "bill:t2", "pay:t2-w"]
    assert_verifies(engine)


def test_the_newest_verdict_stands_whatever_order_verdicts_arrive_in(ledger: Ledger, engine: Engine) -> None:
    flag = worker_flagged("w", reason=CHANCE, at=T0)
    lift = worker_flagged("w", spammer=False, reason=LIFTED, at=T0 + dt.timedelta(hours=1))
    # The lift first, then the older flag delivered late: the worker is not flagged.
    ledger.handle_events([job_created("j", pay=10), lift])
    ledger.handle_events([flag])
    ledger.handle_events(resolved_task("t1", "j", ["w"]))
    assert lines(ledger, "w")["t1-w"].paid
    # In one batch, too, the newer verdict wins, wherever it stands in the batch.
    reflag = worker_flagged("w", reason=CHANCE, at=T0 + dt.timedelta(hours=2))
    older = worker_flagged("w", spammer=False, reason=LIFTED, at=T0 + dt.timedelta(minutes=90))
    ledger.handle_events([reflag, older, *resolved_task("t2", "j", ["w"])])
    assert lines(ledger, "w")["t2-w"].unpaid_reason == f"spammer: {CHANCE}"
    assert_verifies(engine)


def test_redelivered_verdicts_and_resolutions_in_any_order_post_nothing_twice(ledger: Ledger, engine: Engine) -> None:
    flag = worker_flagged("spam", reason=CHANCE, at=T0)
    facts = [job_created("j", price=50, pay=10), *resolved_task("t1", "j", ["spam", "good"])]
    ledger.handle_events([flag, *facts])
    settled = postings(engine)
    assert settled == ["bill:t1", "pay:t1-good"]
    # Redelivery (same ids) in reverse; the same verdict and resolution republished under new
    # ids; a lift published before the flag but delivered after; a second resolution.
    ledger.handle_events(list(reversed([flag, *facts])))
    again = worker_flagged("spam", reason=CHANCE, at=T0)
    stale = worker_flagged("spam", spammer=False, reason=LIFTED, at=T0 - dt.timedelta(minutes=1))
    ledger.handle_events([task_resolved("t1", "j", weights={"spam": 0.9, "good": 0.9}), stale, again])
    ledger.handle_events([task_resolved("t1", "j", version=2), answer_accepted("t1-spam", "t1", "j", "spam")])
    assert postings(engine) == settled
    assert lines(ledger, "spam")["t1-spam"].unpaid_reason == f"spammer: {CHANCE}"
    summary = ledger.money_summary("j")
    assert (summary.objects_billed, summary.answers_paid, summary.answers_unpaid) == (1, 1, 1)
    balance = ledger.worker_balance("spam")
    assert (balance.answers_paid, balance.answers_unpaid) == (0, 1)
    assert_verifies(engine)


# ----------------------------------------------------------------------------- rejected answers


def test_an_answer_consensus_rejects_is_unpaid_without_disclosing_the_label(ledger: Ledger, engine: Engine) -> None:
    ledger.handle_events(
        [
            job_created("j", price=50, pay=10),
            answer_accepted("a1", "t1", "j", "good"),
            answer_accepted("a2", "t1", "j", "wrong", label="dog"),
            task_resolved("t1", "j", weights={"good": 0.9, "wrong": 0.8}, agreed={"good": True, "wrong": False}),
        ]
    )
    wrong = lines(ledger, "wrong")["a2"]
    assert (wrong.settled, wrong.paid, wrong.unpaid_reason) == (True, False, REJECTED)
    assert "cat" not in wrong.unpaid_reason and "dog" not in wrong.unpaid_reason
    assert lines(ledger, "good")["a1"].paid
    assert ledger.worker_balance("wrong").answers_unpaid == 1
    assert_verifies(engine)


def test_a_box_jobs_disagreeing_answer_is_unpaid(ledger: Ledger, engine: Engine) -> None:
    box_job = job_created("boxes", price=50, pay=10, task="bounding_boxes")
    verdicts = {"close": True, "stray": False}
    ledger.handle_events(
        [
            box_job,
            answer_accepted("a1", "t1", "boxes", "close"),
            answer_accepted("a2", "t1", "boxes", "stray"),
            task_resolved("t1", "boxes", weights={"close": 0.9, "stray": 0.6}, boxes=2, agreed=verdicts),
            # Resolved below the target: the fusion's verdicts reject nobody.
            answer_accepted("a3", "t2", "boxes", "stray"),
            task_resolved("t2", "boxes", weights={"stray": 0.6}, boxes=1, agreed={"stray": False}, low_confidence=True),
            # Published before verdicts existed: a box answer has no class label to compare.
            answer_accepted("a4", "t3", "boxes", "stray"),
            task_resolved("t3", "boxes", weights={"stray": 0.6}, boxes=1),
        ]
    )
    stray = lines(ledger, "stray")
    assert (stray["a2"].settled, stray["a2"].paid, stray["a2"].unpaid_reason) == (True, False, REJECTED)
    assert stray["a3"].paid and stray["a4"].paid
    assert lines(ledger, "close")["a1"].paid
    summary = ledger.money_summary("boxes")
    assert (summary.answers_paid, summary.answers_unpaid, summary.paid_cents) == (3, 1, 30)
    assert_verifies(engine)


# ----------------------------------------------------------------------------- gold answers


def gold_job_events() -> tuple[list[events_pb2.Event], list[events_pb2.Event]]:
    """A sealed job of two objects answered by "w": a regular answer agreeing with its
    resolution, one rejected, a right and a wrong gold answer; the first list leaves one
    object unresolved, the second resolves it."""
    early = [
        job_created("j", price=50, pay=10),
        job_sealed("j", 2),
        answer_accepted("right", "t1", "j", "w"),
        answer_accepted("rejected", "t2", "j", "w", label="dog"),
        answer_accepted("gold-right", "g1", "j", "w", gold=True, right=True),
        answer_accepted("gold-wrong", "g2", "j", "w", label="dog", gold=True, right=False),
        task_resolved("t1", "j", weights={"w": 0.8}, agreed={"w": True}),
    ]
    return early, [task_resolved("t2", "j", weights={"w": 0.8}, agreed={"w": False})]


def seen_by_worker(line: StatementLine) -> tuple[object, ...]:
    """What a statement line says of an answer, its ids and time left out."""
    return (line.job_id, line.active_ms, line.settled, line.paid, line.amount_cents, line.currency, line.unpaid_reason)


def test_gold_answers_settle_with_the_job_and_read_like_regular_ones(ledger: Ledger, engine: Engine) -> None:
    early, last = gold_job_events()
    ledger.handle_events(early)
    own = lines(ledger, "w")
    # Until the job is labeled, a gold answer waits like an answer whose task is unresolved.
    assert seen_by_worker(own["gold-right"]) == seen_by_worker(own["gold-wrong"]) == seen_by_worker(own["rejected"])
    assert not own["gold-right"].settled and own["right"].paid

    ledger.handle_events(last)
    own = lines(ledger, "w")
    assert seen_by_worker(own["gold-right"]) == seen_by_worker(own["right"])
    assert seen_by_worker(own["gold-wrong"]) == seen_by_worker(own["rejected"])
    reason = own["gold-wrong"].unpaid_reason
    assert reason == REJECTED
    assert not any(word in reason.lower() for word in ("gold", "known", "quality", "cat", "dog"))
    summary = ledger.money_summary("j")
    assert (summary.answers_paid, summary.answers_unpaid, summary.paid_cents) == (2, 2, 20)
    # A late lease on a gold task, like one on a resolved task, is settled on arrival.
    ledger.handle_events([answer_accepted("late-gold", "g3", "j", "w", gold=True, right=True)])
    assert lines(ledger, "w")["late-gold"].paid
    assert_verifies(engine)


def test_a_spammers_gold_answers_are_unpaid_like_its_other_answers(ledger: Ledger, engine: Engine) -> None:
    early, last = gold_job_events()
    ledger.handle_events(early)
    ledger.handle_events([worker_flagged("w", reason=CHANCE, at=T0), *last])
    own = lines(ledger, "w")
    assert own["right"].paid, "settled before the flag"
    assert {own[a].unpaid_reason for a in ("rejected", "gold-right", "gold-wrong")} == {f"spammer: {CHANCE}"}
    assert_verifies(engine)


def test_a_gold_answer_settles_with_a_later_answer_of_its_worker(ledger: Ledger, engine: Engine) -> None:
    # An open job: no end to wait for.
    ledger.handle_events(
        [
            job_created("j", pay=10),
            answer_accepted("before", "t0", "j", "w", submitted_at=T0),
            answer_accepted("g", "g1", "j", "w", gold=True, right=True, submitted_at=T0 + dt.timedelta(seconds=1)),
            answer_accepted("later", "t1", "j", "w", submitted_at=T0 + dt.timedelta(seconds=2)),
            answer_accepted("other's", "t2", "j", "v", submitted_at=T0 + dt.timedelta(seconds=3)),
            task_resolved("t0", "j"),
            task_resolved("t2", "j"),
        ]
    )
    own = lines(ledger, "w")
    # An earlier answer or another worker's settling leaves it waiting, like an open task's.
    assert own["before"].paid and not own["g"].settled
    assert seen_by_worker(own["g"]) == seen_by_worker(own["later"])

    ledger.handle_events([task_resolved("t1", "j")])
    own = lines(ledger, "w")
    assert own["g"].paid and own["later"].paid
    assert_verifies(engine)


def test_an_unsealed_jobs_gold_answer_waits_for_the_end_when_its_worker_gives_no_more(
    ledger: Ledger, engine: Engine
) -> None:
    ledger.handle_events(
        [
            job_created("j", pay=10),
            task_resolved("t1", "j"),
            answer_accepted("g", "g1", "j", "w", gold=True, right=True),
        ]
    )
    (line,) = ledger.worker_statement("w", 0, "").lines
    assert not line.settled
    ledger.handle_events([job_sealed("j", 1)])
    (line,) = ledger.worker_statement("w", 0, "").lines
    assert line.settled and line.paid
    assert_verifies(engine)


# ----------------------------------------------------------------------------- upgrades


def test_a_database_from_before_verdicts_gains_the_flags_table_and_reads_old_resolutions(
    payments_db_url: str,
) -> None:
    engine = make_engine(payments_db_url)
    try:
        tables.metadata.create_all(
            engine, tables=[t for t in tables.metadata.sorted_tables if t.name != "worker_flags"]
        )
        with engine.begin() as conn:
            # A resolution stored before consensus judged each answer: [label, weight] only.
            conn.execute(
                sa.insert(tables.resolved_tasks).values(
                    task_id="old",
                    job_id="j",
                    event_id="e-old",
                    resolved_at=T0,
                    label="cat",
                    low_confidence=False,
                    verdicts={"w": ["dog", 0.7]},
                )
            )
        # What the service does at start-up.
        tables.metadata.create_all(engine)
        assert add_missing_columns(engine, tables.metadata) == []
        assert sa.inspect(engine).has_table("worker_flags")

        ledger = Ledger(engine)
        ledger.handle_events([job_created("j", pay=10), answer_accepted("a-old", "old", "j", "w", label="dog")])
        ledger.handle_events([worker_flagged("w", reason=CHANCE, at=T0), *resolved_task("t1", "j", ["w"])])
        own = lines(ledger, "w")
        assert own["a-old"].unpaid_reason == REJECTED
        assert own["t1-w"].unpaid_reason == f"spammer: {CHANCE}"
        assert_verifies(engine)
    finally:
        engine.dispose()
