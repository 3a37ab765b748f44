"""Translation between protobuf messages (events, gRPC responses) and the consensus domain."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from google.protobuf.timestamp_pb2 import Timestamp

from quorum import taskmessages
from quorum.tasktypes import PAIRWISE_WINNERS, TASK_TYPES
from quorum.v1 import common_pb2, consensus_pb2, events_pb2
from services.consensus.aggregation.spam import SPAM_THRESHOLD
from services.consensus.domain import JobQuality, JobSpec, TaskResult, WeightedAnswer, WorkerQuality

if TYPE_CHECKING:
    from services.consensus.review import ReviewTask


def label_of(answer: common_pb2.Answer) -> str:
    """The stored form of an answer: the label of a classification answer, JSON of any other
    (see :func:`quorum.taskmessages.answer_text`); "" for an empty answer."""
    return taskmessages.answer_text(answer)


def answer_message(label: str) -> common_pb2.Answer:
    """The answer whose stored form is ``label``: a classification answer, or the structured
    answer its JSON spells."""
    return taskmessages.answer_from_text(label)


def datetime_of(ts: Timestamp) -> dt.datetime | None:
    """An aware UTC datetime, or None for an unset (zero) timestamp."""
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToDatetime(tzinfo=dt.UTC)


def timestamp_of(moment: dt.datetime) -> Timestamp:
    """A protobuf Timestamp of an aware datetime."""
    ts = Timestamp()
    ts.FromDatetime(moment)
    return ts


def job_spec_of(event: events_pb2.JobCreated) -> JobSpec:
    """The consensus view of a job: labels of whichever task type the spec has (for a pairwise
    comparison its allowed winners), overlap, target, and the organisation."""
    spec = event.spec
    kind = spec.WhichOneof("task")
    labels = list(taskmessages.schema_labels(spec, kind)) if kind else []
    if kind == "pairwise_comparison":
        labels = list(PAIRWISE_WINNERS if spec.pairwise_comparison.allow_tie else PAIRWISE_WINNERS[:2])
    task_type = TASK_TYPES.get(kind or "")
    return JobSpec.normalised(
        event.job_id,
        labels,
        spec.overlap.min,
        spec.overlap.max,
        spec.target_confidence,
        spec.expert_review,
        org_id=spec.client_id,
        answer_kind=task_type.answer_kind if task_type else "classification",
    )


def _worker_answers(answers: tuple[WeightedAnswer, ...]) -> list[events_pb2.WorkerAnswer]:
    return [
        events_pb2.WorkerAnswer(worker_id=a.worker_id, answer=answer_message(a.label), weight=a.weight, agreed=a.agreed)
        for a in answers
    ]


def task_resolved_event(result: TaskResult) -> events_pb2.Event:
    """The TaskResolved event of a result; the outbox stamps its id and time."""
    return events_pb2.Event(
        task_resolved=events_pb2.TaskResolved(
            task_id=result.task_id,
            job_id=result.job_id,
            item_id=result.item_id,
            object_name=result.object_name,
            label=answer_message(result.label),
            confidence=result.confidence,
            low_confidence=result.low_confidence,
            answers=_worker_answers(result.answers),
            resolved_at=timestamp_of(result.resolved_at),
            version=result.version,
        )
    )


def more_answers_event(task_id: str, job_id: str, answers_wanted: int) -> events_pb2.Event:
    """The MoreAnswersRequested event asking tasking for ``answers_wanted`` answers in total."""
    return events_pb2.Event(
        more_answers_requested=events_pb2.MoreAnswersRequested(
            task_id=task_id, job_id=job_id, answers_wanted=answers_wanted
        )
    )


def result_message(result: TaskResult) -> consensus_pb2.TaskResult:
    """The gRPC form of a result, majority label included."""
    return consensus_pb2.TaskResult(
        task_id=result.task_id,
        job_id=result.job_id,
        item_id=result.item_id,
        object_name=result.object_name,
        label=answer_message(result.label),
        confidence=result.confidence,
        low_confidence=result.low_confidence,
        majority_label=answer_message(result.majority_label),
        answers=_worker_answers(result.answers),
        resolved_at=timestamp_of(result.resolved_at),
        version=result.version,
    )


def quality_message(quality: JobQuality) -> consensus_pb2.JobQuality:
    """The gRPC form of the quality figures."""
    return consensus_pb2.JobQuality(
        tasks=quality.tasks,
        resolved=quality.resolved,
        low_confidence=quality.low_confidence,
        answers=quality.answers,
        agreement=quality.agreement,
        gold_accuracy=quality.gold_accuracy,
        gold_answers=quality.gold_answers,
        estimated_accuracy=quality.estimated_accuracy,
        mean_confidence=quality.mean_confidence,
        ttr_p50_seconds=quality.ttr_p50_seconds,
        ttr_p90_seconds=quality.ttr_p90_seconds,
        ttr_p99_seconds=quality.ttr_p99_seconds,
        resolved_per_minute=[
            common_pb2.MinuteCount(minute=m.minute, count=m.count) for m in quality.resolved_per_minute
        ],
        krippendorff_alpha=quality.krippendorff_alpha,
        fleiss_kappa=quality.fleiss_kappa,
    )


def workers_message(workers: list[WorkerQuality]) -> consensus_pb2.ListWorkersResponse:
    """The gRPC form of a worker list, order kept."""
    return consensus_pb2.ListWorkersResponse(
        workers=[
            consensus_pb2.WorkerQuality(
                worker_id=w.worker_id,
                answers=w.answers,
                gold_answers=w.gold_answers,
                gold_correct=w.gold_correct,
                reliability=w.reliability,
                agreement=w.agreement,
                spam_score=w.spam_score,
                spammer=w.spammer,
                labels=w.labels,
                confusion=w.confusion,
            )
            for w in workers
        ],
        spam_threshold=SPAM_THRESHOLD,
    )


def review_tasks_message(tasks: list[ReviewTask]) -> consensus_pb2.ListReviewTasksResponse:
    """The gRPC form of the review queue."""
    return consensus_pb2.ListReviewTasksResponse(
        tasks=[
            consensus_pb2.ReviewTask(
                task_id=task.task_id,
                job_id=task.job_id,
                item_id=task.item_id,
                object_name=task.object_name,
                labels=task.labels,
                answers=_worker_answers(task.answers),
                suggested_label=answer_message(task.suggested_label),
                confidence=task.confidence,
            )
            for task in tasks
        ]
    )
