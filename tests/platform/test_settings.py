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


def test_import_roots_are_comma_separated_absolute_folders(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().import_roots == ()
    monkeypatch.setenv("QUORUM_IMPORT_ROOTS", "/data/imports, /mnt/batches,")
    assert Settings().import_roots == (Path("/data/imports"), Path("/mnt/batches"))
    monkeypatch.setenv("QUORUM_IMPORT_ROOTS", "/data/imports,relative/folder")
    with pytest.raises(SystemExit, match=r"QUORUM_IMPORT_ROOTS: .*'relative/folder' is not an absolute path"):
        cli._load_settings()


def test_an_access_database_is_in_the_home_when_it_is_a_sqlite_file_under_it(tmp_path: Path) -> None:
    home = tmp_path / "home"

    def in_home(url: str) -> bool:
        return Settings(home=home, access_database_url=url).access_database_in_home()

    assert Settings(home=home).access_database_in_home()
    assert in_home(f"sqlite:///{home / 'nested' / 'access.db'}") and in_home("sqlite://")
    assert not in_home(f"sqlite:///{tmp_path / 'access.db'}")
    assert not in_home(f"sqlite:///{home / '..' / 'access.db'}")
    assert not in_home("postgresql+psycopg://quorum@db/quorum_access")


def test_closed_paths_name_the_home_the_sqlite_databases_and_the_tls_keys(tmp_path: Path) -> None:
    home = tmp_path / "home"
    assert Settings(home=home).closed_paths() == (home,)
    shared = tmp_path / "shared" / "access.db"
    closed = Settings(home=home, access_database_url=f"sqlite:///{shared}").closed_paths()
    assert {Path(f"{shared}{suffix}") for suffix in ("", "-wal", "-shm", "-journal")} <= set(closed)
    on_postgres = "postgresql+psycopg://quorum@db/quorum_ingest"
    assert Settings(home=home, database_url=on_postgres, access_database_url=on_postgres).closed_paths() == (home,)


def test_printed_settings_mask_secrets_and_url_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QUORUM_S3_SECRET_KEY", "s3-secret-value")
    monkeypatch.setenv("QUORUM_DATABASE_URL", "postgresql+psycopg://quorum:db-password@db:5432/quorum_ingest")
    monkeypatch.setenv("QUORUM_ACCESS_DATABASE_URL", "postgresql+psycopg://quorum:access-password@db/quorum_access")
    monkeypatch.setenv("QUORUM_REDIS_URL", "redis://:redis-password@redis:6379/0")
    settings = Settings()
    for shown in (repr(settings), str(settings), f"{settings}"):
        for secret in ("s3-secret-value", "db-password", "access-password", "redis-password"):
            assert secret not in shown
        assert "postgresql+psycopg://quorum:***@db:5432/quorum_ingest" in shown
        assert "redis://:***@redis:6379/0" in shown
    # Every use still gets the real values.
    assert settings.s3_secret_key.get_secret_value() == "s3-secret-value"
    assert settings.database_url_for("ingest").endswith(":db-password@db:5432/quorum_ingest")
    assert settings.access_database().endswith(":access-password@db/quorum_access")
    assert settings.redis_url == "redis://:redis-password@redis:6379/0"


def test_the_roles_that_must_sign_in_with_a_second_factor_are_named(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().require_mfa_roles == frozenset()
    monkeypatch.setenv("QUORUM_REQUIRE_MFA_ROLES", " Operator,admin,, ")
    assert Settings().require_mfa_roles == {Role.OPERATOR, Role.ADMIN}
    monkeypatch.setenv("QUORUM_REQUIRE_MFA_ROLES", "operator,boss")
    with pytest.raises(SystemExit, match=r"QUORUM_REQUIRE_MFA_ROLES: .*unknown roles boss: use client, worker"):
        cli._load_settings()
