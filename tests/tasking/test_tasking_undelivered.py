"""A handout whose call was cancelled before the reply left (the worker gave up, or a
draining server's grace ran out) gives its lease back at once instead of holding the
task's slot until the lease expires."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable

import grpc
import pytest
from quorum_testing import admin_key, worker_key
from tasking_helpers import Built, job_created, label, task_created

from quorum.messaging import Publisher, Topics, outgoing
from quorum.rpc import channel
from quorum.service import start_service
from quorum.settings import Settings
from quorum.v1 import tasking_pb2, tasking_pb2_grpc
from services.tasking import tables
from services.tasking.bootstrap import build
from services.tasking.servicer import TaskingServicer


class Call:
    """The part of a gRPC servicer context GetNextTask reads: whether the call is live."""

    def __init__(self, active: bool, remaining_s: float | None = None) -> None:
        self.active = active
        self.remaining_s = remaining_s

    def is_active(self) -> bool:
        return self.active

    def time_remaining(self) -> float | None:
        return self.remaining_s


def load_one_task(built: Built) -> str:
    built.service.handle_events([job_created("j1", overlap=(1, 1)), task_created("j1-t0", "j1")])
    return "j1-t0"


def next_task(servicer: TaskingServicer, session: str, call: Call) -> tasking_pb2.GetNextTaskResponse:
    return servicer.GetNextTask(tasking_pb2.GetNextTaskRequest(session_id=session), call)


LIVE = Call(active=True)


@pytest.mark.parametrize("gone", [Call(active=False), Call(active=True, remaining_s=-0.01)], ids=["cancelled", "late"])
def test_a_cancelled_handout_frees_the_task_for_everyone(tasking: Built, gone: Call) -> None:
    task_id = load_one_task(tasking)
    servicer = TaskingServicer(tasking.service)
    alice, bob = tasking.session("alice"), tasking.session("bob")

    reply = next_task(servicer, alice, gone)

    assert not reply.HasField("task") and reply.retry_after_ms > 0
    assert tasking.leases.active() == 0
    assert tasking.rows(tables.assignments) == []
    # Alice never saw the task, so it may be hers again; its only slot is free.
    again = next_task(servicer, alice, Call(active=True, remaining_s=5.0))
    assert again.task.task_id == task_id
    assert not next_task(servicer, bob, LIVE).HasField("task")
    assert tasking.leases.active() == 1
    tasking.service.submit_answer(alice, again.task.lease_id, label("cat"))


def test_a_delivered_lease_is_not_released_again(tasking: Built) -> None:
    load_one_task(tasking)
    alice, bob = tasking.session("alice"), tasking.session("bob")
    task = tasking.service.next_task(alice)
    assert task is not None

    assert not tasking.service.release_undelivered(bob, task.lease_id), "another worker's lease"
    assert tasking.leases.active() == 1
    tasking.service.submit_answer(alice, task.lease_id, label("cat"))
    assert not tasking.service.release_undelivered(alice, task.lease_id), "an answered lease"
    (assignment,) = tasking.rows(tables.assignments)
    assert assignment.state == "answered"


def test_a_caller_that_gives_up_mid_handout_leaves_the_task_in_play(
    make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    """Through real gRPC: calls whose deadline passes while the task is being leased. Each
    handout that could not be delivered is released, and its task goes to the next worker
    long before its ten-minute lease would have expired."""
    settings = make_settings()
    running = start_service(build, settings, address="127.0.0.1:0")
    address = f"127.0.0.1:{running.port}"
    task_ids = [f"j1-t{i}" for i in range(10)]
    topics = Topics(settings.topic_prefix)
    publisher = Publisher(settings.require_kafka(), linger_ms=0)
    try:
        publisher.send_all(
            [
                outgoing(topics.jobs, "j1", job_created("j1", overlap=(1, 1), lease_seconds=600)),
                *(outgoing(topics.tasks, t, task_created(t, "j1")) for t in task_ids),
            ]
        )
        with (
            channel(address, api_key=admin_key(settings)) as admin,
            channel(address, api_key=worker_key(settings, "alice")) as alice_channel,
            channel(address, api_key=worker_key(settings, "bob")) as bob_channel,
        ):
            operator = tasking_pb2_grpc.TaskingServiceStub(admin)
            stats = tasking_pb2.GetTaskingStatsRequest(job_id="j1")
            deadline = time.monotonic() + 30
            while operator.GetTaskingStats(stats, timeout=5).backlog < len(task_ids):
                assert time.monotonic() < deadline, "the tasks never arrived"
                time.sleep(0.1)

            alice = tasking_pb2_grpc.TaskingServiceStub(alice_channel)
            session = alice.StartSession(tasking_pb2.StartSessionRequest(worker_id="alice"), timeout=5).session_id
            with caplog.at_level(logging.INFO, logger="services.tasking.handlers"):
                for _ in range(len(task_ids)):
                    try:
                        # Far shorter than a handout takes: the call is gone before the reply.
                        reply = alice.GetNextTask(tasking_pb2.GetNextTaskRequest(session_id=session), timeout=0.001)
                    except grpc.RpcError as exc:
                        assert exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED
                    else:
                        if reply.HasField("task"):  # delivered after all: handed back the ordinary way
                            skip = tasking_pb2.SkipTaskRequest(session_id=session, lease_id=reply.task.lease_id)
                            alice.SkipTask(skip, timeout=5)
                    if released_tasks(caplog.text):
                        break
                    time.sleep(0.1)  # lets a handler still running finish
                # Handlers of calls already given up may still be leasing; each gives its lease back.
                while operator.GetTaskingStats(stats, timeout=5).active_leases:
                    assert time.monotonic() < deadline + 30, "a lease of a call that gave up is still held"
                    time.sleep(0.1)
            assert released_tasks(caplog.text), "no handout was cut off; the test did not exercise the release"

            bob = tasking_pb2_grpc.TaskingServiceStub(bob_channel)
            bob_session = bob.StartSession(tasking_pb2.StartSessionRequest(worker_id="bob"), timeout=5).session_id
            taken = set()
            while (
                reply := bob.GetNextTask(tasking_pb2.GetNextTaskRequest(session_id=bob_session), timeout=5)
            ).HasField("task"):
                taken.add(reply.task.task_id)
            assert taken == set(task_ids)
    finally:
        publisher.close()
        running.stop()


def released_tasks(log_text: str) -> set[str]:
    return set(re.findall(r"lease \w+ of task (\S+) released", log_text))
