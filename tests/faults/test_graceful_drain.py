"""SIGTERM to a service in the middle of a job: it drains (health turns NOT_SERVING
while it still answers, in-flight calls finish, offsets and the outbox are committed)
and exits 0; after a restart nothing is lost or counted twice. Each service runs in
its own process (LocalStack), tasking's leases in the machine's Redis."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

import grpc
import pytest
from fault_harness import check_outcome, run_job_with_fault, wait_until
from grpc_health.v1 import health_pb2, health_pb2_grpc

from quorum.client import QuorumClient
from quorum.rpc import channel
from quorum.stack import LocalStack
from quorum.v1 import common_pb2, tasking_pb2, tasking_pb2_grpc

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

DRAIN_DELAY_S, DRAIN_GRACE_S = 2.0, 10.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# What the crowd's calls may fail with: refused while tasking is down, or turned away by
# the closing server (CANCELLED: gRPC's answer to a call that arrives during shutdown, whose
# handler never ran); a spammer suspended by consensus; a lease that expired meanwhile.
_CALLS = ("StartSession", "GetNextTask", "SubmitAnswer", "SkipTask")
EXPECTED_CROWD_ERRORS = {
    *(f"{call}:{code}" for call in _CALLS for code in ("UNAVAILABLE", "CANCELLED")),
    "GetNextTask:PERMISSION_DENIED",
    "SubmitAnswer:FAILED_PRECONDITION",
    "SkipTask:FAILED_PRECONDITION",
}


class HealthProbe:
    """Checks a server's health on fresh calls in a loop and records what each answered
    (a status name, or the gRPC code of the failure), until the port refuses calls."""

    def __init__(self, address: str) -> None:
        self.seen: list[str] = []
        self._address = address
        self._thread = threading.Thread(target=self._run, name="health-probe")

    def start(self) -> HealthProbe:
        self._thread.start()
        return self

    def _run(self) -> None:
        with channel(self._address) as ch:
            stub = health_pb2_grpc.HealthStub(ch)
            while True:
                try:
                    reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2.0)
                    seen = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
                except grpc.RpcError as exc:
                    seen = exc.code().name
                if not self.seen or self.seen[-1] != seen:
                    self.seen.append(seen)
                if seen == "UNAVAILABLE":
                    return
                threading.Event().wait(0.05)

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the port never closed; health seen: {self.seen}"


def watch_until_not_serving(address: str, seen: list[int], stop: threading.Event) -> None:
    """Follows Health.Watch and records each status, ending at the first NOT_SERVING."""
    with channel(address) as ch:
        stream = health_pb2_grpc.HealthStub(ch).Watch(health_pb2.HealthCheckRequest(service=""))
        try:
            for reply in stream:
                seen.append(reply.status)
                if reply.status == NOT_SERVING or stop.is_set():
                    break
        finally:
            # A watch left open would hold the drain up until its grace runs out.
            stream.cancel()


def test_sigterm_drains_tasking_mid_job(tmp_path: Path, redis_url: str) -> None:
    env = {
        "QUORUM_REDIS_URL": redis_url,
        "QUORUM_DRAIN_DELAY_S": str(DRAIN_DELAY_S),
        "QUORUM_DRAIN_GRACE_S": str(DRAIN_GRACE_S),
    }
    answer_after_restart: list[str] = []
    watched: list[int] = []
    probe_channels: list[grpc.Channel] = []

    def sigterm_and_restart(stack: LocalStack, client: QuorumClient) -> None:
        # A worker holding a lease across the restart: leases live in Redis, not in the process.
        key = client.issue_worker_keys(["drain-probe"])["drain-probe"]
        probe_channels.append(channel(stack.address("tasking"), api_key=key))
        tasking = tasking_pb2_grpc.TaskingServiceStub(probe_channels[-1])
        session = tasking.StartSession(tasking_pb2.StartSessionRequest(worker_id="drain-probe")).session_id
        reply = tasking.GetNextTask(tasking_pb2.GetNextTaskRequest(session_id=session))
        assert reply.HasField("task"), "no task left for the probe worker"
        labels = reply.task.text_classification.labels

        stop_watch = threading.Event()
        watcher = threading.Thread(
            target=watch_until_not_serving, args=(stack.address("tasking"), watched, stop_watch), name="health-watch"
        )
        watcher.start()
        probe = HealthProbe(stack.address("tasking")).start()
        # Both follow the server before the signal, so they see it change.
        wait_until(lambda: bool(watched) and probe.seen[:1] == ["SERVING"], 10, "the health probes to start")
        try:
            code = stack.kill("tasking", signal.SIGTERM, timeout=DRAIN_DELAY_S + DRAIN_GRACE_S)
        finally:
            stop_watch.set()
            watcher.join(10)
            probe.join(10)
        assert code == 0, stack.log_tail("tasking")
        # NOT_SERVING first, while the port still answered; then the port closed.
        assert watched[:1] == [SERVING] and watched[-1] == NOT_SERVING, watched
        # After NOT_SERVING only the shutdown itself: a check caught by the closing server
        # (CANCELLED, seen on a loaded machine), then the closed port.
        assert "NOT_SERVING" in probe.seen and probe.seen[-1] == "UNAVAILABLE", probe.seen
        after = probe.seen[probe.seen.index("NOT_SERVING") + 1 :]
        assert set(after) <= {"CANCELLED", "UNAVAILABLE"}, probe.seen

        stack.restart("tasking")
        submitted = tasking.SubmitAnswer(
            tasking_pb2.SubmitAnswerRequest(
                session_id=session,
                lease_id=reply.task.lease_id,
                answer=common_pb2.Answer(classification=common_pb2.ClassificationAnswer(label=labels[0])),
            ),
            timeout=10,
        )
        answer_after_restart.append(submitted.answer_id)

    with LocalStack(home=tmp_path / "stack", extra_env=env) as stack:
        try:
            # Leases that outlast the drain and the restart, yet let a task whose worker
            # lost track of it during the restart go to another soon.
            run = run_job_with_fault(stack, sigterm_and_restart, lease_seconds=20)
        finally:
            for probe_channel in probe_channels:
                probe_channel.close()
        print(f"SIGTERM tasking: {run.timings} crowd answers {run.crowd.answers} errors {run.crowd.errors_by_call}")
        assert answer_after_restart, "the lease held across the restart was not honoured"
        assert set(run.crowd.errors_by_call) <= EXPECTED_CROWD_ERRORS, run.crowd.errors_by_call
        check_outcome(run)
