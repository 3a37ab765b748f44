"""Fixtures for real components: the Tansu broker and moto's S3 server are
started here; PostgreSQL and Redis are the servers on the machine.

Where PostgreSQL or Redis is unreachable their tests skip and say why, except
under CI=true, where a missing service fails the run.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest
from quorum_testing import b64, postgres_schema, redis_database

from quorum.broker import EmbeddedBroker, free_port
from quorum.settings import Settings


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """One Tansu broker for the session; tests isolate themselves by topic prefix."""
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=log) as broker:
        yield broker.bootstrap


@pytest.fixture
def topic_prefix() -> str:
    """A prefix of its own for each test's topics and consumer groups."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def make_settings(tmp_path: Path, kafka_bootstrap: str, topic_prefix: str) -> Callable[..., Settings]:
    """Settings for the embedded default under the test's own folder; keyword
    arguments override fields (database_url, redis_url, object_store_url, ...)."""

    def make(**overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "home": tmp_path / "quorum",
            "kafka_bootstrap": kafka_bootstrap,
            "topic_prefix": topic_prefix,
            "kafka_partitions": 3,
            "grpc_workers": 16,
        }
        values.update(overrides)
        return Settings(**values)

    return make


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL whose connections use a fresh schema of their own; dropped afterwards."""
    with postgres_schema() as url:
        yield url


@pytest.fixture
def postgres_settings(postgres_url: str) -> dict[str, Any]:
    """Settings fields for services on PostgreSQL: its URL (the access database too, so shared),
    and the API key hashing key that a shared access database refuses to start without."""
    return {"database_url": postgres_url, "api_key_hash_key": b64(os.urandom(32))}


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A database of the machine's Redis for this test (15 unless another run holds it), emptied."""
    with redis_database() as url:
        yield url


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    """moto's S3 server on a free loopback port, as host:port."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.stop()


@pytest.fixture
def s3_settings(s3_endpoint: str) -> dict[str, Any]:
    """Settings fields for a fresh bucket on the moto server, and a master key of its own."""
    return {
        "object_store_url": f"s3://bucket-{uuid.uuid4().hex[:10]}",
        "s3_endpoint": s3_endpoint,
        "s3_access_key": "testing",
        "s3_secret_key": "testing",
        "s3_secure": False,
        # An S3 store refuses to start without a configured master key.
        "master_key": b64(os.urandom(32)),
    }


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failed test that ran services under its tmp_path gets the end of each service's log in
    its report: on CI that is the only trace of what a service process did."""
    report = yield
    tmp_path = getattr(item, "funcargs", {}).get("tmp_path")
    if not report.failed or not isinstance(tmp_path, Path):
        return report
    for log in sorted(tmp_path.glob("**/logs/*.log")):
        lines = log.read_text(errors="replace").splitlines()[-60:]
        report.sections.append((f"log {log.relative_to(tmp_path)}", "\n".join(lines)))
    return report


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """Workers for ``-n auto``: one per core, at most four. Each worker starts its own broker
    and S3 server and holds one of the few spare Redis databases at a time (quorum_testing)."""
    return max(1, min(os.cpu_count() or 1, 4))


def pytest_collection_finish(session: pytest.Session) -> None:
    """Starts mypy as soon as its test is known to run, so it checks the tree beside the suite.
    Not in a parallel worker: every worker collects every test but runs only some, and the
    one that gets the test starts mypy then."""
    from test_code_quality import MYPY_RUN, start_mypy

    if os.environ.get("PYTEST_XDIST_WORKER"):
        return
    if any(item.name == "test_mypy_is_clean" for item in session.items):
        session.config.stash[MYPY_RUN] = start_mypy()


def pytest_sessionfinish(session: pytest.Session) -> None:
    from test_code_quality import MYPY_RUN

    mypy = session.config.stash.get(MYPY_RUN, None)
    if mypy is not None and mypy.poll() is None:
        mypy.kill()  # the run stopped before its test
        mypy.wait()
