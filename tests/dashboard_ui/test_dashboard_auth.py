"""Signing in (dashboard.auth.sign_in) and reading with a key (load_snapshot), against
the fake services behind the real key checks and the real access service."""

from __future__ import annotations

import pyotp
import pytest
from dashboard_fakes import CATS, NEWS, FakeQuorum, wrong_totp_code

from dashboard.auth import CREATE_TOTP_KEY_HINT, STAFF_ROLES, CodeNeeded, SignInRefused, Viewer, sign_in
from dashboard.data import JOB_SCOPED_PARTS, WORKERS, load_snapshot
from quorum.security.principal import Role

SECRET = pyotp.random_base32()


def test_a_key_without_totp_signs_in_as_its_owner(quorum: FakeQuorum) -> None:
    key = quorum.issue(Role.CLIENT, org_id="acme", subject="acme-ci")

    viewer = sign_in(quorum.addr, key)

    assert isinstance(viewer, Viewer)
    assert (viewer.role, viewer.org_id, viewer.subject, viewer.totp_verified) == (Role.CLIENT, "acme", "acme-ci", False)
    assert not viewer.staff
    assert viewer.describe() == "client of acme (acme-ci)"


@pytest.mark.parametrize(
    ("presented", "said"),
    [
        ("", "Enter an API key."),
        ("hunter2", "malformed API key"),
        ("qk_0123456789abcdef_" + "x" * 43, "unknown or revoked API key"),
        ("qk_0123456789abcdef_" + "é" * 30, "malformed API key"),
    ],
)
def test_a_wrong_key_is_refused_without_echoing_it(quorum: FakeQuorum, presented: str, said: str) -> None:
    with pytest.raises(SignInRefused) as refused:
        sign_in(quorum.addr, presented)

    assert said in str(refused.value)
    if presented:
        assert presented not in str(refused.value)


def test_a_revoked_key_is_refused(quorum: FakeQuorum) -> None:
    key = quorum.issue(Role.OPERATOR)
    quorum.keys.revoke(key.split("_")[1])

    with pytest.raises(SignInRefused, match="unknown or revoked API key"):
        sign_in(quorum.addr, key)


def test_a_totp_key_needs_its_current_code(quorum: FakeQuorum) -> None:
    key = quorum.issue(Role.OPERATOR, subject="ops-tom", totp_secret=SECRET)

    assert isinstance(sign_in(quorum.addr, key), CodeNeeded)
    with pytest.raises(SignInRefused, match="wrong TOTP code"):
        sign_in(quorum.addr, key, wrong_totp_code(SECRET))
    with pytest.raises(SignInRefused, match="6-digit code"):
        sign_in(quorum.addr, key, "12ab")

    viewer = sign_in(quorum.addr, key, pyotp.TOTP(SECRET).now())
    assert isinstance(viewer, Viewer)
    assert (viewer.role, viewer.subject, viewer.totp_verified) == (Role.OPERATOR, "ops-tom", True)


def test_required_totp_refuses_staff_keys_without_it(quorum: FakeQuorum) -> None:
    operator = quorum.issue(Role.OPERATOR)
    admin = quorum.issue(Role.ADMIN)
    client = quorum.issue(Role.CLIENT, org_id="acme")
    enrolled = quorum.issue(Role.ADMIN, totp_secret=SECRET)

    for key in (operator, admin):
        with pytest.raises(SignInRefused) as refused:
            sign_in(quorum.addr, key, totp_roles=STAFF_ROLES)
        assert CREATE_TOTP_KEY_HINT in str(refused.value)
    # Clients are not staff: the requirement is not theirs.
    assert isinstance(sign_in(quorum.addr, client, totp_roles=STAFF_ROLES), Viewer)
    assert isinstance(sign_in(quorum.addr, enrolled, totp_roles=STAFF_ROLES), CodeNeeded)
    assert isinstance(sign_in(quorum.addr, enrolled, pyotp.TOTP(SECRET).now(), totp_roles=STAFF_ROLES), Viewer)


@pytest.mark.parametrize("role", [Role.WORKER, Role.REVIEWER])
def test_worker_and_reviewer_keys_have_nothing_to_see(quorum: FakeQuorum, role: Role) -> None:
    key = quorum.issue(role, subject="w-alice")

    with pytest.raises(SignInRefused, match=f"A {role.value} key cannot open the dashboard"):
        sign_in(quorum.addr, key)


def test_an_unreachable_access_service_is_named(dead_addr: str) -> None:
    with pytest.raises(SignInRefused, match=f"access service at {dead_addr} is unreachable"):
        sign_in(dead_addr, "qk_0123456789abcdef_" + "x" * 43, timeout=1.0)


def test_every_read_carries_the_key(quorum: FakeQuorum, operator_key: str) -> None:
    snap = load_snapshot(quorum.addrs(), operator_key, staff=True)

    assert snap.problems == ()
    key_id = operator_key.split("_")[1]
    assert quorum.calls.key_ids and set(quorum.calls.key_ids) == {key_id}


def test_a_wrong_key_reads_nothing(quorum: FakeQuorum) -> None:
    snap = load_snapshot(quorum.addrs(), "qk_0123456789abcdef_" + "x" * 43, staff=True)

    assert {p.code for p in snap.problems} == {"UNAUTHENTICATED"}
    assert snap.jobs.empty and snap.tasking is None and snap.money is None and snap.workers.empty
    assert quorum.calls.seen == []


def test_a_client_reads_its_own_jobs_and_nothing_summed_over_others(quorum: FakeQuorum) -> None:
    key = quorum.issue(Role.CLIENT, org_id="acme")

    overview = load_snapshot(quorum.addrs(), key, staff=False)

    assert overview.problems == ()
    assert list(overview.jobs["job_id"]) == [CATS]
    assert overview.withheld == JOB_SCOPED_PARTS | {WORKERS}
    assert overview.tasking is None and overview.quality is None and overview.money is None
    assert quorum.calls.methods() == {"ListJobs"}

    cats = load_snapshot(quorum.addrs(), key, CATS, staff=False)
    assert cats.problems == ()
    assert cats.withheld == {WORKERS}
    assert cats.tasking is not None and cats.tasking.backlog == 80
    assert cats.money is not None and cats.money.margin_cents == -10_025
    assert "ListWorkers" not in quorum.calls.methods()


def test_the_services_hide_another_organisations_job_from_a_client(quorum: FakeQuorum) -> None:
    key = quorum.issue(Role.CLIENT, org_id="acme")

    snap = load_snapshot(quorum.addrs(), key, NEWS, staff=False)

    # Exactly as if it did not exist: the interceptor answers before any fake is asked.
    assert {(p.method, p.code) for p in snap.problems} == {
        ("GetJob", "NOT_FOUND"),
        ("GetTaskingStats", "NOT_FOUND"),
        ("GetJobQuality", "NOT_FOUND"),
        ("GetMoneySummary", "NOT_FOUND"),
    }
    assert NEWS not in quorum.calls.job_ids("GetJob")
