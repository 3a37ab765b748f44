"""Fixtures for the dashboard tests: fake services over real gRPC, and a dead address."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from dashboard_fakes import FakeQuorum, start_fake_quorum

from dashboard.data import ServiceAddrs


@pytest.fixture
def quorum() -> Iterator[FakeQuorum]:
    server, fake = start_fake_quorum()
    try:
        yield fake
    finally:
        server.stop(grace=None)


@pytest.fixture
def dead_addr() -> str:
    """An address nothing listens on: the port was free a moment ago and is closed again."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def dashboard_env(monkeypatch: pytest.MonkeyPatch, quorum: FakeQuorum) -> FakeQuorum:
    """Points every ``QUORUM_*_ADDR`` at the fake services."""
    for var in ServiceAddrs.ENV.values():
        monkeypatch.setenv(var, quorum.addr)
    return quorum
