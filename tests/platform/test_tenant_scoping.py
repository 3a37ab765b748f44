"""Tenant scopes fail closed: a client naming a job whose owner a service cannot tell is
answered NOT_FOUND, word for word as for a made-up id, unless ingest (which knows every
job from the moment it is created) says the job is the client's. Real ingest and tasking
services on the session's broker; tasking reads other topics than ingest writes, so it
never hears of the jobs and the moment before a JobCreated arrives lasts the whole test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from quorum_testing import admin_key, deployment_settings

from quorum import errors
from quorum.broker import free_port
from quorum.db import make_engine
from quorum.rpc import channel
from quorum.security.keyhash import load_key_hasher
from quorum.security.keys import KeyStore, metadata
from quorum.security.policy import Owned
from quorum.security.principal import Principal, Role
from quorum.service import RunningService, start_service
from quorum.v1 import common_pb2, ingest_pb2, ingest_pb2_grpc, tasking_pb2, tasking_pb2_grpc
from services.ingest.bootstrap import build as build_ingest
from services.tasking import tables as tasking_tables
from services.tasking.bootstrap import build as build_tasking

ACME = Principal(key_id="k1", role=Role.CLIENT, org_id="acme", subject="client-k1")
MADE_UP = "job_00000000000000000000000000"


@pytest.mark.parametrize("owner", [None, ""])
def test_a_resource_of_unknown_or_blank_owner_is_not_found_like_a_foreign_one(owner: str | None) -> None:
    scope = Owned("job", "job_id")
    request = tasking_pb2.GetTaskingStatsRequest(job_id="job_1")
    with pytest.raises(errors.NotFound) as unknown:
        scope.apply(request, ACME, lambda kind, ident: owner)
    with pytest.raises(errors.NotFound) as foreign:
        scope.apply(request, ACME, lambda kind, ident: "globex")
    assert str(unknown.value) == str(foreign.value) == "job 'job_1' not found"
    scope.apply(request, ACME, lambda kind, ident: "acme")


class Deployment:
    """Ingest, and tasking asking it who owns what; keys for two organisations."""

    def __init__(self, home: Path, kafka_bootstrap: str) -> None:
        self.settings = deployment_settings(home, kafka_bootstrap)
        engine = make_engine(self.settings.access_database())
        metadata.create_all(engine)
        store = KeyStore(engine, load_key_hasher(self.settings))
        self.keys = {org: store.create(Role.CLIENT, org_id=org)[1] for org in ("acme", "globex")}
        engine.dispose()
        self.ingest = start_service(build_ingest, self.settings, address="127.0.0.1:0")
        self.running: list[RunningService] = [self.ingest]
        self.channels: list[grpc.Channel] = []

    def tasking(self, ingest_addr: str) -> RunningService:
        # Topics of its own: this tasking never hears of ingest's jobs.
        other_topics = deployment_settings(self.settings.home, self.settings.require_kafka()).topic_prefix
        settings = self.settings.model_copy(update={"ingest_addr": ingest_addr, "topic_prefix": other_topics})
        service = start_service(build_tasking, settings, address="127.0.0.1:0")
        self.running.append(service)
        return service

    def stub(self, service: RunningService, org: str, stub_class: Callable[[grpc.Channel], Any]) -> Any:
        ch = channel(f"127.0.0.1:{service.port}", api_key=self.keys[org])
        self.channels.append(ch)
        return stub_class(ch)

    def create_job(self, org: str) -> str:
        spec = common_pb2.JobSpec(
            name="reviews", text_classification=common_pb2.ClassificationConfig(labels=["a", "b"])
        )
        ingest = self.stub(self.ingest, org, ingest_pb2_grpc.IngestServiceStub)
        return str(ingest.CreateJob(ingest_pb2.CreateJobRequest(spec=spec), timeout=10).job_id)

    def close(self) -> None:
        for ch in self.channels:
            ch.close()
        for service in reversed(self.running):
            service.stop()


@pytest.fixture
def deployment(tmp_path: Path, kafka_bootstrap: str) -> Iterator[Deployment]:
    d = Deployment(tmp_path, kafka_bootstrap)
    try:
        yield d
    finally:
        d.close()


def stats_of(stub: Any, job_id: str) -> tuple[grpc.StatusCode, str]:
    try:
        stub.GetTaskingStats(tasking_pb2.GetTaskingStatsRequest(job_id=job_id), timeout=10)
    except grpc.RpcError as error:
        return error.code(), str(error.details()).replace(job_id, "ID")
    return grpc.StatusCode.OK, ""


def test_a_new_job_is_its_clients_at_once_and_nobody_elses(deployment: Deployment) -> None:
    tasking = deployment.tasking(f"127.0.0.1:{deployment.ingest.port}")
    acme = deployment.stub(tasking, "acme", tasking_pb2_grpc.TaskingServiceStub)
    globex = deployment.stub(tasking, "globex", tasking_pb2_grpc.TaskingServiceStub)
    job_id = deployment.create_job("acme")

    # Tasking has not heard of the job; ingest vouches for it to its owner only.
    assert stats_of(acme, job_id) == (grpc.StatusCode.OK, "")
    assert stats_of(globex, job_id) == stats_of(globex, MADE_UP) == (grpc.StatusCode.NOT_FOUND, "job 'ID' not found")
    assert stats_of(acme, MADE_UP) == (grpc.StatusCode.NOT_FOUND, "job 'ID' not found")

    # A row of tasking's own with no owner on it (from before owners were kept) is nobody's
    # until ingest says otherwise.
    engine = make_engine(deployment.settings.database_url_for("tasking"))
    with engine.begin() as conn:
        conn.execute(sa.insert(tasking_tables.jobs).values(job_id="job_ownerless", known=True, org_id=""))
    engine.dispose()
    assert stats_of(acme, "job_ownerless") == (grpc.StatusCode.NOT_FOUND, "job 'ID' not found")


def test_without_ingest_to_ask_a_client_is_told_to_retry_not_that_its_job_is_missing(
    deployment: Deployment,
) -> None:
    # Nothing listens there: ingest is down.
    tasking = deployment.tasking(f"127.0.0.1:{free_port()}")
    acme = deployment.stub(tasking, "acme", tasking_pb2_grpc.TaskingServiceStub)
    job_id = deployment.create_job("acme")
    unavailable = (grpc.StatusCode.UNAVAILABLE, "cannot tell who owns job 'ID' now; retry")
    assert stats_of(acme, job_id) == unavailable
    # Tasking cannot tell a new job from a made-up id then, and says the same of both.
    assert stats_of(acme, MADE_UP) == unavailable


def test_staff_are_not_scoped(deployment: Deployment) -> None:
    tasking = deployment.tasking(f"127.0.0.1:{free_port()}")
    with channel(f"127.0.0.1:{tasking.port}", api_key=admin_key(deployment.settings)) as ch:
        stats = tasking_pb2_grpc.TaskingServiceStub(ch).GetTaskingStats(
            tasking_pb2.GetTaskingStatsRequest(job_id=MADE_UP), timeout=10
        )
    assert stats.tasks == 0
