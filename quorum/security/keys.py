"""API keys: issued at random, shown once, stored only as a salted scrypt hash, revocable.

A key reads ``qk_<key id>_<secret>``. The key id is public (it names the key in
listings, logs and the audit trail); the secret never leaves the caller after
creation. Every service checks keys against the access database: the slow hash
runs once per key and process, then a cache answers, and a cheap poll of keys
changed since the last look evicts revoked keys and changed roles within seconds.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import os
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from quorum.db import UtcDateTime, reading, utcnow
from quorum.errors import InvalidArgument, NotFound, Unauthenticated
from quorum.security.principal import Principal, Role

PREFIX = "qk"
# scrypt at 4 MiB and a few milliseconds per check: keys carry 256 random bits, so the hash
# only has to make a leaked table useless; a cache makes the check once per key and process.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**12, 8, 1
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
    sa.Index("ix_api_keys_changed", "changed_at"),
)


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
        return Principal(key_id=self.key_id, role=self.role, org_id=self.org_id, subject=self.subject)


def _hash_secret(secret: str, salt: bytes) -> bytes:
    return hashlib.scrypt(secret.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)


def _encode_hash(secret: str) -> str:
    salt = os.urandom(16)
    digest = _hash_secret(secret, salt)
    b64 = base64.urlsafe_b64encode
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${b64(salt).decode()}${b64(digest).decode()}"


def _secret_matches(secret: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        actual = hashlib.scrypt(
            secret.encode(), salt=base64.urlsafe_b64decode(salt), n=int(n), r=int(r), p=int(p), dklen=32
        )
    except ValueError:
        return False
    return hmac.compare_digest(actual, base64.urlsafe_b64decode(digest))


def parse_key(token: str) -> tuple[str, str]:
    """Splits a presented key into (key id, secret). Raises Unauthenticated on any other shape,
    without echoing what was presented."""
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != PREFIX or not parts[1] or len(parts[2]) < 20:
        raise Unauthenticated("malformed API key: expected 'qk_<id>_<secret>'")
    return parts[1], parts[2]


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

    def __init__(self, engine: Engine, box: SecretBox | None = None) -> None:
        self._engine = engine
        self._box = box

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
                    secret_hash=_encode_hash(secret),
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
        """Revoking twice keeps the first revocation time."""
        now = utcnow()
        with self._engine.begin() as conn:
            conn.execute(
                api_keys.update()
                .where(api_keys.c.key_id == key_id, api_keys.c.revoked_at.is_(None))
                .values(revoked_at=now, changed_at=now)
            )
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

    def totp_secret(self, key_id: str) -> str | None:
        with reading(self._engine) as conn:
            sealed = conn.execute(sa.select(api_keys.c.totp_secret).where(api_keys.c.key_id == key_id)).scalar()
        if sealed is None:
            return None
        if self._box is None:
            raise RuntimeError("reading a TOTP secret needs the master keyring")
        return self._box.open(sealed, key_id.encode()).decode()


class Authenticator:
    """Turns a presented key into a :class:`Principal`, or raises Unauthenticated.

    Thread-safe. A verified key is cached by a digest of the whole key, with the
    ``changed_at`` it had then; keys changed in the database since (revoked, re-roled)
    are evicted by a poll at most every ``poll_seconds``, so revocation takes effect
    within that time in every process. A key the poll sees that has not changed since
    it was cached stays: the poll looks back CLOCK_SLACK, and evicting every key made
    in the last seconds would put each of them through scrypt again on every poll.
    """

    def __init__(self, engine: Engine, poll_seconds: float = 2.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._engine = engine
        self._poll_seconds = poll_seconds
        self._clock = clock
        self._lock = threading.Lock()
        # digest -> (principal, the key's changed_at when it was verified)
        self._cache: dict[bytes, tuple[Principal, dt.datetime]] = {}
        self._next_poll = 0.0
        self._since = utcnow()

    def authenticate(self, token: str) -> Principal:
        self._evict_changed()
        digest = hashlib.sha256(token.encode()).digest()
        cached = self._cache.get(digest)
        if cached is not None:
            return cached[0]
        key_id, secret = parse_key(token)
        with reading(self._engine) as conn:
            row = conn.execute(sa.select(api_keys).where(api_keys.c.key_id == key_id)).first()
        # The same answer whether the key is unknown, revoked or wrong: nothing to probe.
        if row is None or row.revoked_at is not None or not _secret_matches(secret, row.secret_hash):
            raise Unauthenticated("unknown or revoked API key")
        principal = _record(row).principal()
        with self._lock:
            self._cache[digest] = (principal, row.changed_at)
        return principal

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
            if changed:
                self._cache = {
                    digest: (principal, seen)
                    for digest, (principal, seen) in self._cache.items()
                    if changed.get(principal.key_id, seen) == seen
                }


def credentials_path(home: Path) -> Path:
    return home / "credentials"


def read_local_key(home: Path) -> str | None:
    """The local user's key that the embedded stack stored, if any."""
    try:
        return credentials_path(home).read_text().strip() or None
    except FileNotFoundError:
        return None


def ensure_local_key(engine: Engine, home: Path) -> str:
    """Gives the local user of the embedded stack an admin key, once: the CLI, the demo
    and the dashboard read it from ``<home>/credentials`` (mode 0600), so nothing has to
    be set up by hand. Safe to call from several processes at once."""
    import fcntl

    metadata.create_all(engine)
    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".credentials.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        existing = read_local_key(home)
        if existing is not None:
            try:
                Authenticator(engine).authenticate(existing)
                return existing
            except Unauthenticated:
                pass  # revoked or from another database: issue a new one
        _, key = KeyStore(engine).create(Role.ADMIN, subject="local-admin", name="local user", created_by="quorum up")
        path = credentials_path(home)
        tmp = path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(key + "\n")
        os.replace(tmp, path)
        return key
