"""An operator overrides consensus's spam flag on a worker: tasking hands the worker
tasks again and payments pays it again. Tasking and payments run in this process on the
session's broker; consensus is played by the test, which publishes its verdict and the
task's resolution as consensus would."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from quorum_testing import admin_key, deployment_settings, wait_until, worker_key

from quorum.messaging import Publisher, Topics, outgoing
from quorum.rpc import channel
from quorum.service import start_service
from quorum.settings import Settings
from quorum.v1 import common_pb2, events_pb2, payments_pb2, payments_pb2_grpc, tasking_pb2, tasking_pb2_grpc
from services.payments.bootstrap import build as build_payments
from services.tasking.bootstrap import build as build_tasking

pytestmark = pytest.mark.slow

WORKER = "w-1"


@dataclass
class Stack:
    settings: Settings
    publisher: Publisher
    tasking: tasking_pb2_grpc.TaskingServiceStub
    payments: payments_pb2_grpc.PaymentsServiceStub
    worker: tasking_pb2_grpc.TaskingServiceStub

    def publish(self, topic: str, key: str, **payload: Any) -> None:
        self.publisher.send_all([outgoing(topic, key, events_pb2.Event(**payload))])


@pytest.fixture
def stack(tmp_path: Path, kafka_bootstrap: str) -> Iterator[Stack]:
    # One partition a topic: what one producer wrote arrives in that order.
    settings = deployment_settings(tmp_path, kafka_bootstrap)
    with contextlib.ExitStack() as opened:
        ports = {}
        for name, build in (("tasking", build_tasking), ("payments", build_payments)):
            service = start_service(build, settings, address="127.0.0.1:0")
            opened.callback(service.stop)
            ports[name] = service.port
        publisher = Publisher(kafka_bootstrap, linger_ms=0)
        opened.callback(publisher.close)

        def stub(name: str, key: str) -> Any:
            ch = opened.enter_context(channel(f"127.0.0.1:{ports[name]}", api_key=key))
            stubs = {"tasking": tasking_pb2_grpc.TaskingServiceStub, "payments": payments_pb2_grpc.PaymentsServiceStub}
            return stubs[name](ch)

        staff = admin_key(settings)
        yield Stack(
            settings,
            publisher,
            tasking=stub("tasking", staff),
            payments=stub("payments", staff),
            worker=stub("tasking", worker_key(settings, WORKER)),
        )


def test_a_worker_an_operator_reinstated_over_a_spam_flag_is_paid_again(stack: Stack) -> None:
    topics = Topics(stack.settings.topic_prefix)
    flag = events_pb2.WorkerFlagged(worker_id=WORKER, spammer=True, spam_score=0.95, reason="answers at chance level")
    stack.publish(topics.results, WORKER, worker_flagged=flag)
    status = tasking_pb2.GetWorkerStatusRequest(worker_id=WORKER)
    wait_until(lambda: stack.tasking.GetWorkerStatus(status, timeout=5).spam_flagged, 60, "tasking to hear the flag")

    stack.tasking.ReinstateWorker(
        tasking_pb2.ReinstateWorkerRequest(worker_id=WORKER, reason="reviewed by hand: honest"), timeout=10
    )

    spec = common_pb2.JobSpec(
        name="reviews",
        client_id="acme",
        text_classification=common_pb2.ClassificationConfig(labels=["pos", "neg"]),
        overlap=common_pb2.Overlap(min=1, max=1),
        price_per_object_cents=5,
        pay_per_answer_cents=2,
        currency="USD",
    )
    stack.publish(topics.jobs, "j1", job_created=events_pb2.JobCreated(job_id="j1", spec=spec))
    stack.publish(
        topics.tasks,
        "t1",
        task_created=events_pb2.TaskCreated(task_id="t1", job_id="j1", text="great", content_type="text/plain"),
    )
    session = stack.worker.StartSession(tasking_pb2.StartSessionRequest(worker_id=WORKER), timeout=5).session_id
    handed: list[tasking_pb2.WorkerTask] = []

    def take() -> bool:
        reply = stack.worker.GetNextTask(tasking_pb2.GetNextTaskRequest(session_id=session), timeout=5)
        handed.extend([reply.task] if reply.HasField("task") else [])
        return bool(handed)

    wait_until(take, 60, "the reinstated worker to be handed the task")
    answer = common_pb2.Answer(classification=common_pb2.ClassificationAnswer(label="pos"))
    stack.worker.SubmitAnswer(
        tasking_pb2.SubmitAnswerRequest(session_id=session, lease_id=handed[0].lease_id, answer=answer), timeout=5
    )
    # Consensus resolves the task after the override: the answer settles now.
    resolved = events_pb2.TaskResolved(task_id="t1", job_id="j1", version=1, confidence=0.9)
    resolved.label.classification.label = "pos"
    resolved.answers.add(worker_id=WORKER, weight=0.9).answer.CopyFrom(answer)
    stack.publish(topics.results, "t1", task_resolved=resolved)

    balance = payments_pb2.GetWorkerBalanceRequest(worker_id=WORKER)

    def settled() -> bool:
        b = stack.payments.GetWorkerBalance(balance, timeout=5)
        return b.answers_paid + b.answers_unpaid == 1

    wait_until(settled, 60, "payments to settle the answer")
    paid = stack.payments.GetWorkerBalance(balance, timeout=5)
    assert (paid.answers_paid, paid.answers_unpaid, paid.earned_cents) == (1, 0, 2)
    # Tasking never took its own override for consensus lifting the flag: the flag is on
    # record, overridden, so a new one from consensus would suspend the worker again.
    after = stack.tasking.GetWorkerStatus(status, timeout=5)
    assert (after.suspended, after.spam_flagged, after.flag_overridden) == (False, True, True)
