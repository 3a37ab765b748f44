"""kill -9 of each service in the middle of a job, then a restart: nothing lost,
nothing counted twice. Each service runs in its own process (LocalStack)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_harness import FaultPoint, check_outcome, run_job_with_fault

from quorum.client import QuorumClient
from quorum.settings import ServiceName
from quorum.stack import LocalStack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    with LocalStack(home=tmp_path / "stack") as running:
        yield running


# Two services at a time where the point is the same: each is still killed once mid-job, and
# three runs take the suite a minute less than five.
@pytest.mark.parametrize(
    ("services", "at"),
    [(("ingest",), "ingest"), (("tasking", "payments"), "mid"), (("consensus", "access"), "mid")],
    ids=["ingest-ingest", "tasking+payments-mid", "consensus+access-mid"],
)
def test_services_killed_mid_job_recover(stack: LocalStack, services: tuple[ServiceName, ...], at: FaultPoint) -> None:
    def kill_and_restart(stack: LocalStack, client: QuorumClient) -> None:
        for service in services:
            assert stack.kill(service) == -9
        time.sleep(1.0)  # down for a moment: callers and consumers see them gone
        for service in services:
            stack.restart(service)

    run = run_job_with_fault(stack, kill_and_restart, at=at)
    print(f"kill -9 {'+'.join(services)}: {run.timings} crowd answers {run.crowd.answers} errors {run.crowd.errors}")
    check_outcome(run)
