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
    price_per_hour: int = 0,
    pay_per_hour: int = 0,
    budget_cap: int = 0,
    gold_bonus: int = 0,
    gold_bonus_threshold: float = 0.0,
    gold_bonus_min_answers: int = 0,
    price_per_annotation: int = 0,
) -> events_pb2.Event:
    spec = common_pb2.JobSpec(
        price_per_annotation_cents=price_per_annotation,
        gold_share=0.2 if gold_bonus else 0.0,
        gold_bonus_cents=gold_bonus,
        gold_bonus_threshold=gold_bonus_threshold,
        gold_bonus_min_answers=gold_bonus_min_answers,
        price_mode=common_pb2.PRICE_MODE_PER_HOUR if price_per_hour else common_pb2.PRICE_MODE_UNSPECIFIED,
        price_per_hour_cents=price_per_hour,
        pay_mode=common_pb2.PAY_MODE_PER_HOUR if pay_per_hour else common_pb2.PAY_MODE_UNSPECIFIED,
        pay_per_hour_cents=pay_per_hour,
        budget_cap_cents=budget_cap,
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


def job_sealed(job_id: str, objects: int, event_id: str | None = None) -> events_pb2.Event:
    return events_pb2.Event(
        event_id=event_id or _eid(), job_sealed=events_pb2.JobSealed(job_id=job_id, objects=objects)
    )


def job_deleted(job_id: str, org_id: str = "acme") -> events_pb2.Event:
    return events_pb2.Event(event_id=_eid(), job_deleted=events_pb2.JobDeleted(job_id=job_id, org_id=org_id))


def task_resolved(
    task_id: str,
    job_id: str,
    version: int = 1,
    event_id: str | None = None,
    weights: dict[str, float] | None = None,
    low_confidence: bool = False,
    boxes: int | None = None,
) -> events_pb2.Event:
    """A resolution with label "cat", or ``boxes`` fused "cat" boxes; ``weights`` lists the
    workers consensus saw (weight 0: spammer)."""
    resolved = events_pb2.TaskResolved(
        task_id=task_id, job_id=job_id, version=version, confidence=0.9, low_confidence=low_confidence
    )
    if boxes is None:
        resolved.label.classification.label = "cat"
    else:
        resolved.label.boxes.SetInParent()
        for i in range(boxes):
            resolved.label.boxes.boxes.add(label="cat", x=0.1 * (i % 5), y=0.1, w=0.05, h=0.05, confidence=0.9)
    for worker, weight in sorted((weights or {}).items()):
        seen = resolved.answers.add(worker_id=worker, weight=weight)
        seen.answer.classification.label = "cat"
    return events_pb2.Event(event_id=event_id or _eid(), task_resolved=resolved)


def answer_accepted(
    answer_id: str,
    task_id: str,
    job_id: str,
    worker_id: str,
    event_id: str | None = None,
    label: str = "cat",
    active_ms: int = 0,
    gold: bool = False,
    right: bool | None = None,
) -> events_pb2.Event:
    """``right`` grades a gold answer as tasking does (None: ungraded)."""
    grade = events_pb2.GOLD_GRADE_UNSPECIFIED
    if right is not None:
        grade = events_pb2.GOLD_GRADE_CORRECT if right else events_pb2.GOLD_GRADE_WRONG
    accepted = events_pb2.AnswerAccepted(
        answer_id=answer_id,
        task_id=task_id,
        job_id=job_id,
        worker_id=worker_id,
        active_ms=active_ms,
        gold=gold,
        gold_grade=grade,
    )
    accepted.answer.classification.label = label
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
    # Per-hour price and pay (0: per object, per answer).
    price_per_hour: int = 0
    pay_per_hour: int = 0
    # A bounding-box job's price per box (0: a classification job), and the boxes of each
    # task's resolutions (all of them alike, so that the first one's count is known).
    price_per_annotation: int = 0
    boxes: dict[str, int] = field(default_factory=dict)
    resolved_tasks: set[str] = field(default_factory=set)
    # answer id -> worker id
    answers: dict[str, str] = field(default_factory=dict)
    # answer id -> (task id, label, active ms)
    details: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    # Workers consensus weighted 0 on this job's tasks.
    spammers: set[str] = field(default_factory=set)

    @property
    def paid_answers(self) -> dict[str, str]:
        """Answers that must be paid: task resolved, worker not a spammer, label "cat"."""
        return {
            a: w
            for a, w in self.answers.items()
            if self.details[a][0] in self.resolved_tasks and w not in self.spammers and self.details[a][1] == "cat"
        }

    @property
    def unpaid_answers(self) -> int:
        settled = [a for a in self.answers if self.details[a][0] in self.resolved_tasks]
        return len(settled) - len(self.paid_answers)

    def pay_of(self, answer_id: str) -> int:
        if self.pay_per_hour:
            return self.details[answer_id][2] * self.pay_per_hour // 3_600_000
        return self.pay

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
        return 0 if self.price_per_hour else min(self.resolved, self.effective_allowance)

    @property
    def billed_ms(self) -> int:
        return sum(self.details[a][2] for a in self.paid_answers)

    @property
    def time_cents(self) -> int:
        """A per-hour job's whole price: its billable active time at the hourly rate."""
        return self.billed_ms * self.price_per_hour // 3_600_000

    @property
    def hourly_pilot(self) -> bool:
        """A per-hour pilot: which answers the allowance covers depends on settlement order."""
        return bool(self.price_per_hour) and self.pilot

    @property
    def free_answers(self) -> int:
        return min(len(self.paid_answers), self.effective_allowance)

    def subsidy_bounds(self) -> tuple[int, int]:
        """A per-hour pilot's subsidy lies between the price of its ``free_answers`` shortest
        and longest billable answers, whatever order they were settled in."""
        times = sorted(self.details[a][2] for a in self.paid_answers)
        free = self.free_answers
        shortest, longest = sum(times[:free]), sum(times[len(times) - free :]) if free else 0
        return shortest * self.price_per_hour // 3_600_000, longest * self.price_per_hour // 3_600_000

    @property
    def annotations(self) -> int:
        """Boxes billed: those of every resolved task of a per-object job with a box price."""
        if not self.price_per_annotation or self.price_per_hour:
            return 0
        return sum(self.boxes[t] for t in self.resolved_tasks)

    @property
    def annotation_split_known(self) -> bool:
        """Whether the boxes' cents split between client and subsidy whatever the order: the
        allowance covers every resolved object or none."""
        return not self.annotations or self.pilot_objects in (0, self.resolved)

    @property
    def charged_cents(self) -> int:
        """What the client is charged; for a per-hour pilot, or a pilot's boxes, only when
        order cannot matter."""
        if self.hourly_pilot:
            if self.free_answers < len(self.paid_answers):
                raise ValueError("a per-hour pilot's charge depends on order: use subsidy_bounds")
            return 0
        if self.price_per_hour:
            return self.time_cents
        if not self.annotation_split_known:
            raise ValueError("a pilot's charge for boxes depends on order: check the total")
        boxes = self.annotations * self.price_per_annotation if self.pilot_objects == 0 else 0
        return max(0, self.resolved - self.effective_allowance) * self.price + boxes

    @property
    def subsidy_cents(self) -> int:
        if self.hourly_pilot:
            return self.time_cents - self.charged_cents
        if self.price_per_hour:
            return 0
        boxes = self.annotations * self.price_per_annotation if self.pilot_objects else 0
        return self.pilot_objects * self.price + boxes

    @property
    def object_cents(self) -> int:
        """A per-object job's whole price, client and subsidy together."""
        return self.resolved * self.price + self.annotations * self.price_per_annotation

    @property
    def paid_cents(self) -> int:
        return sum(self.pay_of(a) for a in self.paid_answers)

    @property
    def currency_code(self) -> str:
        return self.currency.upper() or "USD"

    def worker_earnings(self) -> Counter[str]:
        earned: Counter[str] = Counter()
        for answer, worker in self.paid_answers.items():
            earned[worker] += self.pay_of(answer)
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
            price_per_hour=self.price_per_hour,
            pay_per_hour=self.pay_per_hour,
            task="bounding_boxes" if self.price_per_annotation else "text_classification",
            price_per_annotation=self.price_per_annotation,
        )
