"""A handout whose call was cancelled before the reply left (the worker gave up, or a
draining server's grace ran out) gives its lease back at once instead of holding the
task's slot until the lease expires."""

from __future__ import annotations

from tasking_helpers import Built, job_created, label, task_created

from quorum.v1 import tasking_pb2
from services.tasking import tables
from services.tasking.servicer import TaskingServicer


class Call:
    """The part of a gRPC servicer context GetNextTask reads: whether the call is live."""

    def __init__(self, active: bool) -> None:
        self.active = active

    def is_active(self) -> bool:
        return self.active


def load_one_task(built: Built) -> str:
    built.service.handle_events([job_created("j1", overlap=(1, 1)), task_created("j1-t0", "j1")])
    return "j1-t0"


def next_task(servicer: TaskingServicer, session: str, active: bool) -> tasking_pb2.GetNextTaskResponse:
    return servicer.GetNextTask(tasking_pb2.GetNextTaskRequest(session_id=session), Call(active))


def test_a_cancelled_handout_frees_the_task_for_everyone(tasking: Built) -> None:
    task_id = load_one_task(tasking)
    servicer = TaskingServicer(tasking.service)
    alice, bob = tasking.session("alice"), tasking.session("bob")

    reply = next_task(servicer, alice, active=False)

    assert not reply.HasField("task") and reply.retry_after_ms > 0
    assert tasking.leases.active() == 0
    assert tasking.rows(tables.assignments) == []
    # Alice never saw the task, so it may be hers again; its only slot is free.
    again = next_task(servicer, alice, active=True)
    assert again.task.task_id == task_id
    assert not next_task(servicer, bob, active=True).HasField("task")
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
