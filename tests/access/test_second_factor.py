"""Multifactor sign-in across the whole deployment: the five services run for real (in
this process, on the session's broker) with QUORUM_REQUIRE_MFA_ROLES set for admins,
operators and workers. Keys of those roles are refused alone; a TOTP sign-in's session
works on every service as its key, until it expires, is signed out of, or its key is
revoked; a code signs in once; and the CLI signs in and keeps the session for later
commands, ending the session it replaces, and signs out without losing a session it
could not end."""

from __future__ import annotations

import datetime as dt
import importlib
import io
import os
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pyotp
import pytest
import sqlalchemy as sa
from quorum_testing import SERVICE_STUBS, deployment_settings, wait_until

from quorum.broker import free_port
from quorum.cli import main as cli_main
from quorum.crypto import load_master_keyring
from quorum.db import make_engine
from quorum.rpc import SECOND_FACTOR_METADATA, channel
from quorum.security.credentials import StoredSession, credentials_path, store_session, stored_session
from quorum.security.keyhash import load_key_hasher
from quorum.security.keys import KeyStore, create_tables, parse_key, sessions
from quorum.security.principal import Role
from quorum.service import RunningService, start_service
from quorum.settings import SERVICES, Settings
from quorum.v1 import (
    access_pb2,
    common_pb2,
    consensus_pb2,
    ingest_pb2,
    payments_pb2,
    tasking_pb2,
)

pytestmark = pytest.mark.slow


@dataclass
class Deployment:
    settings: Settings
    store: KeyStore
    engine: sa.Engine
    addresses: dict[str, str]
    channels: dict[str, grpc.Channel]
    # The admin's session, which sets the scene.
    admin: str = ""
    job_id: str = ""
    stubs: dict[str, Any] = field(default_factory=dict)

    def stub(self, service: str) -> Any:
        if service not in self.stubs:
            self.stubs[service] = SERVICE_STUBS[service](self.channels[service])
        return self.stubs[service]

    def enrolled_key(self, role: Role, **identity: str) -> tuple[str, pyotp.TOTP]:
        """A new key with TOTP enrolled (each test signs in with keys of its own: a code
        signs a key in once), and its authenticator."""
        secret = pyotp.random_base32()
        _, key = self.store.create(role, totp_secret=secret, **identity)
        return key, pyotp.TOTP(secret)

    def sign_in(self, key: str, code: str) -> access_pb2.SignInResponse:
        return self.stub("access").SignIn(access_pb2.SignInRequest(totp_code=code), metadata=md(key), timeout=10)

    def session_of(self, role: Role, **identity: str) -> tuple[str, str]:
        """A new key of ``role`` and the session token of its TOTP sign-in."""
        key, totp = self.enrolled_key(role, **identity)
        token = self.sign_in(key, totp.now()).session_token
        assert token.startswith("qs_")
        return key, token


def md(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def refusal(call: Callable[[], Any]) -> grpc.RpcError | None:
    try:
        reply = call()
        if isinstance(reply, Iterator):
            list(reply)
    except grpc.RpcError as error:
        return error
    return None


def code_of(call: Callable[[], Any]) -> grpc.StatusCode:
    error = refusal(call)
    return grpc.StatusCode.OK if error is None else error.code()


def second_factor_trailer(error: grpc.RpcError | None) -> str | None:
    assert error is not None
    return dict(error.trailing_metadata() or ()).get(SECOND_FACTOR_METADATA)


# One cheap read per service, open to admins.
READS: dict[str, Callable[[Deployment, tuple[tuple[str, str], ...]], Any]] = {
    "ingest": lambda d, m: d.stub("ingest").ListJobs(ingest_pb2.ListJobsRequest(), metadata=m, timeout=10),
    "tasking": lambda d, m: d.stub("tasking").GetTaskingStats(
        tasking_pb2.GetTaskingStatsRequest(), metadata=m, timeout=10
    ),
    "consensus": lambda d, m: d.stub("consensus").GetJobQuality(
        consensus_pb2.GetJobQualityRequest(), metadata=m, timeout=10
    ),
    "payments": lambda d, m: d.stub("payments").VerifyLedger(
        payments_pb2.VerifyLedgerRequest(), metadata=m, timeout=10
    ),
    "access": lambda d, m: d.stub("access").ListAuditEvents(
        access_pb2.ListAuditEventsRequest(), metadata=m, timeout=10
    ),
}


def _spec() -> common_pb2.JobSpec:
    spec = common_pb2.JobSpec(
        name="mfa",
        client_id="acme",
        overlap=common_pb2.Overlap(min=2, max=2),
        target_confidence=0.5,
        price_per_object_cents=5,
        pay_per_answer_cents=1,
        currency="USD",
        lease_seconds=60,
    )
    spec.text_classification.labels.extend(["pos", "neg"])
    return spec


@pytest.fixture(scope="module")
def deployment(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    settings = deployment_settings(
        tmp_path_factory.mktemp("mfa"),
        kafka_bootstrap,
        require_mfa_roles="admin,operator,worker",
        auth_poll_seconds=0.2,
    )
    engine = make_engine(settings.access_database())
    create_tables(engine)
    # The master key the access service will seal and open TOTP secrets with (the embedded one).
    store = KeyStore(engine, load_key_hasher(settings), box=load_master_keyring(settings))
    running: list[RunningService] = []
    addresses: dict[str, str] = {}
    channels: dict[str, grpc.Channel] = {}
    try:
        for name in SERVICES:
            build = importlib.import_module(f"services.{name}.bootstrap").build
            service = start_service(build, settings, address="127.0.0.1:0")
            running.append(service)
            addresses[name] = f"127.0.0.1:{service.port}"
            channels[name] = channel(addresses[name])
        deployment = Deployment(settings, store, engine, addresses, channels)
        _, deployment.admin = deployment.session_of(Role.ADMIN)
        ingest, admin = deployment.stub("ingest"), md(deployment.admin)
        job = ingest.CreateJob(ingest_pb2.CreateJobRequest(spec=_spec()), metadata=admin, timeout=10)
        lines = b"\n".join(f'{{"id": "t{i}", "text": "text number {i}"}}'.encode() for i in range(20))
        ingest.ImportManifest(
            ingest_pb2.ImportManifestRequest(job_id=job.job_id, format=ingest_pb2.MANIFEST_FORMAT_JSONL, content=lines),
            metadata=admin,
            timeout=30,
        )
        ingest.SealJob(ingest_pb2.SealJobRequest(job_id=job.job_id), metadata=admin, timeout=10)
        deployment.job_id = job.job_id
        yield deployment
    finally:
        for ch in channels.values():
            ch.close()
        for service in running:
            service.stop()
        engine.dispose()


def test_a_staff_key_alone_is_refused_everywhere_and_told_to_sign_in(deployment: Deployment) -> None:
    key, _ = deployment.enrolled_key(Role.ADMIN)
    for service, read in READS.items():
        error = refusal(lambda read=read: read(deployment, md(key)))  # type: ignore[misc]
        assert error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED, service
        assert second_factor_trailer(error) == "totp", service
        assert "sign in with their TOTP code first" in str(error.details())
    # Signing in is the one call the key alone may make: it asks for the code.
    asked = refusal(lambda: deployment.stub("access").SignIn(access_pb2.SignInRequest(), metadata=md(key), timeout=10))
    assert second_factor_trailer(asked) == "totp"
    # A role that is not required keeps working with its key.
    _, client = deployment.store.create(Role.CLIENT, org_id="acme")
    assert code_of(lambda: READS["ingest"](deployment, md(client))) == grpc.StatusCode.OK


def test_a_session_works_on_every_service_with_its_keys_role(deployment: Deployment) -> None:
    key, token = deployment.session_of(Role.ADMIN)
    assert token != key and parse_key(key)[1] not in token
    for service, read in READS.items():
        assert code_of(lambda read=read: read(deployment, md(token))) == grpc.StatusCode.OK, service  # type: ignore[misc]
    # An operator's session is an operator's: the admin-only calls stay closed to it.
    _, operator = deployment.session_of(Role.OPERATOR)
    assert code_of(lambda: READS["payments"](deployment, md(operator))) == grpc.StatusCode.OK
    listing = lambda: deployment.stub("access").ListKeys(  # noqa: E731
        access_pb2.ListKeysRequest(), metadata=md(operator), timeout=10
    )
    assert code_of(listing) == grpc.StatusCode.PERMISSION_DENIED
    # Signing in with the session confirms it, without a code.
    confirmed = deployment.stub("access").SignIn(access_pb2.SignInRequest(), metadata=md(token), timeout=10)
    assert confirmed.totp_verified and not confirmed.session_token and confirmed.HasField("session_expires_at")


def test_a_key_of_a_required_role_without_totp_cannot_get_in(deployment: Deployment) -> None:
    _, key = deployment.store.create(Role.OPERATOR)
    for call in (
        lambda: READS["ingest"](deployment, md(key)),
        lambda: deployment.stub("access").SignIn(access_pb2.SignInRequest(), metadata=md(key), timeout=10),
    ):
        error = refusal(call)
        assert error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED
        # No code can help, so no client is sent to ask for one.
        assert second_factor_trailer(error) is None
        assert "this key has no TOTP enrolled" in str(error.details())
        assert "quorum keys create --role operator --totp" in str(error.details())


def test_a_totp_code_signs_in_once(deployment: Deployment) -> None:
    key, totp = deployment.enrolled_key(Role.OPERATOR)
    now = time.time()
    # Signing in with the next step's code keeps it and the code before it inside the
    # drift the service allows (one step either way) for 30 s at least, whenever in its
    # step the test starts: only their being used can refuse them, never the clock.
    code, earlier = totp.at(now + totp.interval), totp.at(now)
    assert deployment.sign_in(key, code).session_token
    # The same code again, and the code before it, are refused.
    for replayed in (code, earlier):
        error = refusal(lambda replayed=replayed: deployment.sign_in(key, replayed))  # type: ignore[misc]
        assert error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert "used already" in str(error.details())
    failed = deployment.stub("access").ListAuditEvents(
        access_pb2.ListAuditEventsRequest(action="signin.failed", resource=f"key/{parse_key(key)[0]}"),
        metadata=md(deployment.admin),
        timeout=10,
    )
    assert [e.details_json for e in failed.events] == ['{"reason":"code used already"}'] * 2


def test_ended_expired_and_revoked_sessions_are_refused(deployment: Deployment) -> None:
    read = READS["consensus"]

    # Signed out: every service refuses the token once its key cache has looked.
    _, signed_out = deployment.session_of(Role.OPERATOR)
    assert code_of(lambda: read(deployment, md(signed_out))) == grpc.StatusCode.OK
    ended = deployment.stub("access").SignOut(access_pb2.SignOutRequest(), metadata=md(signed_out), timeout=10)
    assert ended.sessions_ended == 1
    wait_until(
        lambda: code_of(lambda: read(deployment, md(signed_out))) == grpc.StatusCode.UNAUTHENTICATED, 60, "the sign-out"
    )

    # Revoking the key ends its sessions.
    key, revoked = deployment.session_of(Role.OPERATOR)
    assert code_of(lambda: read(deployment, md(revoked))) == grpc.StatusCode.OK
    deployment.stub("access").RevokeKey(
        access_pb2.RevokeKeyRequest(key_id=parse_key(key)[0]), metadata=md(deployment.admin), timeout=10
    )
    wait_until(
        lambda: code_of(lambda: read(deployment, md(revoked))) == grpc.StatusCode.UNAUTHENTICATED, 60, "revocation"
    )

    # The key alone, refused everywhere else, may still end its sessions (a copied token, say).
    key, copied = deployment.session_of(Role.OPERATOR)
    ended = deployment.stub("access").SignOut(access_pb2.SignOutRequest(), metadata=md(key), timeout=10)
    assert ended.sessions_ended == 1
    wait_until(
        lambda: code_of(lambda: read(deployment, md(copied))) == grpc.StatusCode.UNAUTHENTICATED, 60, "the sign-out"
    )

    # Past its expiry.
    _, expired = deployment.session_of(Role.OPERATOR)
    with deployment.engine.begin() as conn:
        conn.execute(
            sessions.update()
            .where(sessions.c.session_id == expired.split("_")[1])
            .values(expires_at=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
        )
    error = refusal(lambda: read(deployment, md(expired)))
    assert error is not None and error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "unknown, expired or ended session" in str(error.details())


def test_a_workers_session_acts_only_as_that_worker(deployment: Deployment) -> None:
    suffix = uuid.uuid4().hex[:6]
    worker_a, worker_b = f"wa-{suffix}", f"wb-{suffix}"
    a_key, a = deployment.session_of(Role.WORKER, subject=worker_a)
    _, b = deployment.session_of(Role.WORKER, subject=worker_b)
    tasking = deployment.stub("tasking")
    # The worker's own key is not enough: workers are required to sign in here.
    refused = refusal(lambda: tasking.StartSession(tasking_pb2.StartSessionRequest(), metadata=md(a_key), timeout=10))
    assert second_factor_trailer(refused) == "totp"

    work_session = tasking.StartSession(tasking_pb2.StartSessionRequest(), metadata=md(a), timeout=10).session_id
    leased: list[tasking_pb2.WorkerTask] = []

    def lease() -> bool:
        reply = tasking.GetNextTask(
            tasking_pb2.GetNextTaskRequest(session_id=work_session, job_id=deployment.job_id),
            metadata=md(a),
            timeout=10,
        )
        if reply.HasField("task"):
            leased.append(reply.task)
        return bool(leased)

    wait_until(lease, 60, "a task for worker A")
    task = leased[0]
    answer = common_pb2.Answer(classification=common_pb2.ClassificationAnswer(label="pos"))
    submit = tasking_pb2.SubmitAnswerRequest(session_id=work_session, lease_id=task.lease_id, answer=answer)
    heartbeat = tasking_pb2.HeartbeatRequest(session_id=work_session, lease_id=task.lease_id)

    # Worker B's session, on worker A's work session and lease, or acting as A.
    assert code_of(lambda: tasking.SubmitAnswer(submit, metadata=md(b), timeout=10)) == grpc.StatusCode.NOT_FOUND
    assert code_of(lambda: tasking.Heartbeat(heartbeat, metadata=md(b), timeout=10)) == grpc.StatusCode.NOT_FOUND
    as_a = tasking_pb2.StartSessionRequest(worker_id=worker_a)
    assert code_of(lambda: tasking.StartSession(as_a, metadata=md(b), timeout=10)) == grpc.StatusCode.PERMISSION_DENIED
    balance = payments_pb2.GetWorkerBalanceRequest(worker_id=worker_a)
    payments = deployment.stub("payments")
    assert code_of(lambda: payments.GetWorkerBalance(balance, metadata=md(b), timeout=10)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    # Worker A's own session finishes the task.
    assert code_of(lambda: tasking.SubmitAnswer(submit, metadata=md(a), timeout=10)) == grpc.StatusCode.OK


class Terminal(io.StringIO):
    """Standard input as a terminal where the user types ``typed``."""

    def isatty(self) -> bool:
        return True


def test_the_cli_signs_in_keeps_the_session_and_says_when_it_expired(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    home = deployment.settings.home / f"cli-{uuid.uuid4().hex[:6]}"
    monkeypatch.setenv("QUORUM_HOME", str(home))
    for name, address in deployment.addresses.items():
        monkeypatch.setenv(f"QUORUM_{name.upper()}_ADDR", address)
    key, totp = deployment.enrolled_key(Role.ADMIN)
    key_id = parse_key(key)[0]
    monkeypatch.setenv("QUORUM_API_KEY", key)

    assert cli_main(["keys", "list"]) == 1
    assert "`quorum sign-in`" in capsys.readouterr().err

    # Without --code, the code is asked for at the terminal.
    code = totp.now()
    monkeypatch.setattr("sys.stdin", Terminal(code + "\n"))
    assert cli_main(["sign-in"]) == 0
    out = capsys.readouterr().out
    assert key_id in out and "signed in until" in out
    stored = stored_session(home, key_id)
    assert stored is not None and stored.token.startswith("qs_") and key not in credentials_path(home).read_text()
    assert stat.S_IMODE(os.stat(credentials_path(home)).st_mode) == 0o600

    assert cli_main(["keys", "list"]) == 0
    assert key_id in capsys.readouterr().out
    assert cli_main(["sign-in", "--code", code]) == 1
    assert "used already" in capsys.readouterr().err

    # Once the stored session is over, the key is sent alone, and refused.
    store_session(home, StoredSession(key_id, stored.token, dt.datetime.now(dt.UTC) - dt.timedelta(minutes=1)))
    assert cli_main(["keys", "list"]) == 1
    err = capsys.readouterr().err
    assert "your sign-in expired at" in err and "`quorum sign-in`" in err

    # Signing out ends the session in the services, not only in the file.
    other, other_totp = deployment.enrolled_key(Role.ADMIN)
    monkeypatch.setenv("QUORUM_API_KEY", other)
    assert cli_main(["sign-in", "--code", other_totp.now()]) == 0
    capsys.readouterr()
    token = stored_session(home, parse_key(other)[0])
    assert token is not None
    assert cli_main(["sign-out"]) == 0
    assert stored_session(home, parse_key(other)[0]) is None
    wait_until(
        lambda: code_of(lambda: READS["ingest"](deployment, md(token.token))) == grpc.StatusCode.UNAUTHENTICATED,
        60,
        "the sign-out",
    )


def test_the_cli_says_when_the_services_refuse_the_stored_session(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.setenv("QUORUM_HOME", str(tmp_path))
    for name, address in deployment.addresses.items():
        monkeypatch.setenv(f"QUORUM_{name.upper()}_ADDR", address)
    key, totp = deployment.enrolled_key(Role.ADMIN)
    monkeypatch.setenv("QUORUM_API_KEY", key)
    assert cli_main(["sign-in", "--code", totp.now()]) == 0
    deployment.store.revoke(parse_key(key)[0])
    capsys.readouterr()

    def refused_with_the_hint() -> bool:
        return cli_main(["keys", "list"]) == 1 and "run `quorum sign-in` again" in capsys.readouterr().err

    wait_until(refused_with_the_hint, 60, "the revocation")


def cli_admin(deployment: Deployment, monkeypatch: pytest.MonkeyPatch, home: Path) -> tuple[str, pyotp.TOTP]:
    """A new enrolled admin key and its authenticator, the CLI pointed at the deployment
    with that key and its credentials file in ``home``."""
    key, totp = deployment.enrolled_key(Role.ADMIN)
    monkeypatch.setenv("QUORUM_HOME", str(home))
    for name, address in deployment.addresses.items():
        monkeypatch.setenv(f"QUORUM_{name.upper()}_ADDR", address)
    monkeypatch.setenv("QUORUM_API_KEY", key)
    return key, totp


def ended(deployment: Deployment, token: str) -> bool:
    """Whether the access database records the session of ``token`` as ended."""
    with deployment.engine.connect() as conn:
        query = sa.select(sessions.c.ended_at).where(sessions.c.session_id == token.split("_")[1])
        return conn.execute(query).scalar_one() is not None


def test_a_cli_sign_in_ends_the_session_it_replaces(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    key, totp = cli_admin(deployment, monkeypatch, tmp_path)
    key_id = parse_key(key)[0]
    now = time.time()
    assert cli_main(["sign-in", "--code", totp.at(now)]) == 0
    first = stored_session(tmp_path, key_id)
    assert first is not None

    # A later step's code (one step of drift is allowed), as a second sign-in would use.
    assert cli_main(["sign-in", "--code", totp.at(now + totp.interval)]) == 0
    second = stored_session(tmp_path, key_id)
    assert second is not None and second.token != first.token
    assert ended(deployment, first.token) and not ended(deployment, second.token)
    assert "could not be ended" not in capsys.readouterr().err


def test_a_failed_cli_sign_out_keeps_the_session_to_try_again(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    key, totp = cli_admin(deployment, monkeypatch, tmp_path)
    key_id = parse_key(key)[0]
    assert cli_main(["sign-in", "--code", totp.now()]) == 0
    session = stored_session(tmp_path, key_id)
    assert session is not None

    # The access service out of reach: nothing was ended, so nothing is forgotten.
    monkeypatch.setenv("QUORUM_ACCESS_ADDR", f"127.0.0.1:{free_port()}")
    capsys.readouterr()
    assert cli_main(["sign-out"]) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err
    assert stored_session(tmp_path, key_id) == session and not ended(deployment, session.token)

    monkeypatch.setenv("QUORUM_ACCESS_ADDR", deployment.addresses["access"])
    assert cli_main(["sign-out"]) == 0
    assert "is ended and forgotten" in capsys.readouterr().out
    assert stored_session(tmp_path, key_id) is None and ended(deployment, session.token)


def test_a_cli_sign_out_with_no_session_stored_ends_every_session_of_the_key(
    deployment: Deployment, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    key, totp = cli_admin(deployment, monkeypatch, tmp_path)
    now = time.time()
    # Sessions started elsewhere (another machine, the dashboard): none is in this file.
    elsewhere = [deployment.sign_in(key, totp.at(now + step * totp.interval)).session_token for step in (0, 1)]

    assert cli_main(["sign-out"]) == 0
    assert f"2 session(s) of key {parse_key(key)[0]} ended" in capsys.readouterr().out
    assert all(ended(deployment, token) for token in elsewhere)
