"""load_snapshot against real gRPC servers, and the pure formatting helpers."""

from __future__ import annotations

import time

import pandas as pd
import pytest
from dashboard_fakes import CATS, NEWS, T0, FakeQuorum

from dashboard.data import JOB_COLUMNS, WORKER_COLUMNS, ServiceAddrs, load_snapshot
from dashboard.formatting import format_cents, format_count, format_duration, format_percent


def test_all_jobs_snapshot_has_every_part(quorum: FakeQuorum, operator_key: str) -> None:
    snap = load_snapshot(quorum.addrs(), operator_key, staff=True)

    assert snap.problems == ()
    assert snap.job_id == ""
    assert list(snap.jobs.columns) == JOB_COLUMNS
    # Newest job first.
    assert list(snap.jobs["job_id"]) == [NEWS, CATS]
    cats = snap.jobs.set_index("job_id").loc[CATS]
    assert (cats["name"], cats["client_id"], cats["state"]) == ("Cats vs dogs", "acme", "sealed")
    assert (cats["objects"], cats["gold"], cats["rejected"]) == (400, 20, 3)
    assert cats["sla_deadline"] == pd.Timestamp(T0 + 86_400, unit="s", tz="UTC")
    assert pd.isna(snap.jobs.set_index("job_id").loc[NEWS, "sla_deadline"])

    assert snap.objects == 500
    assert snap.resolved == 350
    assert snap.progress == pytest.approx(0.7)
    assert snap.tasking is not None and snap.tasking.backlog == 137 and snap.tasking.active_leases == 9
    assert snap.quality is not None and snap.quality.ttr_p99_seconds == 7_380.0
    assert snap.money is not None and snap.money.billed_cents == 1_234 and snap.money.currency == "USD"


def test_workers_are_sorted_by_reliability_with_gold_accuracy(quorum: FakeQuorum, operator_key: str) -> None:
    workers = load_snapshot(quorum.addrs(), operator_key, staff=True).workers

    assert list(workers.columns) == WORKER_COLUMNS
    assert list(workers["worker_id"]) == ["w-alice", "w-carol", "w-bob"]
    assert workers.loc[0, "gold_accuracy"] == pytest.approx(39 / 40)
    # No gold answers: no gold accuracy, rather than a misleading 0 %.
    assert pd.isna(workers.loc[1, "gold_accuracy"])


def test_throughput_fills_missing_minutes_with_zero(quorum: FakeQuorum, operator_key: str) -> None:
    frame = load_snapshot(quorum.addrs(), operator_key, staff=True).throughput

    assert list(frame.columns) == ["created", "answered", "resolved"]
    assert list(frame.index) == list(pd.to_datetime([T0 + 60 * i for i in range(4)], unit="s", utc=True))
    assert frame["created"].tolist() == [300, 125, 0, 100]
    assert frame["answered"].tolist() == [200, 400, 350, 254]
    assert frame["resolved"].tolist() == [0, 100, 150, 100]


def test_job_scope_is_passed_to_every_service(quorum: FakeQuorum, operator_key: str) -> None:
    snap = load_snapshot(quorum.addrs(), operator_key, CATS, staff=True)

    assert snap.problems == ()
    for method in ("GetJob", "GetTaskingStats", "GetJobQuality", "ListWorkers", "GetMoneySummary"):
        assert quorum.calls.job_ids(method) == [CATS]
    # The picker still needs every job.
    assert len(snap.jobs) == 2
    assert list(snap.scoped_jobs()["job_id"]) == [CATS]
    assert snap.objects == 400
    assert snap.progress == pytest.approx(300 / 400)
    assert snap.money is not None and snap.money.margin_cents == -10_025


def test_unreachable_service_is_reported_and_the_rest_still_loads(
    quorum: FakeQuorum, operator_key: str, dead_addr: str
) -> None:
    start = time.monotonic()
    snap = load_snapshot(quorum.addrs(consensus=dead_addr), operator_key, staff=True)

    assert time.monotonic() - start < 2.0
    # One problem for the dead service, not one per method.
    [problem] = snap.problems
    assert (problem.service, problem.addr, problem.code) == ("Consensus", dead_addr, "UNAVAILABLE")
    assert problem.unreachable
    assert f"Consensus service at {dead_addr} is unreachable" in problem.message()
    assert snap.quality is None and snap.workers.empty and snap.progress is None
    assert snap.tasking is not None and snap.money is not None and len(snap.jobs) == 2
    assert list(snap.throughput.columns) == ["created", "answered"]


def test_unknown_job_names_the_failed_method(quorum: FakeQuorum, operator_key: str) -> None:
    snap = load_snapshot(quorum.addrs(), operator_key, "job-missing", staff=True)

    assert {(p.service, p.method, p.code) for p in snap.problems} == {
        ("Ingest", "GetJob", "NOT_FOUND"),
        ("Tasking", "GetTaskingStats", "NOT_FOUND"),
        ("Consensus", "GetJobQuality", "NOT_FOUND"),
        ("Consensus", "ListWorkers", "NOT_FOUND"),
        ("Payments", "GetMoneySummary", "NOT_FOUND"),
    }
    assert "GetJob failed (NOT_FOUND): no job 'job-missing'" in snap.problems[0].message()
    assert len(snap.jobs) == 2 and snap.objects is None


def test_everything_down_gives_an_empty_snapshot(dead_addr: str) -> None:
    snap = load_snapshot(ServiceAddrs(dead_addr, dead_addr, dead_addr, dead_addr), "qk_unused_key", staff=True)

    assert [p.service for p in snap.problems] == ["Ingest", "Tasking", "Consensus", "Payments"]
    assert snap.jobs.empty and snap.workers.empty and snap.throughput.empty
    assert snap.tasking is None and snap.quality is None and snap.money is None


def test_addresses_come_from_the_environment() -> None:
    assert ServiceAddrs.from_env({}) == ServiceAddrs(
        "127.0.0.1:50051", "127.0.0.1:50052", "127.0.0.1:50053", "127.0.0.1:50054"
    )
    addrs = ServiceAddrs.from_env({"QUORUM_TASKING_ADDR": " tasking:7000 ", "QUORUM_PAYMENTS_ADDR": ""})
    assert addrs.tasking == "tasking:7000"
    assert addrs.payments == "127.0.0.1:50054"


@pytest.mark.parametrize(
    ("cents", "currency", "text"),
    [
        (1_234, "USD", "$12.34"),
        (0, "USD", "$0.00"),
        (-5, "USD", "-$0.05"),
        (123_456_789, "", "$1,234,567.89"),
        (1_999, "eur", "€19.99"),
        (500, "JPY", "¥500"),
        (1_234, "CHF", "12.34 CHF"),
        (None, "USD", "—"),
    ],
)
def test_format_cents(cents: int | None, currency: str, text: str) -> None:
    assert format_cents(cents, currency) == text


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(8.24, "8.2 s"), (185, "3m 05s"), (7_380, "2h 03m"), (100_800, "1d 04h"), (None, "—"), (-1, "—")],
)
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_format_percent_and_count() -> None:
    assert format_percent(0.9234) == "92.3%"
    assert format_percent(None) == "—"
    assert format_percent(float("nan")) == "—"
    assert format_count(12_345) == "12,345"
    assert format_count(None) == "—"
