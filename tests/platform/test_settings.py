from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from quorum import cli
from quorum.security.principal import Role
from quorum.settings import Settings


def test_embedded_defaults_need_no_variables(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("QUORUM_HOME", str(tmp_path))
    settings = Settings()
    assert settings.database_url_for("tasking") == f"sqlite:///{tmp_path / 'tasking.db'}"
    assert settings.object_store() == (tmp_path / "objects").as_uri()
    assert settings.redis_url is None
    assert settings.service_port("payments") == 50054


def test_a_bad_variable_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUORUM_KAFKA_PARTITIONS", "zero")
    with pytest.raises(ValidationError):
        Settings()
    with pytest.raises(SystemExit, match="QUORUM_KAFKA_PARTITIONS"):
        cli._load_settings()


def test_serving_without_a_broker_says_which_variable() -> None:
    with pytest.raises(RuntimeError, match="QUORUM_KAFKA_BOOTSTRAP"):
        Settings(kafka_bootstrap=None).require_kafka()


def test_topic_prefix_must_be_a_name() -> None:
    with pytest.raises(ValidationError, match="topic_prefix"):
        Settings(topic_prefix="has space")


def test_the_roles_that_must_sign_in_with_a_second_factor_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().require_mfa_roles == frozenset()
    monkeypatch.setenv("QUORUM_REQUIRE_MFA_ROLES", " Operator,admin,, ")
    assert Settings().require_mfa_roles == {Role.OPERATOR, Role.ADMIN}
    monkeypatch.setenv("QUORUM_REQUIRE_MFA_ROLES", "operator,boss")
    with pytest.raises(SystemExit, match=r"QUORUM_REQUIRE_MFA_ROLES: .*unknown roles boss: use client, worker"):
        cli._load_settings()
