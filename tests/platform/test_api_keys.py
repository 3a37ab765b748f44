"""API keys against a real SQLite access database: issued once, stored as a keyed hash,
revocable, the per-process cache that keeps checks cheap, and the hashes that older
databases and earlier hashing keys hold."""

from __future__ import annotations

import base64
import json
import logging
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from quorum_testing import b64, insert_key_row

from quorum.crypto import KeyConfigError, key_id_of
from quorum.db import make_engine
from quorum.errors import InvalidArgument, Unauthenticated
from quorum.security.keyhash import HashCheck, KeyHasher, legacy_scrypt_hash, load_key_hasher
from quorum.security.keys import Authenticator, KeyStore, api_keys, ensure_local_key, metadata, parse_key
from quorum.security.principal import Role
from quorum.settings import Settings
from services.access.audit import AuditTrail, offline_key_recorder

HASH_KEY_A = bytes(range(32))
HASH_KEY_B = bytes(range(100, 132))
# Written by the scrypt code this project stored keys with before the keyed hash (N=2^12,
# r=8, p=1), for this secret: a database from then holds rows like it.
LEGACY_KEY_ID = "0123456789abcdef"
LEGACY_SECRET = "Zx3v_Q9kPZ0Lr8m2yTqWnB4cVd7eHs1uJf6gA5iOoKE"
LEGACY_HASH = "scrypt$4096$8$1$nUMGQxbL5cL5D36dNWjgFw==$u_fyfOt2Yb2LxFw6m0clgutKWUrQi3S0OEQGSL0NlbM="


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'access.db'}")
    metadata.create_all(engine)
    return engine


@pytest.fixture
def hasher() -> KeyHasher:
    return KeyHasher(HASH_KEY_A)


def stored_hash(engine: sa.Engine, key_id: str) -> str:
    with engine.connect() as conn:
        return str(conn.execute(sa.select(api_keys.c.secret_hash).where(api_keys.c.key_id == key_id)).scalar_one())


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def polling(engine: sa.Engine, hasher: KeyHasher) -> tuple[Authenticator, Clock]:
    """Another process's authenticator, polling for changed keys every 2 s of ``Clock``."""
    clock = Clock()
    return Authenticator(engine, hasher, poll_seconds=2.0, clock=clock), clock


def test_a_key_is_stored_only_as_a_keyed_hash_and_authenticates(engine: sa.Engine, hasher: KeyHasher) -> None:
    record, key = KeyStore(engine, hasher).create(Role.CLIENT, org_id="acme", name="ci")
    key_id, secret = parse_key(key)
    assert key_id == record.key_id
    with engine.connect() as conn:
        stored = conn.execute(sa.select(api_keys)).one()
    assert secret not in "".join(str(value) for value in stored)
    # The hash names the hashing key that made it, by its public id.
    assert stored.secret_hash.startswith(f"hmac-sha256${key_id_of(HASH_KEY_A)}$")
    assert b64(HASH_KEY_A) not in stored.secret_hash
    principal = Authenticator(engine, hasher).authenticate(key)
    assert (principal.role, principal.org_id, principal.key_id) == (Role.CLIENT, "acme", record.key_id)
    # Another hashing key cannot check it: the hash is keyed.
    with pytest.raises(Unauthenticated):
        Authenticator(engine, KeyHasher(HASH_KEY_B)).authenticate(key)


@pytest.mark.parametrize(
    "presented",
    ["", "Bearer", "qk_", "qk_abc", "nonsense_abc_defghijklmnopqrstuvwxyz", "qk_0000000000000000_" + "x" * 43],
)
def test_malformed_and_unknown_keys_are_refused_alike(engine: sa.Engine, presented: str) -> None:
    with pytest.raises(Unauthenticated) as refused:
        Authenticator(engine, KeyHasher(HASH_KEY_A)).authenticate(presented)
    # Fixed messages: nothing of what was presented is echoed back.
    assert str(refused.value) in {"malformed API key: expected 'qk_<id>_<secret>'", "unknown or revoked API key"}


def test_a_right_id_with_a_wrong_secret_is_refused(engine: sa.Engine, hasher: KeyHasher) -> None:
    _, key = KeyStore(engine, hasher).create(Role.OPERATOR)
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    with pytest.raises(Unauthenticated, match="unknown or revoked"):
        Authenticator(engine, hasher).authenticate(forged)


def test_a_hash_copied_onto_another_key_does_not_verify(engine: sa.Engine, hasher: KeyHasher) -> None:
    # The key id is part of what is hashed: whoever can write one row cannot alias a known
    # secret onto another key (and its role) by copying the hash.
    store = KeyStore(engine, hasher)
    operator, operator_key = store.create(Role.OPERATOR)
    worker, _ = store.create(Role.WORKER)
    copied = stored_hash(engine, operator.key_id)
    with engine.begin() as conn:
        conn.execute(api_keys.update().where(api_keys.c.key_id == worker.key_id).values(secret_hash=copied))
    _, secret = parse_key(operator_key)
    with pytest.raises(Unauthenticated):
        Authenticator(engine, hasher).authenticate(f"qk_{worker.key_id}_{secret}")


def test_revocation_reaches_a_process_that_cached_the_key(engine: sa.Engine, hasher: KeyHasher) -> None:
    store = KeyStore(engine, hasher)
    record, key = store.create(Role.WORKER, subject="w-1")
    other_process, clock = polling(engine, hasher)
    assert other_process.authenticate(key).subject == "w-1"
    store.revoke(record.key_id)
    clock.now += 2.5
    with pytest.raises(Unauthenticated):
        other_process.authenticate(key)
    # Revoking again keeps the first time.
    assert store.revoke(record.key_id).revoked_at == store.get(record.key_id).revoked_at


def test_a_key_made_moments_ago_stays_cached_while_it_does_not_change(engine: sa.Engine, hasher: KeyHasher) -> None:
    # The poll looks back over the last seconds; a key it finds unchanged since it was
    # verified is not verified again. Proof: a stored hash no longer matching (swapped
    # without touching changed_at, which no real change does) goes unnoticed.
    record, key = KeyStore(engine, hasher).create(Role.WORKER, subject="w-1")
    cached, clock = polling(engine, hasher)
    assert cached.authenticate(key).subject == "w-1"
    with engine.begin() as conn:
        conn.execute(sa.update(api_keys).where(api_keys.c.key_id == record.key_id).values(secret_hash="scrypt$x"))
    clock.now += 2.5
    assert cached.authenticate(key).subject == "w-1"
    with pytest.raises(Unauthenticated):
        Authenticator(engine, hasher).authenticate(key)


def test_a_role_change_reaches_a_process_that_cached_the_key(engine: sa.Engine, hasher: KeyHasher) -> None:
    store = KeyStore(engine, hasher)
    record, key = store.create(Role.CLIENT, org_id="acme")
    cached, clock = polling(engine, hasher)
    assert cached.authenticate(key).role is Role.CLIENT
    store.set_role(record.key_id, Role.OPERATOR, "")
    clock.now += 2.5
    assert cached.authenticate(key).role is Role.OPERATOR


def test_identities_are_checked(engine: sa.Engine, hasher: KeyHasher) -> None:
    store = KeyStore(engine, hasher)
    with pytest.raises(InvalidArgument, match="org_id"):
        store.create(Role.CLIENT)
    with pytest.raises(InvalidArgument, match="subject"):
        store.create(Role.WORKER, subject="worker with spaces")
    with pytest.raises(InvalidArgument, match="ASCII"):
        store.create(Role.WORKER, subject="ünï")
    assert [r.role for r in store.list()] == []


def test_the_local_key_is_made_once_kept_private_and_audited(
    tmp_path: Path, engine: sa.Engine, hasher: KeyHasher
) -> None:
    home = tmp_path / "home"
    audited = offline_key_recorder(engine, "offline:quorum up")
    first = ensure_local_key(engine, home, hasher, recorded=audited)
    assert ensure_local_key(engine, home, hasher, recorded=audited) == first
    path = home / "credentials"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Authenticator(engine, hasher).authenticate(first).role is Role.ADMIN
    # A revoked local key is replaced, not reused.
    KeyStore(engine, hasher).revoke(parse_key(first)[0])
    second = ensure_local_key(engine, home, hasher, recorded=audited)
    assert second != first
    # Each key made is in the audit trail, whose chain still holds.
    trail = AuditTrail(engine)
    entries = [stored.entry for stored in reversed(trail.list(action="key.created"))]
    assert [(e.resource, e.actor, e.org_id) for e in entries] == [
        (f"key/{parse_key(key)[0]}", "offline:quorum up", "") for key in (first, second)
    ]
    assert json.loads(entries[0].details_json) == {"role": "admin", "subject": "local-admin", "totp": False}
    assert trail.verify().ok


def test_processes_starting_together_agree_on_one_local_key(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'access.db'}"
    home = tmp_path / "home"
    # Each process also loads the embedded hashing key, which they must agree on too.
    script = (
        "import sys; from pathlib import Path; from quorum.db import make_engine;"
        "from quorum.security.keyhash import load_key_hasher; from quorum.settings import Settings;"
        "from quorum.security.keys import ensure_local_key;"
        "from services.access.audit import offline_key_recorder;"
        "home = Path(sys.argv[2]); hasher = load_key_hasher(Settings(home=home, access_database_url=sys.argv[1]));"
        "engine = make_engine(sys.argv[1]); audited = offline_key_recorder(engine, 'offline:quorum up');"
        "print(ensure_local_key(engine, home, hasher, recorded=audited))"
    )
    runs = [
        subprocess.Popen([sys.executable, "-c", script, url, str(home)], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    keys = {run.communicate(timeout=60)[0].strip() for run in runs}
    assert len(keys) == 1
    engine = make_engine(url)
    hasher = load_key_hasher(Settings(home=home, access_database_url=url))
    assert len(KeyStore(engine, hasher).list()) == 1
    assert Authenticator(engine, hasher).authenticate(keys.pop()).role is Role.ADMIN
    assert len(AuditTrail(engine).list(action="key.created")) == 1


# ----------------------------------------------------------------------------- older hashes


def test_a_scrypt_row_from_before_the_keyed_hash_verifies_and_is_rehashed(engine: sa.Engine, hasher: KeyHasher) -> None:
    insert_key_row(engine, LEGACY_KEY_ID, LEGACY_HASH)
    with engine.connect() as conn:
        changed_before = conn.execute(sa.select(api_keys.c.changed_at)).scalar_one()
    wrong = f"qk_{LEGACY_KEY_ID}_{LEGACY_SECRET[:-1]}A"
    with pytest.raises(Unauthenticated):
        Authenticator(engine, hasher).authenticate(wrong)
    assert stored_hash(engine, LEGACY_KEY_ID) == LEGACY_HASH
    key = f"qk_{LEGACY_KEY_ID}_{LEGACY_SECRET}"
    assert Authenticator(engine, hasher).authenticate(key).key_id == LEGACY_KEY_ID
    # Re-hashed under the hashing key on that first check, so no process pays scrypt for it again;
    # changed_at stays, since nothing a cache holds has changed.
    assert stored_hash(engine, LEGACY_KEY_ID).startswith(f"hmac-sha256${hasher.current_id}$")
    with engine.connect() as conn:
        assert conn.execute(sa.select(api_keys.c.changed_at)).scalar_one() == changed_before
    assert hasher.check(LEGACY_KEY_ID, LEGACY_SECRET, stored_hash(engine, LEGACY_KEY_ID)) is HashCheck.CURRENT
    assert Authenticator(engine, hasher).authenticate(key).key_id == LEGACY_KEY_ID
    with pytest.raises(Unauthenticated):
        Authenticator(engine, hasher).authenticate(wrong)


def test_a_key_under_a_previous_hashing_key_verifies_while_it_is_listed(engine: sa.Engine) -> None:
    old = KeyHasher(HASH_KEY_A)
    record, key = KeyStore(engine, old).create(Role.WORKER, subject="w-1")
    rotated = KeyHasher(HASH_KEY_B, previous=[HASH_KEY_A])
    # New keys are hashed under the new key at once.
    newer, newer_key = KeyStore(engine, rotated).create(Role.WORKER, subject="w-2")
    assert stored_hash(engine, newer.key_id).startswith(f"hmac-sha256${key_id_of(HASH_KEY_B)}$")
    assert Authenticator(engine, rotated).authenticate(key).subject == "w-1"
    # Seen once, it is stored under the new key, and the old one is no longer needed for it.
    assert stored_hash(engine, record.key_id).startswith(f"hmac-sha256${key_id_of(HASH_KEY_B)}$")
    after = KeyHasher(HASH_KEY_B)
    assert Authenticator(engine, after).authenticate(key).subject == "w-1"
    assert Authenticator(engine, after).authenticate(newer_key).subject == "w-2"
    # A process still on the old key alone can no longer check it: roll every service first.
    with pytest.raises(Unauthenticated):
        Authenticator(engine, old).authenticate(key)


def test_processes_on_either_side_of_a_rotation_check_each_others_rows(engine: sa.Engine) -> None:
    # docs/security.md: step 2 gives every process the new key as a previous one, so that
    # during step 3's roll those still hashing under the old key can check rows already
    # moved to the new one. Such a process moves a row it checks back under its own
    # current key; a process on the new settings moves it forward on its next fresh check.
    _, key = KeyStore(engine, KeyHasher(HASH_KEY_A)).create(Role.WORKER, subject="w-1")
    record_id = parse_key(key)[0]
    step_2 = KeyHasher(HASH_KEY_A, previous=[HASH_KEY_B])
    step_3 = KeyHasher(HASH_KEY_B, previous=[HASH_KEY_A])
    assert Authenticator(engine, step_2).authenticate(key).subject == "w-1"
    assert stored_hash(engine, record_id).startswith(f"hmac-sha256${key_id_of(HASH_KEY_A)}$")
    assert Authenticator(engine, step_3).authenticate(key).subject == "w-1"
    assert stored_hash(engine, record_id).startswith(f"hmac-sha256${key_id_of(HASH_KEY_B)}$")
    assert Authenticator(engine, step_2).authenticate(key).subject == "w-1"
    assert stored_hash(engine, record_id).startswith(f"hmac-sha256${key_id_of(HASH_KEY_A)}$")
    assert Authenticator(engine, step_3).authenticate(key).subject == "w-1"
    assert Authenticator(engine, KeyHasher(HASH_KEY_B)).authenticate(key).subject == "w-1"


def test_a_key_not_seen_before_its_hashing_key_was_dropped_is_refused(
    engine: sa.Engine, caplog: pytest.LogCaptureFixture
) -> None:
    record, key = KeyStore(engine, KeyHasher(HASH_KEY_A)).create(Role.WORKER, subject="w-1")
    after = Authenticator(engine, KeyHasher(HASH_KEY_B))
    caplog.set_level(logging.WARNING, logger="quorum.security.keys")
    for _ in range(2):
        with pytest.raises(Unauthenticated, match="unknown or revoked"):
            after.authenticate(key)
    # The operator learns why, once, by ids: never the secret or a hashing key.
    [warning] = [r.getMessage() for r in caplog.records]
    assert record.key_id in warning and key_id_of(HASH_KEY_A) in warning and key_id_of(HASH_KEY_B) in warning
    assert "QUORUM_PREVIOUS_API_KEY_HASH_KEYS" in warning and "re-issue" in warning
    assert parse_key(key)[1] not in caplog.text and b64(HASH_KEY_A) not in caplog.text
    assert stored_hash(engine, record.key_id).startswith(f"hmac-sha256${key_id_of(HASH_KEY_A)}$")


def test_a_failed_rehash_still_lets_the_verified_key_in(
    tmp_path: Path, engine: sa.Engine, hasher: KeyHasher, caplog: pytest.LogCaptureFixture
) -> None:
    insert_key_row(engine, LEGACY_KEY_ID, LEGACY_HASH)
    caplog.set_level(logging.WARNING, logger="quorum.security.keys")
    # A connection that may only read: the re-hash's UPDATE fails, as it would for a
    # database user without write access.
    read_only = sa.create_engine(f"sqlite:///file:{tmp_path / 'access.db'}?mode=ro&uri=true")
    key = f"qk_{LEGACY_KEY_ID}_{LEGACY_SECRET}"
    assert Authenticator(read_only, hasher).authenticate(key).key_id == LEGACY_KEY_ID
    assert stored_hash(engine, LEGACY_KEY_ID) == LEGACY_HASH
    assert "could not re-hash it" in caplog.text and LEGACY_SECRET not in caplog.text
    read_only.dispose()


def test_the_keys_under_each_hashing_key_are_counted(engine: sa.Engine) -> None:
    old, rotated = KeyHasher(HASH_KEY_A), KeyHasher(HASH_KEY_B, previous=[HASH_KEY_A])
    KeyStore(engine, old).create(Role.WORKER)
    revoked, _ = KeyStore(engine, old).create(Role.WORKER)
    KeyStore(engine, rotated).revoke(revoked.key_id)
    KeyStore(engine, rotated).create(Role.WORKER)
    KeyStore(engine, rotated).create(Role.OPERATOR)
    insert_key_row(engine, LEGACY_KEY_ID, LEGACY_HASH)
    assert KeyStore(engine, rotated).hashes_by_hashing_key() == {
        key_id_of(HASH_KEY_A): 1,
        key_id_of(HASH_KEY_B): 2,
        "scrypt": 1,
    }


def test_the_hasher_checks_in_the_formats_it_knows(hasher: KeyHasher) -> None:
    stored = hasher.hash("k1", "secret-" * 6)
    assert hasher.check("k1", "secret-" * 6, stored) is HashCheck.CURRENT
    assert hasher.check("k1", "secret-" * 6 + "x", stored) is HashCheck.MISMATCH
    assert hasher.check("k2", "secret-" * 6, stored) is HashCheck.MISMATCH
    assert hasher.check("k1", "secret-" * 6, stored[:-8] + "!!!!====") is HashCheck.MISMATCH
    assert hasher.check("k1", "secret-" * 6, "argon2$whatever") is HashCheck.MISMATCH
    legacy = legacy_scrypt_hash("s" * 43)
    assert hasher.check("any", "s" * 43, legacy) is HashCheck.OUTDATED
    assert hasher.check("any", "t" * 43, legacy) is HashCheck.MISMATCH
    assert hasher.check("any", "s" * 43, "scrypt$4096$8$1$bad") is HashCheck.MISMATCH
    assert b64(HASH_KEY_A) not in repr(hasher) and key_id_of(HASH_KEY_A) in repr(hasher)
    with pytest.raises(ValueError, match="previous hashing key #1: must be 32 bytes, got 31"):
        KeyHasher(HASH_KEY_A, previous=[bytes(31)])


# ----------------------------------------------------------------------------- configuration


def test_the_embedded_hashing_key_is_created_once_and_kept_private(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path)
    first = load_key_hasher(settings)
    key_file = tmp_path / "secrets" / "api-key-hash.key"
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(key_file.parent.stat().st_mode) == 0o700
    assert key_id_of(base64.b64decode(key_file.read_text())) == first.current_id
    assert load_key_hasher(settings).current_id == first.current_id
    # A key of its own, not the master key's file.
    assert [p.name for p in key_file.parent.iterdir()] == ["api-key-hash.key"]


def test_the_configured_hashing_keys_are_loaded(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path,
        access_database_url="postgresql+psycopg://quorum@db/quorum_access",
        api_key_hash_key=b64(HASH_KEY_B),
        previous_api_key_hash_keys=f"{b64(HASH_KEY_A)}, ",
    )
    assert load_key_hasher(settings).key_ids == (key_id_of(HASH_KEY_B), key_id_of(HASH_KEY_A))
    assert not (tmp_path / "secrets").exists()
    assert b64(HASH_KEY_B) not in repr(settings) and b64(HASH_KEY_A) not in repr(settings)


def test_a_shared_access_database_needs_the_hashing_key_configured(tmp_path: Path) -> None:
    # A key file per host would leave each service checking keys against its own key.
    settings = Settings(home=tmp_path, access_database_url="postgresql+psycopg://quorum@db/quorum_access")
    with pytest.raises(KeyConfigError, match=r"QUORUM_API_KEY_HASH_KEY is not set, and the access database is shared"):
        load_key_hasher(settings)
    assert not (tmp_path / "secrets").exists()


@pytest.mark.parametrize(
    ("value", "problem"),
    [(b64(bytes(16)), "decodes to 16 bytes; the API key hashing key must be 32"), ("not*base64!", "not valid base64")],
    ids=["wrong-length", "bad-base64"],
)
def test_a_malformed_hashing_key_is_named_without_its_value(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, value: str, problem: str
) -> None:
    monkeypatch.setenv("QUORUM_HOME", str(tmp_path))
    monkeypatch.setenv("QUORUM_API_KEY_HASH_KEY", value)
    with pytest.raises(KeyConfigError, match=f"QUORUM_API_KEY_HASH_KEY: {problem}") as raised:
        load_key_hasher(Settings())
    assert value not in str(raised.value)
    assert "quorum keys new-hash-key" in str(raised.value)


def test_a_malformed_previous_hashing_key_is_named_by_position(tmp_path: Path) -> None:
    value = b64(os.urandom(31))
    settings = Settings(
        home=tmp_path, api_key_hash_key=b64(HASH_KEY_B), previous_api_key_hash_keys=f"{b64(HASH_KEY_A)},{value}"
    )
    with pytest.raises(KeyConfigError, match=r"QUORUM_PREVIOUS_API_KEY_HASH_KEYS \(entry 2\): decodes to 31") as raised:
        load_key_hasher(settings)
    assert value not in str(raised.value)
