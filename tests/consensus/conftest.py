"""Fixtures shared by the consensus tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from consensus_helpers import NOW, TOPICS

from quorum.db import make_engine
from services.consensus import tables
from services.consensus.handlers import ConsensusEvents


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[sa.Engine]:
    """Consensus's tables on SQLite and on PostgreSQL (a schema of its own)."""
    url = f"sqlite:///{tmp_path}/consensus.db" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    engine = make_engine(url)
    tables.metadata.create_all(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def handler(engine: sa.Engine) -> ConsensusEvents:
    """The consensus event handler on ``engine``, its clock at NOW."""
    events = ConsensusEvents(engine, TOPICS, lambda: None, clock=lambda: NOW)
    events.load()
    return events
