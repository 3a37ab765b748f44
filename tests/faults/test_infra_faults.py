"""Faults outside the services: the broker loses everything, Redis is flushed, workers
vanish holding leases. Each service runs in its own process (LocalStack)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import redis
from fault_harness import check_outcome, run_job_with_fault, wait_until

from quorum.client import QuorumClient
from quorum.rpc import channel
from quorum.settings import SERVICES
from quorum.stack import LocalStack
from quorum.v1 import common_pb2, tasking_pb2, tasking_pb2_grpc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    with LocalStack(home=tmp_path / "stack") as running:
        yield running


def test_broker_restarted_empty_mid_job_loses_nothing(stack: LocalStack) -> None:
    """Memory storage: every topic, record, group and offset is gone. The services see a
    new broker generation, republish their outboxes and consume from the start again."""

    def restart_broker(stack: LocalStack, client: QuorumClient) -> None:
        stack.restart_broker()

    run = run_job_with_fault(stack, restart_broker)
    print(f"broker restart: {run.timings} crowd answers {run.crowd.answers} errors {run.crowd.errors}")
    check_outcome(run)
    for name in SERVICES:
        assert "the broker lost its state" in (stack.log_dir / f"{name}.log").read_text(), name


def test_redis_flushed_mid_job(tmp_path: Path, redis_url: str) -> None:
    """Live leases and answer counters vanish: leases held are lost (their answers are
    refused), the database's counts stay the truth and the job completes."""
    with LocalStack(home=tmp_path / "stack", extra_env={"QUORUM_REDIS_URL": redis_url}) as stack:

        def flush(stack: LocalStack, client: QuorumClient) -> None:
            assert client.tasking_stats().active_leases > 0
            redis.Redis.from_url(redis_url).flushdb()

        run = run_job_with_fault(stack, flush)
        print(f"redis flush: {run.timings} crowd answers {run.crowd.answers} errors {run.crowd.errors}")
        check_outcome(run)


def test_workers_who_vanish_mid_task_do_not_stall_the_job(stack: LocalStack) -> None:
    """Ghost workers lease tasks and never come back: the leases expire, the tasks go to
    others, and an answer sent after the lease expired is refused with a clear status."""
    # (the ghost's own tasking stub, its session, its lease)
    ghosts: list[tuple[tasking_pb2_grpc.TaskingServiceStub, str, str]] = []
    ghost_channels: list[grpc.Channel] = []

    def lease_and_vanish(stack: LocalStack, client: QuorumClient, job_id: str) -> None:
        ghost_keys = client.issue_worker_keys(f"ghost-{i}" for i in range(6))
        for ghost, key in ghost_keys.items():
            ghost_channels.append(channel(stack.address("tasking"), api_key=key))
            tasking = tasking_pb2_grpc.TaskingServiceStub(ghost_channels[-1])
            session = tasking.StartSession(tasking_pb2.StartSessionRequest(worker_id=ghost)).session_id
            leased: list[str] = []

            def lease(
                tasking: tasking_pb2_grpc.TaskingServiceStub = tasking,
                session: str = session,
                leased: list[str] = leased,
            ) -> bool:
                request = tasking_pb2.GetNextTaskRequest(session_id=session, job_id=job_id)
                reply = tasking.GetNextTask(request)
                leased.extend([reply.task.lease_id] if reply.HasField("task") else [])
                return bool(leased)

            # The tasks reach tasking one Kafka hop after the import.
            wait_until(lease, 30, "a task for a ghost")
            ghosts.append((tasking, session, leased[0]))

    try:
        run = run_job_with_fault(stack, lambda *_: None, before_crowd=lease_and_vanish, lease_seconds=4)
        print(f"vanishing workers: {run.timings} crowd answers {run.crowd.answers}")
        check_outcome(run)
        answer = common_pb2.Answer(classification=common_pb2.ClassificationAnswer(label=run.dataset.text_labels[0]))
        for tasking, session, lease_id in ghosts:
            with pytest.raises(grpc.RpcError) as late:
                tasking.SubmitAnswer(
                    tasking_pb2.SubmitAnswerRequest(session_id=session, lease_id=lease_id, answer=answer)
                )
            assert late.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "expired" in (late.value.details() or "")
    finally:
        for ghost_channel in ghost_channels:
            ghost_channel.close()
    ghost_workers = {f"ghost-{i}" for i in range(6)}
    assert not any(a.worker_id in ghost_workers for r in run.client.results(run.job_id) for a in r.answers)
