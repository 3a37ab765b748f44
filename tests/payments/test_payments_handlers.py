"""The payments service layer on SQLite and PostgreSQL: billing, pay, pending
events, idempotency, queries, the audit and concurrent writers."""

from __future__ import annotations

import multiprocessing
import random
import threading
from typing import Any

import pytest
import sqlalchemy as sa
from payments_streams import answer_accepted, job_created, job_deleted, task_resolved
from sqlalchemy.engine import Engine

from quorum.db import make_engine, utcnow
from quorum.errors import InvalidArgument, NotFound
from quorum.v1 import events_pb2
from services.payments import tables
from services.payments.handlers import Ledger, verify_ledger


def keys(engine: Engine, job_id: str | None = None) -> list[str]:
    p = tables.postings
    query = sa.select(p.c.posting_key).order_by(p.c.entry_id)
    if job_id:
        query = query.where(p.c.job_id == job_id)
    with engine.connect() as conn:
        return list(conn.execute(query).scalars())


def test_bills_objects_and_pays_answers(ledger: Ledger, engine: Engine) -> None:
    ledger.handle_events(
        [
            job_created("j1", price=50, pay=12),
            task_resolved("t1", "j1"),
            answer_accepted("a1", "t1", "j1", "w1"),
            answer_accepted("a2", "t1", "j1", "w2"),
        ]
    )
    assert keys(engine) == ["bill:t1", "pay:a1", "pay:a2"]
    summary = ledger.money_summary("j1")
    assert (summary.billed_cents, summary.paid_cents, summary.margin_cents) == (50, 24, 26)
    assert (summary.objects_billed, summary.answers_paid, summary.pilot_subsidy_cents) == (1, 2, 0)
    balance = ledger.worker_balance("w1")
    assert (balance.currency, balance.earned_cents, balance.answers_paid) == ("USD", 12, 1)
    assert verify_ledger(engine).balanced


def test_events_before_their_job_wait_and_are_posted_when_it_arrives(ledger: Ledger, engine: Engine) -> None:
    ledger.handle_events([task_resolved("t1", "j1"), answer_accepted("a1", "t1", "j1", "w1")])
    ledger.handle_events([task_resolved("t2", "j1")])
    assert keys(engine) == []
    with pytest.raises(NotFound):
        ledger.invoice("j1")
    with pytest.raises(NotFound):
        ledger.money_summary("j1")
    assert ledger.worker_balance("w1").earned_cents == 0
    ledger.handle_events([job_created("j1", price=30, pay=5)])
    assert sorted(keys(engine)) == ["bill:t1", "bill:t2", "pay:a1"]
    assert ledger.invoice("j1").total_cents == 60
    assert ledger.worker_balance("w1").earned_cents == 5
    assert verify_ledger(engine).problems == []


def test_redeliveries_and_re_resolutions_never_bill_twice(ledger: Ledger, engine: Engine) -> None:
    job = job_created("j1", price=50, pay=10)
    first = task_resolved("t1", "j1", version=1)
    answer = answer_accepted("a1", "t1", "j1", "w1")
    ledger.handle_events([job, first, answer, first, answer])
    ledger.handle_events([task_resolved("t1", "j1", version=2), first, job])
    # The same answer again under a new event id (a republished outbox row is the same id,
    # but a second AnswerAccepted for one answer must not pay twice either).
    ledger.handle_events([answer_accepted("a1", "t1", "j1", "w1")])
    assert keys(engine) == ["bill:t1", "pay:a1"]
    summary = ledger.money_summary("j1")
    assert (summary.billed_cents, summary.paid_cents, summary.objects_billed, summary.answers_paid) == (50, 10, 1, 1)
    assert ledger.worker_balance("w1").answers_paid == 1


def test_pilot_allowance_is_exact_and_the_subsidy_visible(ledger: Ledger, engine: Engine) -> None:
    ledger.handle_events([job_created("p", price=25, pay=0, pilot=True, allowance=3)])
    ledger.handle_events([task_resolved(f"t{i}", "p") for i in range(2)])
    ledger.handle_events([task_resolved(f"t{i}", "p") for i in range(2, 5)])
    summary = ledger.money_summary("p")
    assert (summary.objects_billed, summary.pilot_subsidy_cents, summary.billed_cents) == (5, 75, 50)
    invoice = ledger.invoice("p")
    assert (invoice.objects_labeled, invoice.pilot_objects, invoice.total_cents) == (5, 3, 50)
    assert [(line.quantity, line.amount_cents) for line in invoice.lines] == [(5, 125), (3, -75)]
    assert invoice.lines[1].description.startswith("Pilot allowance")
    with engine.connect() as conn:
        subsidised = conn.execute(
            sa.select(sa.func.count()).where(tables.postings.c.debit_account == "platform:pilot_subsidy")
        ).scalar_one()
    assert subsidised == 3


def test_a_pilot_without_an_allowance_gets_a_hundred_free_objects(ledger: Ledger) -> None:
    ledger.handle_events([job_created("p", price=10, pilot=True, allowance=0)])
    ledger.handle_events([task_resolved(f"t{i}", "p") for i in range(101)])
    invoice = ledger.invoice("p")
    assert (invoice.pilot_objects, invoice.total_cents) == (100, 10)


def test_free_objects_are_counted_without_postings(ledger: Ledger, engine: Engine) -> None:
    ledger.handle_events([job_created("f", price=0, pay=0), task_resolved("t1", "f")])
    ledger.handle_events([answer_accepted("a1", "t1", "f", "w1")])
    assert keys(engine) == []
    summary = ledger.money_summary("f")
    assert (summary.objects_billed, summary.answers_paid, summary.billed_cents, summary.paid_cents) == (1, 1, 0, 0)
    assert ledger.invoice("f").lines[0].quantity == 1
    assert verify_ledger(engine).balanced


def test_the_first_job_created_wins(ledger: Ledger) -> None:
    ledger.handle_events([job_created("j", price=10), task_resolved("t1", "j")])
    ledger.handle_events([job_created("j", price=999, client_id="other"), task_resolved("t2", "j")])
    invoice = ledger.invoice("j")
    assert (invoice.client_id, invoice.total_cents) == ("acme", 20)


def test_other_payloads_and_malformed_events_are_ignored(ledger: Ledger, engine: Engine) -> None:
    paused = events_pb2.Event(event_id="p1", job_paused=events_pb2.JobPaused(job_id="j", reason="cap"))
    created = events_pb2.Event(event_id="c1", task_created=events_pb2.TaskCreated(task_id="t1", job_id="j"))
    unsealed = events_pb2.Event(event_id="s1", job_sealed=events_pb2.JobSealed(objects=3))
    ledger.handle_events([paused, created, unsealed, task_resolved("", "j"), answer_accepted("a1", "t1", "j", "")])
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tables.jobs)).scalar_one() == 0
    assert keys(engine) == []


def test_money_summary_of_all_jobs_uses_the_most_common_currency(ledger: Ledger) -> None:
    assert ledger.money_summary().currency == "USD"
    ledger.handle_events(
        [
            job_created("u1", price=10, pay=1, currency="USD"),
            job_created("e1", price=20, pay=2, currency="EUR"),
            job_created("e2", price=30, pay=3, currency="eur"),
            *[task_resolved(f"{job}-t", job) for job in ("u1", "e1", "e2")],
            *[answer_accepted(f"{job}-a", f"{job}-t", job, "w") for job in ("u1", "e1", "e2")],
        ]
    )
    summary = ledger.money_summary()
    assert (summary.currency, summary.billed_cents, summary.paid_cents, summary.objects_billed) == ("EUR", 50, 5, 2)
    assert ledger.money_summary("u1").currency == "USD"
    balance = ledger.worker_balance("w")
    assert (balance.currency, balance.earned_cents, balance.answers_paid) == ("EUR", 5, 2)


def test_list_entries_pages_through_one_job_or_all(ledger: Ledger) -> None:
    ledger.handle_events([job_created("a", price=5, pay=0), job_created("b", price=7, pay=0)])
    ledger.handle_events([task_resolved(f"t{i}", "a" if i % 2 else "b") for i in range(9)])
    seen, token = [], ""
    while True:
        page = ledger.list_entries("a", 2, token)
        assert len(page.entries) <= 2
        seen += [entry.posting.ref_id for entry in page.entries]
        token = page.next_page_token
        if not token:
            break
    assert sorted(seen) == ["t1", "t3", "t5", "t7"]
    everything = ledger.list_entries("", 0, "")
    assert len(everything.entries) == 9 and everything.next_page_token == ""
    ids = [e.entry_id for e in everything.entries]
    assert ids == sorted(ids)
    first = ledger.list_entries("a", 1, "")
    with pytest.raises(InvalidArgument, match="page_token"):
        ledger.list_entries("b", 1, first.next_page_token)
    with pytest.raises(InvalidArgument, match="page_token"):
        ledger.list_entries("a", 1, "not a token")
    with pytest.raises(InvalidArgument, match="page_size"):
        ledger.list_entries("a", 1001, "")


def test_postings_are_append_only(ledger: Ledger, engine: Engine) -> None:
    ledger.handle_events([job_created("j", price=5), task_resolved("t1", "j")])
    p = tables.postings
    for statement in (sa.update(p).values(amount_cents=1), sa.delete(p)):
        with pytest.raises(sa.exc.DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(statement)
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        conn.execute(sa.insert(p).values(_row(key="bill:x", ref="x", amount=0)))
    assert keys(engine) == ["bill:t1"]


def _row(key: str, ref: str, amount: int, kind: str = "bill", debit: str = "client:acme:receivable") -> dict[str, Any]:
    return {
        "posting_key": key,
        "kind": kind,
        "ref_id": ref,
        "event_id": "forged",
        "job_id": "j",
        "debit_account": debit,
        "credit_account": "platform:revenue" if kind == "bill" else "worker:w1:payable",
        "amount_cents": amount,
        "currency": "USD",
        "memo": "inserted by hand",
        "posted_at": utcnow(),
    }


@pytest.mark.parametrize(
    ("forged", "expected"),
    [
        (_row("bill:t1:again", "t1", 50), "task 't1' has 2 bill postings"),
        (_row("bill:t9", "t9", 50, debit="platform:pilot_subsidy"), "2 pilot-subsidised objects, allowance 1"),
        (_row("pay:a9", "a9", 3, kind="pay", debit="platform:worker_cost"), "amount 3 but job 'j' sets 10"),
    ],
)
def test_verify_detects_a_tampered_row(ledger: Ledger, engine: Engine, forged: dict[str, Any], expected: str) -> None:
    ledger.handle_events(
        [
            job_created("j", price=50, pay=10, pilot=True, allowance=1),
            task_resolved("t0", "j"),
            task_resolved("t1", "j"),
            answer_accepted("a1", "t1", "j", "w1"),
        ]
    )
    clean = ledger.verify()
    assert clean.balanced and clean.problems == [] and clean.entries == 3
    with engine.begin() as conn:
        conn.execute(sa.insert(tables.postings).values(forged))
    result = ledger.verify()
    assert not result.balanced
    assert result.entries == 4
    assert any(expected in problem for problem in result.problems), result.problems
    # The job's counters no longer agree with its postings either.
    assert any("counter of" in problem for problem in result.problems), result.problems


def test_verify_reports_every_account_balance(ledger: Ledger) -> None:
    ledger.handle_events(
        [
            job_created("j", client_id="c1", price=50, pay=10),
            task_resolved("t1", "j"),
            answer_accepted("a1", "t1", "j", "w1"),
            answer_accepted("a2", "t1", "j", "w2"),
        ]
    )
    result = ledger.verify()
    assert result.entries == 3
    assert [(t.currency, t.debits_cents, t.credits_cents) for t in result.totals] == [("USD", 70, 70)]
    assert {(a.account, a.balance_cents) for a in result.accounts} == {
        ("client:c1:receivable", 50),
        ("platform:revenue", -50),
        ("platform:worker_cost", 20),
        ("worker:w1:payable", -10),
        ("worker:w2:payable", -10),
    }
    assert sum(a.balance_cents for a in result.accounts) == 0


def _settled_ledger(ledger: Ledger) -> None:
    """Two jobs in two currencies, one worker paid in each, w1 paid out once."""
    ledger.handle_events(
        [
            job_created("j", price=50, pay=10),
            job_created("e", price=30, pay=4, currency="EUR"),
            task_resolved("t1", "j"),
            task_resolved("e1", "e"),
            answer_accepted("a1", "t1", "j", "w1"),
            answer_accepted("a2", "t1", "j", "w2", label="dog"),
            answer_accepted("e1a", "e1", "e", "w1"),
        ]
    )
    ledger.create_payout_batch("USD", 0)


@pytest.mark.parametrize(
    ("worker", "currency", "forged", "expected"),
    [
        ("w1", "USD", {"earned_cents": 100_000}, "worker 'w1' (USD): stored totals say earned 100000"),
        ("w1", "EUR", {"paid_out_cents": 3}, "worker 'w1' (EUR): stored totals say earned 4, paid out 3"),
        (
            "w2",
            "USD",
            {"answers_unpaid": 0},
            "0 unpaid; the ledger says earned 0, paid out 0, 0 answers paid, 1 unpaid",
        ),
        ("w1", "USD", {"answers_paid": 7}, "7 answers paid"),
    ],
)
def test_verify_compares_the_stored_worker_totals_with_the_ledger(
    ledger: Ledger, engine: Engine, worker: str, currency: str, forged: dict[str, int], expected: str
) -> None:
    _settled_ledger(ledger)
    assert ledger.verify().problems == []
    w = tables.worker_totals
    with engine.begin() as conn:
        changed = conn.execute(sa.update(w).where(w.c.worker_id == worker, w.c.currency == currency).values(forged))
    assert changed.rowcount == 1
    result = ledger.verify()
    assert not result.balanced
    assert any(expected in problem for problem in result.problems), result.problems


def test_verify_flags_totals_stored_for_a_worker_the_ledger_never_paid(ledger: Ledger, engine: Engine) -> None:
    _settled_ledger(ledger)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(tables.worker_totals).values(
                worker_id="stranger",
                currency="USD",
                earned_cents=500,
                answers_paid=0,
                answers_unpaid=0,
                paid_out_cents=0,
            )
        )
    # Balances and payout batches read the stored totals: the forged row would be paid out.
    assert ledger.worker_balance("stranger").owed_cents == 500
    (problem,) = ledger.verify().problems
    assert problem.startswith("worker 'stranger' (USD): stored totals say earned 500")
    assert problem.endswith("the ledger says earned 0, paid out 0, 0 answers paid, 0 unpaid")


def test_verify_flags_resolved_tasks_and_answers_left_unsettled_in_a_live_job(ledger: Ledger, engine: Engine) -> None:
    _settled_ledger(ledger)
    ledger.handle_events([task_resolved("waits", "pending"), answer_accepted("waits-a", "waits", "pending", "w1")])
    ledger.handle_events([job_created("gone", price=5), job_deleted("gone"), task_resolved("gone-t", "gone")])
    # Facts of a job whose terms have not arrived, or of a deleted job, are rightly unsettled.
    assert ledger.verify().problems == []
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(
            sa.insert(tables.resolved_tasks).values(
                task_id="t2", job_id="j", event_id="forged", resolved_at=now, label="cat", verdicts={}
            )
        )
        conn.execute(
            sa.insert(tables.accepted_answers).values(
                answer_id="a9", job_id="j", task_id="t1", worker_id="w3", event_id="forged", accepted_at=now
            )
        )
    problems = ledger.verify().problems
    assert "job 'j': 1 resolved tasks not billed (e.g. task 't2')" in problems
    assert "job 'j': 1 accepted answers to resolved tasks not settled (e.g. answer 'a9')" in problems
    assert len(problems) == 2, problems


def test_verify_totals_each_currency_on_its_own(ledger: Ledger) -> None:
    _settled_ledger(ledger)
    result = ledger.verify()
    # USD: bill 50, w1's pay 10 and its payout 10 (w2's answer was rejected); EUR: bill 30, pay 4.
    assert [(t.currency, t.debits_cents, t.credits_cents) for t in result.totals] == [
        ("EUR", 34, 34),
        ("USD", 70, 70),
    ]


def _stream(jobs: int, tasks: int, answers: int) -> list[events_pb2.Event]:
    events = []
    for j in range(jobs):
        job = f"job{j}"
        events.append(job_created(job, price=20, pay=3, pilot=j == 0, allowance=7))
        for t in range(tasks):
            task = f"{job}-t{t}"
            events.append(task_resolved(task, job))
            events.append(task_resolved(task, job, version=2))
            events += [answer_accepted(f"{task}-a{a}", task, job, f"w{(t + a) % 5}") for a in range(answers)]
    return events


def _replica(url: str, seed: int, payloads: list[bytes], start: Any, failures: Any) -> None:
    """One service replica in a process of its own: its own engine, the events in its own
    order and batch sizes."""
    engine = make_engine(url)
    try:
        mine = [events_pb2.Event.FromString(payload) for payload in payloads]
        rng = random.Random(seed)
        rng.shuffle(mine)
        replica = Ledger(engine)
        start.wait(timeout=120)
        begin = 0
        while begin < len(mine):
            size = rng.randint(5, 60)
            replica.handle_events(mine[begin : begin + size])
            begin += size
    except BaseException as error:
        failures.put(f"replica {seed}: {error!r}")
        raise
    finally:
        engine.dispose()


def test_processes_applying_the_same_events_never_double_post(payments_db_url: str, engine: Engine) -> None:
    """Three OS processes (three service replicas, each with its own engine) race through
    the same events on one database, each in its own order and batch sizes."""
    events = _stream(jobs=3, tasks=40, answers=3)
    context = multiprocessing.get_context("spawn")
    replicas = 3
    start = context.Barrier(replicas)
    failures = context.Queue()
    payloads = [event.SerializeToString() for event in events]
    processes = [
        context.Process(target=_replica, args=(payments_db_url, seed, payloads, start, failures))
        for seed in range(replicas)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=180)
    # A replica still running (stuck on a lock, say) must not outlive the test and its database.
    hung = [seed for seed, process in enumerate(processes) if process.is_alive()]
    for seed in hung:
        processes[seed].terminate()
        processes[seed].join(timeout=30)
    assert hung == [], f"replicas {hung} were still running and were stopped"
    reported = []
    while not failures.empty():
        reported.append(failures.get(timeout=5))
    assert reported == []
    assert [process.exitcode for process in processes] == [0] * replicas
    ledger = Ledger(engine)
    posted = keys(engine)
    assert len(posted) == len(set(posted)) == 3 * 40 + 3 * 40 * 3
    summary = ledger.money_summary()
    assert (summary.objects_billed, summary.answers_paid) == (120, 360)
    assert summary.pilot_subsidy_cents == 7 * 20
    assert summary.billed_cents == (120 - 7) * 20
    assert summary.paid_cents == 360 * 3
    assert sum(ledger.worker_balance(f"w{w}").answers_paid for w in range(5)) == 360
    verification = ledger.verify()
    assert verification.problems == []


def test_concurrent_payout_batches_from_two_replicas_never_pay_twice(payments_db_url: str, engine: Engine) -> None:
    """Two replicas (two engines on one database, as two service processes) each create
    payout batches from two threads while a third replica keeps settling answers: every
    cent earned is paid out once, and no worker is ever paid more than earned."""
    events = _stream(jobs=2, tasks=30, answers=3)
    engines = [make_engine(payments_db_url) for _ in range(3)]
    errors: list[BaseException] = []
    settled = threading.Event()
    batches: list[Any] = []

    def settle(eng: Engine) -> None:
        try:
            replica = Ledger(eng)
            for start in range(0, len(events), 10):
                replica.handle_events(events[start : start + 10])
        except BaseException as error:
            errors.append(error)
        finally:
            settled.set()

    def pay_out(eng: Engine) -> None:
        replica = Ledger(eng)
        try:
            while not settled.is_set():
                batches.append(replica.create_payout_batch("USD", 0))
            batches.append(replica.create_payout_batch("USD", 0))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=settle, args=(engines[0],))]
    threads += [threading.Thread(target=pay_out, args=(eng,)) for eng in engines[1:] for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    for eng in engines:
        eng.dispose()
    assert errors == []
    ledger = Ledger(engine)
    # One more batch after every writer stopped: nothing may be left to pay.
    assert ledger.create_payout_batch("USD", 0).payouts == []
    paid_out: dict[str, int] = {}
    for batch in batches:
        workers = [p.worker_id for p in batch.payouts]
        assert len(workers) == len(set(workers))
        for p in batch.payouts:
            paid_out[p.worker_id] = paid_out.get(p.worker_id, 0) + p.amount_cents
    balances = {w: ledger.worker_balance(f"w{w}") for w in range(5)}
    assert sum(b.answers_paid for b in balances.values()) == 2 * 30 * 3
    for w, balance in balances.items():
        assert paid_out.get(f"w{w}", 0) == balance.earned_cents == balance.paid_out_cents
    p = tables.postings
    with engine.connect() as conn:
        payout_cents = conn.execute(sa.select(sa.func.sum(p.c.amount_cents)).where(p.c.kind == "payout")).scalar_one()
    assert payout_cents == 2 * 30 * 3 * 3
    verification = ledger.verify()
    assert verification.problems == []


class _Deadlock(Exception):
    sqlstate = "40P01"


class _Broken(Exception):
    sqlstate = "23505"


def test_a_lost_deadlock_is_retried_and_other_errors_propagate(
    ledger: Ledger, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_apply = Ledger._apply
    failures: list[Exception] = [_Deadlock(), _Deadlock()]

    def flaky(self: Ledger, conn: sa.Connection, events: list[events_pb2.Event]) -> None:
        real_apply(self, conn, events)
        if failures:
            # Raised after the writes: the retry must not see them (they were rolled back).
            raise sa.exc.OperationalError("batch", {}, failures.pop())

    monkeypatch.setattr(Ledger, "_apply", flaky)
    ledger.handle_events([job_created("j", price=5), task_resolved("t1", "j")])
    assert failures == []
    assert keys(engine) == ["bill:t1"]
    assert ledger.money_summary("j").objects_billed == 1

    failures.append(_Broken())
    with pytest.raises(sa.exc.OperationalError):
        ledger.handle_events([task_resolved("t2", "j")])
    assert keys(engine) == ["bill:t1"]
