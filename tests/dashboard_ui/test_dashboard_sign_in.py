"""The dashboard's sign-in gate, run by AppTest against the fake services behind the
real key checks and the real access service."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pyotp
import pytest
from dashboard_apptest import is_gate, metrics, run_app, shown_text, signed_in_app, submit_code, submit_key
from dashboard_fakes import CATS, NEWS, FakeQuorum, wrong_totp_code
from streamlit import config
from streamlit.testing.v1 import AppTest

from dashboard.auth import CREATE_TOTP_KEY_HINT
from dashboard.data import ServiceAddrs, load_snapshot
from quorum.security.keys import credentials_path
from quorum.security.principal import Role

SECRET = pyotp.random_base32()
UNKNOWN_KEY = "qk_0123456789abcdef_" + "x" * 43


def assert_key_nowhere_but_the_session(at: AppTest, key: str) -> None:
    assert key not in shown_text(at)
    assert all(key not in str(value) for value in at.query_params.values())
    for widget in ("api_key_input", "totp_code_input"):
        if widget in at.session_state:
            assert key not in str(at.session_state[widget])


def assert_kept_nowhere(at: AppTest, secret: str) -> None:
    """``secret`` is in no value of the session state, nor in any field of one (the viewer's
    repr leaves its token out), nor on the page."""
    assert secret not in shown_text(at)
    for name, value in at.session_state.items():
        fields = dataclasses.astuple(value) if dataclasses.is_dataclass(value) else (value,)
        assert all(secret not in str(field) for field in fields), name


def test_the_gate_shows_first_and_nothing_is_read_without_a_key(dashboard_env: FakeQuorum) -> None:
    at = run_app()

    assert is_gate(at)
    assert [t.label for t in at.text_input] == ["API key"]
    assert not at.sidebar.button
    assert dashboard_env.calls.seen == []


def test_a_wrong_key_is_refused_with_a_clear_message(dashboard_env: FakeQuorum) -> None:
    at = submit_key(run_app(), UNKNOWN_KEY)

    [error] = at.error
    assert "Sign-in refused: unknown or revoked API key" in error.value
    assert is_gate(at)
    assert_key_nowhere_but_the_session(at, UNKNOWN_KEY)
    assert dashboard_env.calls.seen == []


def test_an_operator_signs_in_and_sees_every_organisation(dashboard_env: FakeQuorum, operator_key: str) -> None:
    at = signed_in_app(operator_key)

    assert "Signed in as operator (ops-ann)" in at.sidebar.success[0].value
    assert "Role: operator · Organisation: every organisation" in shown_text(at)
    assert set(at.dataframe[1].value["job_id"]) == {CATS, NEWS}
    assert_key_nowhere_but_the_session(at, operator_key)
    assert at.session_state["signed_in_key"] == operator_key


def test_a_client_sees_its_own_jobs_only(dashboard_env: FakeQuorum) -> None:
    key = dashboard_env.issue(Role.CLIENT, org_id="acme", subject="acme-ci")
    at = signed_in_app(key)

    assert "Signed in as client of acme (acme-ci)" in at.sidebar.success[0].value
    assert not at.warning
    assert "Pick one of your jobs" in at.info[0].value
    assert "Not available to your role" in shown_text(at)
    [jobs] = (df.value for df in at.dataframe)
    assert list(jobs["job_id"]) == [CATS]
    assert at.selectbox(key="job_id").options == ["All my jobs", f"Cats vs dogs ({CATS})"]

    at.selectbox(key="job_id").select(CATS).run()
    assert not at.exception and not at.warning
    shown = metrics(at)
    assert shown["Backlog"] == "80"
    assert shown["Margin"] == "-$100.25"
    assert "ListWorkers" not in dashboard_env.calls.methods()
    assert NEWS not in {job_id for _, job_id in dashboard_env.calls.seen}


def test_a_totp_key_is_asked_for_its_code(dashboard_env: FakeQuorum) -> None:
    key = dashboard_env.issue(Role.OPERATOR, subject="ops-tom", totp_secret=SECRET)
    at = submit_key(run_app(), key)

    assert is_gate(at)
    assert [t.label for t in at.text_input] == ["6-digit code"]

    submit_code(at, wrong_totp_code(SECRET))
    assert "Sign-in refused: wrong TOTP code" in at.error[0].value
    assert is_gate(at)
    assert dashboard_env.calls.seen == []

    submit_code(at, pyotp.TOTP(SECRET).now())
    assert not at.error
    assert "Signed in as operator (ops-tom)" in at.sidebar.success[0].value
    assert "Second factor: TOTP verified" in shown_text(at)
    assert metrics(at)["Backlog"] == "137"
    assert_key_nowhere_but_the_session(at, key)


def test_another_key_can_be_used_instead_of_giving_the_code(dashboard_env: FakeQuorum, operator_key: str) -> None:
    enrolled = dashboard_env.issue(Role.ADMIN, totp_secret=SECRET)
    at = submit_key(run_app(), enrolled)
    at.button(key="use_another_key").click().run()

    assert [t.label for t in at.text_input] == ["API key"]
    submit_key(at, operator_key)
    assert metrics(at)["Backlog"] == "137"


def test_required_totp_refuses_an_operator_key_without_it(
    dashboard_env: FakeQuorum, operator_key: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUORUM_DASHBOARD_REQUIRE_TOTP", "true")
    at = submit_key(run_app(), operator_key)

    [error] = at.error
    assert "requires operator keys to use a second factor" in error.value
    assert CREATE_TOTP_KEY_HINT in error.value
    assert is_gate(at)
    assert dashboard_env.calls.seen == []


def test_required_totp_asks_an_enrolled_admin_for_the_code(
    dashboard_env: FakeQuorum, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUORUM_DASHBOARD_REQUIRE_TOTP", "true")
    key = dashboard_env.issue(Role.ADMIN, totp_secret=SECRET)

    at = submit_code(submit_key(run_app(), key), pyotp.TOTP(SECRET).now())

    assert metrics(at)["Backlog"] == "137"


def test_the_local_user_is_signed_in_without_a_step(dashboard_env: FakeQuorum, dashboard_home: Path) -> None:
    local_key = dashboard_env.issue(Role.ADMIN, subject="local-admin")
    credentials_path(dashboard_home).write_text(local_key + "\n")

    at = run_app()

    assert not is_gate(at)
    assert "Signed in as the local user (admin)" in at.sidebar.success[0].value
    assert metrics(at)["Backlog"] == "137"
    assert_key_nowhere_but_the_session(at, local_key)


def test_quorum_api_key_signs_in_like_the_local_user(
    dashboard_env: FakeQuorum, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUORUM_API_KEY", dashboard_env.issue(Role.CLIENT, org_id="acme"))

    at = run_app()

    assert "Signed in with QUORUM_API_KEY (client)" in at.sidebar.success[0].value
    assert "Role: client · Organisation: acme" in shown_text(at)


def test_served_beyond_this_machine_the_local_key_is_not_used(dashboard_env: FakeQuorum, dashboard_home: Path) -> None:
    credentials_path(dashboard_home).write_text(dashboard_env.issue(Role.ADMIN) + "\n")
    config.set_option("server.address", "0.0.0.0")

    at = run_app()

    assert is_gate(at)
    assert "Not signed in as the local user automatically" in at.warning[0].value
    assert dashboard_env.calls.seen == []


def test_signing_out_forgets_the_key_and_does_not_sign_the_local_user_in_again(
    dashboard_env: FakeQuorum, dashboard_home: Path
) -> None:
    credentials_path(dashboard_home).write_text(dashboard_env.issue(Role.ADMIN) + "\n")
    at = run_app()

    at.sidebar.button(key="sign_out").click().run()

    assert is_gate(at)
    assert "signed_in_key" not in at.session_state
    at.run()
    assert is_gate(at)


def test_required_totp_turns_off_the_local_sign_in(
    dashboard_env: FakeQuorum, dashboard_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUORUM_DASHBOARD_REQUIRE_TOTP", "1")
    credentials_path(dashboard_home).write_text(dashboard_env.issue(Role.ADMIN) + "\n")

    at = run_app()

    assert is_gate(at)
    assert dashboard_env.calls.seen == []


def test_a_stale_local_key_leaves_the_form_with_a_reason(dashboard_env: FakeQuorum, dashboard_home: Path) -> None:
    credentials_path(dashboard_home).write_text(UNKNOWN_KEY + "\n")

    at = run_app()

    assert is_gate(at)
    assert "Could not sign in as the local user. Sign-in refused: unknown or revoked API key" in at.warning[0].value


def test_a_key_revoked_during_the_session_signs_out(dashboard_env: FakeQuorum, operator_key: str) -> None:
    at = signed_in_app(operator_key)
    dashboard_env.keys.revoke(operator_key.split("_")[1])

    at.run()

    assert not at.exception
    assert is_gate(at)
    assert "Your key is no longer accepted" in at.warning[0].value
    assert "signed_in_key" not in at.session_state


def session_token(at: AppTest) -> str:
    return str(at.session_state["signed_in_key"])


def test_a_totp_sign_in_reads_with_its_session_and_signing_out_ends_it(dashboard_env: FakeQuorum) -> None:
    key = dashboard_env.issue(Role.OPERATOR, subject="ops-tom", totp_secret=SECRET)
    at = submit_code(submit_key(run_app(), key), pyotp.TOTP(SECRET).now())

    token = session_token(at)
    assert token.startswith("qs_") and token != key
    assert metrics(at)["Backlog"] == "137"
    assert_key_nowhere_but_the_session(at, token)
    # The key itself is not kept once the session stands in for it: every read uses the session.
    assert_kept_nowhere(at, key)

    at.sidebar.button(key="sign_out").click().run()

    assert is_gate(at)
    # Ended in the access service: a copy of the token no longer reads anything.
    snapshot = load_snapshot(dashboard_env.addrs(), token, "", staff=True)
    assert {p.code for p in snapshot.problems} == {"UNAUTHENTICATED"}


def test_services_that_require_totp_are_read_with_the_session(
    quorum_requiring_totp: FakeQuorum, dashboard_home: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ServiceAddrs.ENV.values():
        monkeypatch.setenv(var, quorum_requiring_totp.addr)
    monkeypatch.setenv("QUORUM_REQUIRE_MFA_ROLES", "operator,admin")
    enrolled = quorum_requiring_totp.issue(Role.ADMIN, totp_secret=SECRET)

    at = submit_code(submit_key(run_app(), enrolled), pyotp.TOTP(SECRET).now())

    assert not at.warning and not at.error
    assert metrics(at)["Backlog"] == "137"

    # A key of a required role without TOTP cannot get in, and is told why.
    at = submit_key(run_app(), quorum_requiring_totp.issue(Role.OPERATOR))
    [error] = at.error
    assert "no TOTP enrolled" in error.value and "--totp" in error.value
    assert is_gate(at)


def test_an_ended_session_signs_out_with_a_reason(dashboard_env: FakeQuorum) -> None:
    key = dashboard_env.issue(Role.OPERATOR, totp_secret=SECRET)
    at = submit_code(submit_key(run_app(), key), pyotp.TOTP(SECRET).now())
    dashboard_env.keys.end_sessions(key.split("_")[1])

    at.run()

    assert not at.exception
    assert is_gate(at)
    assert "Your sign-in has ended" in at.warning[0].value
    assert "signed_in_key" not in at.session_state
