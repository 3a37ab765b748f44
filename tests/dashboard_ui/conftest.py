"""Fixtures for the dashboard tests: fake services over real gRPC behind real key
checks, their keys, and a dead address."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from dashboard_fakes import FakeQuorum, start_fake_quorum
from streamlit import config

from dashboard.data import ServiceAddrs
from quorum.security.principal import Role


@pytest.fixture
def quorum(tmp_path: Path) -> Iterator[FakeQuorum]:
    server, fake = start_fake_quorum(tmp_path / "access.db")
    try:
        yield fake
    finally:
        server.stop(grace=0)
        fake.engine.dispose()


@pytest.fixture
def quorum_requiring_totp(tmp_path: Path) -> Iterator[FakeQuorum]:
    """The fake services refusing operator and admin keys without a TOTP sign-in's session."""
    server, fake = start_fake_quorum(tmp_path / "access-mfa.db", second_factor_roles={Role.OPERATOR, Role.ADMIN})
    try:
        yield fake
    finally:
        server.stop(grace=0)
        fake.engine.dispose()


@pytest.fixture
def operator_key(quorum: FakeQuorum) -> str:
    return quorum.issue(Role.OPERATOR, subject="ops-ann")


@pytest.fixture
def dead_addr() -> str:
    """An address nothing listens on: the port was free a moment ago and is closed again."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"127.0.0.1:{sock.getsockname()[1]}"


@pytest.fixture
def dashboard_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """A QUORUM_HOME of the test's own, with no local credentials unless a test writes
    them, none of the sign-in settings of the machine running the tests, and the app
    served on loopback as ``quorum up`` and ``quorum dashboard`` serve it."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("QUORUM_HOME", str(home))
    monkeypatch.delenv("QUORUM_API_KEY", raising=False)
    monkeypatch.delenv("QUORUM_DASHBOARD_REQUIRE_TOTP", raising=False)
    monkeypatch.delenv("QUORUM_REQUIRE_MFA_ROLES", raising=False)
    served_on = config.get_option("server.address")
    config.set_option("server.address", "127.0.0.1")
    try:
        yield home
    finally:
        config.set_option("server.address", served_on)


@pytest.fixture
def dashboard_env(monkeypatch: pytest.MonkeyPatch, quorum: FakeQuorum, dashboard_home: Path) -> FakeQuorum:
    """Points every ``QUORUM_*_ADDR`` at the fake services."""
    for var in ServiceAddrs.ENV.values():
        monkeypatch.setenv(var, quorum.addr)
    return quorum
