"""The load generator against a running stack: a short locust run with a few users of each
kind must make every call it reports succeed and label objects end to end."""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from quorum.broker import free_port
from quorum.rpc import wait_healthy
from quorum.settings import SERVICES

pytestmark = pytest.mark.slow

LOCUSTFILE = Path(__file__).resolve().parents[2] / "deploy" / "loadgen" / "locustfile.py"


def test_a_short_headless_run_succeeds_and_labels_objects(tmp_path: Path) -> None:
    locust = shutil.which("locust", path=str(Path(sys.executable).parent))
    assert locust, "locust is in the dev extra"
    ports = {name: free_port() for name in SERVICES}
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUORUM_")}
    env["QUORUM_HOME"] = str(tmp_path / "home")
    for name, port in ports.items():
        env[f"QUORUM_{name.upper()}_ADDR"] = f"127.0.0.1:{port}"
    up = subprocess.Popen(
        [sys.executable, "-m", "quorum.cli", "up", "--no-dashboard"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        for port in ports.values():
            wait_healthy(f"127.0.0.1:{port}", timeout=120)
        # 10 users: the fixed 2 clients and 3 operators, and 5 workers, who answer
        # quickly so that a 20-object job gets labels within the run.
        load_env = env | {"QUORUM_LOAD_OBJECTS": "20", "QUORUM_LOAD_THINK_MS": "50,150"}
        command = [locust, "-f", str(LOCUSTFILE), "--headless", "-u", "10", "-r", "10", "-t", "20s"]
        run = subprocess.run(
            [*command, "--csv", str(tmp_path / "load"), "--only-summary"],
            env=load_env,
            capture_output=True,
            text=True,
            timeout=240,
        )
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(60)
    output = run.stdout + run.stderr
    assert run.returncode == 0, output
    with open(tmp_path / "load_stats.csv", newline="") as stats:
        rows = {row["Name"]: row for row in csv.DictReader(stats)}
    for name in ("StartSession", "GetNextTask", "SubmitAnswer", "GetTaskingStats", "GetJobQuality"):
        assert int(rows[name]["Request Count"]) > 0, name
    assert all(row["Failure Count"] == "0" for row in rows.values()), rows
    labeled = re.search(r"labeled objects: (\d+) in", output)
    assert labeled, output
    assert int(labeled.group(1)) > 0
