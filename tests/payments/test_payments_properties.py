"""Property tests: whatever the order, duplication, batching and replay of an
event stream, the ledger balances, clients are charged exactly, workers are
paid exactly once per accepted answer (or settled unpaid with the reason the
verdicts at that moment give), and pilot allowances hold."""

from __future__ import annotations

import datetime as dt
import itertools
from collections import Counter
from collections.abc import Callable, Iterator

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from payments_streams import JobPlan, answer_accepted, job_sealed, settle, task_resolved, worker_flagged
from sqlalchemy.engine import Engine

from quorum.db import make_engine
from quorum.v1 import events_pb2
from services.payments import tables
from services.payments.domain import PLATFORM_PILOT_SUBSIDY
from services.payments.handlers import Ledger, verify_ledger

VERDICTS_FROM = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
# Answers are given one second apart, in the order they are drawn.
ANSWERS_FROM = dt.datetime(2029, 1, 1, tzinfo=dt.UTC)


@st.composite
def plans(draw: st.DrawFn) -> tuple[list[JobPlan], list[events_pb2.Event]]:
    """Jobs (per object or per hour, classification or boxes) with their JobCreated,
    TaskResolved (some resolved again at version 2 with the same verdicts, some never
    resolved, some at low confidence), AnswerAccepted and maybe JobSealed events: answers
    with random active time, some to gold tasks (graded right, wrong or not at all), some
    rejected by consensus (label "dog", or a verdict that a box answer disagrees, on
    resolutions that carry verdicts); and WorkerFlagged verdicts that flag workers as
    spammers and lift the flags."""
    jobs, events = [], []
    workers = [f"w{i}" for i in range(4)]
    answer_clock = itertools.count()
    for j in range(draw(st.integers(1, 3))):
        per_hour = draw(st.booleans())
        plan = JobPlan(
            job_id=f"job{j}",
            client_id=draw(st.sampled_from(["acme", "globex"])),
            price=draw(st.sampled_from([0, 1, 35, 120])),
            pay=draw(st.sampled_from([0, 2, 7])),
            currency=draw(st.sampled_from(["", "USD", "eur"])),
            pilot=draw(st.booleans()),
            allowance=draw(st.integers(0, 4)),
            price_per_hour=draw(st.sampled_from([1, 999, 3000])) if per_hour else 0,
            pay_per_hour=draw(st.sampled_from([0, 700, 1200])),
            price_per_annotation=draw(st.sampled_from([0, 0, 3])),
        )
        jobs.append(plan)
        events.append(plan.job_event())
        for t in range(draw(st.integers(0, 7))):
            task = f"{plan.job_id}-t{t}"
            gold = draw(st.integers(0, 3)) == 0
            task_workers = draw(st.lists(st.sampled_from(workers), max_size=3, unique=True))
            agreed: dict[str, bool] = {}
            for a, worker in enumerate(task_workers):
                answer = f"{task}-a{a}"
                active_ms = draw(st.integers(0, 400_000))
                plan.answers[answer] = worker
                plan.given_at[answer] = next(answer_clock)
                submitted_at = ANSWERS_FROM + dt.timedelta(seconds=plan.given_at[answer])
                if gold:
                    right = draw(st.sampled_from([True, False, None]))
                    plan.gold[answer] = right
                    plan.details[answer] = (task, "cat", active_ms)
                    events.append(
                        answer_accepted(
                            answer,
                            task,
                            plan.job_id,
                            worker,
                            active_ms=active_ms,
                            gold=True,
                            right=right,
                            submitted_at=submitted_at,
                        )
                    )
                    continue
                # A box answer has no class label: only a verdict can reject it.
                label = draw(st.sampled_from(["cat"] if plan.price_per_annotation else ["cat", "cat", "dog"]))
                agrees = draw(st.booleans()) if plan.price_per_annotation else label == "cat"
                agreed[worker] = agrees
                plan.details[answer] = (task, label, active_ms)
                events.append(
                    answer_accepted(
                        answer, task, plan.job_id, worker, label=label, active_ms=active_ms, submitted_at=submitted_at
                    )
                )
            if gold:
                continue  # consensus never resolves a gold task
            judged = draw(st.booleans())
            if judged:
                plan.disagreeing |= {f"{task}-a{a}" for a, w in enumerate(task_workers) if not agreed[w]}
            low_confidence = draw(st.integers(0, 4)) == 0
            resolutions = draw(st.integers(0, 2))
            if resolutions:
                plan.resolved_tasks.add(task)
                if low_confidence:
                    plan.low_confidence_tasks.add(task)
            boxes = draw(st.integers(0, 4)) if plan.price_per_annotation else None
            plan.boxes[task] = boxes or 0
            events += [
                task_resolved(
                    task,
                    plan.job_id,
                    version=v,
                    weights=dict.fromkeys(task_workers, 1.0),
                    boxes=boxes,
                    low_confidence=low_confidence,
                    agreed=agreed if judged else None,
                )
                for v in range(1, resolutions + 1)
            ]
        if draw(st.booleans()):
            plan.sealed = True
            events.append(job_sealed(plan.job_id, len(plan.resolved_tasks)))
    # Verdicts in the order consensus published them: each one newer than the last.
    flagged = draw(st.lists(st.tuples(st.sampled_from(workers), st.booleans()), max_size=4))
    for k, (worker, spammer) in enumerate(flagged):
        at = VERDICTS_FROM + dt.timedelta(seconds=k)
        events.append(worker_flagged(worker, spammer, reason=f"answers at chance level ({k})", at=at))
    return jobs, events


@st.composite
def deliveries(draw: st.DrawFn) -> tuple[list[JobPlan], list[list[events_pb2.Event]]]:
    """The events shuffled, some delivered twice, cut into batches, maybe replayed whole."""
    jobs, events = draw(plans())
    stream = draw(st.permutations(events))
    if stream:
        stream += draw(st.lists(st.sampled_from(stream), max_size=len(stream)))
        stream = draw(st.permutations(stream))
    cuts = sorted(draw(st.lists(st.integers(0, len(stream)), max_size=6)))
    bounds = [0, *cuts, len(stream)]
    batches = [stream[a:b] for a, b in itertools.pairwise(bounds) if b > a]
    if draw(st.booleans()):
        batches.append(draw(st.permutations(events)))
    settle(jobs, batches)
    return jobs, batches


def check_ledger(engine: Engine, jobs: list[JobPlan]) -> None:
    ledger = Ledger(engine)
    verification = verify_ledger(engine)
    assert verification.problems == []
    assert verification.balanced
    p = tables.postings
    with engine.connect() as conn:
        rows = conn.execute(sa.select(p.c.posting_key, p.c.job_id, p.c.kind)).all()
    assert len({row.posting_key for row in rows}) == len(rows)
    earned: Counter[tuple[str, str]] = Counter()
    subsidies: Counter[str] = Counter()
    for job in jobs:
        summary = ledger.money_summary(job.job_id)
        assert summary.currency == job.currency_code
        assert summary.objects_billed == job.resolved
        if job.hourly_pilot and job.free_answers < len(job.billable_answers):
            check_hourly_pilot(ledger, job)
        elif not job.annotation_split_known:
            # Which objects' boxes the allowance covers depends on the order they were billed.
            assert summary.billed_cents + summary.pilot_subsidy_cents == job.object_cents
            assert summary.pilot_subsidy_cents >= job.pilot_objects * job.price
        else:
            assert summary.billed_cents == job.charged_cents
            assert summary.pilot_subsidy_cents == job.subsidy_cents
        subsidies[job.currency_code] += summary.pilot_subsidy_cents
        charged = summary.billed_cents
        assert summary.answers_paid == len(job.paid_answers)
        assert summary.answers_unpaid == job.unpaid_answers
        assert summary.paid_cents == job.paid_cents
        assert summary.margin_cents == charged - job.paid_cents
        invoice = ledger.invoice(job.job_id)
        assert invoice.total_cents == charged
        assert sum(line.amount_cents for line in invoice.lines) == charged
        assert invoice.pilot_objects == job.pilot_objects
        assert invoice.objects_labeled == job.resolved
        job_rows = [row for row in rows if row.job_id == job.job_id]
        per_object_bills = job.resolved if job.price and not job.price_per_hour else 0
        assert sum(row.kind == "bill" for row in job_rows) == per_object_bills
        assert sum(row.kind == "annotations" for row in job_rows) == sum(
            1 for t in job.resolved_tasks if job.boxes.get(t) and job.annotations
        )
        annotation_lines = [line for line in invoice.lines if line.description == "Annotations"]
        assert [line.quantity for line in annotation_lines] == ([job.annotations] if job.annotations else [])
        assert sorted(row.posting_key for row in job_rows if row.kind == "pay") == sorted(
            f"pay:{a}" for a in job.paid_answers if job.pay_of(a)
        )
        for worker, cents in job.worker_earnings().items():
            earned[(worker, job.currency_code)] += cents
    check_statements(ledger, jobs)
    # The platform's pilot giveaways are visible on their own account, per currency.
    subsidy_account = {
        a.currency: a.balance_cents for a in verification.accounts if a.account == PLATFORM_PILOT_SUBSIDY
    }
    assert subsidy_account == {c: cents for c, cents in subsidies.items() if cents}
    for (worker, currency), cents in earned.items():
        if all(c == currency for (w, c) in earned if w == worker):
            balance = ledger.worker_balance(worker)
            assert (balance.currency, balance.earned_cents) == (currency, cents)


def check_statements(ledger: Ledger, jobs: list[JobPlan]) -> None:
    """Every accepted answer is on its worker's statement: settled exactly when it must be,
    paid or unpaid as it must be, and an unpaid one with the reason it must show."""
    expected: dict[str, dict[str, tuple[bool, bool, str]]] = {}
    for job in jobs:
        for answer, worker in job.answers.items():
            reason = job.outcomes.get(answer)
            expected.setdefault(worker, {})[answer] = (reason is not None, reason == "", reason or "")
    for worker, answers in expected.items():
        lines = ledger.worker_statement(worker, 1000, "").lines
        assert {line.answer_id: (line.settled, line.paid, line.unpaid_reason) for line in lines} == answers


def check_hourly_pilot(ledger: Ledger, job: JobPlan) -> None:
    """A per-hour pilot whose allowance does not cover every billable answer: the client
    and the subsidy together pay exactly the active hours at the rate, the subsidy is the
    price of ``free_answers`` of them, and the invoice shows both."""
    summary = ledger.money_summary(job.job_id)
    assert summary.billed_cents + summary.pilot_subsidy_cents == job.time_cents
    low, high = job.subsidy_bounds()
    assert low <= summary.pilot_subsidy_cents <= high
    assert job.time_cents - high <= summary.billed_cents <= job.time_cents - low
    assert summary.active_ms == job.billed_ms
    lines = ledger.invoice(job.job_id).lines
    assert lines[0].amount_cents == job.time_cents
    assert lines[0].quantity == job.billed_ms // 1000
    if summary.pilot_subsidy_cents:
        assert (lines[1].quantity, lines[1].amount_cents) == (job.free_answers, -summary.pilot_subsidy_cents)


def apply(engine: Engine, jobs: list[JobPlan], batches: list[list[events_pb2.Event]]) -> None:
    ledger = Ledger(engine)
    created: set[str] = set()
    for batch in batches:
        ledger.handle_events(batch)
        created |= {e.job_created.job_id for e in batch if e.HasField("job_created")}
        # Until its JobCreated arrives a job has no postings and no figures.
        with engine.connect() as conn:
            posted_jobs = set(conn.execute(sa.select(tables.postings.c.job_id).distinct()).scalars())
        assert posted_jobs <= created
    check_ledger(engine, jobs)


@settings(max_examples=120, deadline=None)
@given(deliveries())
def test_any_delivery_order_gives_the_same_exact_ledger_on_sqlite(
    case: tuple[list[JobPlan], list[list[events_pb2.Event]]],
) -> None:
    jobs, batches = case
    engine = make_engine("sqlite://")
    try:
        tables.metadata.create_all(engine)
        apply(engine, jobs, batches)
    finally:
        engine.dispose()


@pytest.fixture
def pg_reset(postgres_url: str) -> Iterator[tuple[Engine, Callable[[], None]]]:
    engine = make_engine(postgres_url)
    tables.metadata.create_all(engine)
    names = ", ".join(t.name for t in tables.metadata.sorted_tables)

    def reset() -> None:
        with engine.begin() as conn:
            conn.execute(sa.text(f"TRUNCATE {names} RESTART IDENTITY"))

    try:
        yield engine, reset
    finally:
        engine.dispose()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=deliveries())
def test_any_delivery_order_gives_the_same_exact_ledger_on_postgres(
    pg_reset: tuple[Engine, Callable[[], None]], case: tuple[list[JobPlan], list[list[events_pb2.Event]]]
) -> None:
    engine, reset = pg_reset
    reset()
    jobs, batches = case
    apply(engine, jobs, batches)
