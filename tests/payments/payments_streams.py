"""Event builders for the payments tests and the figures a correct ledger must show."""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field

from quorum.v1 import common_pb2, events_pb2


def _eid() -> str:
    return uuid.uuid4().hex


def job_created(
    job_id: str,
    client_id: str = "acme",
    price: int = 50,
    pay: int = 10,
    currency: str = "USD",
    pilot: bool = False,
    allowance: int = 0,
    task: str = "text_classification",
    event_id: str | None = None,
) -> events_pb2.Event:
    spec = common_pb2.JobSpec(
        name=f"job {job_id}",
        client_id=client_id,
        price_per_object_cents=price,
        pay_per_answer_cents=pay,
        currency=currency,
        pilot=pilot,
        pilot_allowance=allowance,
    )
    getattr(spec, task).labels[:] = ["cat", "dog"]
    return events_pb2.Event(event_id=event_id or _eid(), job_created=events_pb2.JobCreated(job_id=job_id, spec=spec))


def task_resolved(task_id: str, job_id: str, version: int = 1, event_id: str | None = None) -> events_pb2.Event:
    resolved = events_pb2.TaskResolved(task_id=task_id, job_id=job_id, version=version, confidence=0.9)
    resolved.label.classification.label = "cat"
    return events_pb2.Event(event_id=event_id or _eid(), task_resolved=resolved)


def answer_accepted(
    answer_id: str, task_id: str, job_id: str, worker_id: str, event_id: str | None = None
) -> events_pb2.Event:
    accepted = events_pb2.AnswerAccepted(answer_id=answer_id, task_id=task_id, job_id=job_id, worker_id=worker_id)
    accepted.answer.classification.label = "cat"
    return events_pb2.Event(event_id=event_id or _eid(), answer_accepted=accepted)


@dataclass
class JobPlan:
    """One job of a generated stream and the money it must produce."""

    job_id: str
    client_id: str
    price: int
    pay: int
    currency: str
    pilot: bool
    allowance: int
    resolved_tasks: set[str] = field(default_factory=set)
    # answer id -> worker id
    answers: dict[str, str] = field(default_factory=dict)

    @property
    def effective_allowance(self) -> int:
        if not self.pilot:
            return 0
        return self.allowance if self.allowance > 0 else 100

    @property
    def resolved(self) -> int:
        return len(self.resolved_tasks)

    @property
    def pilot_objects(self) -> int:
        return min(self.resolved, self.effective_allowance)

    @property
    def charged_cents(self) -> int:
        return max(0, self.resolved - self.effective_allowance) * self.price

    @property
    def subsidy_cents(self) -> int:
        return self.pilot_objects * self.price

    @property
    def paid_cents(self) -> int:
        return len(self.answers) * self.pay

    @property
    def currency_code(self) -> str:
        return self.currency.upper() or "USD"

    def worker_earnings(self) -> Counter[str]:
        earned: Counter[str] = Counter()
        for worker in self.answers.values():
            earned[worker] += self.pay
        return earned

    def job_event(self, event_id: str | None = None) -> events_pb2.Event:
        return job_created(
            self.job_id,
            client_id=self.client_id,
            price=self.price,
            pay=self.pay,
            currency=self.currency,
            pilot=self.pilot,
            allowance=self.allowance,
            event_id=event_id,
        )
