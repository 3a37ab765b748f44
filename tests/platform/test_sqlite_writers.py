"""SQLite engines: the process's writers take turns, and a turn is given back however
the transaction ends."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from quorum.db import make_engine, reading

metadata = sa.MetaData()
counter = sa.Table("counter", metadata, sa.Column("n", sa.Integer, nullable=False))


def test_concurrent_writers_all_commit_and_readers_see_every_write(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    metadata.create_all(engine)
    with engine.begin() as conn:
        conn.execute(sa.insert(counter).values(n=0))
    failures: list[BaseException] = []

    def write() -> None:
        try:
            for _ in range(25):
                with engine.begin() as conn:
                    n = conn.execute(sa.select(counter.c.n)).scalar_one()
                    conn.execute(sa.update(counter).values(n=n + 1))
        except BaseException as exc:  # reported by the assertion below
            failures.append(exc)

    threads = [threading.Thread(target=write) for _ in range(24)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    with reading(engine) as conn:
        # Read-then-write under the turn: no increment is lost.
        assert conn.execute(sa.select(counter.c.n)).scalar_one() == 24 * 25
    engine.dispose()


def test_a_failed_transaction_gives_its_turn_back(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    metadata.create_all(engine)
    with pytest.raises(RuntimeError), engine.begin() as conn:
        conn.execute(sa.insert(counter).values(n=1))
        raise RuntimeError("the handler failed")
    done = threading.Event()

    def other_writer() -> None:
        with engine.begin() as conn:
            conn.execute(sa.insert(counter).values(n=2))
        done.set()

    thread = threading.Thread(target=other_writer, daemon=True)
    thread.start()
    thread.join(timeout=20)
    assert done.is_set(), "the next writer never got its turn"
    with reading(engine) as conn:
        assert conn.execute(sa.select(counter.c.n)).scalars().all() == [2]
    engine.dispose()
