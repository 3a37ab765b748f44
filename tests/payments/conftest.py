"""Fixtures for the payments tests: a payments database on SQLite or PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from quorum.db import make_engine
from services.payments import tables
from services.payments.handlers import Ledger


@pytest.fixture(params=["sqlite", "postgres"])
def payments_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL of each backend; PostgreSQL gets a fresh schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'payments.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def engine(payments_db_url: str) -> Iterator[Engine]:
    """An engine on a payments database with its tables created."""
    eng = make_engine(payments_db_url)
    tables.metadata.create_all(eng)
    try:
        yield eng
    finally:
        eng.dispose()


@pytest.fixture
def ledger(engine: Engine) -> Ledger:
    return Ledger(engine)
