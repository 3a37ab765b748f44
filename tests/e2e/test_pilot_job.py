"""A small pilot job through all four services, each in its own process, over
gRPC and Kafka: the way a client, a crowd of workers and an operator use it.

Runs twice: on the embedded default (SQLite, local disk, in-process Redis) and
on the distributed configuration (PostgreSQL, the machine's Redis, S3).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from PIL import Image
from quorum_testing import REDIS_URL, postgres_schema, redis_database, wait_until

from quorum.broker import free_port
from quorum.client import QuorumClient, UploadFile, jsonl, label_of
from quorum.crypto import new_key_text
from quorum.demo.crowd import SimulatedCrowd
from quorum.demo.dataset import DemoDataset, generate
from quorum.settings import SERVICES
from quorum.stack import LocalStack
from quorum.v1 import common_pb2, consensus_pb2, ingest_pb2

pytestmark = pytest.mark.slow

PRICE, PAY, ALLOWANCE = 10, 2, 5


@dataclass
class PilotRun:
    stack: LocalStack
    client: QuorumClient
    dataset: DemoDataset
    image_job: str
    text_job: str
    upload: ingest_pb2.UploadSummary
    crowd_answers: int
    worker_keys: dict[str, str]


def spec(labels: tuple[str, ...], images: bool) -> common_pb2.JobSpec:
    config = common_pb2.ClassificationConfig(labels=list(labels))
    job = common_pb2.JobSpec(
        name="e2e",
        client_id="acme",
        overlap=common_pb2.Overlap(min=3, max=5),
        target_confidence=0.9,
        gold_share=0.1,
        price_per_object_cents=PRICE,
        pay_per_answer_cents=PAY,
        pilot=True,
        pilot_allowance=ALLOWANCE,
        lease_seconds=30,
    )
    (job.image_classification if images else job.text_classification).CopyFrom(config)
    return job


def corrupt_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(buffer, format="PNG")
    return buffer.getvalue()[:60]


@pytest.fixture(scope="module", params=["embedded", "distributed"])
def pilot(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[PilotRun]:
    home = tmp_path_factory.mktemp(f"stack-{request.param}")
    extra_env: dict[str, str] = {}
    database_urls: dict[Any, str] = {}
    with contextlib.ExitStack() as resources:
        if request.param == "distributed":
            extra_env, database_urls = distributed_configuration(resources)
        yield from run_pilot(LocalStack(home=home, extra_env=extra_env, database_urls=database_urls))


def distributed_configuration(resources: contextlib.ExitStack) -> tuple[dict[str, str], dict[Any, str]]:
    """PostgreSQL (a schema per service), the machine's Redis, an S3 endpoint, a master key and
    the API key hashing key that every service checking keys in a shared database needs."""
    from moto.server import ThreadedMotoServer

    database_urls = {name: resources.enter_context(postgres_schema()) for name in SERVICES}
    redis_url = resources.enter_context(redis_database(REDIS_URL.rsplit("/", 1)[0] + "/14"))
    port = free_port()
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    s3.start()
    resources.callback(s3.stop)
    env = {
        "QUORUM_REDIS_URL": redis_url,
        "QUORUM_OBJECT_STORE_URL": f"s3://pilot-{uuid.uuid4().hex[:8]}",
        "QUORUM_S3_ENDPOINT": f"127.0.0.1:{port}",
        "QUORUM_S3_ACCESS_KEY": "testing",
        "QUORUM_S3_SECRET_KEY": "testing",
        "QUORUM_MASTER_KEY": new_key_text(),
        "QUORUM_API_KEY_HASH_KEY": new_key_text(),
    }
    return env, database_urls


def run_pilot(stack: LocalStack) -> Iterator[PilotRun]:
    stack.start()
    client = QuorumClient(stack.addresses, api_key=stack.api_key)
    try:
        dataset = generate(30, seed=11)
        image_job = client.ingest.CreateJob(ingest_pb2.CreateJobRequest(spec=spec(dataset.image_labels, True))).job_id
        text_job = client.ingest.CreateJob(ingest_pb2.CreateJobRequest(spec=spec(dataset.text_labels, False))).job_id
        files = [UploadFile(o.name, o.content, o.label if o.gold else "") for o in dataset.images + dataset.gold_images]
        # Garbage in the same stream: rejected one by one while the good files go through.
        files += [
            UploadFile("broken.png", corrupt_png()),
            UploadFile("empty.png", b""),
            UploadFile("again.png", dataset.images[0].content),
        ]
        upload = client.upload(image_job, files)
        lines = [
            {"id": o.name, "text": o.text, **({"gold_label": o.label} if o.gold else {})}
            for o in dataset.texts + dataset.gold_texts
        ]
        client.import_manifest(text_job, jsonl(lines), ingest_pb2.MANIFEST_FORMAT_JSONL)
        for job_id in (image_job, text_job):
            client.ingest.SealJob(ingest_pb2.SealJobRequest(job_id=job_id))

        objects = len(dataset.images) + len(dataset.texts)
        done = threading.Event()

        def resolved() -> int:
            return sum(client.quality(j).resolved for j in (image_job, text_job))

        crowd = SimulatedCrowd(stack.address("tasking"), dataset.truth_by_key(), 20, seed=5, max_retry_ms=200)
        worker_keys = client.issue_worker_keys(p.worker_id for p in crowd.profiles)
        crowd.authorize(worker_keys)
        outcome: list[Any] = []
        worker = threading.Thread(target=lambda: outcome.append(crowd.run(done.is_set, 240)))
        worker.start()
        try:
            wait_until(lambda: resolved() >= objects, 240, "every object to resolve")
        finally:
            done.set()
            worker.join()
        wait_until(lambda: sum(client.money(j).objects_billed for j in (image_job, text_job)) >= objects, 60, "billing")
        answers = outcome[0].answers
        # Pay trails answers by one Kafka hop; an answer is settled (paid or, from a spammer or
        # rejected by consensus, unpaid) once its task is resolved.
        wait_until(
            lambda: (
                sum(client.money(j).answers_paid + client.money(j).answers_unpaid for j in (image_job, text_job))
                >= answers
            ),
            60,
            "worker pay",
        )
        yield PilotRun(stack, client, dataset, image_job, text_job, upload, answers, worker_keys)
    finally:
        client.close()
        stack.stop()


def test_no_secret_reaches_a_log(pilot: PilotRun) -> None:
    """Every process's log after a whole job, wrong keys included: no API key secret, no
    master key and no API key hashing key appears in it."""
    from quorum.v1 import access_pb2

    stack = pilot.stack
    forged = stack.api_key[:-6] + "AAAAAA"
    with QuorumClient(stack.addresses, api_key=forged) as intruder, pytest.raises(grpc.RpcError) as refused:
        intruder.access.SignIn(access_pb2.SignInRequest(), timeout=10)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert forged.split("_", 2)[2] not in str(refused.value.details())
    secrets = [key.split("_", 2)[2] for key in (stack.api_key, forged, *pilot.worker_keys.values())]
    key_file = stack.home / "secrets" / "master.key"
    master = stack.extra_env["QUORUM_MASTER_KEY"].encode() if not key_file.exists() else key_file.read_bytes()
    hash_file = stack.home / "secrets" / "api-key-hash.key"
    hashing = stack.extra_env.get("QUORUM_API_KEY_HASH_KEY", "").encode() or hash_file.read_bytes()
    logs = {path.name: path.read_bytes() for path in stack.log_dir.glob("*.log")}
    assert {"ingest.log", "tasking.log", "consensus.log", "payments.log", "access.log"} <= logs.keys()
    for name, text in logs.items():
        assert master.strip() not in text, name
        assert hashing.strip() not in text, name
        for secret in secrets:
            assert secret.encode() not in text, name


def test_service_logs_hold_the_services_own_lines(pilot: PilotRun) -> None:
    """kafka-python's connection chatter stays out of the services' logs (it opened and
    closed a connection every 2 s, 99% of the lines); its warnings still get in."""
    for name in ("ingest", "tasking", "consensus", "payments", "access"):
        text = (pilot.stack.log_dir / f"{name}.log").read_text()
        assert f"{name} INFO quorum: {name} serving on" in text, name
        assert not re.search(r" INFO kafka\.", text), name


def test_the_demo_counts_a_job_payments_has_not_heard_of_as_unbilled(pilot: PilotRun) -> None:
    """Payments answers NOT_FOUND for a job until its JobCreated arrives; the demo's wait for
    billing must keep waiting then, not fail (it did, when labelling finished first)."""
    from quorum.demo.run import _Progress

    client = pilot.client
    with pytest.raises(grpc.RpcError) as unknown:
        client.money("job_not_heard_of")
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    progress = _Progress(client, [pilot.text_job, "job_not_heard_of"], objects=1)
    assert progress.billed() == client.money(pilot.text_job).objects_billed > 0


def test_bad_files_are_rejected_one_by_one(pilot: PilotRun) -> None:
    by_name = {item.name: item for item in pilot.upload.items}
    assert pilot.upload.accepted == len(pilot.dataset.images) + len(pilot.dataset.gold_images)
    assert by_name["broken.png"].status == ingest_pb2.ITEM_STATUS_REJECTED
    assert by_name["broken.png"].reason
    assert by_name["empty.png"].status == ingest_pb2.ITEM_STATUS_REJECTED
    assert "empty" in by_name["empty.png"].reason
    assert by_name["again.png"].status == ingest_pb2.ITEM_STATUS_DUPLICATE


def test_every_object_gets_one_label_from_distinct_workers(pilot: PilotRun) -> None:
    truth = {o.name: o.label for o in pilot.dataset.all_objects()}
    for job_id, objects in ((pilot.image_job, pilot.dataset.images), (pilot.text_job, pilot.dataset.texts)):
        results = list(pilot.client.results(job_id))
        assert sorted(r.object_name for r in results) == sorted(o.name for o in objects)
        correct = 0
        for result in results:
            workers = [a.worker_id for a in result.answers]
            assert len(workers) == len(set(workers)), "a worker answered one task twice"
            assert 3 <= len(workers) <= 5
            assert 0.0 < result.confidence <= 1.0
            assert result.low_confidence or result.confidence >= 0.9
            correct += label_of(result.label) == truth[result.object_name]
        # 15% spammers and workers as poor as 55%: consensus still gets most right.
        assert correct / len(results) >= 0.8


def test_gold_objects_are_not_results_but_score_workers(pilot: PilotRun) -> None:
    gold_names = {o.name for o in pilot.dataset.gold_images + pilot.dataset.gold_texts}
    exported = {r.object_name for j in (pilot.image_job, pilot.text_job) for r in pilot.client.results(j)}
    assert not exported & gold_names
    workers = pilot.client.consensus.ListWorkers(consensus_pb2.ListWorkersRequest()).workers
    assert sum(w.gold_answers for w in workers) > 0


def test_invoice_bills_labeled_objects_minus_the_pilot_allowance(pilot: PilotRun) -> None:
    for job_id, objects in ((pilot.image_job, pilot.dataset.images), (pilot.text_job, pilot.dataset.texts)):
        invoice = pilot.client.invoice(job_id)
        assert invoice.objects_labeled == len(objects)
        assert invoice.pilot_objects == ALLOWANCE
        assert invoice.total_cents == (len(objects) - ALLOWANCE) * PRICE
        money = pilot.client.money(job_id)
        assert money.billed_cents == invoice.total_cents
        assert money.pilot_subsidy_cents == ALLOWANCE * PRICE


def test_workers_are_paid_once_per_accepted_answer_and_the_ledger_balances(pilot: PilotRun) -> None:
    money = [pilot.client.money(j) for j in (pilot.image_job, pilot.text_job)]
    assert sum(m.answers_paid + m.answers_unpaid for m in money) == pilot.crowd_answers
    # 15% spammers: some answers are settled unpaid, with a reason on the worker's statement.
    assert sum(m.answers_unpaid for m in money) > 0
    assert sum(m.paid_cents for m in money) == sum(m.answers_paid for m in money) * PAY
    verification = pilot.client.verify_ledger()
    assert verification.balanced, list(verification.problems)
    assert not verification.problems
    assert verification.debits_cents == verification.credits_cents > 0


def test_cli_reads_status_results_and_invoice(pilot: PilotRun, tmp_path: Path) -> None:
    env = {**os.environ, **{f"QUORUM_{n.upper()}_ADDR": pilot.stack.address(n) for n in SERVICES}}
    # A user of a stack elsewhere: the key comes from the environment, not from QUORUM_HOME.
    env["QUORUM_API_KEY"] = pilot.stack.api_key

    def quorum(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "quorum.cli", *args], env=env, capture_output=True, text=True, timeout=60
        )

    out = tmp_path / "labels.jsonl"
    result = quorum("results", pilot.text_job, "--out", str(out))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(records) == len(pilot.dataset.texts)
    assert {"object", "label", "confidence", "answers"} <= set(records[0])

    invoice = quorum("invoice", pilot.text_job, "--format", "json")
    assert invoice.returncode == 0, invoice.stderr
    assert int(json.loads(invoice.stdout)["totalCents"]) == (len(pilot.dataset.texts) - ALLOWANCE) * PRICE

    status = quorum("status", pilot.image_job)
    assert status.returncode == 0, status.stderr
    assert f"resolved  {len(pilot.dataset.images)}" in status.stdout

    missing = quorum("status", "job_does_not_exist")
    assert missing.returncode == 1
    assert "NOT_FOUND" in missing.stderr

    csv_invoice = quorum("invoice", pilot.text_job, "--format", "csv")
    assert csv_invoice.returncode == 0, csv_invoice.stderr
    assert len(csv_invoice.stdout.strip().splitlines()) >= 2
    pdf = tmp_path / "invoice.pdf"
    pdf_invoice = quorum("invoice", pilot.text_job, "--format", "pdf", "--out", str(pdf))
    assert pdf_invoice.returncode == 0, pdf_invoice.stderr
    assert pdf.read_bytes().startswith(b"%PDF-")

    import datetime as dt

    today = dt.datetime.now(dt.UTC).date()
    period = quorum(
        "period-invoice", "acme", "--from", str(today), "--to", str(today + dt.timedelta(days=1)), "--format", "json"
    )
    assert period.returncode == 0, period.stderr
    billed = sum(pilot.client.invoice(j).total_cents for j in (pilot.image_job, pilot.text_job))
    assert int(json.loads(period.stdout)["totalCents"]) == billed

    verify = quorum("ledger", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "ledger balanced" in verify.stdout


def test_dashboard_shows_the_real_services(pilot: PilotRun, monkeypatch: pytest.MonkeyPatch) -> None:
    from streamlit.testing.v1 import AppTest

    from dashboard.launch import APP_PATH

    for name in SERVICES:
        monkeypatch.setenv(f"QUORUM_{name.upper()}_ADDR", pilot.stack.address(name))
    monkeypatch.setenv("QUORUM_API_KEY", pilot.stack.api_key)
    # Served on loopback, as `quorum up` serves it, the dashboard signs the key in by itself.
    from streamlit import config

    served_on = config.get_option("server.address")
    config.set_option("server.address", "127.0.0.1")
    try:
        at = AppTest.from_file(str(APP_PATH), default_timeout=30)
        at.run()
    finally:
        config.set_option("server.address", served_on)
    assert not at.exception, [e.value for e in at.exception]
    assert not at.warning, [w.value for w in at.warning]
    shown = {m.label: m.value for m in at.metric}
    assert shown["Answers"] == f"{pilot.crowd_answers:,}"
    assert shown["Backlog"] == "0"
    billed = sum(pilot.client.money(j).billed_cents for j in (pilot.image_job, pilot.text_job))
    assert shown["Billed"] == f"${billed // 100}.{billed % 100:02d}"
    objects = len(pilot.dataset.images) + len(pilot.dataset.texts)
    assert f"{objects} of {objects} objects resolved" in at.get("progress")[0].proto.text
    workers = at.dataframe[0].value
    assert len(workers) == 20
