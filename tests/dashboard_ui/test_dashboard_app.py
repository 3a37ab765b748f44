"""The Streamlit app, run by AppTest against fake services over real gRPC, signed in
with an operator key."""

from __future__ import annotations

import pytest
from dashboard_apptest import APP, metrics, signed_in_app
from dashboard_fakes import CATS, FakeQuorum

from dashboard.launch import APP_PATH, streamlit_command


def test_renders_every_figure_for_all_jobs(dashboard_env: FakeQuorum, operator_key: str) -> None:
    at = signed_in_app(operator_key)

    assert not at.warning
    shown = metrics(at)
    assert shown["Backlog"] == "137"
    assert shown["Active leases"] == "9"
    assert shown["Workers"] == "3"
    assert shown["Answers"] == "1,204"
    assert (shown["p50"], shown["p90"], shown["p99"]) == ("42.0 s", "3m 05s", "2h 03m")
    assert shown["Agreement"] == "87.4%"
    assert shown["Accuracy on gold"] == "91.2%"
    assert shown["Estimated accuracy"] == "93.1%"
    assert shown["Low confidence"] == "12"
    assert (shown["Krippendorff's alpha"], shown["Fleiss' kappa"]) == ("0.612", "0.605")
    assert shown["Billed"] == "$12.34"
    assert shown["Paid to workers"] == "$10.00"
    assert shown["Margin"] == "$2.34"
    assert shown["Pilot subsidy"] == "$5.00"

    progress = at.get("progress")[0]
    assert "350 of 500 objects resolved" in progress.proto.text
    assert len(at.get("vega_lite_chart")) == 1

    workers, jobs = (df.value for df in at.dataframe)
    # Most reliable first.
    assert list(workers["worker_id"]) == ["w-alice", "w-carol", "w-bob"]
    assert list(workers["spammer"]) == [False, False, True]
    assert set(jobs["job_id"]) == {CATS, "job-news"}
    assert {"name", "client_id", "state", "objects", "gold", "rejected", "sla_deadline"} <= set(jobs.columns)


def test_picking_a_job_scopes_every_call(dashboard_env: FakeQuorum, operator_key: str) -> None:
    at = signed_in_app(operator_key)
    at.selectbox(key="job_id").select(CATS).run()

    assert not at.exception
    for method in ("GetTaskingStats", "GetJobQuality", "ListWorkers", "GetMoneySummary"):
        assert dashboard_env.calls.job_ids(method)[-1] == CATS
    shown = metrics(at)
    assert shown["Backlog"] == "80"
    assert shown["Margin"] == "-$100.25"
    assert "300 of 400 objects resolved" in at.get("progress")[0].proto.text
    assert "Job paused: budget cap of $1,500.00 reached" in at.error[0].value
    workers, jobs = (df.value for df in at.dataframe)
    assert list(workers["worker_id"]) == ["w-alice"]
    assert list(jobs["job_id"]) == [CATS]


def test_a_service_down_is_named_and_the_rest_still_renders(
    dashboard_env: FakeQuorum, operator_key: str, dead_addr: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUORUM_PAYMENTS_ADDR", dead_addr)
    at = signed_in_app(operator_key)

    [warning] = at.warning
    assert f"Payments service at {dead_addr} is unreachable" in warning.value
    shown = metrics(at)
    assert shown["Billed"] == "—"
    assert shown["Backlog"] == "137"
    assert shown["Agreement"] == "87.4%"
    assert "w-alice" in at.dataframe[0].value["worker_id"].tolist()


def test_everything_down_but_sign_in_still_renders(
    dashboard_env: FakeQuorum, operator_key: str, dead_addr: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("QUORUM_INGEST_ADDR", "QUORUM_TASKING_ADDR", "QUORUM_CONSENSUS_ADDR", "QUORUM_PAYMENTS_ADDR"):
        monkeypatch.setenv(var, dead_addr)
    at = signed_in_app(operator_key)

    assert [w.value.split(" service")[0] for w in at.warning] == [
        "Ingest",
        "Tasking",
        "Consensus",
        "Payments",
    ]
    assert set(metrics(at).values()) == {"—"}
    assert not at.dataframe


def test_auto_refresh_can_be_switched_off(dashboard_env: FakeQuorum, operator_key: str) -> None:
    at = signed_in_app(operator_key)
    at.toggle(key="auto_refresh").set_value(False).run()

    assert not at.exception
    assert at.slider(key="refresh_seconds").disabled
    assert metrics(at)["Billed"] == "$12.34"


def test_launch_command_serves_this_app() -> None:
    argv = streamlit_command(host="0.0.0.0", port=9000)

    assert APP_PATH == APP
    assert argv[1:5] == ["-m", "streamlit", "run", str(APP)]
    assert {"--server.address=0.0.0.0", "--server.port=9000", "--server.headless=true"} <= set(argv)
