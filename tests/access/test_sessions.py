"""Sessions of TOTP sign-ins and the TOTP state of keys, against real SQLite and
PostgreSQL access databases: stored as keyed hashes, standing for their key as it now
is, refused once expired, ended or their key revoked (in a process that cached them
too, which drops them once expired), each code step accepted once, TOTP secrets moved
to a new master key; and the credentials file in which the CLI keeps a session."""

from __future__ import annotations

import datetime as dt
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from quorum.crypto import MasterKeyring, UnknownMasterKey
from quorum.db import make_engine, utcnow
from quorum.errors import Unauthenticated
from quorum.security.credentials import (
    StoredSession,
    client_credential,
    credentials_path,
    forget_session,
    read_local_key,
    store_session,
    stored_session,
    write_credentials,
)
from quorum.security.keyhash import KeyHasher
from quorum.security.keys import (
    Authenticator,
    CodeAlreadyUsed,
    KeyStore,
    api_keys,
    create_tables,
    reseal_totp_secrets,
    sessions,
)
from quorum.security.principal import Role
from quorum.settings import Settings

HOUR = dt.timedelta(hours=1)
# The credentials file keeps whole seconds.
NOW = dt.datetime.now(dt.UTC).replace(microsecond=0)
MASTER_A = bytes(range(32))
MASTER_B = bytes(range(50, 82))


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    url = (
        f"sqlite:///{tmp_path / 'access.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    )
    engine = make_engine(url)
    create_tables(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: sa.Engine) -> KeyStore:
    return KeyStore(engine, KeyHasher(os.urandom(32)), box=MasterKeyring(MASTER_A))


class Clocks:
    """Another process's clocks: the monotonic one its key cache polls by, and the wall clock."""

    def __init__(self) -> None:
        self.monotonic = 0.0
        self.wall = utcnow()


def cached_by_another_process(store: KeyStore, engine: sa.Engine) -> tuple[Authenticator, Clocks]:
    clocks = Clocks()
    authenticator = Authenticator(
        engine, store.hasher, poll_seconds=2.0, clock=lambda: clocks.monotonic, wall_clock=lambda: clocks.wall
    )
    return authenticator, clocks


def test_a_session_is_stored_as_a_keyed_hash_and_stands_for_its_key(store: KeyStore, engine: sa.Engine) -> None:
    record, _ = store.create(Role.CLIENT, org_id="acme", subject="acme-ci", totp_secret="JBSWY3DPEHPK3PXP")
    session, token = store.start_session(record.key_id, HOUR, totp_step=1)
    assert token.startswith(f"qs_{session.session_id}_") and session.expires_at - session.created_at == HOUR
    with engine.connect() as conn:
        row = conn.execute(sa.select(sessions)).one()
    assert token.split("_", 2)[2] not in "".join(str(value) for value in row)
    principal = Authenticator(engine, store.hasher).authenticate(token)
    assert (principal.key_id, principal.role, principal.org_id, principal.subject) == (
        record.key_id,
        Role.CLIENT,
        "acme",
        "acme-ci",
    )
    assert principal.session_id == session.session_id and principal.totp_enrolled
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for presented in (forged, "qs_nothing", f"qs_{'0' * 24}_{'x' * 43}"):
        with pytest.raises(Unauthenticated, match=r"^unknown, expired or ended session: sign in again$"):
            Authenticator(engine, store.hasher).authenticate(presented)


def test_each_code_step_is_accepted_once_and_never_an_earlier_one(store: KeyStore) -> None:
    record, _ = store.create(Role.OPERATOR, totp_secret="JBSWY3DPEHPK3PXP")
    store.start_session(record.key_id, HOUR, totp_step=1000)
    for replayed in (1000, 999):
        with pytest.raises(CodeAlreadyUsed):
            store.start_session(record.key_id, HOUR, totp_step=replayed)
    store.start_session(record.key_id, HOUR, totp_step=1001)
    # Another key's steps are its own.
    other, _ = store.create(Role.OPERATOR, totp_secret="JBSWY3DPEHPK3PXP")
    store.start_session(other.key_id, HOUR, totp_step=1000)


def test_a_cached_session_is_refused_from_its_expiry_on(store: KeyStore, engine: sa.Engine) -> None:
    record, _ = store.create(Role.OPERATOR, totp_secret="JBSWY3DPEHPK3PXP")
    session, token = store.start_session(record.key_id, HOUR, totp_step=1)
    cached, clocks = cached_by_another_process(store, engine)
    assert cached.authenticate(token).session_id == session.session_id
    clocks.wall = session.expires_at - dt.timedelta(seconds=1)
    assert cached.authenticate(token).session_id == session.session_id
    clocks.wall = session.expires_at
    with pytest.raises(Unauthenticated, match="expired"):
        cached.authenticate(token)


def test_expired_sessions_leave_the_cache_at_the_next_poll(store: KeyStore, engine: sa.Engine) -> None:
    record, key = store.create(Role.OPERATOR, totp_secret="JBSWY3DPEHPK3PXP")
    short, short_token = store.start_session(record.key_id, HOUR, totp_step=1)
    _, long_token = store.start_session(record.key_id, 2 * HOUR, totp_step=2)
    cached, clocks = cached_by_another_process(store, engine)
    for token in (key, short_token, long_token):
        cached.authenticate(token)
    assert cached.cached == 3

    # The short session expires and nobody presents it again: the next poll drops it alone.
    clocks.wall = short.expires_at
    clocks.monotonic += 2.5
    cached.authenticate(key)
    assert cached.cached == 2
    assert cached.authenticate(long_token).session_id != short.session_id
    assert cached.cached == 2


def test_a_session_ended_or_of_a_revoked_key_is_refused_by_a_process_that_cached_it(
    store: KeyStore, engine: sa.Engine
) -> None:
    record, key = store.create(Role.OPERATOR, totp_secret="JBSWY3DPEHPK3PXP")
    first, first_token = store.start_session(record.key_id, HOUR, totp_step=1)
    _, second_token = store.start_session(record.key_id, HOUR, totp_step=2)
    cached, clocks = cached_by_another_process(store, engine)
    for token in (key, first_token, second_token):
        cached.authenticate(token)

    assert store.end_sessions(record.key_id, first.session_id) == 1
    clocks.monotonic += 2.5
    with pytest.raises(Unauthenticated):
        cached.authenticate(first_token)
    assert cached.authenticate(second_token).key_id == record.key_id

    store.revoke(record.key_id)
    clocks.monotonic += 2.5
    for token in (key, second_token):
        with pytest.raises(Unauthenticated):
            cached.authenticate(token)
    with engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).where(sessions.c.ended_at.is_(None))).scalar_one() == 0


def test_a_session_follows_its_keys_role(store: KeyStore, engine: sa.Engine) -> None:
    record, _ = store.create(Role.CLIENT, org_id="acme", totp_secret="JBSWY3DPEHPK3PXP")
    _, token = store.start_session(record.key_id, HOUR, totp_step=1)
    cached, clocks = cached_by_another_process(store, engine)
    assert cached.authenticate(token).role is Role.CLIENT
    store.set_role(record.key_id, Role.OPERATOR, "")
    clocks.monotonic += 2.5
    assert cached.authenticate(token).role is Role.OPERATOR


def test_a_keys_table_from_before_sessions_gains_what_they_need(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    old = sa.MetaData()
    sa.Table(
        "api_keys",
        old,
        *(sa.Column(c.name, c.type, nullable=c.nullable) for c in api_keys.columns if c.name != "totp_last_step"),
    )
    old.create_all(engine)
    hasher = KeyHasher(os.urandom(32))
    with engine.begin() as conn:
        conn.execute(
            sa.table("api_keys", *(sa.column(c.name) for c in api_keys.columns if c.name != "totp_last_step"))
            .insert()
            .values(
                key_id="0123456789abcdef",
                secret_hash=hasher.hash("0123456789abcdef", "s" * 43),
                role="operator",
                org_id="",
                subject="ops",
                name="",
                created_by="",
                created_at=utcnow(),
                changed_at=utcnow(),
            )
        )
    create_tables(engine)
    _, token = KeyStore(engine, hasher).start_session("0123456789abcdef", HOUR, totp_step=1)
    assert Authenticator(engine, hasher).authenticate(token).subject == "ops"
    engine.dispose()


def test_totp_secrets_move_to_the_current_master_key(store: KeyStore, engine: sa.Engine) -> None:
    enrolled = [store.create(Role.OPERATOR, totp_secret=f"JBSWY3DPEHPK3PX{c}")[0] for c in "PQ"]
    store.create(Role.CLIENT, org_id="acme")
    rotated = MasterKeyring(MASTER_B, [MASTER_A])
    report = reseal_totp_secrets(engine, rotated)
    assert (report.resealed, report.already_current, report.failed) == (2, 0, [])
    only_b = KeyStore(engine, store.hasher, box=MasterKeyring(MASTER_B))
    assert [only_b.totp_secret(r.key_id) for r in enrolled] == ["JBSWY3DPEHPK3PXP", "JBSWY3DPEHPK3PXQ"]
    again = reseal_totp_secrets(engine, rotated)
    assert (again.resealed, again.already_current) == (0, 2)

    # A secret under a master key the keyring lacks is named and left alone.
    third = MasterKeyring(os.urandom(32))
    report = reseal_totp_secrets(engine, third)
    assert report.resealed == 0 and [key_id for key_id, _ in report.failed] == [r.key_id for r in enrolled]
    with pytest.raises(UnknownMasterKey):
        KeyStore(engine, store.hasher, box=third).totp_secret(enrolled[0].key_id)
    assert only_b.totp_secret(enrolled[0].key_id) == "JBSWY3DPEHPK3PXP"


# ----------------------------------------------------------------------------- the credentials file


def test_the_credentials_file_keeps_the_key_and_a_session_per_key(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    key = "qk_0123456789abcdef_" + "s" * 43
    # The format from before sessions: the key alone.
    credentials_path(home).write_text(key + "\n")
    assert read_local_key(home) == key and stored_session(home, "0123456789abcdef") is None

    later = NOW + HOUR
    mine = StoredSession("0123456789abcdef", "qs_" + "a" * 24 + "_" + "t" * 43, later)
    theirs = StoredSession("fedcba9876543210", "qs_" + "b" * 24 + "_" + "u" * 43, later)
    store_session(home, mine)
    store_session(home, theirs)
    store_session(home, mine)
    assert read_local_key(home) == key
    assert stored_session(home, mine.key_id) == mine and stored_session(home, theirs.key_id) == theirs
    assert stat.S_IMODE(credentials_path(home).stat().st_mode) == 0o600
    assert mine.token not in repr(mine)

    assert forget_session(home, theirs.key_id) == theirs
    assert forget_session(home, theirs.key_id) is None
    assert read_local_key(home) == key and stored_session(home, mine.key_id) == mine
    # Rewriting the key (a new local key) keeps the sessions.
    with_sessions = credentials_path(home).read_text().splitlines()[1:]
    write_credentials(home, "qk_1111111111111111_" + "n" * 43, [mine])
    assert credentials_path(home).read_text().splitlines()[1:] == with_sessions


def test_clients_send_the_stored_session_while_it_lasts(tmp_path: Path) -> None:
    key = "qk_0123456789abcdef_" + "s" * 43
    settings = Settings(home=tmp_path, api_key=key)
    credential = client_credential(settings)
    assert credential is not None and credential.token == key and credential.session is None

    session = StoredSession("0123456789abcdef", "qs_" + "a" * 24 + "_" + "t" * 43, NOW + HOUR)
    store_session(tmp_path, session)
    credential = client_credential(settings)
    assert credential is not None and credential.token == session.token and credential.session == session
    # A session of another key is not this key's.
    other = client_credential(Settings(home=tmp_path, api_key="qk_fedcba9876543210_" + "s" * 43))
    assert other is not None and other.session is None

    over = StoredSession(session.key_id, session.token, dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1))
    store_session(tmp_path, over)
    credential = client_credential(settings)
    assert credential is not None and credential.token == key and credential.session is None
    assert credential.expired is not None and credential.expired.expires_at <= dt.datetime.now(dt.UTC)
    assert client_credential(Settings(home=tmp_path / "nobody")) is None
