"""The command line as a user runs it: `quorum up`, `quorum submit`, `quorum demo`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from quorum.broker import free_port, wait_for_port
from quorum.demo.dataset import generate, write_image_folder, write_text_jsonl
from quorum.rpc import wait_healthy
from quorum.settings import SERVICES

pytestmark = pytest.mark.slow

PLAINTEXT_NOTICE = (
    "serving plaintext gRPC on loopback 127.0.0.1 only; set QUORUM_TLS_CERT_FILE/QUORUM_TLS_KEY_FILE for TLS"
)


def quorum_env(home: Path, ports: dict[str, int]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUORUM_")}
    env["QUORUM_HOME"] = str(home)
    for name, port in ports.items():
        env[f"QUORUM_{name.upper()}_ADDR"] = f"127.0.0.1:{port}"
    return env


def test_up_serves_everything_and_stops_on_sigterm(tmp_path: Path) -> None:
    ports = {name: free_port() for name in SERVICES}
    env = quorum_env(tmp_path / "home", ports)
    env["QUORUM_DASHBOARD_PORT"] = str(free_port())
    up = subprocess.Popen(
        [sys.executable, "-m", "quorum.cli", "up"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        lines = []
        assert up.stdout is not None
        while not lines or "Ctrl-C" not in lines[-1]:
            line = up.stdout.readline()
            assert line, "quorum up exited early:\n" + "".join(lines)
            lines.append(line)
        banner = "".join(lines)
        for name, port in ports.items():
            assert f"127.0.0.1:{port}" in banner, name
            wait_healthy(f"127.0.0.1:{port}", timeout=5)
        assert f"http://127.0.0.1:{env['QUORUM_DASHBOARD_PORT']}" in banner
        # The embedded stack serves plaintext, so it says so where the user looks, not only in logs.
        assert PLAINTEXT_NOTICE in banner
        assert wait_for_port("127.0.0.1", int(env["QUORUM_DASHBOARD_PORT"]), 5)
        assert (tmp_path / "home" / "ingest.db").exists()
    finally:
        up.send_signal(signal.SIGTERM)
        code = up.wait(60)
    assert code == 0
    deadline = time.monotonic() + 10
    while any(wait_for_port("127.0.0.1", p, 0.1) for p in ports.values()):
        assert time.monotonic() < deadline, "a service outlived quorum up"


def test_up_names_the_port_that_is_taken(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = busy.getsockname()[1]
        ports = {name: free_port() for name in SERVICES}
        ports["consensus"] = taken
        result = subprocess.run(
            [sys.executable, "-m", "quorum.cli", "up", "--no-dashboard"],
            env=quorum_env(tmp_path, ports),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"port {taken} for consensus is in use" in result.stderr
    assert "QUORUM_CONSENSUS_ADDR" in result.stderr


def test_submit_a_folder_and_a_manifest_then_read_the_results(tmp_path: Path) -> None:
    from quorum.client import QuorumClient
    from quorum.stack import LocalStack
    from quorum.v1 import access_pb2

    dataset = generate(8, seed=2)
    images = tmp_path / "images"
    write_image_folder(dataset.images, images)
    (images / "notes.txt").write_text("not an image, and not picked up")
    (images / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    texts = write_text_jsonl(dataset.texts + dataset.gold_texts, tmp_path / "texts.jsonl")

    with LocalStack(home=tmp_path / "home") as stack, QuorumClient(stack.addresses, api_key=stack.api_key) as client:
        env = quorum_env(tmp_path / "home", {n: int(a.rsplit(":", 1)[1]) for n, a in stack.addresses.items()})

        def quorum(*args: str) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                [sys.executable, "-m", "quorum.cli", *args], env=env, capture_output=True, text=True, timeout=120
            )

        submitted = quorum("submit", str(images), "--labels", ",".join(dataset.image_labels), "--pilot")
        assert submitted.returncode == 0, submitted.stderr
        image_job = submitted.stdout.strip()
        assert "rejected: broken.png" in submitted.stderr
        assert "accepted 4, duplicates 0, rejected 1" in submitted.stderr
        job = client.job(image_job)
        assert (job.objects, job.rejected, job.spec.pilot) == (4, 1, True)
        # The embedded stack's local key submits for the local organisation.
        assert job.spec.client_id == "local"

        submitted = quorum("submit", str(texts), "--labels", ",".join(dataset.text_labels), "--price-cents", "7")
        assert submitted.returncode == 0, submitted.stderr
        job = client.job(submitted.stdout.strip())
        assert (job.objects, job.gold_objects) == (len(dataset.texts), len(dataset.gold_texts))
        assert job.spec.price_per_object_cents == 7

        bad = quorum("submit", str(texts), "--labels", "a,a")
        assert bad.returncode == 1
        assert "INVALID_ARGUMENT" in bad.stderr and "labels" in bad.stderr

        # Without --client: a client key submits for its own organisation, and a key of
        # another role (here the local admin's, set as QUORUM_API_KEY) is asked to name one.
        acme = client.access.CreateKey(access_pb2.CreateKeyRequest(role=access_pb2.ROLE_CLIENT, org_id="acme"))
        env["QUORUM_API_KEY"] = acme.secret
        submitted = quorum("submit", str(texts), "--labels", ",".join(dataset.text_labels))
        assert submitted.returncode == 0, submitted.stderr
        assert client.job(submitted.stdout.strip()).spec.client_id == "acme"
        env["QUORUM_API_KEY"] = stack.api_key
        unnamed = quorum("submit", str(texts), "--labels", ",".join(dataset.text_labels))
        assert unnamed.returncode == 1
        assert "INVALID_ARGUMENT" in unnamed.stderr and "spec.client_id: required" in unnamed.stderr

        # The local key that `quorum up` made without the access service is in the audit trail too.
        created = client.access.ListAuditEvents(access_pb2.ListAuditEventsRequest(action="key.created")).events
        assert [event.actor for event in created][-1] == "offline:quorum up"
        verified = quorum("audit", "verify")
        assert verified.returncode == 0 and "audit trail intact" in verified.stdout


def demo(tmp_path: Path, *args: str) -> tuple[dict[str, Any], str]:
    """Runs `quorum demo --json` with ``args``; returns the JSON object it printed last and its stderr."""
    result = subprocess.run(
        [sys.executable, "-m", "quorum.cli", "demo", *args, "--json"],
        env={**quorum_env(tmp_path, {}), "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1]), result.stderr


def test_demo_prints_one_json_object_last(tmp_path: Path) -> None:
    report, stderr = demo(tmp_path, "--objects", "40", "--workers", "50", "--seed", "3")
    assert PLAINTEXT_NOTICE in stderr
    expected = {"objects", "seconds", "objects_per_second", "answers", "answers_per_object", "accuracy"}
    assert expected | {"billed_cents", "paid_cents", "ledger_balanced"} <= set(report)
    assert report["objects"] == 40
    assert report["ledger_balanced"] is True
    assert set(report["accuracy"]) == {"majority_vote", "consensus"}
    assert 0.5 <= report["accuracy"]["consensus"] <= 1.0
    assert report["answers_per_object"] >= 3
    # Failed crowd calls by "Method:CODE": what to look at when the last objects are slow.
    assert all(":" in call and n > 0 for call, n in report["crowd_call_errors"].items())
    # The pilot allowance (100) covers all 40 objects: nothing billed, the workers still paid.
    assert report["billed_cents"] == 0
    assert report["paid_cents"] > 0


def test_demo_of_a_boxes_job_reports_how_the_fused_boxes_fit_the_truth(tmp_path: Path) -> None:
    report, stderr = demo(tmp_path, "--task", "boxes", "--objects", "12", "--workers", "8")
    assert (report["task"], report["objects"], report["ledger_balanced"]) == ("boxes", 12, True)
    boxes = report["quality"]
    # As in test_boxes_job: the crowd's noise model leaves every found object above IoU 0.7.
    assert boxes["true"] >= 12 and boxes["found"] >= 0.8 * boxes["true"]
    assert boxes["found_iou_0_7"] == boxes["found"]
    assert 0.7 <= boxes["median_iou"] <= 1.0
    assert "boxes vs truth" in stderr


def test_a_small_crowd_finishes_its_demo(tmp_path: Path) -> None:
    # Six workers, one of them a spammer: jobs that may ask seven distinct workers per object
    # left the last object waiting for a worker who did not exist. Five is the fewest allowed.
    report, _ = demo(tmp_path, "--objects", "20", "--workers", "6", "--seed", "1", "--timeout", "120")
    assert report["objects"] == 20
    report, _ = demo(tmp_path, "--objects", "20", "--workers", "5", "--seed", "2", "--timeout", "120")
    assert (report["objects"], report["ledger_balanced"]) == (20, True)
    assert report["answers_per_object"] >= 3


def test_a_crowd_too_small_for_the_demo_is_refused_in_words(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "quorum.cli", "demo", "--workers", "4"],
        env={**quorum_env(tmp_path, {}), "TMPDIR": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "--workers must be at least 5, got 4" in result.stderr
    assert "Traceback" not in result.stderr
