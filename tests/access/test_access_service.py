"""The access service for real: keys, roles, TOTP sign-in, rate limits and the
hash-chained audit trail, on the session's broker and a SQLite access database."""

from __future__ import annotations

import base64
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import pyotp
import pytest
from quorum_testing import admin_key, b64, insert_key_row

from quorum.cli import main as cli_main
from quorum.crypto import key_id_of, load_master_keyring
from quorum.db import make_engine
from quorum.messaging import Publisher, Topics, outgoing
from quorum.rpc import channel
from quorum.security.keyhash import KeyHasher, legacy_scrypt_hash, load_key_hasher
from quorum.security.keys import Authenticator, KeyStore, metadata
from quorum.security.principal import Role
from quorum.service import RunningService, start_service
from quorum.settings import Settings
from quorum.v1 import access_pb2, access_pb2_grpc, events_pb2
from services.access.audit import AuditTrail
from services.access.bootstrap import build

Stub = access_pb2_grpc.AccessServiceStub


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings(auth_poll_seconds=0.2, rate_limit_per_second=0)


@pytest.fixture
def running(settings: Settings) -> Iterator[RunningService]:
    service = start_service(build, settings, address="127.0.0.1:0")
    try:
        yield service
    finally:
        service.stop()


def stub_for(running: RunningService, key: str) -> Stub:
    return Stub(channel(f"127.0.0.1:{running.port}", api_key=key))


def code_of(call: Callable[[], Any]) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as error:
        return error.code()  # type: ignore[no-any-return]
    return grpc.StatusCode.OK


def eventually(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"{what} not reached within {timeout} s")


def test_keys_are_issued_once_listed_without_secrets_and_revoked(
    running: RunningService, settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    admin = stub_for(running, admin_key(settings))
    created = admin.CreateKey(
        access_pb2.CreateKeyRequest(role=access_pb2.ROLE_CLIENT, org_id="acme", name="ci"), timeout=10
    )
    assert created.secret.startswith(f"qk_{created.key.key_id}_")
    client = stub_for(running, created.secret)
    signed_in = client.SignIn(access_pb2.SignInRequest(), timeout=10)
    assert (signed_in.key.role, signed_in.key.org_id, signed_in.totp_verified) == (
        access_pb2.ROLE_CLIENT,
        "acme",
        False,
    )

    listed = admin.ListKeys(access_pb2.ListKeysRequest(org_id="acme"), timeout=10)
    assert [k.key_id for k in listed.keys] == [created.key.key_id]
    assert created.secret.split("_", 2)[2] not in str(listed)

    assert (
        code_of(lambda: client.ListKeys(access_pb2.ListKeysRequest(), timeout=10)) == grpc.StatusCode.PERMISSION_DENIED
    )
    admin.RevokeKey(access_pb2.RevokeKeyRequest(key_id=created.key.key_id), timeout=10)
    eventually(
        lambda: (
            code_of(lambda: client.SignIn(access_pb2.SignInRequest(), timeout=10)) == grpc.StatusCode.UNAUTHENTICATED
        ),
        "the revocation",
    )
    # Secrets never reach the logs.
    assert all(created.secret.split("_", 2)[2] not in record.getMessage() for record in caplog.records)


def test_a_role_change_takes_effect_and_is_audited(running: RunningService, settings: Settings) -> None:
    admin = stub_for(running, admin_key(settings))
    created = admin.CreateKey(access_pb2.CreateKeyRequest(role=access_pb2.ROLE_CLIENT, org_id="acme"), timeout=10)
    promoted = stub_for(running, created.secret)
    assert code_of(lambda: promoted.VerifyAuditLog(access_pb2.VerifyAuditLogRequest(), timeout=10)) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    admin.SetRole(access_pb2.SetRoleRequest(key_id=created.key.key_id, role=access_pb2.ROLE_OPERATOR), timeout=10)
    eventually(
        lambda: (
            code_of(lambda: promoted.VerifyAuditLog(access_pb2.VerifyAuditLogRequest(), timeout=10))
            == grpc.StatusCode.OK
        ),
        "the new role",
    )
    actions = [e.action for e in admin.ListAuditEvents(access_pb2.ListAuditEventsRequest(), timeout=10).events]
    assert actions[:2] == ["role.changed", "key.created"]


def test_totp_is_checked_at_sign_in(running: RunningService, settings: Settings) -> None:
    admin = stub_for(running, admin_key(settings))
    created = admin.CreateKey(access_pb2.CreateKeyRequest(role=access_pb2.ROLE_OPERATOR, enroll_totp=True), timeout=10)
    assert created.key.totp_enrolled and created.totp_uri.startswith("otpauth://totp/")
    totp = pyotp.parse_uri(created.totp_uri)
    operator = stub_for(running, created.secret)
    sign_in = operator.SignIn
    assert code_of(lambda: sign_in(access_pb2.SignInRequest(), timeout=10)) == grpc.StatusCode.UNAUTHENTICATED
    wrong = f"{(int(totp.now()) + 1) % 1_000_000:06d}"
    assert code_of(lambda: sign_in(access_pb2.SignInRequest(totp_code=wrong), timeout=10)) == (
        grpc.StatusCode.UNAUTHENTICATED
    )
    assert code_of(lambda: sign_in(access_pb2.SignInRequest(totp_code="12ab56"), timeout=10)) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )
    assert sign_in(access_pb2.SignInRequest(totp_code=totp.now()), timeout=10).totp_verified
    failed = admin.ListAuditEvents(access_pb2.ListAuditEventsRequest(action="signin.failed"), timeout=10)
    assert len(failed.events) == 1


def test_audit_events_from_other_services_join_the_chain_once(running: RunningService, settings: Settings) -> None:
    admin = stub_for(running, admin_key(settings))
    recorded = events_pb2.AuditRecorded(
        actor="client:c@acme", actor_key_id="k1", action="job.created", resource="job/j1", org_id="acme"
    )
    event = outgoing(Topics(settings.topic_prefix).audit, "acme", events_pb2.Event(audit_recorded=recorded))
    publisher = Publisher(settings.require_kafka(), linger_ms=0)
    try:
        publisher.send_all([event, event])  # a redelivery
    finally:
        publisher.close()

    def appended() -> bool:
        reply = admin.ListAuditEvents(access_pb2.ListAuditEventsRequest(resource="job/j1"), timeout=10)
        return len(reply.events) >= 1

    eventually(appended, "the audit event")
    time.sleep(1.0)
    reply = admin.ListAuditEvents(access_pb2.ListAuditEventsRequest(resource="job/j1"), timeout=10)
    assert len(reply.events) == 1 and reply.events[0].org_id == "acme"
    assert admin.VerifyAuditLog(access_pb2.VerifyAuditLogRequest(), timeout=10).ok


def test_tampering_with_the_audit_trail_is_detected(
    running: RunningService, settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    admin = stub_for(running, admin_key(settings))
    for org in ("a", "b", "c"):
        admin.CreateKey(access_pb2.CreateKeyRequest(role=access_pb2.ROLE_CLIENT, org_id=org), timeout=10)
    verdict = admin.VerifyAuditLog(access_pb2.VerifyAuditLogRequest(), timeout=10)
    assert verdict.ok and verdict.entries == 3
    database = settings.home / "access.db"
    with sqlite3.connect(database) as conn:
        # The table refuses updates; an intruder with the file drops the guard first.
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            conn.execute("UPDATE audit_log SET org_id = 'z' WHERE seq = 2")
        conn.execute("DROP TRIGGER audit_log_no_update")
        conn.execute("UPDATE audit_log SET org_id = 'z' WHERE seq = 2")
    verdict = admin.VerifyAuditLog(access_pb2.VerifyAuditLogRequest(), timeout=10)
    assert (verdict.ok, verdict.first_bad_seq) == (False, 2)
    assert cli_main(["audit", "verify", "--database-url", f"sqlite:///{database}"]) == 1
    assert "TAMPERED at entry 2" in capsys.readouterr().out


def test_callers_over_their_rate_get_resource_exhausted_with_a_hint(
    make_settings: Callable[..., Settings],
) -> None:
    settings = make_settings(rate_limit_per_second=5)
    service = start_service(build, settings, address="127.0.0.1:0")
    try:
        admin = stub_for(service, admin_key(settings))
        refused: list[grpc.RpcError] = []
        for _ in range(12):
            try:
                admin.SignIn(access_pb2.SignInRequest(), timeout=10)
            except grpc.RpcError as error:
                refused.append(error)
        assert refused and all(e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED for e in refused)
        hint = dict(refused[0].trailing_metadata() or ())
        assert 0 < int(hint["retry-after-ms"]) <= 1000
        time.sleep(1.1)
        assert admin.SignIn(access_pb2.SignInRequest(), timeout=10).key.role == access_pb2.ROLE_ADMIN
    finally:
        service.stop()


def test_repeated_wrong_totp_codes_lock_the_key_for_a_while(running: RunningService, settings: Settings) -> None:
    admin = stub_for(running, admin_key(settings))
    created = admin.CreateKey(access_pb2.CreateKeyRequest(role=access_pb2.ROLE_OPERATOR, enroll_totp=True), timeout=10)
    totp = pyotp.parse_uri(created.totp_uri)
    operator = stub_for(running, created.secret)

    def wrong() -> str:
        return f"{(int(totp.now()) + 500_000) % 1_000_000:06d}"

    codes = [
        code_of(lambda: operator.SignIn(access_pb2.SignInRequest(totp_code=wrong()), timeout=10)) for _ in range(5)
    ]
    assert codes == [grpc.StatusCode.UNAUTHENTICATED] * 5
    # Even the right code is refused now: guessing has stopped paying.
    assert code_of(lambda: operator.SignIn(access_pb2.SignInRequest(totp_code=totp.now()), timeout=10)) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED
    )


def test_the_keys_commands_issue_list_and_revoke(
    running: RunningService,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    admin_key(settings)  # the local user's key, in settings.home/credentials
    monkeypatch.setenv("QUORUM_HOME", str(settings.home))
    monkeypatch.setenv("QUORUM_ACCESS_ADDR", f"127.0.0.1:{running.port}")
    monkeypatch.delenv("QUORUM_API_KEY", raising=False)
    assert cli_main(["keys", "create", "--role", "client"]) == 2
    assert "needs --org" in capsys.readouterr().err
    assert cli_main(["keys", "create", "--role", "client", "--org", "acme", "--name", "ci"]) == 0
    out = capsys.readouterr()
    key = out.out.strip()
    assert key.startswith("qk_") and "shown once" in out.err
    signed_in = stub_for(running, key).SignIn(access_pb2.SignInRequest(), timeout=10)
    assert signed_in.key.org_id == "acme"
    assert cli_main(["keys", "list", "--org", "acme"]) == 0
    listing = capsys.readouterr().out
    assert signed_in.key.key_id in listing and key.split("_", 2)[2] not in listing
    assert cli_main(["keys", "revoke", signed_in.key.key_id]) == 0
    assert "REVOKED" in capsys.readouterr().out
    assert cli_main(["audit", "list", "--action", "key.revoked"]) == 0
    assert f"key/{signed_in.key.key_id}" in capsys.readouterr().out
    # Without any key the CLI says how to get one.
    monkeypatch.setenv("QUORUM_HOME", str(settings.home / "elsewhere"))
    assert cli_main(["keys", "list"]) == 1
    assert "QUORUM_API_KEY" in capsys.readouterr().err


def test_the_first_admin_key_is_written_straight_into_the_database(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUORUM_HOME", str(tmp_path))
    monkeypatch.delenv("QUORUM_API_KEY_HASH_KEY", raising=False)
    url = f"sqlite:///{tmp_path / 'access.db'}"
    assert cli_main(["keys", "create", "--role", "admin", "--database-url", url]) == 0
    key = capsys.readouterr().out.strip()
    # Hashed under the embedded hashing key, which the services of this home load too.
    hasher = load_key_hasher(Settings(home=tmp_path, access_database_url=url))
    principal = Authenticator(make_engine(url), hasher).authenticate(key)
    assert principal.subject.startswith("admin-")
    # In the audit trail, like a key the service makes, and the chain holds.
    [created] = AuditTrail(make_engine(url)).list(action="key.created")
    assert (created.entry.resource, created.entry.actor) == (f"key/{principal.key_id}", "offline:quorum keys create")
    assert cli_main(["audit", "verify", "--database-url", url]) == 0
    assert "audit trail intact: 1 entries" in capsys.readouterr().out
    # A shared database needs the deployment's hashing key, or the key would match no service.
    shared = "postgresql+psycopg://quorum@127.0.0.1:1/quorum_access"
    assert cli_main(["keys", "create", "--role", "admin", "--database-url", shared]) == 2
    err = capsys.readouterr().err
    assert "QUORUM_API_KEY_HASH_KEY is not set" in err and "quorum keys new-hash-key" in err


def test_the_hashing_key_commands_make_a_key_and_count_the_keys_under_each(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cli_main(["keys", "new-hash-key"]) == 0
    out = capsys.readouterr()
    new_key = base64.b64decode(out.out.strip(), validate=True)
    assert len(new_key) == 32 and "QUORUM_PREVIOUS_API_KEY_HASH_KEYS" in out.err
    old_key = bytes(range(32))
    url = f"sqlite:///{tmp_path / 'access.db'}"
    engine = make_engine(url)
    metadata.create_all(engine)
    KeyStore(engine, KeyHasher(old_key)).create(Role.WORKER)
    KeyStore(engine, KeyHasher(new_key)).create(Role.WORKER)
    KeyStore(engine, KeyHasher(os.urandom(32))).create(Role.WORKER)
    insert_key_row(engine, "0123456789abcdef", legacy_scrypt_hash("s" * 43))
    engine.dispose()
    monkeypatch.setenv("QUORUM_HOME", str(tmp_path))
    monkeypatch.setenv("QUORUM_API_KEY_HASH_KEY", base64.b64encode(new_key).decode())
    monkeypatch.setenv("QUORUM_PREVIOUS_API_KEY_HASH_KEYS", base64.b64encode(old_key).decode())
    assert cli_main(["keys", "hash-status", "--database-url", url]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split()[:2] == ["1", key_id_of(new_key)] and "current" in lines[0]
    by_what = {line.split()[1]: line for line in lines[1:-1]}
    assert "previous hashing key" in by_what[key_id_of(old_key)]
    assert "scrypt, from before" in by_what["scrypt"]
    assert [line for line in lines[1:-1] if "refused until re-issued" in line]
    assert lines[-1] == f"3 keys not revoked are not under the current hashing key {key_id_of(new_key)}"


def test_totp_sign_in_survives_a_master_key_rotation(
    make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = b64(os.urandom(32)), b64(os.urandom(32))
    settings = make_settings(master_key=old, rate_limit_per_second=0)
    service = start_service(build, settings, address="127.0.0.1:0")
    try:
        admin = stub_for(service, admin_key(settings))
        created = admin.CreateKey(
            access_pb2.CreateKeyRequest(role=access_pb2.ROLE_OPERATOR, enroll_totp=True), timeout=10
        )
    finally:
        service.stop()

    # The rotation of docs/security.md: the new key current and the old one previous, a
    # rewrap, then the old key dropped.
    monkeypatch.setenv("QUORUM_HOME", str(settings.home))
    monkeypatch.setenv("QUORUM_MASTER_KEY", new)
    monkeypatch.setenv("QUORUM_PREVIOUS_MASTER_KEYS", old)
    assert cli_main(["storage", "rewrap"]) == 0
    assert "TOTP secrets in the access database: resealed 1, already current 0, failed 0" in capsys.readouterr().out
    assert cli_main(["storage", "rewrap"]) == 0
    assert "resealed 0, already current 1, failed 0" in capsys.readouterr().out

    service = start_service(build, make_settings(master_key=new, rate_limit_per_second=0), address="127.0.0.1:0")
    try:
        code = pyotp.parse_uri(created.totp_uri).now()
        reply = stub_for(service, created.secret).SignIn(access_pb2.SignInRequest(totp_code=code), timeout=10)
        assert reply.totp_verified and reply.session_token
    finally:
        service.stop()


def test_the_first_admin_key_can_have_totp_for_a_deployment_that_requires_it(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUORUM_HOME", str(tmp_path))
    monkeypatch.delenv("QUORUM_MASTER_KEY", raising=False)
    url = f"sqlite:///{tmp_path / 'access.db'}"
    assert cli_main(["keys", "create", "--role", "admin", "--totp", "--database-url", url]) == 0
    out = capsys.readouterr()
    uri = out.err[out.err.index("otpauth://") :].split()[0]
    key_id = out.out.strip().split("_")[1]
    # Sealed under the master key the access service of this home opens it with.
    settings = Settings(home=tmp_path, access_database_url=url)
    store = KeyStore(make_engine(url), load_key_hasher(settings), box=load_master_keyring(settings))
    assert store.get(key_id).totp_enrolled and store.totp_secret(key_id) == pyotp.parse_uri(uri).secret
    # A shared database needs the deployment's master key, or the access service could not open it.
    shared = "postgresql+psycopg://quorum@127.0.0.1:1/quorum_access"
    monkeypatch.setenv("QUORUM_API_KEY_HASH_KEY", b64(os.urandom(32)))
    assert cli_main(["keys", "create", "--role", "admin", "--totp", "--database-url", shared]) == 2
    assert "QUORUM_MASTER_KEY is not set" in capsys.readouterr().err


def test_a_totp_key_for_another_homes_database_needs_that_homes_master_key(
    tmp_path: Any, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    monkeypatch.setenv("QUORUM_HOME", str(here))
    monkeypatch.delenv("QUORUM_MASTER_KEY", raising=False)
    url = f"sqlite:///{there / 'access.db'}"
    create = ["keys", "create", "--role", "admin", "--totp", "--database-url", url]
    # Sealed under this home's embedded master key, the secret would be one the access
    # service of that database cannot open.
    assert cli_main(create) == 2
    err = capsys.readouterr().err
    assert "QUORUM_MASTER_KEY is not set" in err and f"outside QUORUM_HOME ({here})" in err
    assert not (there / "access.db").exists()

    theirs = Settings(home=there, access_database_url=url)
    keyring = load_master_keyring(theirs)
    monkeypatch.setenv("QUORUM_MASTER_KEY", (there / "secrets" / "master.key").read_text().strip())
    assert cli_main(create) == 0
    out = capsys.readouterr()
    uri = out.err[out.err.index("otpauth://") :].split()[0]
    store = KeyStore(make_engine(url), load_key_hasher(theirs), box=keyring)
    assert store.totp_secret(out.out.strip().split("_")[1]) == pyotp.parse_uri(uri).secret


def test_the_audit_trail_pages_and_filters_by_time(
    running: RunningService,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import datetime as dt

    from google.protobuf.timestamp_pb2 import Timestamp

    from services.access.audit import AuditEntry, append

    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    ages_h = (9, 7, 5, 3, 1)
    engine = make_engine(settings.access_database())
    with engine.begin() as conn:
        append(
            conn,
            [
                AuditEntry(
                    f"e{n}",
                    now - dt.timedelta(hours=age),
                    "client:c@acme",
                    "k1",
                    "job.created",
                    f"job/j{n}",
                    "acme",
                    "{}",
                )
                for n, age in enumerate(ages_h)
            ],
        )
    engine.dispose()
    admin = stub_for(running, admin_key(settings))

    def page(**fields: Any) -> tuple[list[str], str]:
        reply = admin.ListAuditEvents(access_pb2.ListAuditEventsRequest(**fields), timeout=10)
        return [e.resource for e in reply.events], reply.next_page_token

    first, token = page(page_size=2)
    assert first == ["job/j4", "job/j3"] and token
    second, token = page(page_size=2, page_token=token)
    assert second == ["job/j2", "job/j1"] and token
    assert page(page_size=2, page_token=token) == (["job/j0"], "")

    def ago(hours: float) -> Timestamp:
        stamp = Timestamp()
        stamp.FromDatetime(now - dt.timedelta(hours=hours))
        return stamp

    assert page(since=ago(8), until=ago(2))[0] == ["job/j3", "job/j2", "job/j1"]
    assert page(since=ago(4))[0] == ["job/j4", "job/j3"]
    older, token = page(until=ago(6), page_size=1)
    assert older == ["job/j1"] and page(until=ago(6), page_size=1, page_token=token)[0] == ["job/j0"]
    backwards = rpc_error_of(lambda: page(since=ago(2), until=ago(4)))
    assert backwards.code() == grpc.StatusCode.INVALID_ARGUMENT and backwards.details().startswith("until:")

    monkeypatch.setenv("QUORUM_HOME", str(settings.home))
    monkeypatch.setenv("QUORUM_ACCESS_ADDR", f"127.0.0.1:{running.port}")
    monkeypatch.delenv("QUORUM_API_KEY", raising=False)
    capsys.readouterr()
    assert cli_main(["audit", "list", "--limit", "2"]) == 0
    out = capsys.readouterr()
    assert [line.split()[4] for line in out.out.splitlines()] == ["job/j4", "job/j3"]
    token = out.err.split("--page-token ")[1].strip()
    assert cli_main(["audit", "list", "--limit", "2", "--page-token", token]) == 0
    assert [line.split()[4] for line in capsys.readouterr().out.splitlines()] == ["job/j2", "job/j1"]
    since = (now - dt.timedelta(hours=8)).isoformat()
    assert cli_main(["audit", "list", "--since", since, "--until", "4h"]) == 0
    out = capsys.readouterr()
    assert [line.split()[4] for line in out.out.splitlines()] == ["job/j2", "job/j1"] and not out.err
    with pytest.raises(SystemExit, match="--since 'yesterday'"):
        cli_main(["audit", "list", "--since", "yesterday"])


def rpc_error_of(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value
