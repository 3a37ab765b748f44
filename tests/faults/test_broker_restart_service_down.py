"""The broker restarted empty while a service is down: the stopped service misses the
change live and must notice the new broker generation when it starts again. Each
service runs in its own process (LocalStack)."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_harness import check_outcome, run_job_with_fault

from quorum.client import QuorumClient
from quorum.settings import ServiceName
from quorum.stack import LocalStack

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    with LocalStack(home=tmp_path / "stack") as running:
        yield running


# Every service recovers from a new broker generation by the same code, whether it notices
# at start-up (here) or while running (test_infra_faults restarts the broker under all of
# them); tasking, with leases and handouts in flight, has the most to lose while it is down.
@pytest.mark.parametrize("service", ["tasking"])
def test_broker_restarted_empty_while_a_service_is_down(stack: LocalStack, service: ServiceName) -> None:
    """Memory storage: every topic, record, group and offset is gone while ``service`` is
    stopped. On its start it recreates the topics, republishes its outbox and consumes
    the new topics from the start; the others recover live."""

    def stop_restart_broker_start(stack: LocalStack, client: QuorumClient) -> None:
        assert stack.kill(service, signal.SIGTERM) == 0
        stack.restart_broker()
        stack.restart(service)

    run = run_job_with_fault(stack, stop_restart_broker_start)
    print(f"broker restart with {service} down: {run.timings} crowd {run.crowd.answers} errors {run.crowd.errors}")
    check_outcome(run)
    for name in {"ingest", "tasking", "consensus", "payments", "access"} - {service}:
        assert "the broker lost its state" in (stack.log_dir / f"{name}.log").read_text(), name
