"""API keys: issued at random, shown once, stored only as a keyed hash, revocable.

A key reads ``qk_<key id>_<secret>``. The key id is public (it names the key in
listings, logs and the audit trail); the secret never leaves the caller after
creation, and the access database keeps only its HMAC under the hashing key
(:mod:`quorum.security.keyhash`). Every service checks keys against the access
database: the hash runs once per key and process, then a cache answers, and a cheap
poll of keys changed since the last look evicts revoked keys and changed roles within
seconds.

A sign-in that checks a key's TOTP code starts a *session*: a token
``qs_<session id>_<secret>``, stored the same way, that stands for its key (the key's
role and organisation as they are now) until it expires or ends. Revoking the key
ends its sessions.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from quorum.crypto import CryptoError, MasterKeyring
from quorum.db import UtcDateTime, add_missing_columns, reading, utcnow
from quorum.errors import InvalidArgument, NotFound, Unauthenticated
from quorum.security.credentials import credentials_path as credentials_path
from quorum.security.credentials import locked, read_credentials, write_credentials
from quorum.security.credentials import read_local_key as read_local_key
from quorum.security.keyhash import HashCheck, KeyHasher, hashed_under
from quorum.security.principal import Principal, Role

log = logging.getLogger(__name__)

PREFIX = "qk"
SESSION_PREFIX = "qs"
# Evictions use the writer's clock; this much slack covers skew between machines.
CLOCK_SLACK = dt.timedelta(seconds=10)

metadata = sa.MetaData()

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("key_id", sa.String(32), primary_key=True),
    sa.Column("secret_hash", sa.String(200), nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("org_id", sa.String(128), nullable=False, default=""),
    sa.Column("subject", sa.String(128), nullable=False),
    sa.Column("name", sa.String(200), nullable=False, default=""),
    sa.Column("created_by", sa.String(200), nullable=False, default=""),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("revoked_at", UtcDateTime, nullable=True),
    # Bumped on every change (revocation, role, TOTP): caches evict what changed since their last look.
    sa.Column("changed_at", UtcDateTime, nullable=False),
    # The TOTP secret, sealed under the master key; NULL: no second factor enrolled.
    sa.Column("totp_secret", sa.LargeBinary, nullable=True),
    # The TOTP time step of the last code accepted: a code of that step or an earlier one
    # is refused, so each code signs in once.
    sa.Column("totp_last_step", sa.BigInteger, nullable=True),
    sa.Index("ix_api_keys_changed", "changed_at"),
)

# Sessions that TOTP sign-ins started. Session ids are 24 hex digits and key ids 16, so a
# session's hash (keyed by its id, like a key's) can never verify as a key's.
sessions = sa.Table(
    "sign_in_sessions",
    metadata,
    sa.Column("session_id", sa.String(32), primary_key=True),
    sa.Column("key_id", sa.String(32), nullable=False),
    sa.Column("secret_hash", sa.String(200), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("expires_at", UtcDateTime, nullable=False),
    # Set by a sign-out or the key's revocation; caches evict sessions ended since their last look.
    sa.Column("ended_at", UtcDateTime, nullable=True),
    sa.Index("ix_sign_in_sessions_key", "key_id", "expires_at"),
    sa.Index("ix_sign_in_sessions_ended", "ended_at"),
)


def create_tables(engine: Engine) -> None:
    """Creates the keys and sessions tables, and adds the columns newer than an existing
    keys table (every process that checks keys may be the first to start after an upgrade)."""
    metadata.create_all(engine)
    add_missing_columns(engine, metadata)


class SecretBox(Protocol):
    """Seals small secrets at rest (the master keyring)."""

    def seal(self, plaintext: bytes, aad: bytes) -> bytes: ...

    def open(self, blob: bytes, aad: bytes) -> bytes: ...


@dataclass(frozen=True)
class KeyRecord:
    key_id: str
    role: Role
    org_id: str
    subject: str
    name: str
    created_by: str
    created_at: dt.datetime
    revoked_at: dt.datetime | None
    totp_enrolled: bool

    def principal(self) -> Principal:
        return Principal(
            key_id=self.key_id,
            role=self.role,
            org_id=self.org_id,
            subject=self.subject,
            totp_enrolled=self.totp_enrolled,
        )


@dataclass(frozen=True)
class SessionRecord:
    session_id: str
    key_id: str
    created_at: dt.datetime
    expires_at: dt.datetime


class CodeAlreadyUsed(Unauthenticated):
    """A TOTP code of this time step, or of a later one, already signed the key in."""


def _split_token(token: str, prefix: str) -> tuple[str, str] | None:
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != prefix or not parts[1] or len(parts[2]) < 20:
        return None
    return parts[1], parts[2]


def parse_key(token: str) -> tuple[str, str]:
    """Splits a presented key into (key id, secret). Raises Unauthenticated on any other shape,
    without echoing what was presented."""
    parts = _split_token(token, PREFIX)
    if parts is None:
        raise Unauthenticated("malformed API key: expected 'qk_<id>_<secret>'")
    return parts


def is_session_token(token: str) -> bool:
    """Whether ``token`` has the shape of a session token rather than of an API key."""
    return token.startswith(f"{SESSION_PREFIX}_")


def _validate_identity(role: Role, org_id: str, subject: str) -> None:
    if role is Role.CLIENT and not org_id:
        raise InvalidArgument("org_id", "a client key needs the organisation it acts for")
    for field, value in (("org_id", org_id), ("subject", subject)):
        # The same alphabet tasking accepts for worker ids (ASCII only).
        if len(value) > 128 or not all(c.isascii() and (c.isalnum() or c in "-_.@") for c in value):
            raise InvalidArgument(field, "use at most 128 ASCII letters, digits, '-', '_', '.' or '@'")


def _record(row: sa.Row[tuple[object, ...]] | sa.RowMapping) -> KeyRecord:
    m = row._mapping if isinstance(row, sa.Row) else row
    return KeyRecord(
        key_id=m["key_id"],
        role=Role(m["role"]),
        org_id=m["org_id"],
        subject=m["subject"],
        name=m["name"],
        created_by=m["created_by"],
        created_at=m["created_at"],
        revoked_at=m["revoked_at"],
        totp_enrolled=m["totp_secret"] is not None,
    )


# Called inside the transaction that changed a key, with the key as it now stands.
Recorder = Callable[[Connection, KeyRecord], None]


def _fetch(conn: Connection, key_id: str, recorded: Recorder | None = None) -> KeyRecord:
    row = conn.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id)).first()
    if row is None:
        raise NotFound("API key", key_id)
    record = _record(row)
    if recorded is not None:
        recorded(conn, record)
    return record


class KeyStore:
    """Issues, lists, changes and revokes keys in the access database."""

    def __init__(self, engine: Engine, hasher: KeyHasher, box: SecretBox | None = None) -> None:
        self._engine = engine
        self._hasher = hasher
        self._box = box

    @property
    def hasher(self) -> KeyHasher:
        return self._hasher

    def create(
        self,
        role: Role,
        *,
        org_id: str = "",
        subject: str = "",
        name: str = "",
        created_by: str = "",
        totp_secret: str | None = None,
        recorded: Recorder | None = None,
    ) -> tuple[KeyRecord, str]:
        """Returns the record and the whole key, which exists nowhere else afterwards.
        ``recorded`` runs in the same transaction (the audit trail of the change)."""
        key_id = secrets.token_hex(8)
        subject = subject or f"{role.value}-{key_id}"
        _validate_identity(role, org_id, subject)
        secret = secrets.token_urlsafe(32)
        sealed = None
        if totp_secret is not None:
            if self._box is None:
                raise RuntimeError("TOTP enrolment needs the master keyring to seal the secret")
            sealed = self._box.seal(totp_secret.encode(), key_id.encode())
        now = utcnow()
        with self._engine.begin() as conn:
            conn.execute(
                api_keys.insert().values(
                    key_id=key_id,
                    secret_hash=self._hasher.hash(key_id, secret),
                    role=role.value,
                    org_id=org_id,
                    subject=subject,
                    name=name,
                    created_by=created_by,
                    created_at=now,
                    changed_at=now,
                    totp_secret=sealed,
                )
            )
            record = _fetch(conn, key_id, recorded)
        return record, f"{PREFIX}_{key_id}_{secret}"

    def get(self, key_id: str) -> KeyRecord:
        with reading(self._engine) as conn:
            return _fetch(conn, key_id)

    def list(self, *, org_id: str | None = None, include_revoked: bool = False) -> list[KeyRecord]:
        query = sa.select(api_keys).order_by(api_keys.c.created_at, api_keys.c.key_id)
        if org_id is not None:
            query = query.where(api_keys.c.org_id == org_id)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        with reading(self._engine) as conn:
            return [_record(row) for row in conn.execute(query)]

    def revoke(self, key_id: str, recorded: Recorder | None = None) -> KeyRecord:
        """Revoking twice keeps the first revocation time. Ends the key's sessions."""
        now = utcnow()
        with self._engine.begin() as conn:
            conn.execute(
                api_keys.update()
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now, changed_at=now)
            )
            _end_sessions(conn, key_id, None, now)
            return _fetch(conn, key_id, recorded)

    def set_role(self, key_id: str, role: Role, org_id: str, recorded: Recorder | None = None) -> KeyRecord:
        record = self.get(key_id)
        _validate_identity(role, org_id, record.subject)
        with self._engine.begin() as conn:
            conn.execute(
                api_keys.update()
                .where(api_keys.c.key_id == key_id)
                .values(role=role.value, org_id=org_id, changed_at=utcnow())
            )
            return _fetch(conn, key_id, recorded)

    def hashes_by_hashing_key(self) -> dict[str, int]:
        """How many keys not revoked are stored under each hashing key id (``scrypt``: the
        format from before the keyed hash): before a previous hashing key is dropped, the
        keys still under it are the ones that will stop working."""
        counts: dict[str, int] = {}
        query = sa.select(api_keys.c.secret_hash).where(api_keys.c.revoked_at.is_(None))
        with reading(self._engine) as conn:
            for stored in conn.execute(query).scalars():
                under = hashed_under(stored)
                counts[under] = counts.get(under, 0) + 1
        return counts

    def totp_secret(self, key_id: str) -> str | None:
        with reading(self._engine) as conn:
            sealed = conn.execute(sa.select(api_keys.c.totp_secret).where(api_keys.c.key_id == key_id)).scalar()
        if sealed is None:
            return None
        if self._box is None:
            raise RuntimeError("reading a TOTP secret needs the master keyring")
        return self._box.open(sealed, key_id.encode()).decode()

    def start_session(
        self, key_id: str, ttl: dt.timedelta, *, totp_step: int, recorded: Recorder | None = None
    ) -> tuple[SessionRecord, str]:
        """Starts a session of ``key_id``, whose TOTP code for time step ``totp_step`` was
        just checked, and returns it with its token, which exists nowhere else afterwards.
        Records the step in the same transaction, so each code starts one session at most,
        even from two replicas at once: raises CodeAlreadyUsed when a code of that step or
        a later one was accepted before. Drops the key's expired sessions."""
        session_id = secrets.token_hex(12)
        secret = secrets.token_urlsafe(32)
        now = utcnow()
        with self._engine.begin() as conn:
            accepted = conn.execute(
                api_keys.update()
                .where(
                    api_keys.c.key_id == key_id,
                    sa.or_(api_keys.c.totp_last_step.is_(None), api_keys.c.totp_last_step < totp_step),
                )
                .values(totp_last_step=totp_step)
            ).rowcount
            if accepted != 1:
                raise CodeAlreadyUsed("this TOTP code was used already: wait for the next one")
            conn.execute(sessions.delete().where(sessions.c.key_id == key_id, sessions.c.expires_at < now))
            record = SessionRecord(session_id, key_id, created_at=now, expires_at=now + ttl)
            conn.execute(
                sessions.insert().values(
                    session_id=session_id,
                    key_id=key_id,
                    secret_hash=self._hasher.hash(session_id, secret),
                    created_at=now,
                    expires_at=record.expires_at,
                )
            )
            if recorded is not None:
                _fetch(conn, key_id, recorded)
        return record, f"{SESSION_PREFIX}_{session_id}_{secret}"

    def session(self, session_id: str) -> SessionRecord:
        with reading(self._engine) as conn:
            row = conn.execute(sa.select(sessions).where(sessions.c.session_id == session_id)).first()
        if row is None:
            raise NotFound("session", session_id)
        return SessionRecord(row.session_id, row.key_id, row.created_at, row.expires_at)

    def end_sessions(self, key_id: str, session_id: str | None = None, recorded: Recorder | None = None) -> int:
        """Ends ``session_id`` of ``key_id``, or with None every session of the key; every
        service refuses them within the key cache's poll. Returns how many were live."""
        with self._engine.begin() as conn:
            ended = _end_sessions(conn, key_id, session_id, utcnow())
            if recorded is not None:
                _fetch(conn, key_id, recorded)
        return ended


def _end_sessions(conn: Connection, key_id: str, session_id: str | None, now: dt.datetime) -> int:
    query = sessions.update().where(
        sessions.c.key_id == key_id, sessions.c.ended_at.is_(None), sessions.c.expires_at > now
    )
    if session_id is not None:
        query = query.where(sessions.c.session_id == session_id)
    return int(conn.execute(query.values(ended_at=now)).rowcount)


@dataclass
class ResealReport:
    resealed: int = 0
    already_current: int = 0
    # (key id, why) of each TOTP secret that could not be re-sealed; left as it was.
    failed: list[tuple[str, str]] = dataclasses.field(default_factory=list)


def reseal_totp_secrets(engine: Engine, keyring: MasterKeyring) -> ResealReport:
    """Re-wraps every stored TOTP secret's data key under the keyring's current master key,
    so the previous master key can be dropped after a rotation. Secrets already under it
    are skipped, so a second run, or one resumed after a crash, does only what is left; a
    row changed meanwhile is left to the next run. Costs a read of the keys table and a
    write per secret moved."""
    report = ResealReport()
    query = sa.select(api_keys.c.key_id, api_keys.c.totp_secret).where(api_keys.c.totp_secret.is_not(None))
    with reading(engine) as conn:
        rows = list(conn.execute(query))
    for key_id, sealed in rows:
        try:
            if keyring.sealed_key_id(sealed) == keyring.current_id:
                report.already_current += 1
                continue
            resealed = keyring.reseal(sealed, key_id.encode())
        except CryptoError as exc:
            report.failed.append((key_id, str(exc)))
            continue
        with engine.begin() as conn:
            conn.execute(
                api_keys.update()
                .where(api_keys.c.key_id == key_id, api_keys.c.totp_secret == sealed)
                .values(totp_secret=resealed)
            )
        report.resealed += 1
    return report


@dataclass(frozen=True)
class _Verified:
    principal: Principal
    # The key's changed_at when it was verified: a newer one evicts the entry.
    changed_at: dt.datetime
    # A session's end of life; None for a key.
    expires_at: dt.datetime | None = None


class Authenticator:
    """Turns a presented key or session token into a :class:`Principal`, or raises
    Unauthenticated.

    Thread-safe. A verified key is cached by a digest of the whole key, with the
    ``changed_at`` it had then; keys changed in the database since (revoked, re-roled)
    are evicted by a poll at most every ``poll_seconds``, so revocation takes effect
    within that time in every process. A key the poll sees that has not changed since
    it was cached stays: the poll looks back CLOCK_SLACK, and evicting every key made
    in the last seconds would put each of them through the hash again on every poll.
    A session is cached the same way, under its key's ``changed_at``; the poll also
    evicts sessions ended since and those expired, and a cached session is refused from
    its expiry on.

    A key stored under a previous hashing key, or as scrypt, is re-hashed under the
    current one when it verifies: the access database's row is rewritten (not its
    ``changed_at``, since nothing a cache holds changes), so the previous hashing key can
    be dropped once every key in use has been seen.
    """

    def __init__(
        self,
        engine: Engine,
        hasher: KeyHasher,
        poll_seconds: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], dt.datetime] = utcnow,
    ) -> None:
        self._engine = engine
        self._hasher = hasher
        self._poll_seconds = poll_seconds
        self._clock = clock
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._cache: dict[bytes, _Verified] = {}
        self._next_poll = 0.0
        self._since = utcnow()
        # Keys already reported as hashed under a hashing key this process lacks.
        self._reported_unknown: set[str] = set()

    @property
    def cached(self) -> int:
        """How many keys and sessions are cached."""
        return len(self._cache)

    def authenticate(self, token: str) -> Principal:
        self._evict_changed()
        digest = hashlib.sha256(token.encode()).digest()
        cached = self._cache.get(digest)
        if cached is not None:
            if cached.expires_at is None or self._wall_clock() < cached.expires_at:
                return cached.principal
            with self._lock:
                self._cache.pop(digest, None)
        verified = self._verify_session(token) if is_session_token(token) else self._verify_key(token)
        with self._lock:
            self._cache[digest] = verified
        return verified.principal

    def _verify_key(self, token: str) -> _Verified:
        key_id, secret = parse_key(token)
        with reading(self._engine) as conn:
            row = conn.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id)).first()
        check = HashCheck.MISMATCH
        if row is not None and row.revoked_at is None:
            check = self._hasher.check(key_id, secret, row.secret_hash)
            if check is HashCheck.UNKNOWN_HASHING_KEY:
                self._report_unknown_hashing_key(key_id, row.secret_hash)
        # The same answer whether the key is unknown, revoked or wrong: nothing to probe.
        if row is None or not check.verified:
            raise Unauthenticated("unknown or revoked API key")
        if check is HashCheck.OUTDATED:
            self._rehash(key_id, secret, row.secret_hash)
        return _Verified(_record(row).principal(), row.changed_at)

    def _verify_session(self, token: str) -> _Verified:
        # The same answer for every refusal: malformed, unknown, expired, ended, a revoked key.
        refused = Unauthenticated("unknown, expired or ended session: sign in again")
        parts = _split_token(token, SESSION_PREFIX)
        if parts is None:
            raise refused
        session_id, secret = parts
        query = (
            sa.select(
                sessions.c.secret_hash.label("session_hash"),
                sessions.c.expires_at,
                sessions.c.ended_at,
                *api_keys.c,
            )
            .join(api_keys, api_keys.c.key_id == sessions.c.key_id)
            .where(sessions.c.session_id == session_id)
        )
        with reading(self._engine) as conn:
            row = conn.execute(query).first()
        if (
            row is None
            or row.ended_at is not None
            or row.revoked_at is not None
            or self._wall_clock() >= row.expires_at
            or not self._hasher.check(session_id, secret, row.session_hash).verified
        ):
            raise refused
        principal = replace(_record(row).principal(), session_id=session_id)
        return _Verified(principal, row.changed_at, row.expires_at)

    def _rehash(self, key_id: str, secret: str, stored: str) -> None:
        """Stores the key under the current hashing key, unless its row changed meanwhile (the
        same hash from another process, or a new key). A failure is logged and left for the
        key's next first check: the key itself was verified."""
        try:
            with self._engine.begin() as conn:
                conn.execute(
                    api_keys.update()
                    .where(api_keys.c.key_id == key_id, api_keys.c.secret_hash == stored)
                    .values(secret_hash=self._hasher.hash(key_id, secret))
                )
        except sa.exc.SQLAlchemyError as exc:
            log.warning(
                "API key %s: could not re-hash it under hashing key %s (%s); tried again on its next first check",
                key_id,
                self._hasher.current_id,
                type(exc).__name__,
            )

    def _report_unknown_hashing_key(self, key_id: str, stored: str) -> None:
        if key_id in self._reported_unknown:
            return
        self._reported_unknown.add(key_id)
        log.warning(
            "API key %s is stored under hashing key %s, which this process does not hold (it holds %s): "
            "add that key to QUORUM_PREVIOUS_API_KEY_HASH_KEYS, or re-issue the API key",
            key_id,
            hashed_under(stored),
            ", ".join(self._hasher.key_ids),
        )

    def _evict_changed(self) -> None:
        now = self._clock()
        if now < self._next_poll:
            return
        with self._lock:
            if now < self._next_poll:
                return
            self._next_poll = now + self._poll_seconds
            since, self._since = self._since, utcnow()
            with reading(self._engine) as conn:
                query = sa.select(api_keys.c.key_id, api_keys.c.changed_at)
                rows = conn.execute(query.where(api_keys.c.changed_at >= since - CLOCK_SLACK))
                changed = {key_id: changed_at for key_id, changed_at in rows}
                ended_query = sa.select(sessions.c.session_id).where(sessions.c.ended_at >= since - CLOCK_SLACK)
                ended = set(conn.execute(ended_query).scalars())
            # Sessions that expired go too: a sign-in adds an entry that nothing else removes
            # unless its token is presented again, so the cache would grow with every sign-in.
            wall = self._wall_clock()
            self._cache = {
                digest: verified
                for digest, verified in self._cache.items()
                if changed.get(verified.principal.key_id, verified.changed_at) == verified.changed_at
                and verified.principal.session_id not in ended
                and (verified.expires_at is None or wall < verified.expires_at)
            }


def ensure_local_key(engine: Engine, home: Path, hasher: KeyHasher, *, recorded: Recorder | None) -> str:
    """Gives the local user of the embedded stack an admin key, once: the CLI, the demo
    and the dashboard read it from ``<home>/credentials`` (mode 0600), so nothing has to
    be set up by hand. A key it makes is passed to ``recorded`` in the transaction that
    stores it (the audit trail: ``services.access.audit.offline_key_recorder``). Safe to
    call from several processes at once."""
    create_tables(engine)
    with locked(home):
        existing, stored_sessions = read_credentials(home)
        if existing is not None:
            try:
                Authenticator(engine, hasher).authenticate(existing)
                return existing
            except Unauthenticated:
                pass  # revoked or from another database: issue a new one
        _, key = KeyStore(engine, hasher).create(
            Role.ADMIN, subject="local-admin", name="local user", created_by="quorum up", recorded=recorded
        )
        write_credentials(home, key, stored_sessions)
        return key
