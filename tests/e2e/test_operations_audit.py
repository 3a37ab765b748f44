"""Operating the marketplace through the five real services (in this process, on the
session's broker): a client's job runs, an operator moves its SLA, suspends and
reinstates a worker and pays the crowd out, and every one of those actions, with the
client's export of its results, reaches the audit trail, named after whoever did it.
The same through the command line."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from quorum_testing import SERVICE_STUBS, deployment_settings, wait_until

from quorum.cli import main as cli_main
from quorum.db import make_engine
from quorum.rpc import channel
from quorum.security.keyhash import load_key_hasher
from quorum.security.keys import KeyStore, metadata
from quorum.security.principal import Role
from quorum.service import RunningService, start_service
from quorum.settings import SERVICES, Settings
from quorum.v1 import (
    access_pb2,
    common_pb2,
    consensus_pb2,
    ingest_pb2,
    payments_pb2,
    tasking_pb2,
)

pytestmark = pytest.mark.slow


class Marketplace:
    def __init__(self, home: Path, kafka_bootstrap: str) -> None:
        self.settings: Settings = deployment_settings(home, kafka_bootstrap)
        engine = make_engine(self.settings.access_database())
        metadata.create_all(engine)
        store = KeyStore(engine, load_key_hasher(self.settings))
        self.keys = {
            "operator": store.create(Role.OPERATOR, subject="ops-ann")[1],
            "acme": store.create(Role.CLIENT, org_id="acme", subject="acme-ci")[1],
            "w-1": store.create(Role.WORKER, subject="w-1")[1],
            "w-2": store.create(Role.WORKER, subject="w-2")[1],
        }
        engine.dispose()
        self.running: dict[str, RunningService] = {}
        self.channels: list[grpc.Channel] = []
        for name in SERVICES:
            build = importlib.import_module(f"services.{name}.bootstrap").build
            self.running[name] = start_service(build, self.settings, address="127.0.0.1:0")
            # Every service after ingest finds it, as in a deployment.
            self.settings = self.settings.model_copy(update={f"{name}_addr": self.address(name)})

    def address(self, service: str) -> str:
        return f"127.0.0.1:{self.running[service].port}"

    def stub(self, service: str, who: str) -> Any:
        ch = channel(self.address(service), api_key=self.keys[who])
        self.channels.append(ch)
        return SERVICE_STUBS[service](ch)

    def close(self) -> None:
        for ch in self.channels:
            ch.close()
        for service in reversed(list(self.running.values())):
            service.stop()


@pytest.fixture
def market(tmp_path: Path, kafka_bootstrap: str) -> Iterator[Marketplace]:
    m = Marketplace(tmp_path, kafka_bootstrap)
    try:
        yield m
    finally:
        m.close()


def answer_everything(tasking: Any, objects: int) -> None:
    session = tasking.StartSession(tasking_pb2.StartSessionRequest(worker_id="w-1"), timeout=10).session_id
    answered = 0

    def answer_one() -> bool:
        nonlocal answered
        reply = tasking.GetNextTask(tasking_pb2.GetNextTaskRequest(session_id=session), timeout=10)
        if not reply.HasField("task"):
            return False
        answer = common_pb2.Answer(classification=common_pb2.ClassificationAnswer(label="pos"))
        request = tasking_pb2.SubmitAnswerRequest(session_id=session, lease_id=reply.task.lease_id, answer=answer)
        tasking.SubmitAnswer(request, timeout=10)
        answered += 1
        return answered == objects

    wait_until(answer_one, 60, "the worker to answer every object")


def test_operators_actions_and_exports_reach_the_audit_trail(
    market: Marketplace, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    client = {name: market.stub(name, "acme") for name in ("ingest", "tasking", "consensus")}
    operator = {name: market.stub(name, "operator") for name in ("ingest", "tasking", "payments", "access")}

    spec = common_pb2.JobSpec(
        name="reviews",
        text_classification=common_pb2.ClassificationConfig(labels=["pos", "neg"]),
        overlap=common_pb2.Overlap(min=1, max=1),
        target_confidence=0.5,
        price_per_object_cents=5,
        pay_per_answer_cents=2,
    )
    job_id = client["ingest"].CreateJob(ingest_pb2.CreateJobRequest(spec=spec), timeout=10).job_id
    # Tasking may not have heard of the job yet; it answers its client all the same.
    stats = client["tasking"].GetTaskingStats(tasking_pb2.GetTaskingStatsRequest(job_id=job_id), timeout=10)
    assert (stats.tasks, stats.answers) == (0, 0)
    manifest = b'{"id": "a", "text": "great"}\n{"id": "b", "text": "lovely"}'
    client["ingest"].ImportManifest(
        ingest_pb2.ImportManifestRequest(job_id=job_id, format=ingest_pb2.MANIFEST_FORMAT_JSONL, content=manifest),
        timeout=30,
    )
    client["ingest"].SealJob(ingest_pb2.SealJobRequest(job_id=job_id), timeout=10)
    answer_everything(market.stub("tasking", "w-1"), 2)

    quality = consensus_pb2.GetJobQualityRequest(job_id=job_id)
    wait_until(lambda: client["consensus"].GetJobQuality(quality, timeout=10).resolved == 2, 60, "both results")
    exported = list(client["consensus"].ExportResults(consensus_pb2.ExportResultsRequest(job_id=job_id), timeout=30))
    assert len(exported) == 2

    deadline = Timestamp(seconds=4_000_000_000)
    operator["ingest"].SetJobSla(ingest_pb2.SetJobSlaRequest(job_id=job_id, sla_deadline=deadline), timeout=10)
    operator["tasking"].SuspendWorker(
        tasking_pb2.SuspendWorkerRequest(worker_id="w-2", reason="bot answers"), timeout=10
    )
    w2 = market.stub("tasking", "w-2")
    session = w2.StartSession(tasking_pb2.StartSessionRequest(worker_id="w-2"), timeout=10).session_id
    with pytest.raises(grpc.RpcError) as refused:
        w2.GetNextTask(tasking_pb2.GetNextTaskRequest(session_id=session), timeout=10)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert refused.value.details() == "worker w-2 is suspended: bot answers"
    operator["tasking"].ReinstateWorker(tasking_pb2.ReinstateWorkerRequest(worker_id="w-2"), timeout=10)

    balance = payments_pb2.GetWorkerBalanceRequest(worker_id="w-1")
    wait_until(lambda: operator["payments"].GetWorkerBalance(balance, timeout=10).earned_cents >= 4, 60, "the pay")
    batch = operator["payments"].CreatePayoutBatch(
        payments_pb2.CreatePayoutBatchRequest(currency="USD", minimum_payout_cents=1), timeout=30
    )
    assert batch.total_cents >= 4

    expected = {
        "job.created",
        "results.exported",
        "job.sla_changed",
        "worker.suspended",
        "worker.reinstated",
        "payout.made",
    }

    def trail() -> dict[str, access_pb2.AuditEvent]:
        reply = operator["access"].ListAuditEvents(access_pb2.ListAuditEventsRequest(page_size=100), timeout=10)
        return {event.action: event for event in reply.events}

    wait_until(lambda: expected <= set(trail()), 60, "every action in the audit trail")
    entries = trail()
    who = {action: (e.actor, e.resource, e.org_id) for action, e in entries.items() if action in expected}
    assert who == {
        "job.created": ("client:acme-ci@acme", f"job/{job_id}", "acme"),
        "results.exported": ("client:acme-ci@acme", f"job/{job_id}", "acme"),
        "job.sla_changed": ("operator:ops-ann", f"job/{job_id}", "acme"),
        "worker.suspended": ("operator:ops-ann", "worker/w-2", ""),
        "worker.reinstated": ("operator:ops-ann", "worker/w-2", ""),
        "payout.made": ("operator:ops-ann", f"payout/{batch.batch_id}", ""),
    }
    assert operator["access"].VerifyAuditLog(access_pb2.VerifyAuditLogRequest(), timeout=30).ok

    # The command line, with the operator's key.
    monkeypatch.setenv("QUORUM_HOME", str(market.settings.home))
    monkeypatch.setenv("QUORUM_API_KEY", market.keys["operator"])
    for name in SERVICES:
        monkeypatch.setenv(f"QUORUM_{name.upper()}_ADDR", market.address(name))
    capsys.readouterr()
    assert cli_main(["workers", "suspend", "w-3", "--reason", "duplicate account"]) == 0
    assert cli_main(["workers", "list", "--suspended"]) == 0
    listed = capsys.readouterr().out.splitlines()
    assert len(listed) == 2 and listed[0].startswith("w-3") and listed[-1].endswith("duplicate account")
    assert "SUSPENDED by an operator" in listed[-1] and "operator:ops-ann" in listed[-1]
    assert cli_main(["workers", "reinstate", "w-3"]) == 0
    assert cli_main(["workers", "list", "w-3"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].split()[:2] == ["w-3", "active"]
    assert cli_main(["sla", job_id, "--deadline", "48h"]) == 0
    assert capsys.readouterr().out.startswith(f"job {job_id}: SLA deadline 20")
    assert cli_main(["sla", job_id]) == 2
    assert cli_main(["sla", job_id, "--clear"]) == 0
    assert capsys.readouterr().out.strip() == f"job {job_id}: no SLA deadline"
    assert cli_main(["audit", "list", "--action", "payout.made", "--since", "1h"]) == 0
    assert f"payout/{batch.batch_id}" in capsys.readouterr().out
