"""The payments service end to end: the real service on a real Tansu broker,
events in through Kafka, figures out through gRPC."""

from __future__ import annotations

import csv
import datetime as dt
import json
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import grpc
import pytest
from payments_streams import answer_accepted, job_created, job_sealed, task_resolved, worker_flagged
from quorum_testing import admin_key, client_key, worker_key

from quorum.cli import main as cli_main
from quorum.messaging import Publisher, Topics, outgoing
from quorum.rpc import channel
from quorum.service import RunningService, start_service
from quorum.settings import Settings
from quorum.v1 import common_pb2, events_pb2, payments_pb2, payments_pb2_grpc
from services.payments.bootstrap import build

T = TypeVar("T")


@pytest.fixture
def service_settings(make_settings: Callable[..., Settings], request: pytest.FixtureRequest) -> Settings:
    """Payments on SQLite (the default file under QUORUM_HOME) or PostgreSQL."""
    backend = getattr(request, "param", "sqlite")
    overrides: dict[str, Any] = {}
    if backend == "postgres":
        overrides.update(request.getfixturevalue("postgres_settings"))
    return make_settings(**overrides)


@pytest.fixture
def running(service_settings: Settings) -> Iterator[RunningService]:
    service = start_service(build, service_settings, address="127.0.0.1:0")
    try:
        yield service
    finally:
        service.stop()


@pytest.fixture
def stub(running: RunningService, service_settings: Settings) -> Iterator[payments_pb2_grpc.PaymentsServiceStub]:
    with channel(f"127.0.0.1:{running.port}", api_key=admin_key(service_settings)) as ch:
        yield payments_pb2_grpc.PaymentsServiceStub(ch)


def publish(bootstrap: str, prefix: str, events: list[events_pb2.Event], key: str | None = None) -> None:
    """Publishes events on their topics under their keys, or all under ``key``."""
    topics = Topics(prefix)
    records = []
    for event in events:
        kind = event.WhichOneof("payload")
        if kind == "job_created":
            records.append(outgoing(topics.jobs, key or event.job_created.job_id, event))
        elif kind == "job_sealed":
            records.append(outgoing(topics.jobs, key or event.job_sealed.job_id, event))
        elif kind == "task_resolved":
            records.append(outgoing(topics.results, key or event.task_resolved.task_id, event))
        elif kind == "worker_flagged":
            records.append(outgoing(topics.results, key or event.worker_flagged.worker_id, event))
        else:
            records.append(outgoing(topics.answers, key or event.answer_accepted.task_id, event))
    publisher = Publisher(bootstrap, linger_ms=0)
    try:
        publisher.send_all(records)
    finally:
        publisher.close()


def eventually(read: Callable[[], T], done: Callable[[T], bool], timeout: float = 30.0) -> T:
    """Polls ``read`` until ``done`` holds; NOT_FOUND counts as not yet."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        try:
            last = read()
            if done(last):
                return last
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.NOT_FOUND:
                raise
        time.sleep(0.1)
    raise AssertionError(f"not reached within {timeout} s; last value: {last}")


@pytest.mark.parametrize("service_settings", ["sqlite", "postgres"], indirect=True)
def test_events_through_kafka_show_up_in_the_money_rpcs(
    running: RunningService,
    stub: payments_pb2_grpc.PaymentsServiceStub,
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    tasks = [f"t{i}" for i in range(6)]
    answers = [answer_accepted(f"{t}-a{a}", t, "pilot", f"w{a}") for t in tasks for a in range(3)]
    results = [task_resolved(t, "pilot") for t in tasks]
    # Answers and results first: the job's spec is on another topic and may come last.
    publish(kafka_bootstrap, topic_prefix, answers + results)
    publish(
        kafka_bootstrap,
        topic_prefix,
        [
            job_created("pilot", client_id="acme", price=40, pay=9, currency="EUR", pilot=True, allowance=2),
            task_resolved("t0", "pilot", version=2),
            answers[0],
            results[1],
        ],
    )

    summary = eventually(
        lambda: stub.GetMoneySummary(payments_pb2.GetMoneySummaryRequest(job_id="pilot"), timeout=5),
        lambda s: s.objects_billed == 6 and s.answers_paid == 18,
    )
    assert summary.currency == "EUR"
    assert (summary.billed_cents, summary.pilot_subsidy_cents, summary.paid_cents) == (160, 80, 162)
    assert summary.margin_cents == 160 - 162

    invoice = stub.GetInvoice(payments_pb2.GetInvoiceRequest(job_id="pilot"), timeout=5)
    assert (invoice.client_id, invoice.currency, invoice.total_cents) == ("acme", "EUR", 160)
    assert (invoice.objects_labeled, invoice.pilot_objects) == (6, 2)
    assert [(line.description, line.quantity, line.unit_price_cents, line.amount_cents) for line in invoice.lines] == [
        ("Labeled objects (text classification)", 6, 40, 240),
        ("Pilot allowance (first 2 objects free)", 2, -40, -80),
    ]
    assert invoice.issued_at.seconds > 0

    balance = stub.GetWorkerBalance(payments_pb2.GetWorkerBalanceRequest(worker_id="w1"), timeout=5)
    assert (balance.currency, balance.earned_cents, balance.answers_paid) == ("EUR", 54, 6)

    entries, token = [], ""
    while True:
        page = stub.ListLedgerEntries(
            payments_pb2.ListLedgerEntriesRequest(job_id="pilot", page_size=5, page_token=token), timeout=5
        )
        assert len(page.entries) <= 5
        entries += page.entries
        token = page.next_page_token
        if not token:
            break
    assert len(entries) == 6 + 18
    assert len({e.entry_id for e in entries}) == 24
    assert sum(e.amount_cents for e in entries if e.debit_account == "client:acme:receivable") == 160
    assert all(e.event_id and e.posted_at.seconds > 0 for e in entries)

    everything = stub.GetMoneySummary(payments_pb2.GetMoneySummaryRequest(), timeout=5)
    assert (everything.currency, everything.billed_cents, everything.objects_billed) == ("EUR", 160, 6)

    verification = stub.VerifyLedger(payments_pb2.VerifyLedgerRequest(), timeout=10)
    assert verification.balanced, verification.problems
    assert (verification.entries, verification.debits_cents, verification.credits_cents) == (24, 402, 402)
    balances = {a.account: a.balance_cents for a in verification.accounts}
    assert balances["platform:revenue"] == -240
    assert balances["platform:pilot_subsidy"] == 80
    assert running.healthy()


def _code_and_message(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    error: Any = info.value
    return error.code(), error.details()


def test_bad_requests_get_clear_errors(
    stub: payments_pb2_grpc.PaymentsServiceStub, kafka_bootstrap: str, topic_prefix: str
) -> None:
    invalid, not_found = grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND
    cases: list[tuple[Callable[[], object], grpc.StatusCode, str]] = [
        (lambda: stub.GetInvoice(payments_pb2.GetInvoiceRequest(), timeout=5), invalid, "job_id: is required"),
        (lambda: stub.GetInvoice(payments_pb2.GetInvoiceRequest(job_id="nope"), timeout=5), not_found, "'nope'"),
        (
            lambda: stub.GetMoneySummary(payments_pb2.GetMoneySummaryRequest(job_id="nope"), timeout=5),
            not_found,
            "job 'nope' not found",
        ),
        (
            lambda: stub.GetMoneySummary(payments_pb2.GetMoneySummaryRequest(job_id="x" * 201), timeout=5),
            invalid,
            "job_id: is longer than 200",
        ),
        (
            lambda: stub.GetWorkerBalance(payments_pb2.GetWorkerBalanceRequest(), timeout=5),
            invalid,
            "worker_id: is required",
        ),
        (
            lambda: stub.ListLedgerEntries(payments_pb2.ListLedgerEntriesRequest(page_size=1001), timeout=5),
            invalid,
            "page_size: must be between 0 and 1000",
        ),
        (
            lambda: stub.ListLedgerEntries(payments_pb2.ListLedgerEntriesRequest(page_size=-1), timeout=5),
            invalid,
            "page_size",
        ),
        (
            lambda: stub.ListLedgerEntries(payments_pb2.ListLedgerEntriesRequest(page_token="garbage!"), timeout=5),
            invalid,
            "page_token: malformed",
        ),
    ]
    for call, code, message in cases:
        got_code, got_message = _code_and_message(call)
        assert got_code == code, got_message
        assert message in got_message
    # An unknown worker has earned nothing yet; an empty ledger verifies and has no entries.
    balance = stub.GetWorkerBalance(payments_pb2.GetWorkerBalanceRequest(worker_id="new"), timeout=5)
    assert (balance.worker_id, balance.earned_cents, balance.answers_paid, balance.currency) == ("new", 0, 0, "USD")
    assert list(stub.ListLedgerEntries(payments_pb2.ListLedgerEntriesRequest(), timeout=5).entries) == []
    verification = stub.VerifyLedger(payments_pb2.VerifyLedgerRequest(), timeout=5)
    assert verification.balanced and verification.entries == 0
    # A job is unknown until its JobCreated arrives, then known (with nothing billed yet).
    publish(kafka_bootstrap, topic_prefix, [job_created("late", price=10)])
    invoice = eventually(lambda: stub.GetInvoice(payments_pb2.GetInvoiceRequest(job_id="late"), timeout=5), bool)
    assert (invoice.total_cents, invoice.objects_labeled, invoice.lines[0].amount_cents) == (0, 0, 0)


def test_quote_budget_cap_statement_and_payouts_over_grpc(
    running: RunningService,
    stub: payments_pb2_grpc.PaymentsServiceStub,
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    spec = common_pb2.JobSpec(
        client_id="acme",
        text_classification=common_pb2.ClassificationConfig(labels=["cat", "dog"]),
        overlap=common_pb2.Overlap(min=3, max=5),
        price_per_object_cents=40,
        pay_per_answer_cents=9,
        currency="USD",
    )
    quote = stub.Quote(payments_pb2.QuoteRequest(spec=spec, objects=10, expected_overlap=3), timeout=5)
    assert (quote.client_cents, quote.worker_cents, quote.expected_answers) == (400, 270, 30)
    assert quote.margin_cents == 130
    with pytest.raises(grpc.RpcError) as bad:
        stub.Quote(payments_pb2.QuoteRequest(spec=spec, objects=-1), timeout=5)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "objects" in (bad.value.details() or "")

    # w2 answers at chance level: consensus flags it on the results topic, keyed by worker. A
    # resolution published after the flag under the same key (one partition: read in order)
    # tells when the service has read the flag; then w2's answers come.
    reason = "answers at chance level: spam score 0.93 above 0.5"
    publish(kafka_bootstrap, topic_prefix, [job_created("marker", price=1)])
    publish(
        kafka_bootstrap, topic_prefix, [worker_flagged("w2", reason=reason), task_resolved("m", "marker")], key="w2"
    )
    eventually(
        lambda: stub.GetMoneySummary(payments_pb2.GetMoneySummaryRequest(job_id="marker"), timeout=5),
        lambda s: s.objects_billed == 1,
    )
    tasks = [f"t{i}" for i in range(4)]
    answers = [answer_accepted(f"{t}-w{w}", t, "capped", f"w{w}") for t in tasks for w in range(3)]
    results = [task_resolved(t, "capped", weights={"w0": 0.9, "w1": 0.8, "w2": 0.1}) for t in tasks]
    publish(kafka_bootstrap, topic_prefix, [job_created("capped", price=40, pay=9, budget_cap=100), *answers, *results])

    summary = eventually(
        lambda: stub.GetMoneySummary(payments_pb2.GetMoneySummaryRequest(job_id="capped"), timeout=5),
        lambda s: s.objects_billed == 4 and s.answers_paid + s.answers_unpaid == 12,
    )
    assert (summary.answers_paid, summary.answers_unpaid, summary.paid_cents) == (8, 4, 72)
    # Charges of 160 passed the cap of 100: the job is paused, and says why.
    assert summary.paused and summary.pause_reason
    resumed = stub.SetBudgetCap(payments_pb2.SetBudgetCapRequest(job_id="capped", budget_cap_cents=1000), timeout=5)
    assert not resumed.paused and resumed.budget_cap_cents == 1000

    statement = stub.GetWorkerStatement(payments_pb2.GetWorkerStatementRequest(worker_id="w2"), timeout=5)
    assert len(statement.lines) == 4
    assert all(line.settled and not line.paid for line in statement.lines)
    assert {line.unpaid_reason for line in statement.lines} == {f"spammer: {reason}"}
    assert (statement.balances[0].answers_paid, statement.balances[0].answers_unpaid) == (0, 4)

    batch = stub.CreatePayoutBatch(payments_pb2.CreatePayoutBatchRequest(currency="USD"), timeout=10)
    assert sorted((p.worker_id, p.amount_cents) for p in batch.payouts) == [("w0", 36), ("w1", 36)]
    assert batch.total_cents == 72
    assert "w0,36,USD" in batch.export_csv
    again = stub.CreatePayoutBatch(payments_pb2.CreatePayoutBatchRequest(currency="USD"), timeout=10)
    assert not again.payouts and again.total_cents == 0

    verification = stub.VerifyLedger(payments_pb2.VerifyLedgerRequest(), timeout=10)
    assert verification.balanced, list(verification.problems)


def use_the_service(monkeypatch: pytest.MonkeyPatch, running: RunningService, settings: Settings) -> None:
    """Points the command line at the running payments service, with the local admin key."""
    monkeypatch.setenv("QUORUM_HOME", str(settings.home))
    monkeypatch.setenv("QUORUM_PAYMENTS_ADDR", f"127.0.0.1:{running.port}")
    monkeypatch.delenv("QUORUM_API_KEY", raising=False)


def test_period_invoice_sums_a_clients_charges_per_job(
    running: RunningService,
    stub: payments_pb2_grpc.PaymentsServiceStub,
    service_settings: Settings,
    kafka_bootstrap: str,
    topic_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from google.protobuf.timestamp_pb2 import Timestamp

    def ts(moment: dt.datetime) -> Timestamp:
        stamp = Timestamp()
        stamp.FromDatetime(moment)
        return stamp

    events = [job_created("a", client_id="acme", price=40), job_created("b", client_id="acme", price=25)]
    events += [job_created("c", client_id="other", price=99)]
    events += [task_resolved(f"a{i}", "a") for i in range(3)] + [task_resolved(f"b{i}", "b") for i in range(2)]
    events += [task_resolved("c0", "c")]
    publish(kafka_bootstrap, topic_prefix, events)
    eventually(
        lambda: stub.GetMoneySummary(payments_pb2.GetMoneySummaryRequest(job_id="b"), timeout=5),
        lambda s: s.objects_billed == 2,
    )
    eventually(
        lambda: stub.GetMoneySummary(payments_pb2.GetMoneySummaryRequest(job_id="a"), timeout=5),
        lambda s: s.objects_billed == 3,
    )

    now = dt.datetime.now(dt.UTC)
    request = payments_pb2.GetPeriodInvoiceRequest(
        client_id="acme", period_start=ts(now - dt.timedelta(hours=1)), period_end=ts(now + dt.timedelta(hours=1))
    )
    invoice = stub.GetPeriodInvoice(request, timeout=5)
    assert (invoice.client_id, invoice.currency, invoice.total_cents) == ("acme", "USD", 3 * 40 + 2 * 25)
    assert sorted(
        (line.job_id, line.description, line.quantity, line.unit_price_cents, line.amount_cents)
        for line in invoice.lines
    ) == [
        ("a", "Labeled objects (text classification)", 3, 40, 120),
        ("b", "Labeled objects (text classification)", 2, 25, 50),
    ]

    use_the_service(monkeypatch, running, service_settings)
    today = now.date()
    period = ["period-invoice", "acme", "--from", str(today), "--to", str(today + dt.timedelta(days=1))]
    assert cli_main([*period, "--format", "csv", "--out", str(tmp_path / "period.csv")]) == 0
    rows = list(csv.DictReader((tmp_path / "period.csv").open(encoding="utf-8")))
    assert sorted((r["job_id"], r["quantity"], r["unit_price_cents"], r["amount_cents"]) for r in rows[:-1]) == [
        ("a", "3", "40", "120"),
        ("b", "2", "25", "50"),
    ]
    assert (rows[-1]["description"], rows[-1]["amount_cents"]) == ("Total", "170")
    assert cli_main([*period, "--format", "pdf", "--out", str(tmp_path / "period.pdf")]) == 0
    pdf = (tmp_path / "period.pdf").read_bytes()
    assert pdf.startswith(b"%PDF-") and b"1.70 USD" in pdf and b"Job a" in pdf
    capsys.readouterr()
    assert cli_main([*period, "--format", "json"]) == 0
    assert int(json.loads(capsys.readouterr().out)["totalCents"]) == 170
    assert cli_main(period) == 0
    assert "Total" in capsys.readouterr().out
    later = payments_pb2.GetPeriodInvoiceRequest(
        client_id="acme", period_start=ts(now + dt.timedelta(hours=1)), period_end=ts(now + dt.timedelta(hours=2))
    )
    assert stub.GetPeriodInvoice(later, timeout=5).total_cents == 0

    backwards = payments_pb2.GetPeriodInvoiceRequest(
        client_id="acme", period_start=request.period_end, period_end=request.period_start
    )
    for bad, field in (
        (backwards, "period_end"),
        (payments_pb2.GetPeriodInvoiceRequest(client_id="acme"), "period_start"),
    ):
        with pytest.raises(grpc.RpcError) as failure:
            stub.GetPeriodInvoice(bad, timeout=5)
        assert failure.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field in (failure.value.details() or "")


@pytest.mark.parametrize("service_settings", ["sqlite", "postgres"], indirect=True)
def test_quality_bonus_and_concurrent_payouts_over_grpc(
    running: RunningService,
    stub: payments_pb2_grpc.PaymentsServiceStub,
    service_settings: Settings,
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    spec = common_pb2.JobSpec(
        client_id="acme",
        text_classification=common_pb2.ClassificationConfig(labels=["cat", "dog"]),
        overlap=common_pb2.Overlap(min=2, max=2),
        price_per_object_cents=40,
        pay_per_answer_cents=9,
        gold_share=0.2,
        gold_bonus_cents=2,
    )
    quote = stub.Quote(payments_pb2.QuoteRequest(spec=spec, objects=10), timeout=5)
    assert (quote.expected_answers, quote.max_gold_bonus_cents) == (20, 40)

    # Five gold answers each; "sharp" gets them all right, "dull" three of five.
    events = [job_created("bonus", price=40, pay=9, gold_bonus=2, gold_bonus_threshold=0.8), job_sealed("bonus", 3)]
    for worker, right in (("sharp", 5), ("dull", 3)):
        events += [
            answer_accepted(f"{worker}-g{i}", f"g{i}", "bonus", worker, gold=True, right=i < right) for i in range(5)
        ]
        events += [answer_accepted(f"{worker}-t{t}", f"t{t}", "bonus", worker) for t in range(3)]
    events += [task_resolved(f"t{t}", "bonus") for t in range(3)]
    publish(kafka_bootstrap, topic_prefix, events)

    summary = eventually(
        lambda: stub.GetMoneySummary(payments_pb2.GetMoneySummaryRequest(job_id="bonus"), timeout=5),
        lambda s: s.gold_bonus_cents > 0,
    )
    # dull's two wrong gold answers are not paid.
    assert (summary.objects_billed, summary.answers_paid, summary.gold_bonus_cents) == (3, 14, 16)
    assert summary.margin_cents == 120 - 14 * 9 - 16

    with channel(f"127.0.0.1:{running.port}", api_key=worker_key(service_settings, "sharp")) as ch:
        own = payments_pb2_grpc.PaymentsServiceStub(ch)
        statement = own.GetWorkerStatement(payments_pb2.GetWorkerStatementRequest(worker_id="sharp"), timeout=5)
        with pytest.raises(grpc.RpcError) as other:
            own.GetWorkerStatement(payments_pb2.GetWorkerStatementRequest(worker_id="dull"), timeout=5)
    assert other.value.code() == grpc.StatusCode.PERMISSION_DENIED
    (bonus,) = statement.bonuses
    assert (bonus.job_id, bonus.amount_cents, bonus.gold_answers, bonus.gold_correct, bonus.paid_answers) == (
        "bonus",
        16,
        5,
        5,
        8,
    )
    assert statement.balances[0].earned_cents == 8 * 9 + 16
    (missed,) = stub.GetWorkerStatement(payments_pb2.GetWorkerStatementRequest(worker_id="dull"), timeout=5).bonuses
    assert missed.amount_cents == 0 and "3 of 5" in missed.reason

    # Several payout batches at once: each worker is paid out exactly once.
    batches: list[payments_pb2.PayoutBatch] = []
    errors: list[BaseException] = []
    start = threading.Barrier(4)

    def pay_out() -> None:
        try:
            start.wait()
            batches.append(stub.CreatePayoutBatch(payments_pb2.CreatePayoutBatchRequest(currency="USD"), timeout=30))
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=pay_out) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    paid = sorted((p.worker_id, p.amount_cents) for batch in batches for p in batch.payouts)
    assert paid == [("dull", 6 * 9), ("sharp", 8 * 9 + 16)]
    verification = stub.VerifyLedger(payments_pb2.VerifyLedgerRequest(), timeout=10)
    assert verification.balanced, list(verification.problems)


def test_a_boxed_objects_annotations_reach_the_invoice_over_grpc(
    running: RunningService,
    stub: payments_pb2_grpc.PaymentsServiceStub,
    kafka_bootstrap: str,
    topic_prefix: str,
) -> None:
    job = job_created("boxes", price=50, pay=10, task="bounding_boxes", price_per_annotation=7)
    publish(kafka_bootstrap, topic_prefix, [job, task_resolved("t1", "boxes", boxes=3)])

    invoice = eventually(
        lambda: stub.GetInvoice(payments_pb2.GetInvoiceRequest(job_id="boxes"), timeout=5),
        lambda i: i.objects_labeled == 1,
    )
    assert [(line.description, line.quantity, line.unit_price_cents, line.amount_cents) for line in invoice.lines] == [
        ("Labeled objects (bounding boxes)", 1, 50, 50),
        ("Annotations", 3, 7, 21),
    ]
    assert invoice.total_cents == 71
    summary = stub.GetMoneySummary(payments_pb2.GetMoneySummaryRequest(job_id="boxes"), timeout=5)
    assert (summary.billed_cents, summary.objects_billed) == (71, 1)


@pytest.mark.parametrize("service_settings", ["sqlite", "postgres"], indirect=True)
def test_staff_correct_the_ledger_over_grpc_and_the_command_line(
    running: RunningService,
    stub: payments_pb2_grpc.PaymentsServiceStub,
    service_settings: Settings,
    kafka_bootstrap: str,
    topic_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    publish(
        kafka_bootstrap,
        topic_prefix,
        [
            job_created("fix", price=50, pay=10),
            answer_accepted("a1", "t1", "fix", "w1"),
            answer_accepted("a2", "t1", "fix", "w2", label="dog"),
            task_resolved("t1", "fix"),
        ],
    )
    eventually(
        lambda: stub.GetMoneySummary(payments_pb2.GetMoneySummaryRequest(job_id="fix"), timeout=5),
        lambda s: s.answers_paid + s.answers_unpaid == 2,
    )
    refund = payments_pb2.AdjustLedgerRequest(
        request_id="fix-refund",
        debit_account="platform:revenue",
        credit_account="client:acme:receivable",
        amount_cents=20,
        job_id="fix",
        reason="two days late",
    )
    made = stub.AdjustLedger(refund, timeout=5)
    assert made.created and made.reason == "two days late" and made.requested_by
    assert (made.entry.amount_cents, made.entry.currency, made.entry.memo) == (20, "USD", "Adjustment: two days late")
    again = stub.AdjustLedger(refund, timeout=5)
    assert not again.created and again.entry.entry_id == made.entry.entry_id
    invoice = stub.GetInvoice(payments_pb2.GetInvoiceRequest(job_id="fix"), timeout=5)
    assert invoice.total_cents == 30
    assert (invoice.lines[-1].description, invoice.lines[-1].amount_cents) == ("Adjustment: two days late", -20)

    for bad, field in (
        (payments_pb2.AdjustLedgerRequest(**{**_fields(refund), "reason": ""}), "reason"),
        (payments_pb2.AdjustLedgerRequest(**{**_fields(refund), "request_id": ""}), "request_id"),
        (payments_pb2.AdjustLedgerRequest(**{**_fields(refund), "amount_cents": -1}), "amount_cents"),
        (
            payments_pb2.AdjustLedgerRequest(**{**_fields(refund), "debit_account": "platform:worker_cost"}),
            "debit_account",
        ),
        (
            # An id longer than any worker's: refused, not left to fail in the database.
            payments_pb2.AdjustLedgerRequest(
                **{
                    **_fields(refund),
                    "debit_account": "platform:worker_cost",
                    "credit_account": f"worker:{'w' * 220}:payable",
                }
            ),
            "credit_account",
        ),
    ):
        code, message = _code_and_message(lambda bad=bad: stub.AdjustLedger(bad, timeout=5))  # type: ignore[misc]
        assert code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith(f"{field}: "), message
    code, message = _code_and_message(
        lambda: stub.AdjustLedger(
            payments_pb2.AdjustLedgerRequest(**{**_fields(refund), "amount_cents": 21}), timeout=5
        )
    )
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "fix-refund" in message
    typo = {**_fields(refund), "request_id": "typo", "credit_account": "client:acme-typo:receivable", "job_id": ""}
    code, message = _code_and_message(lambda: stub.AdjustLedger(payments_pb2.AdjustLedgerRequest(**typo), timeout=5))
    assert code == grpc.StatusCode.NOT_FOUND and "acme-typo" in message

    # The command line pays w2 for the answer consensus rejected by mistake, once.
    use_the_service(monkeypatch, running, service_settings)
    pay = [
        "ledger", "adjust", "--request-id", "fix-a2", "--debit", "platform:worker_cost",
        "--credit", "worker:w2:payable", "--amount-cents", "10", "--job", "fix", "--reason", "answer a2 was right",
    ]  # fmt: skip
    capsys.readouterr()
    assert cli_main(pay) == 0
    assert "adjustment fix-a2 posted: entry" in capsys.readouterr().out
    assert cli_main(pay) == 0
    assert "already posted (nothing new)" in capsys.readouterr().out
    assert cli_main([*pay[:-1], ""]) == 1
    assert "INVALID_ARGUMENT" in capsys.readouterr().err

    with channel(f"127.0.0.1:{running.port}", api_key=worker_key(service_settings, "w2")) as ch:
        own = payments_pb2_grpc.PaymentsServiceStub(ch)
        statement = own.GetWorkerStatement(payments_pb2.GetWorkerStatementRequest(worker_id="w2"), timeout=5)
        denied, _ = _code_and_message(lambda: own.AdjustLedger(refund, timeout=5))
    assert denied == grpc.StatusCode.PERMISSION_DENIED
    (correction,) = statement.adjustments
    assert (correction.request_id, correction.reason, correction.entry.amount_cents) == (
        "fix-a2",
        "answer a2 was right",
        10,
    )
    assert correction.requested_by == ""
    assert (statement.balances[0].earned_cents, statement.balances[0].answers_unpaid) == (10, 1)
    balance = stub.GetWorkerBalance(payments_pb2.GetWorkerBalanceRequest(worker_id="w2"), timeout=5)
    assert balance.owed_cents == 10
    # The client lists its job's entries with its own refund, but not what w2 was told.
    listing = payments_pb2.ListLedgerEntriesRequest(job_id="fix")
    with channel(f"127.0.0.1:{running.port}", api_key=client_key(service_settings, "acme")) as ch:
        acme = payments_pb2_grpc.PaymentsServiceStub(ch)
        seen = [entry.memo for entry in acme.ListLedgerEntries(listing, timeout=5).entries]
    assert "Adjustment: two days late" in seen and "Adjustment: answer a2 was right" not in seen, seen
    staff_sees = [entry.memo for entry in stub.ListLedgerEntries(listing, timeout=5).entries]
    assert "Adjustment: answer a2 was right" in staff_sees
    verification = stub.VerifyLedger(payments_pb2.VerifyLedgerRequest(), timeout=10)
    assert verification.balanced, list(verification.problems)


def _fields(message: Any) -> dict[str, Any]:
    return {field.name: value for field, value in message.ListFields()}


def test_quote_charges_annotations_and_estimates_the_overlap_over_grpc_and_the_command_line(
    running: RunningService,
    stub: payments_pb2_grpc.PaymentsServiceStub,
    service_settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    spec = common_pb2.JobSpec(
        client_id="acme",
        bounding_boxes=common_pb2.BoundingBoxConfig(labels=["car"]),
        overlap=common_pb2.Overlap(min=3, max=5),
        target_confidence=0.9,
        price_per_object_cents=50,
        pay_per_answer_cents=10,
        price_per_annotation_cents=5,
        pilot=True,
        pilot_allowance=10,
    )
    quote = stub.Quote(
        payments_pb2.QuoteRequest(spec=spec, objects=100, expected_annotations_per_object=2.5), timeout=5
    )
    # 5 cents a box: 250 boxes on 100 objects, less the boxes of the 10 free objects.
    assert (quote.expected_annotations, quote.annotation_cents) == (250, 1250)
    assert quote.client_cents == 100 * 50 + 1250 - (10 * 50 + 25 * 5)
    # No expected overlap given: estimated from the dynamic overlap, not overlap.min.
    assert quote.expected_overlap == pytest.approx(4.26) and quote.expected_answers == 426
    assert quote.worker_cents == 426 * 10

    for request, field in (
        (payments_pb2.QuoteRequest(spec=spec, objects=100), "expected_annotations_per_object"),
        (
            payments_pb2.QuoteRequest(spec=spec, objects=100, expected_annotations_per_object=-2),
            "expected_annotations_per_object",
        ),
        (_quote(spec, price_per_object_cents=-1), "spec.price_per_object_cents"),
        (_quote(spec, overlap=common_pb2.Overlap(min=4, max=2)), "spec.overlap.max"),
        (_quote(spec, target_confidence=2), "spec.target_confidence"),
        (_quote(spec, currency="dollars"), "spec.currency"),
        (payments_pb2.QuoteRequest(objects=1), "spec"),
    ):
        code, message = _code_and_message(lambda request=request: stub.Quote(request, timeout=5))  # type: ignore[misc]
        assert code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith(f"{field}: "), message

    # `quorum quote` takes submit's job options and quotes the same job.
    use_the_service(monkeypatch, running, service_settings)
    options = [
        "--task", "bounding_boxes", "--labels", "car", "--client", "acme", "--min-overlap", "3", "--max-overlap", "5",
        "--price-cents", "50", "--pay-cents", "10", "--price-per-annotation-cents", "5", "--pilot",
        "--pilot-allowance", "10", "--gold-share", "0",
    ]  # fmt: skip
    capsys.readouterr()
    assert cli_main(["quote", "--objects", "100", "--annotations-per-object", "2.5", "--json", *options]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert int(printed["clientCents"]) == quote.client_cents and int(printed["expectedAnswers"]) == 426
    assert int(printed["annotationCents"]) == 1250
    assert cli_main(["quote", "--objects", "100", "--annotations-per-object", "2.5", *options]) == 0
    text = capsys.readouterr().out
    assert f"client pays   {quote.client_cents // 100}.{quote.client_cents % 100:02d} USD" in text
    assert "426 (4.26 per object)" in text
    assert cli_main(["quote", "--objects", "100", *options]) == 1
    assert "expected_annotations_per_object" in capsys.readouterr().err
    # A per-hour pilot's allowance counts answers: 10 objects x 1 answer, the first 4 free.
    hourly = [
        "--task", "text_classification", "--labels", "pos,neg", "--client", "acme", "--min-overlap", "1",
        "--max-overlap", "1", "--price-per-hour-cents", "1200", "--pilot", "--pilot-allowance", "4",
    ]  # fmt: skip
    assert cli_main(["quote", "--objects", "10", "--seconds-per-answer", "60", *hourly]) == 0
    assert "pilot         -0.80 USD (4 answers free)" in capsys.readouterr().out
    assert cli_main(["quote", "--objects", "100", "--annotations-per-object", "2.5", *options]) == 0
    assert "(10 objects free)" in capsys.readouterr().out


def _quote(spec: common_pb2.JobSpec, **changes: Any) -> payments_pb2.QuoteRequest:
    """A quote of 1 object of ``spec`` with ``changes``."""
    return payments_pb2.QuoteRequest(
        spec=common_pb2.JobSpec(**{**_fields(spec), **changes}), objects=1, expected_annotations_per_object=1
    )


def test_payouts_create_writes_the_providers_file_and_never_pays_twice(
    running: RunningService,
    stub: payments_pb2_grpc.PaymentsServiceStub,
    service_settings: Settings,
    kafka_bootstrap: str,
    topic_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tasks = [f"t{i}" for i in range(3)]
    events = [job_created("paid", price=50, pay=400)]
    events += [answer_accepted(f"{t}-{w}", t, "paid", w) for t in tasks for w in ("rich", "poor")]
    events += [task_resolved(t, "paid") for t in tasks] + [answer_accepted("late", "t9", "paid", "poor")]
    publish(kafka_bootstrap, topic_prefix, events)
    eventually(
        lambda: stub.GetMoneySummary(payments_pb2.GetMoneySummaryRequest(job_id="paid"), timeout=5),
        lambda s: s.answers_paid == 6,
    )
    use_the_service(monkeypatch, running, service_settings)
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    capsys.readouterr()
    assert cli_main(["payouts", "create", "--currency", "usd", "--minimum-cents", "1000", "--out", str(first)]) == 0
    assert "2 workers, 24.00 USD" in capsys.readouterr().out
    rows = list(csv.DictReader(first.open(encoding="utf-8")))
    assert sorted((row["worker_id"], row["amount_cents"], row["currency"]) for row in rows) == [
        ("poor", "1200", "USD"),
        ("rich", "1200", "USD"),
    ]
    assert len({row["batch_id"] for row in rows}) == 1
    # Nothing new was earned: a second run pays nobody, and its file holds the header alone.
    assert cli_main(["payouts", "create", "--minimum-cents", "1", "--out", str(second)]) == 0
    assert "0 workers, 0.00 USD" in capsys.readouterr().out
    assert second.read_text(encoding="utf-8") == "worker_id,amount_cents,currency,batch_id\n"
    balance = stub.GetWorkerBalance(payments_pb2.GetWorkerBalanceRequest(worker_id="rich"), timeout=5)
    assert (balance.earned_cents, balance.paid_out_cents, balance.owed_cents) == (1200, 1200, 0)
    verification = stub.VerifyLedger(payments_pb2.VerifyLedgerRequest(), timeout=10)
    assert verification.balanced, list(verification.problems)
