"""add_missing_columns and widen_text_columns against SQLite and PostgreSQL: a database
created from an older table definition gains the new columns and indexes, its bounded label
columns become TEXT, and it keeps its rows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from quorum.db import SchemaMismatch, add_missing_columns, make_engine, widen_text_columns
from services.consensus import tables as consensus_tables


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    url = (
        f"sqlite:///{tmp_path / 'db.sqlite'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    )
    engine = make_engine(url)
    yield engine
    engine.dispose()


def old_items() -> sa.MetaData:
    metadata = sa.MetaData()
    sa.Table(
        "items",
        metadata,
        sa.Column("item_id", sa.String(40), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
    )
    return metadata


def new_items() -> sa.MetaData:
    metadata = sa.MetaData()
    sa.Table(
        "items",
        metadata,
        sa.Column("item_id", sa.String(40), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("org_id", sa.String(128), nullable=False, server_default=""),
        sa.Column("note", sa.Text, nullable=True),
        sa.Index("ix_items_org", "org_id", "item_id"),
    )
    # A table the old database never had: create_all makes it, the helper leaves it alone.
    sa.Table("extras", metadata, sa.Column("extra_id", sa.Integer, primary_key=True))
    return metadata


def index_names(engine: sa.Engine, table: str) -> set[str]:
    return {index["name"] or "" for index in sa.inspect(engine).get_indexes(table)}


def test_old_table_gains_new_columns_and_keeps_its_rows(engine: sa.Engine) -> None:
    old_items().create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO items (item_id, name) VALUES ('i1', 'cat.png'), ('i2', 'dog.png')"))

    metadata = new_items()
    metadata.create_all(engine)
    added = add_missing_columns(engine, metadata)

    assert added == ["items.org_id", "items.note"]
    items = metadata.tables["items"]
    with engine.begin() as conn:
        rows = conn.execute(sa.select(items).order_by(items.c.item_id)).all()
        assert [(r.item_id, r.name, r.org_id, r.note) for r in rows] == [
            ("i1", "cat.png", "", None),
            ("i2", "dog.png", "", None),
        ]
        # The new column is usable: new rows fill it, and the NOT NULL default covers the rest.
        conn.execute(sa.insert(items).values(item_id="i3", name="owl.png", org_id="acme"))
        conn.execute(sa.insert(items).values(item_id="i4", name="bat.png"))
        orgs = dict(conn.execute(sa.select(items.c.item_id, items.c.org_id)).all())
    assert orgs == {"i1": "", "i2": "", "i3": "acme", "i4": ""}
    assert "ix_items_org" in index_names(engine, "items")
    assert sa.inspect(engine).has_table("extras")


def test_running_twice_changes_nothing(engine: sa.Engine) -> None:
    old_items().create_all(engine)
    metadata = new_items()
    metadata.create_all(engine)
    assert add_missing_columns(engine, metadata) == ["items.org_id", "items.note"]
    columns = [c["name"] for c in sa.inspect(engine).get_columns("items")]

    assert add_missing_columns(engine, metadata) == []
    assert [c["name"] for c in sa.inspect(engine).get_columns("items")] == columns


def test_a_fresh_database_needs_nothing(engine: sa.Engine) -> None:
    metadata = new_items()
    metadata.create_all(engine)
    assert add_missing_columns(engine, metadata) == []


def test_not_null_column_without_server_default_is_refused_by_name(engine: sa.Engine) -> None:
    old_items().create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO items (item_id, name) VALUES ('i1', 'cat.png')"))
    metadata = sa.MetaData()
    sa.Table(
        "items",
        metadata,
        sa.Column("item_id", sa.String(40), primary_key=True),
        sa.Column("name", sa.Text, nullable=False),
        sa.Column("fine", sa.Text, nullable=True),
        sa.Column("org_id", sa.String(128), nullable=False),
    )
    with pytest.raises(SchemaMismatch, match=r"items\.org_id .*server_default"):
        add_missing_columns(engine, metadata)
    # All or nothing: the column that could be added was rolled back with the rest.
    assert [c["name"] for c in sa.inspect(engine).get_columns("items")] == ["item_id", "name"]


# The consensus columns older versions created as VARCHAR(200) and that now are Text.
OLD_VARCHAR_LABELS = (
    ("consensus_tasks", "label"),
    ("consensus_tasks", "gold_label"),
    ("consensus_answers", "label"),
    ("consensus_results", "label"),
    ("consensus_results", "majority_label"),
)


def test_bounded_label_columns_become_text_on_postgres(postgres_url: str) -> None:
    engine = make_engine(postgres_url)
    try:
        consensus_tables.metadata.create_all(engine)
        with engine.begin() as conn:
            for table, column in OLD_VARCHAR_LABELS:
                conn.exec_driver_sql(f"ALTER TABLE {table} ALTER COLUMN {column} TYPE VARCHAR(200)")
            conn.exec_driver_sql(
                "INSERT INTO consensus_answers (answer_id, task_id, job_id, worker_id, label)"
                " VALUES ('a1', 't1', 'j1', 'w1', 'cat')"
            )
        answers = consensus_tables.answers
        long_label = '{"masks":{"masks":[{"counts":[' + ",".join(["12"] * 2000) + "]}]}}"
        with pytest.raises(sa.exc.DBAPIError), engine.begin() as conn:
            conn.execute(
                sa.insert(answers).values(answer_id="a2", task_id="t2", job_id="j1", worker_id="w1", label=long_label)
            )

        assert sorted(widen_text_columns(engine, consensus_tables.metadata)) == sorted(
            f"{table}.{column}" for table, column in OLD_VARCHAR_LABELS
        )
        with engine.begin() as conn:
            conn.execute(
                sa.insert(answers).values(answer_id="a2", task_id="t2", job_id="j1", worker_id="w1", label=long_label)
            )
            labels = dict(conn.execute(sa.select(answers.c.answer_id, answers.c.label)).all())
        assert labels == {"a1": "cat", "a2": long_label}
        assert widen_text_columns(engine, consensus_tables.metadata) == []
    finally:
        engine.dispose()


def test_widening_leaves_sqlite_and_fresh_tables_alone(engine: sa.Engine) -> None:
    # SQLite does not bound VARCHAR(n); a fresh PostgreSQL database already has TEXT.
    old_items().create_all(engine)
    consensus_tables.metadata.create_all(engine)
    assert widen_text_columns(engine, consensus_tables.metadata) == []
    assert widen_text_columns(engine, new_items()) == []


def test_blank_organisations_are_filled_in_from_the_job(engine: sa.Engine) -> None:
    import datetime as dt

    from quorum.db import fill_blank_from
    from services.tasking import tables as tasking

    tasking.metadata.create_all(engine)
    jobs, tasks = tasking.jobs, tasking.tasks
    with engine.begin() as conn:
        conn.execute(
            sa.insert(jobs),
            [{"job_id": "j-acme", "known": True, "org_id": "acme"}, {"job_id": "j-old", "known": True, "org_id": ""}],
        )
        conn.execute(
            sa.insert(tasks),
            [
                {"task_id": task_id, "job_id": job_id, "org_id": org, "gold": False, "job_ready": True}
                | {"created_at": dt.datetime.now(dt.UTC), "answers_wanted": 1, "available": True}
                for task_id, job_id, org in (
                    ("t-before-owners", "j-acme", ""),
                    ("t-owned", "j-acme", "acme"),
                    ("t-job-unknown-too", "j-old", ""),
                    ("t-job-not-here", "j-missing", ""),
                )
            ],
        )
    assert fill_blank_from(engine, tasks, "org_id", jobs, "org_id") == 1
    with engine.connect() as conn:
        orgs = dict(conn.execute(sa.select(tasks.c.task_id, tasks.c.org_id)).all())
    assert orgs == {"t-before-owners": "acme", "t-owned": "acme", "t-job-unknown-too": "", "t-job-not-here": ""}
    assert fill_blank_from(engine, tasks, "org_id", jobs, "org_id") == 0


def test_ingest_fills_in_the_organisation_of_items_from_before_it_was_kept(tmp_path: Path) -> None:
    import datetime as dt

    from quorum.messaging import Topics
    from quorum.security.keyhash import load_key_hasher
    from quorum.service import OutboxSignal, ServiceContext
    from quorum.settings import Settings
    from services.ingest import tables as ingest
    from services.ingest.bootstrap import build

    settings = Settings(home=tmp_path)
    engine = make_engine(settings.database_url_for("ingest"))
    old = sa.MetaData()
    for table in (ingest.jobs, ingest.items):
        # The table as an older version made it: without the organisation column.
        columns = [c for c in table.columns if c.name != "org_id"]
        sa.Table(table.name, old, *(sa.Column(c.name, c.type, primary_key=c.primary_key) for c in columns))
    old.create_all(engine)
    now = dt.datetime.now(dt.UTC)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(old.tables["jobs"]).values(
                job_id="j1", client_id="acme", name="n", task_type="t", spec=b"", state="OPEN", created_at=now
            )
        )
        conn.execute(
            sa.insert(old.tables["items"]).values(
                item_id="i1",
                job_id="j1",
                name="a.png",
                sha256="0" * 64,
                object_key="k",
                content_type="image/png",
                size_bytes=1,
                created_at=now,
            )
        )
    context = ServiceContext(settings, Topics("t"), OutboxSignal(), load_key_hasher(settings))
    parts = build(context)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.select(ingest.items.c.org_id)).scalar_one() == "acme"
    finally:
        for close in parts.closers:
            close()
        parts.engine.dispose()
        engine.dispose()


def test_the_access_tables_can_share_any_services_database() -> None:
    # Without QUORUM_ACCESS_DATABASE_URL, keys, sign-in sessions and the audit trail live in
    # the database of the service that opens them: a table name used twice would be one
    # table with two meanings.
    from quorum.security import keys
    from services.access import audit
    from services.consensus import tables as consensus
    from services.ingest import tables as ingest
    from services.payments import tables as payments
    from services.tasking import tables as tasking

    access = set(keys.metadata.tables) | set(audit.metadata.tables)
    for service in (ingest, tasking, consensus, payments):
        assert access.isdisjoint(service.metadata.tables), (service.__name__, access & set(service.metadata.tables))
