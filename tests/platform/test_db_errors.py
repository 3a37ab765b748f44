"""A failing statement's error names the statement, never the values bound to it: those are
rows of some organisation's data (or a key's hash), and such errors reach logs."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa

from quorum.db import make_engine

metadata = sa.MetaData()
notes = sa.Table("notes", metadata, sa.Column("id", sa.Integer, primary_key=True), sa.Column("text", sa.Text))
PRIVATE = "the client's confidential review text"


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[sa.Engine]:
    url = (
        f"sqlite:///{tmp_path / 'db.sqlite'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    )
    engine = make_engine(url)
    metadata.create_all(engine)
    yield engine
    engine.dispose()


def test_a_failing_statement_does_not_carry_its_values(engine: sa.Engine) -> None:
    with engine.begin() as conn:
        conn.execute(sa.insert(notes).values(id=1, text="first"))
    with pytest.raises(sa.exc.IntegrityError) as caught, engine.begin() as conn:
        conn.execute(sa.insert(notes).values(id=1, text=PRIVATE))
    message = str(caught.value)
    assert "INSERT INTO notes" in message
    assert PRIVATE not in message and "hidden due to hide_parameters" in message
