"""The audit trail: an append-only, hash-chained log of who did what.

Each entry's hash covers the previous entry's hash and every field of the entry, so
changing, removing or reordering any entry breaks every hash after it. The database
refuses UPDATE and DELETE on the table as well; the chain catches what bypasses that
(someone with direct access to the files or the server). Operators keep the head hash
that ``quorum audit verify`` prints somewhere else to detect a rewrite of the whole tail.

Entries come from two places: this service's own actions (keys, roles, sign-ins),
appended in the transaction of the change they record, and ``AuditRecorded`` events that the other
services write to their outboxes in the same transaction as the action itself, so no
audited action is lost when a process dies.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from quorum.db import UtcDateTime, make_append_only, reading, utcnow
from quorum.errors import InvalidArgument
from quorum.messaging import new_event_id
from quorum.security.keys import KeyRecord, Recorder
from quorum.security.principal import Principal
from quorum.v1 import events_pb2

GENESIS = "0" * 64

metadata = sa.MetaData()

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("seq", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(64), nullable=False, unique=True),
    sa.Column("at", UtcDateTime, nullable=False),
    sa.Column("actor", sa.String(300), nullable=False),
    sa.Column("actor_key_id", sa.String(32), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("resource", sa.String(300), nullable=False),
    sa.Column("org_id", sa.String(128), nullable=False),
    sa.Column("details_json", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
    sa.Index("ix_audit_log_org", "org_id", "seq"),
    sa.Index("ix_audit_log_action", "action", "seq"),
    sa.Index("ix_audit_log_resource", "resource", "at"),
)
make_append_only(audit_log)


@dataclass(frozen=True)
class AuditEntry:
    event_id: str
    at: dt.datetime
    actor: str
    actor_key_id: str
    action: str
    resource: str
    org_id: str
    details_json: str


@dataclass(frozen=True)
class StoredEntry:
    seq: int
    entry: AuditEntry
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class Verification:
    ok: bool
    entries: int
    first_bad_seq: int
    problem: str
    head_hash: str


def entry_hash(prev_hash: str, entry: AuditEntry) -> str:
    """SHA-256 over the previous hash and a canonical encoding of every field."""
    fields = [
        entry.event_id,
        entry.at.astimezone(dt.UTC).isoformat(timespec="microseconds"),
        entry.actor,
        entry.actor_key_id,
        entry.action,
        entry.resource,
        entry.org_id,
        entry.details_json,
    ]
    body = json.dumps([prev_hash, *fields], ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def verify_chain(rows: Iterable[StoredEntry]) -> Verification:
    """Pure check of rows in ``seq`` order, from the first entry; stops at the first break."""
    prev = GENESIS
    count = 0
    for row in rows:
        count += 1
        if row.prev_hash != prev:
            return Verification(False, count, row.seq, "prev_hash does not match the entry before it", prev)
        if row.hash != entry_hash(prev, row.entry):
            return Verification(False, count, row.seq, "hash does not match the entry's contents", prev)
        prev = row.hash
    return Verification(True, count, 0, "", prev)


def encode_details(values: Mapping[str, Any]) -> str:
    return json.dumps(dict(values), sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _stored(row: Any) -> StoredEntry:
    m = row._mapping
    return StoredEntry(
        seq=m["seq"],
        entry=AuditEntry(
            event_id=m["event_id"],
            at=m["at"],
            actor=m["actor"],
            actor_key_id=m["actor_key_id"],
            action=m["action"],
            resource=m["resource"],
            org_id=m["org_id"],
            details_json=m["details_json"],
        ),
        prev_hash=m["prev_hash"],
        hash=m["hash"],
    )


def _lock_chain(conn: Connection) -> None:
    # One writer at a time extends the chain. SQLite's BEGIN IMMEDIATE already serialises
    # writers; PostgreSQL needs a lock that replicas of this service share.
    if conn.dialect.name == "postgresql":
        conn.execute(sa.text("SELECT pg_advisory_xact_lock(7213421)"))


def append(conn: Connection, entries: Sequence[AuditEntry]) -> int:
    """Appends entries not yet in the log (by event id) to the chain, in order. Call
    inside a write transaction. Returns how many were appended."""
    if not entries:
        return 0
    _lock_chain(conn)
    known = set(
        conn.execute(
            sa.select(audit_log.c.event_id).where(audit_log.c.event_id.in_([e.event_id for e in entries]))
        ).scalars()
    )
    head = conn.execute(sa.select(audit_log.c.hash).order_by(audit_log.c.seq.desc()).limit(1)).scalar()
    prev = head or GENESIS
    rows = []
    for entry in entries:
        if entry.event_id in known:
            continue
        known.add(entry.event_id)
        digest = entry_hash(prev, entry)
        rows.append({**entry.__dict__, "prev_hash": prev, "hash": digest})
        prev = digest
    if rows:
        conn.execute(audit_log.insert(), rows)
    return len(rows)


def new_entry(
    actor: str, actor_key_id: str, action: str, resource: str, *, org_id: str, details: Mapping[str, Any]
) -> AuditEntry:
    """An entry of an action happening now, under a fresh event id."""
    return AuditEntry(
        event_id=new_event_id(),
        at=utcnow(),
        actor=actor,
        actor_key_id=actor_key_id,
        action=action,
        resource=resource,
        org_id=org_id,
        details_json=encode_details(details),
    )


def offline_key_recorder(engine: Engine, actor: str) -> Recorder:
    """For keys made straight in the access database, without the access service (the first
    admin key of a deployment, the embedded stack's local key): a :data:`Recorder` that
    appends ``key.created`` to the chain in the key's own transaction, like the service
    does, naming ``actor`` (e.g. ``offline:quorum keys create``). Creates the audit table
    when the database has none yet."""
    metadata.create_all(engine)

    def record(conn: Connection, key: KeyRecord) -> None:
        details = {"role": key.role.value, "subject": key.subject, "totp": key.totp_enrolled}
        append(conn, [new_entry(actor, "", "key.created", f"key/{key.key_id}", org_id=key.org_id, details=details)])

    return record


def entry_from_event(event: events_pb2.Event) -> AuditEntry:
    recorded = event.audit_recorded
    return AuditEntry(
        event_id=event.event_id,
        at=event.occurred_at.ToDatetime(tzinfo=dt.UTC),
        actor=recorded.actor,
        actor_key_id=recorded.actor_key_id,
        action=recorded.action,
        resource=recorded.resource,
        org_id=recorded.org_id,
        details_json=recorded.details_json or "{}",
    )


class AuditTrail:
    """The access service's view of the log: appends, queries and verification."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def record(
        self,
        actor: Principal,
        action: str,
        resource: str,
        *,
        org_id: str,
        details: Mapping[str, Any],
        conn: Connection | None = None,
    ) -> None:
        """Appends an entry: within ``conn``'s transaction when given (that of the change
        it records), else in a transaction of its own."""
        entry = new_entry(actor.label, actor.key_id, action, resource, org_id=org_id, details=details)
        if conn is not None:
            append(conn, [entry])
            return
        with self._engine.begin() as own:
            append(own, [entry])

    def handle_events(self, events: list[events_pb2.Event]) -> None:
        """Consumer of the audit topic: idempotent, as appends skip known event ids."""
        entries = [entry_from_event(e) for e in events if e.WhichOneof("payload") == "audit_recorded"]
        with self._engine.begin() as conn:
            append(conn, entries)

    def list(
        self,
        *,
        org_id: str = "",
        action: str = "",
        resource: str = "",
        before_seq: int = 0,
        limit: int = 100,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
    ) -> list[StoredEntry]:
        """Up to ``limit`` entries, newest first, matching every filter given: those before
        entry ``before_seq`` (the next page), at or after ``since`` and before ``until``.
        Raises InvalidArgument("page_size") outside 1..1000 and InvalidArgument("until")
        when it is not after ``since``."""
        if not 1 <= limit <= 1000:
            raise InvalidArgument("page_size", "between 1 and 1000")
        if since is not None and until is not None and until <= since:
            raise InvalidArgument("until", "must be after since")
        query = sa.select(audit_log).order_by(audit_log.c.seq.desc()).limit(limit)
        if since is not None:
            query = query.where(audit_log.c.at >= since)
        if until is not None:
            query = query.where(audit_log.c.at < until)
        if org_id:
            query = query.where(audit_log.c.org_id == org_id)
        if action:
            query = query.where(audit_log.c.action == action)
        if resource:
            query = query.where(audit_log.c.resource == resource)
        if before_seq:
            query = query.where(audit_log.c.seq < before_seq)
        with reading(self._engine) as conn:
            return [_stored(row) for row in conn.execute(query)]

    def count_since(self, action: str, resource: str, since: dt.datetime) -> int:
        query = sa.select(sa.func.count()).where(
            audit_log.c.action == action, audit_log.c.resource == resource, audit_log.c.at >= since
        )
        with reading(self._engine) as conn:
            return int(conn.execute(query).scalar_one())

    def verify(self) -> Verification:
        with reading(self._engine) as conn:
            rows = conn.execution_options(yield_per=1000).execute(sa.select(audit_log).order_by(audit_log.c.seq))
            return verify_chain(_stored(row) for row in rows)
