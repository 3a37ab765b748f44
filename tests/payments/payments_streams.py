"""Event builders for the payments tests and the figures a correct ledger must show."""

from __future__ import annotations

import datetime as dt
import uuid
from collections import Counter
from collections.abc import Sequence
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
    agreed: dict[str, bool] | None = None,
) -> events_pb2.Event:
    """A resolution with label "cat", or ``boxes`` fused "cat" boxes; ``weights`` lists the
    workers consensus saw, ``agreed`` its verdict on some of their answers (the others
    carry none, as events from before the verdicts)."""
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
        seen = resolved.answers.add(worker_id=worker, weight=weight, agreed=(agreed or {}).get(worker))
        seen.answer.classification.label = "cat"
    return events_pb2.Event(event_id=event_id or _eid(), task_resolved=resolved)


def worker_flagged(
    worker_id: str,
    spammer: bool = True,
    reason: str = "answers at chance level: spam score 0.91 above 0.5",
    at: dt.datetime | None = None,
    event_id: str | None = None,
) -> events_pb2.Event:
    """Consensus's verdict on a worker, published at ``at`` (now when None)."""
    event = events_pb2.Event(
        event_id=event_id or _eid(),
        worker_flagged=events_pb2.WorkerFlagged(worker_id=worker_id, spammer=spammer, reason=reason),
    )
    event.occurred_at.FromDatetime(at or dt.datetime.now(dt.UTC))
    return event


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
    submitted_at: dt.datetime | None = None,
) -> events_pb2.Event:
    """``right`` grades a gold answer as tasking does (None: ungraded); without
    ``submitted_at`` payments takes the answer as given when it reads the event."""
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
    if submitted_at is not None:
        accepted.submitted_at.FromDatetime(submitted_at)
    return events_pb2.Event(event_id=event_id or _eid(), answer_accepted=accepted)


# The reason a rejected answer shows, regular or gold alike.
REJECTED = "rejected: the answer disagrees with the label accepted for this task"


@dataclass
class JobPlan:
    """One job of a generated stream and the money it must produce.

    Which answers are paid depends on when they settle relative to the workers' spammer
    verdicts: :func:`settle` works it out from the batches the events are delivered in.
    """

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
    # Resolved without reaching the target: nobody is rejected on them.
    low_confidence_tasks: set[str] = field(default_factory=set)
    # answer id -> worker id
    answers: dict[str, str] = field(default_factory=dict)
    # answer id -> (task id, label, active ms)
    details: dict[str, tuple[str, str, int]] = field(default_factory=dict)
    # Answers consensus said disagree with their task's label (a verdict on the resolution).
    disagreeing: set[str] = field(default_factory=set)
    # Gold answers and tasking's grade of each (None: ungraded).
    gold: dict[str, bool | None] = field(default_factory=dict)
    # Whether a JobSealed for its resolved objects is in the stream: gold answers settle then.
    sealed: bool = False
    # answer id -> when its worker gave it (AnswerAccepted.submitted_at), in seconds: a gold
    # answer also settles with a later answer of its worker on the job.
    given_at: dict[str, int] = field(default_factory=dict)
    # answer id -> "" when it must be paid, else the reason it must show; absent: unsettled.
    outcomes: dict[str, str] = field(default_factory=dict)

    def rejected(self, answer_id: str) -> bool:
        """Whether a settled answer is rejected, whoever its worker."""
        if answer_id in self.gold:
            return self.gold[answer_id] is False
        task, label, _ = self.details[answer_id]
        if task in self.low_confidence_tasks:
            return False
        # A verdict decides; without one a class label other than the resolution's ("cat").
        return answer_id in self.disagreeing or (not self.price_per_annotation and label != "cat")

    @property
    def paid_answers(self) -> dict[str, str]:
        return {a: w for a, w in self.answers.items() if self.outcomes.get(a) == ""}

    @property
    def billable_answers(self) -> list[str]:
        """Paid answers to regular tasks: the active time a per-hour job bills."""
        return [a for a in self.paid_answers if a not in self.gold]

    @property
    def unpaid_answers(self) -> int:
        return sum(1 for reason in self.outcomes.values() if reason)

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
        return sum(self.details[a][2] for a in self.billable_answers)

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
        return min(len(self.billable_answers), self.effective_allowance)

    def subsidy_bounds(self) -> tuple[int, int]:
        """A per-hour pilot's subsidy lies between the price of its ``free_answers`` shortest
        and longest billable answers, whatever order they were settled in."""
        times = sorted(self.details[a][2] for a in self.billable_answers)
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
            if self.free_answers < len(self.billable_answers):
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


def _fact(event: events_pb2.Event) -> tuple[str, str]:
    kind = event.WhichOneof("payload")
    if kind == "job_created":
        return ("job", event.job_created.job_id)
    if kind == "job_sealed":
        return ("sealed", event.job_sealed.job_id)
    if kind == "task_resolved":
        return ("resolved", event.task_resolved.task_id)
    return ("answer", event.answer_accepted.answer_id)


def settle(jobs: Sequence[JobPlan], batches: Sequence[Sequence[events_pb2.Event]]) -> None:
    """Fills in each job's ``outcomes`` for the events delivered in ``batches``.

    An answer is settled by the first batch that completes what it waits for: its job's
    terms, the answer, and its task's resolution; for a gold answer, instead, the settling
    of an answer its worker gave later on the job, or the sealed job's every resolution. It is unpaid when its worker's newest verdict (by event time) among
    those delivered up to that batch is a spammer flag, else when it is rejected.
    """
    first: dict[tuple[str, str], int] = {}
    verdicts: list[tuple[int, dt.datetime, events_pb2.WorkerFlagged]] = []
    seen: set[str] = set()
    for index, batch in enumerate(batches):
        for event in batch:
            if event.event_id in seen:
                continue
            seen.add(event.event_id)
            if event.HasField("worker_flagged"):
                verdicts.append((index, event.occurred_at.ToDatetime(dt.UTC), event.worker_flagged))
            else:
                first.setdefault(_fact(event), index)

    def completed(*facts: tuple[str, str]) -> int | None:
        found = [first.get(fact) for fact in facts]
        return None if any(index is None for index in found) else max(i for i in found if i is not None)

    def flag_reason(worker: str, index: int) -> str | None:
        known = [(at, v) for i, at, v in verdicts if i <= index and v.worker_id == worker]
        if not known:
            return None
        _, newest = max(known, key=lambda pair: pair[0])
        return newest.reason if newest.spammer else None

    def settled_at(job: JobPlan, answer: str) -> int | None:
        """The batch that settles ``answer``, None when none does."""
        arrived = [("job", job.job_id), ("answer", answer)]
        if answer not in job.gold:
            return completed(*arrived, ("resolved", job.details[answer][0]))
        worker, given = job.answers[answer], job.given_at.get(answer)
        candidates = [
            completed(*arrived, ("answer", later), ("resolved", job.details[later][0]))
            for later, by in job.answers.items()
            if by == worker and later not in job.gold and given is not None and job.given_at.get(later, given) > given
        ]
        if job.sealed:
            candidates.append(
                completed(*arrived, ("sealed", job.job_id), *(("resolved", t) for t in job.resolved_tasks))
            )
        found = [index for index in candidates if index is not None]
        return min(found) if found else None

    for job in jobs:
        job.outcomes = {}
        for answer, worker in job.answers.items():
            at = settled_at(job, answer)
            if at is None:
                continue
            flag = flag_reason(worker, at)
            job.outcomes[answer] = (
                f"spammer: {flag}" if flag is not None else (REJECTED if job.rejected(answer) else "")
            )
