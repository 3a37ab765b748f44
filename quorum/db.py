"""Database plumbing shared by the services: engines, the inbox of processed
event ids and the transactional outbox.

Each service owns its own database (a SQLite file by default, a PostgreSQL
database or schema when distributed) and its own :class:`sqlalchemy.MetaData`;
:func:`add_messaging_tables` adds the inbox and outbox to it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import sqlite3
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class UtcDateTime(sa.types.TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every backend (SQLite drops the zone)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: pass an aware UTC datetime")
        return value.astimezone(dt.UTC)

    def process_result_value(self, value: dt.datetime | None, dialect: Any) -> dt.datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


READ_ONLY = "quorum_read_only"
STATE_TABLE = "messaging_state"


@contextlib.contextmanager
def reading(engine: Engine) -> Iterator[Connection]:
    """A connection for queries only: on SQLite it does not wait for the write lock."""
    with engine.connect().execution_options(**{READ_ONLY: True}) as conn:
        yield conn


class _WriterTurn:
    """Whose turn it is to write to one SQLite database, among this process's threads.

    SQLite's busy handler waits for the write lock by sleeping and polling (up to 100
    ms between tries), so with dozens of threads a writer could wait far longer than
    the transactions ahead of it took. Taking turns on a lock here wakes the next
    writer the moment the previous one commits or rolls back; SQLite's busy timeout
    still covers other processes. A thread that opens a second write transaction
    inside its first gets no turn (it would wait for itself) and is left to SQLite,
    as before."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._owner: int | None = None

    def take(self) -> bool:
        me = threading.get_ident()
        if self._owner == me:
            return False
        self._lock.acquire()
        self._owner = me
        return True

    def give_back(self) -> None:
        self._owner = None
        self._lock.release()


def _connection_class(turn: _WriterTurn) -> type[sqlite3.Connection]:
    """sqlite3 connections that give ``turn`` back once their transaction has ended."""

    class TurnTakingConnection(sqlite3.Connection):
        holds_turn = False

        def end_turn(self) -> None:
            if self.holds_turn:
                self.holds_turn = False
                turn.give_back()

        def _ending(self, end: Callable[[], None]) -> None:
            try:
                end()
            finally:
                self.end_turn()

        def commit(self) -> None:
            self._ending(super().commit)

        def rollback(self) -> None:
            self._ending(super().rollback)

        def close(self) -> None:
            self._ending(super().close)

    return TurnTakingConnection


def make_engine(url: str) -> Engine:
    """Creates an engine; for SQLite, creates the folder and turns on WAL so readers
    never block the writer, and the process's writers take turns (see _WriterTurn).
    Its errors and logs show statements without their bound values, which are rows of
    client data and key hashes. Costs nothing until the first connection."""
    if url.startswith("sqlite"):
        path = sa.engine.make_url(url).database
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        turn = _WriterTurn()
        engine = sa.create_engine(
            url,
            hide_parameters=True,
            connect_args={"check_same_thread": False, "timeout": 30, "factory": _connection_class(turn)},
            # A connection per gRPC handler thread and background loop, so none waits for one.
            **({"pool_size": 40, "max_overflow": 20} if path and path != ":memory:" else {}),
        )

        @sa_event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy issue BEGIN itself so that BEGIN IMMEDIATE below works.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @sa_event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            if conn.get_execution_options().get(READ_ONLY, False):
                conn.exec_driver_sql("BEGIN")
                return
            # Writers take the lock up front: a deferred transaction that reads then writes
            # fails with "database is locked" instead of waiting its turn.
            dbapi_conn = conn.connection.dbapi_connection
            if turn.take():
                dbapi_conn.holds_turn = True  # type: ignore[union-attr]
            try:
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            except BaseException:
                dbapi_conn.end_turn()  # type: ignore[union-attr]
                raise

        return engine
    return sa.create_engine(url, hide_parameters=True, pool_size=10, max_overflow=20, pool_pre_ping=True)


def make_append_only(table: sa.Table) -> None:
    """Makes the database itself refuse UPDATE and DELETE on ``table`` (a trigger on
    SQLite and PostgreSQL, created with the table): corrections are new rows."""
    name = table.name
    message = f"{name} is append-only"
    for verb in ("UPDATE", "DELETE"):
        sa.event.listen(
            table,
            "after_create",
            sa.DDL(
                f"CREATE TRIGGER {name}_no_{verb.lower()} BEFORE {verb} ON {name} "
                f"BEGIN SELECT RAISE(ABORT, '{message}'); END"
            ).execute_if(dialect="sqlite"),
        )
    sa.event.listen(
        table,
        "after_create",
        sa.DDL(
            f"CREATE OR REPLACE FUNCTION {name}_append_only() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$ BEGIN RAISE EXCEPTION '{message}'; END $$"
        ).execute_if(dialect="postgresql"),
    )
    sa.event.listen(
        table,
        "after_create",
        sa.DDL(
            f"CREATE TRIGGER {name}_append_only BEFORE UPDATE OR DELETE ON {name} "
            f"FOR EACH ROW EXECUTE FUNCTION {name}_append_only()"
        ).execute_if(dialect="postgresql"),
    )


class SchemaMismatch(RuntimeError):
    """The database lacks a column that cannot be added to a table that has rows."""


def add_missing_columns(engine: Engine, metadata: sa.MetaData) -> list[str]:
    """Brings existing tables up to ``metadata``, additively: call it right after
    ``metadata.create_all(engine)``.

    For each table of ``metadata`` that exists, adds every column the database lacks
    (``ALTER TABLE .. ADD COLUMN``) and creates every index it lacks. Nothing is
    dropped, renamed or retyped. Returns the added columns as ``table.column``; a
    second run adds nothing. Raises :class:`SchemaMismatch` naming the column when a
    missing column is NOT NULL without a server default or part of the primary key,
    since existing rows could not take it. Works on SQLite and PostgreSQL; costs one
    catalogue read per table and runs in one transaction.
    """
    added: list[str] = []
    with engine.begin() as conn:
        inspector = sa.inspect(conn)
        # PostgreSQL: a concurrent start-up of another replica may add the same column.
        if_not_exists = " IF NOT EXISTS" if conn.dialect.name == "postgresql" else ""
        preparer = conn.dialect.identifier_preparer
        for table in metadata.sorted_tables:
            if not inspector.has_table(table.name, schema=table.schema):
                continue
            present = {column["name"] for column in inspector.get_columns(table.name, schema=table.schema)}
            for column in table.columns:
                if column.name in present:
                    continue
                _check_addable(table, column)
                spec = sa.schema.CreateColumn(column).compile(dialect=conn.dialect)
                conn.exec_driver_sql(f"ALTER TABLE {preparer.format_table(table)} ADD COLUMN{if_not_exists} {spec}")
                added.append(f"{table.name}.{column.name}")
            for index in table.indexes:
                conn.execute(sa.schema.CreateIndex(index, if_not_exists=True))
    return added


def widen_text_columns(engine: Engine, metadata: sa.MetaData) -> list[str]:
    """Retypes to TEXT every column of an existing table that ``metadata`` declares Text but
    the database holds as a bounded VARCHAR(n) (created by an older version): call it next to
    :func:`add_missing_columns`.

    Only widens, so no value can be lost; a second run changes nothing. Returns the widened
    columns as ``table.column``. A no-op on SQLite, whose VARCHAR(n) is not bounded. Costs one
    catalogue read per table, runs in one transaction; on PostgreSQL each ALTER rewrites
    nothing (VARCHAR to TEXT is binary-compatible) but takes a brief exclusive lock."""
    if engine.dialect.name != "postgresql":
        return []
    widened: list[str] = []
    with engine.begin() as conn:
        inspector = sa.inspect(conn)
        preparer = conn.dialect.identifier_preparer
        for table in metadata.sorted_tables:
            if not inspector.has_table(table.name, schema=table.schema):
                continue
            held = {column["name"]: column["type"] for column in inspector.get_columns(table.name, schema=table.schema)}
            for column in table.columns:
                now = held.get(column.name)
                bounded = isinstance(now, sa.String) and not isinstance(now, sa.Text) and now.length is not None
                if isinstance(column.type, sa.Text) and bounded:
                    conn.exec_driver_sql(
                        f"ALTER TABLE {preparer.format_table(table)} ALTER COLUMN {preparer.format_column(column)} TYPE TEXT"
                    )
                    widened.append(f"{table.name}.{column.name}")
    return widened


def fill_blank_from(
    engine: Engine, table: sa.Table, column: str, source: sa.Table, source_column: str, key: str = "job_id"
) -> int:
    """Fills ``table.column`` where it is "" from ``source.source_column`` of the row with
    the same ``key``: a value the column was added for later (``add_missing_columns``
    gives old rows the empty default) learnt from the row it comes from, e.g. an item's
    organisation from its job. Call it next to :func:`add_missing_columns`. Rows whose
    source row is missing or blank too stay blank; a second run changes nothing.
    Returns how many rows it filled. Costs one UPDATE joining the two tables in its
    own transaction; it reads every row of ``table`` (blank ones are not indexed).
    Filling 200,000 tasks took 0.5-0.8 s on SQLite and 5-17 s on PostgreSQL on a
    loaded 2-core machine; a run that finds nothing blank, under 0.2 s."""
    target, origin = table.c[column], source.c[source_column]
    # UPDATE .. FROM (PostgreSQL, SQLite 3.33+): a join; on SQLite 2-3x faster than a subquery per row.
    fill = sa.update(table).where(target == "", source.c[key] == table.c[key], origin != "").values({column: origin})
    with engine.begin() as conn:
        return int(conn.execute(fill).rowcount or 0)


def _check_addable(table: sa.Table, column: sa.Column[Any]) -> None:
    where = f"{table.name}.{column.name}"
    if column.primary_key:
        raise SchemaMismatch(f"column {where} is missing and is part of the primary key: it cannot be added")
    if not column.nullable and column.server_default is None:
        raise SchemaMismatch(
            f"column {where} is missing and NOT NULL without a server_default: "
            "existing rows cannot take it; make it nullable or give it a server_default"
        )


def _insert_ignoring(conn: Connection, table: sa.Table) -> Any:
    return _insert_ignoring_for(conn.dialect.name, table)


@functools.lru_cache(maxsize=256)
def _insert_ignoring_for(dialect: str, table: sa.Table) -> Any:
    # Built once per table: building the construct costs more than a one-row insert on SQLite.
    if dialect == "sqlite":
        return sqlite.insert(table).on_conflict_do_nothing()
    if dialect == "postgresql":
        return postgresql.insert(table).on_conflict_do_nothing()
    raise NotImplementedError(f"unsupported database: {dialect}")  # pragma: no cover


def insert_ignoring_conflicts(conn: Connection, table: sa.Table, rows: Sequence[dict[str, Any]]) -> int:
    """Inserts rows, skipping any that violate a unique key. Returns how many were inserted."""
    if not rows:
        return 0
    stmt = _insert_ignoring(conn, table)
    result = conn.execute(stmt, list(rows))
    return int(result.rowcount or 0)


@dataclass(frozen=True)
class MessagingTables:
    inbox: sa.Table
    outbox: sa.Table


def add_messaging_tables(metadata: sa.MetaData) -> MessagingTables:
    """Adds ``processed_events`` (the inbox), ``outbox`` and ``messaging_state`` to a
    service's metadata."""
    inbox = sa.Table(
        "processed_events",
        metadata,
        sa.Column("consumer", sa.String(100), primary_key=True),
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("processed_at", UtcDateTime, nullable=False, default=utcnow),
    )
    outbox = sa.Table(
        "outbox",
        metadata,
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
        sa.Column("event_id", sa.String(64), nullable=False, unique=True),
        sa.Column("topic", sa.String(200), nullable=False),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("payload", sa.LargeBinary, nullable=False),
        sa.Column("created_at", UtcDateTime, nullable=False, default=utcnow),
        sa.Column("published_at", UtcDateTime, nullable=True),
        sa.Index("ix_outbox_unpublished", "published_at", "id"),
    )
    sa.Table(
        STATE_TABLE,
        metadata,
        sa.Column("name", sa.String(100), primary_key=True),
        sa.Column("value", sa.String(200), nullable=False),
    )
    return MessagingTables(inbox=inbox, outbox=outbox)


def messaging_state(metadata: sa.MetaData) -> sa.Table:
    """The small name/value table :func:`add_messaging_tables` adds (e.g. the broker
    generation the outbox last published to). Raises KeyError if it was not added."""
    return metadata.tables[STATE_TABLE]


def claim_events(conn: Connection, inbox: sa.Table, consumer: str, event_ids: Iterable[str]) -> set[str]:
    """Records event ids as processed by ``consumer`` in the caller's transaction.

    Returns the ids seen for the first time; the caller applies only those, so a
    redelivered event changes nothing. Both the record and the effect commit or
    roll back together.
    """
    ids = list(dict.fromkeys(event_ids))
    if not ids:
        return set()
    now = utcnow()
    rows = [{"consumer": consumer, "event_id": i, "processed_at": now} for i in ids]
    # INSERT .. ON CONFLICT DO NOTHING RETURNING tells which rows this transaction inserted,
    # so two replicas handling the same event cannot both see it as new.
    stmt = _insert_ignoring(conn, inbox).returning(inbox.c.event_id)
    return set(conn.execute(stmt, rows).scalars())


@dataclass(frozen=True)
class OutgoingEvent:
    topic: str
    key: str
    event_id: str
    payload: bytes


def enqueue(conn: Connection, outbox: sa.Table, events: Iterable[OutgoingEvent]) -> None:
    """Writes events to the outbox in the caller's transaction; the relay publishes them."""
    now = utcnow()
    rows = [
        {"event_id": e.event_id, "topic": e.topic, "key": e.key, "payload": e.payload, "created_at": now}
        for e in events
    ]
    insert_ignoring_conflicts(conn, outbox, rows)


def drop_outbox_events(conn: Connection, outbox: sa.Table, topic: str, keys: Iterable[str]) -> int:
    """Deletes the outbox rows of ``topic`` keyed by any of ``keys``, published or not, in
    the caller's transaction: for events that must never be sent or replayed again (a
    deleted job's, which carry its content). The relay skips rows deleted under it.
    Returns how many. Costs one pass over the topic's rows (kept about a day)."""
    wanted = set(keys)
    if not wanted:
        return 0
    rows = conn.execute(sa.select(outbox.c.id, outbox.c.key).where(outbox.c.topic == topic))
    ids = [row.id for row in rows if row.key in wanted]
    for start in range(0, len(ids), 500):
        conn.execute(sa.delete(outbox).where(outbox.c.id.in_(ids[start : start + 500])))
    return len(ids)
