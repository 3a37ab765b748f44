"""API keys against a real SQLite access database: issued once, stored hashed,
revocable, and the per-process cache that keeps checks cheap."""

from __future__ import annotations

import stat
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from quorum.db import make_engine
from quorum.errors import InvalidArgument, Unauthenticated
from quorum.security.keys import Authenticator, KeyStore, api_keys, ensure_local_key, metadata, parse_key
from quorum.security.principal import Role


@pytest.fixture
def engine(tmp_path: Path) -> sa.Engine:
    engine = make_engine(f"sqlite:///{tmp_path / 'access.db'}")
    metadata.create_all(engine)
    return engine


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def polling(engine: sa.Engine) -> tuple[Authenticator, Clock]:
    """Another process's authenticator, polling for changed keys every 2 s of ``Clock``."""
    clock = Clock()
    return Authenticator(engine, poll_seconds=2.0, clock=clock), clock


def test_a_key_is_stored_only_as_a_hash_and_authenticates(engine: sa.Engine) -> None:
    record, key = KeyStore(engine).create(Role.CLIENT, org_id="acme", name="ci")
    key_id, secret = parse_key(key)
    assert key_id == record.key_id
    with engine.connect() as conn:
        stored = conn.execute(sa.select(api_keys)).one()
    assert secret not in "".join(str(value) for value in stored)
    assert stored.secret_hash.startswith("scrypt$")
    principal = Authenticator(engine).authenticate(key)
    assert (principal.role, principal.org_id, principal.key_id) == (Role.CLIENT, "acme", record.key_id)


@pytest.mark.parametrize(
    "presented",
    ["", "Bearer", "qk_", "qk_abc", "nonsense_abc_defghijklmnopqrstuvwxyz", "qk_0000000000000000_" + "x" * 43],
)
def test_malformed_and_unknown_keys_are_refused_alike(engine: sa.Engine, presented: str) -> None:
    with pytest.raises(Unauthenticated) as refused:
        Authenticator(engine).authenticate(presented)
    # Fixed messages: nothing of what was presented is echoed back.
    assert str(refused.value) in {"malformed API key: expected 'qk_<id>_<secret>'", "unknown or revoked API key"}


def test_a_right_id_with_a_wrong_secret_is_refused(engine: sa.Engine) -> None:
    _, key = KeyStore(engine).create(Role.OPERATOR)
    forged = key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")
    with pytest.raises(Unauthenticated, match="unknown or revoked"):
        Authenticator(engine).authenticate(forged)


def test_revocation_reaches_a_process_that_cached_the_key(engine: sa.Engine) -> None:
    store = KeyStore(engine)
    record, key = store.create(Role.WORKER, subject="w-1")
    other_process, clock = polling(engine)
    assert other_process.authenticate(key).subject == "w-1"
    store.revoke(record.key_id)
    clock.now += 2.5
    with pytest.raises(Unauthenticated):
        other_process.authenticate(key)
    # Revoking again keeps the first time.
    assert store.revoke(record.key_id).revoked_at == store.get(record.key_id).revoked_at


def test_a_key_made_moments_ago_stays_cached_while_it_does_not_change(engine: sa.Engine) -> None:
    # The poll looks back over the last seconds; a key it finds unchanged since it was
    # verified is not verified again. Proof: a stored hash no longer matching (swapped
    # without touching changed_at, which no real change does) goes unnoticed.
    record, key = KeyStore(engine).create(Role.WORKER, subject="w-1")
    cached, clock = polling(engine)
    assert cached.authenticate(key).subject == "w-1"
    with engine.begin() as conn:
        conn.execute(sa.update(api_keys).where(api_keys.c.key_id == record.key_id).values(secret_hash="scrypt$x"))
    clock.now += 2.5
    assert cached.authenticate(key).subject == "w-1"
    with pytest.raises(Unauthenticated):
        Authenticator(engine).authenticate(key)


def test_a_role_change_reaches_a_process_that_cached_the_key(engine: sa.Engine) -> None:
    store = KeyStore(engine)
    record, key = store.create(Role.CLIENT, org_id="acme")
    cached, clock = polling(engine)
    assert cached.authenticate(key).role is Role.CLIENT
    store.set_role(record.key_id, Role.OPERATOR, "")
    clock.now += 2.5
    assert cached.authenticate(key).role is Role.OPERATOR


def test_identities_are_checked(engine: sa.Engine) -> None:
    store = KeyStore(engine)
    with pytest.raises(InvalidArgument, match="org_id"):
        store.create(Role.CLIENT)
    with pytest.raises(InvalidArgument, match="subject"):
        store.create(Role.WORKER, subject="worker with spaces")
    with pytest.raises(InvalidArgument, match="ASCII"):
        store.create(Role.WORKER, subject="ünï")
    assert [r.role for r in store.list()] == []


def test_the_local_key_is_made_once_and_kept_private(tmp_path: Path, engine: sa.Engine) -> None:
    home = tmp_path / "home"
    first = ensure_local_key(engine, home)
    assert ensure_local_key(engine, home) == first
    path = home / "credentials"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert Authenticator(engine).authenticate(first).role is Role.ADMIN
    # A revoked local key is replaced, not reused.
    KeyStore(engine).revoke(parse_key(first)[0])
    assert ensure_local_key(engine, home) != first


def test_processes_starting_together_agree_on_one_local_key(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'access.db'}"
    home = tmp_path / "home"
    script = (
        "import sys; from pathlib import Path; from quorum.db import make_engine;"
        "from quorum.security.keys import ensure_local_key;"
        "print(ensure_local_key(make_engine(sys.argv[1]), Path(sys.argv[2])))"
    )
    runs = [
        subprocess.Popen([sys.executable, "-c", script, url, str(home)], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    keys = {run.communicate(timeout=60)[0].strip() for run in runs}
    assert len(keys) == 1
    engine = make_engine(url)
    assert len(KeyStore(engine).list()) == 1
