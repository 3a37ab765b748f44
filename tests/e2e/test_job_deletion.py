"""A client deletes a labeled job on the embedded stack (each service its own process):
its media leaves the object store folder, its results are gone, and the ledger keeps
its entries and still verifies."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from quorum_testing import wait_until

from quorum.client import QuorumClient, UploadFile
from quorum.demo.crowd import SimulatedCrowd
from quorum.demo.dataset import generate
from quorum.objectstore import content_key
from quorum.settings import SERVICES
from quorum.stack import LocalStack
from quorum.v1 import common_pb2, consensus_pb2, ingest_pb2

pytestmark = pytest.mark.slow

PRICE, PAY = 10, 2


def image_spec(labels: tuple[str, ...], client_id: str) -> common_pb2.JobSpec:
    return common_pb2.JobSpec(
        name="holiday photos",
        client_id=client_id,
        instructions="What is in the picture?",
        image_classification=common_pb2.ClassificationConfig(labels=list(labels)),
        overlap=common_pb2.Overlap(min=3, max=5),
        target_confidence=0.9,
        gold_share=0.1,
        price_per_object_cents=PRICE,
        pay_per_answer_cents=PAY,
        lease_seconds=30,
    )


def not_found(call: Callable[[], Any]) -> bool:
    try:
        call()
    except grpc.RpcError as error:
        if error.code() == grpc.StatusCode.NOT_FOUND:
            return True
        raise
    return False


def test_deleting_a_labeled_job_purges_its_media_and_results_and_keeps_the_ledger(tmp_path: Path) -> None:
    stack = LocalStack(home=tmp_path / "stack")
    stack.start()
    client = QuorumClient(stack.addresses, api_key=stack.api_key)
    try:
        dataset = generate(12, seed=3, kind="image")
        job_id = client.ingest.CreateJob(
            ingest_pb2.CreateJobRequest(spec=image_spec(dataset.image_labels, "acme"))
        ).job_id
        objects = dataset.images + dataset.gold_images
        upload = client.upload(job_id, [UploadFile(o.name, o.content, o.label if o.gold else "") for o in objects])
        assert upload.accepted == len(objects)
        # Another client's job holds the same bytes as one of these images.
        shared = dataset.images[0]
        other_job = client.ingest.CreateJob(
            ingest_pb2.CreateJobRequest(spec=image_spec(dataset.image_labels, "globex"))
        ).job_id
        assert client.upload(other_job, [UploadFile("mine.png", shared.content)]).accepted == 1
        client.ingest.SealJob(ingest_pb2.SealJobRequest(job_id=job_id))

        done = threading.Event()
        crowd = SimulatedCrowd(
            stack.address("tasking"), dataset.truth_by_key(), 12, seed=5, job_id=job_id, max_retry_ms=200
        )
        crowd.authorize(client.issue_worker_keys(p.worker_id for p in crowd.profiles))
        outcome: list[Any] = []
        worker = threading.Thread(target=lambda: outcome.append(crowd.run(done.is_set, 240)))
        worker.start()
        try:
            wait_until(lambda: client.quality(job_id).resolved >= len(dataset.images), 240, "every object to resolve")
        finally:
            done.set()
            worker.join()
        wait_until(lambda: client.money(job_id).objects_billed >= len(dataset.images), 60, "billing")
        results = list(client.results(job_id))
        assert len(results) == len(dataset.images)
        invoice_before = client.invoice(job_id).total_cents
        assert invoice_before == len(dataset.images) * PRICE

        store = stack.home / "objects"
        files = {o.name: store / content_key(o.content) for o in objects}
        assert all(path.is_file() for path in files.values())

        deleted = client.ingest.DeleteJob(ingest_pb2.DeleteJobRequest(job_id=job_id), timeout=60)

        assert deleted.items_deleted == len(objects)
        assert deleted.objects_deleted == len(objects) - 1
        assert [name for name, path in files.items() if path.exists()] == [shared.name]
        job = client.job(job_id)
        assert job.state == ingest_pb2.JOB_STATE_DELETED and job.spec.name == ""
        again = client.ingest.DeleteJob(ingest_pb2.DeleteJobRequest(job_id=job_id), timeout=60)
        assert (again.items_deleted, again.objects_deleted) == (0, 0)

        # The other services purge when JobDeleted reaches them.
        first = results[0].task_id
        wait_until(
            lambda: not_found(lambda: client.consensus.GetResult(consensus_pb2.GetResultRequest(task_id=first))),
            60,
            "the results to be purged",
        )
        assert not_found(lambda: list(client.results(job_id)))
        wait_until(lambda: client.tasking_stats(job_id).tasks == 0, 60, "the tasks to be dropped")
        assert client.job(other_job).objects == 1

        verification = client.verify_ledger()
        assert verification.balanced and not verification.problems, list(verification.problems)
        assert client.invoice(job_id).total_cents == invoice_before
        # The CLI finds the local user's key in the stack's home, as after `quorum up`.
        env = {
            **os.environ,
            **{f"QUORUM_{n.upper()}_ADDR": stack.address(n) for n in SERVICES},
            "QUORUM_HOME": str(stack.home),
        }
        env.pop("QUORUM_API_KEY", None)
        verify = subprocess.run(
            [sys.executable, "-m", "quorum.cli", "ledger", "verify"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert verify.returncode == 0, verify.stdout + verify.stderr
        assert "ledger balanced" in verify.stdout
    finally:
        client.close()
        stack.stop()
