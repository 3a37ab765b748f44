"""API keys stored as a keyed hash, checked for real by every service: the five services on
the session's broker, each with a SQLite database of its own, all checking keys in one
shared PostgreSQL access database, as a distributed deployment does."""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from quorum_testing import admin_key, b64, deployment_settings, insert_key_row, postgres_schema

from quorum.cli import main as cli_main
from quorum.client import QuorumClient
from quorum.crypto import KeyConfigError, key_id_of
from quorum.db import make_engine
from quorum.security.keyhash import KeyHasher, legacy_scrypt_hash
from quorum.security.keys import KeyStore
from quorum.security.principal import Role
from quorum.service import RunningService, start_service
from quorum.settings import SERVICES, ServiceName, Settings
from quorum.v1 import access_pb2, consensus_pb2, ingest_pb2, payments_pb2, tasking_pb2

HASH_KEY = os.urandom(32)
PREVIOUS_HASH_KEY = os.urandom(32)
SHARED_ACCESS_DATABASE = "postgresql+psycopg://quorum@127.0.0.1:1/quorum_access"


def build_of(service: ServiceName) -> Callable[..., Any]:
    import importlib

    return importlib.import_module(f"services.{service}.bootstrap").build


@dataclass
class Deployment:
    settings: Settings
    addresses: dict[ServiceName, str]
    access_engine: sa.Engine

    def codes(self, key: str) -> dict[ServiceName, grpc.StatusCode]:
        """The status of one read call that an admin key may make, on each service."""
        calls: dict[ServiceName, Callable[[QuorumClient], object]] = {
            "ingest": lambda c: c.ingest.ListJobs(ingest_pb2.ListJobsRequest(), timeout=10),
            "tasking": lambda c: c.tasking.GetTaskingStats(tasking_pb2.GetTaskingStatsRequest(), timeout=10),
            "consensus": lambda c: c.consensus.ListWorkers(consensus_pb2.ListWorkersRequest(), timeout=10),
            "payments": lambda c: c.payments.GetMoneySummary(payments_pb2.GetMoneySummaryRequest(), timeout=10),
            "access": lambda c: c.access.ListKeys(access_pb2.ListKeysRequest(), timeout=10),
        }
        codes: dict[ServiceName, grpc.StatusCode] = {}
        with QuorumClient(self.addresses, api_key=key) as client:
            for service, call in calls.items():
                try:
                    call(client)
                    codes[service] = grpc.StatusCode.OK
                except grpc.RpcError as error:
                    codes[service] = error.code()
        return codes


@pytest.fixture(scope="module")
def deployment(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    with postgres_schema() as access_url:
        settings = deployment_settings(
            tmp_path_factory.mktemp("keyhash"),
            kafka_bootstrap,
            access_database_url=access_url,
            api_key_hash_key=b64(HASH_KEY),
            previous_api_key_hash_keys=b64(PREVIOUS_HASH_KEY),
            # A shared access database holds sealed TOTP secrets: access needs the master key.
            master_key=b64(os.urandom(32)),
        )
        running: dict[ServiceName, RunningService] = {}
        access_engine = make_engine(access_url)
        try:
            for service in SERVICES:
                running[service] = start_service(build_of(service), settings, address="127.0.0.1:0")
            addresses = {service: f"127.0.0.1:{r.port}" for service, r in running.items()}
            yield Deployment(settings, addresses, access_engine)
        finally:
            for r in running.values():
                r.stop()
            access_engine.dispose()


def test_every_service_checks_keyed_scrypt_and_previous_key_hashes(deployment: Deployment) -> None:
    admin = admin_key(deployment.settings)
    with QuorumClient(deployment.addresses, api_key=admin) as client:
        issued = client.create_key(access_pb2.ROLE_ADMIN, name="issued by the access service")
    legacy_id, legacy_secret = secrets.token_hex(8), secrets.token_urlsafe(32)
    insert_key_row(deployment.access_engine, legacy_id, legacy_scrypt_hash(legacy_secret), Role.ADMIN)
    legacy = f"qk_{legacy_id}_{legacy_secret}"
    _, previous = KeyStore(deployment.access_engine, KeyHasher(PREVIOUS_HASH_KEY)).create(Role.ADMIN)
    everywhere_ok = dict.fromkeys(SERVICES, grpc.StatusCode.OK)
    everywhere_refused = dict.fromkeys(SERVICES, grpc.StatusCode.UNAUTHENTICATED)
    for key in (admin, issued, legacy, previous):
        assert deployment.codes(key) == everywhere_ok
        assert deployment.codes(key[:-4] + ("AAAA" if not key.endswith("AAAA") else "BBBB")) == everywhere_refused
    # The scrypt row and the one under the previous hashing key were re-hashed when first checked.
    store = KeyStore(deployment.access_engine, KeyHasher(HASH_KEY))
    assert store.hashes_by_hashing_key() == {key_id_of(HASH_KEY): 4}


def test_a_key_under_a_hashing_key_no_service_holds_is_refused_everywhere(deployment: Deployment) -> None:
    _, orphan = KeyStore(deployment.access_engine, KeyHasher(os.urandom(32))).create(Role.ADMIN)
    assert deployment.codes(orphan) == dict.fromkeys(SERVICES, grpc.StatusCode.UNAUTHENTICATED)


@pytest.mark.parametrize("service", SERVICES)
def test_a_service_without_the_hashing_key_refuses_to_start(
    service: ServiceName, tmp_path: Path, kafka_bootstrap: str
) -> None:
    settings = Settings(home=tmp_path, kafka_bootstrap=kafka_bootstrap, access_database_url=SHARED_ACCESS_DATABASE)
    with pytest.raises(KeyConfigError, match="QUORUM_API_KEY_HASH_KEY is not set, and the access database is shared"):
        start_service(build_of(service), settings, address="127.0.0.1:0")
    assert not (tmp_path / "secrets").exists()


def test_quorum_serve_names_a_missing_or_malformed_hashing_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("QUORUM_HOME", str(tmp_path))
    monkeypatch.setenv("QUORUM_KAFKA_BOOTSTRAP", "127.0.0.1:1")
    monkeypatch.setenv("QUORUM_ACCESS_DATABASE_URL", SHARED_ACCESS_DATABASE)
    monkeypatch.delenv("QUORUM_API_KEY_HASH_KEY", raising=False)
    assert cli_main(["serve", "payments"]) == 1
    assert "quorum serve payments: QUORUM_API_KEY_HASH_KEY is not set" in capsys.readouterr().err
    malformed = b64(os.urandom(20))
    monkeypatch.setenv("QUORUM_API_KEY_HASH_KEY", malformed)
    assert cli_main(["serve", "consensus"]) == 1
    err = capsys.readouterr().err
    assert "quorum serve consensus: QUORUM_API_KEY_HASH_KEY: decodes to 20 bytes" in err and malformed not in err
