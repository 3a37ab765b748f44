"""Job specs as protobuf: :class:`quorum.v1.common_pb2.JobSpec` to and from
:class:`quorum.jobspecs.JobSpec`, for ingest (CreateJob, JobCreated) and payments (Quote)."""

from __future__ import annotations

import datetime as dt

from quorum import taskmessages
from quorum.errors import InvalidArgument
from quorum.jobspecs import JobSpec, TaskType
from quorum.v1 import common_pb2

_PRICE_MODE_NAMES = {
    common_pb2.PRICE_MODE_UNSPECIFIED: "",
    common_pb2.PRICE_MODE_PER_OBJECT: "per_object",
    common_pb2.PRICE_MODE_PER_HOUR: "per_hour",
}
_PAY_MODE_NAMES = {
    common_pb2.PAY_MODE_UNSPECIFIED: "",
    common_pb2.PAY_MODE_PER_ANSWER: "per_answer",
    common_pb2.PAY_MODE_PER_HOUR: "per_hour",
}
_PRICE_MODES = {name: value for value, name in _PRICE_MODE_NAMES.items() if name}
_PAY_MODES = {name: value for value, name in _PAY_MODE_NAMES.items() if name}


def spec_from_proto(spec: common_pb2.JobSpec) -> JobSpec:
    """The spec as given, not yet validated (:func:`quorum.jobspecs.normalise_spec` does that).
    An unset or unknown task oneof gives task_type None; an unknown price or pay mode a name
    the validation refuses. Raises InvalidArgument("spec.sla_deadline") for a timestamp outside
    0001-01-01..9999-12-31 or with bad nanos."""
    task = spec.WhichOneof("task")
    try:
        task_type = TaskType(task) if task else None
    except ValueError:  # a oneof member this build does not handle yet
        task_type = None
    labels = taskmessages.schema_labels(spec, task) if task_type else ()
    options = tuple(sorted(taskmessages.config_options(spec, task).items())) if task_type else ()
    deadline = None
    if spec.HasField("sla_deadline"):
        try:
            deadline = spec.sla_deadline.ToDatetime(dt.UTC)
        except (ValueError, OverflowError) as exc:
            raise InvalidArgument("spec.sla_deadline", "is not a valid timestamp") from exc
    return JobSpec(
        name=spec.name,
        client_id=spec.client_id,
        task_type=task_type,
        labels=labels,
        instructions=spec.instructions,
        overlap_min=spec.overlap.min,
        overlap_max=spec.overlap.max,
        target_confidence=spec.target_confidence,
        gold_share=spec.gold_share,
        price_per_object_cents=spec.price_per_object_cents,
        pay_per_answer_cents=spec.pay_per_answer_cents,
        currency=spec.currency,
        pilot=spec.pilot,
        pilot_allowance=spec.pilot_allowance,
        sla_deadline=deadline,
        lease_seconds=spec.lease_seconds,
        price_mode=_PRICE_MODE_NAMES.get(spec.price_mode, f"#{spec.price_mode}"),
        price_per_hour_cents=spec.price_per_hour_cents,
        pay_mode=_PAY_MODE_NAMES.get(spec.pay_mode, f"#{spec.pay_mode}"),
        pay_per_hour_cents=spec.pay_per_hour_cents,
        budget_cap_cents=spec.budget_cap_cents,
        expert_review=spec.expert_review,
        gold_bonus_cents=spec.gold_bonus_cents,
        gold_bonus_threshold=spec.gold_bonus_threshold,
        gold_bonus_min_answers=spec.gold_bonus_min_answers,
        task_options=options,
        price_per_annotation_cents=spec.price_per_annotation_cents,
    )


def spec_to_proto(spec: JobSpec) -> common_pb2.JobSpec:
    """The message of ``spec``; a mode name it does not know is left unset."""
    message = common_pb2.JobSpec(
        name=spec.name,
        client_id=spec.client_id,
        instructions=spec.instructions,
        overlap=common_pb2.Overlap(min=spec.overlap_min, max=spec.overlap_max),
        target_confidence=spec.target_confidence,
        gold_share=spec.gold_share,
        price_per_object_cents=spec.price_per_object_cents,
        pay_per_answer_cents=spec.pay_per_answer_cents,
        currency=spec.currency,
        pilot=spec.pilot,
        pilot_allowance=spec.pilot_allowance,
        lease_seconds=spec.lease_seconds,
        price_mode=_PRICE_MODES.get(spec.price_mode, common_pb2.PRICE_MODE_UNSPECIFIED),
        price_per_hour_cents=spec.price_per_hour_cents,
        pay_mode=_PAY_MODES.get(spec.pay_mode, common_pb2.PAY_MODE_UNSPECIFIED),
        pay_per_hour_cents=spec.pay_per_hour_cents,
        budget_cap_cents=spec.budget_cap_cents,
        expert_review=spec.expert_review,
        gold_bonus_cents=spec.gold_bonus_cents,
        gold_bonus_threshold=spec.gold_bonus_threshold,
        gold_bonus_min_answers=spec.gold_bonus_min_answers,
        price_per_annotation_cents=spec.price_per_annotation_cents,
    )
    if spec.task_type is not None:
        config = taskmessages.config_message(spec.task_type.value, spec.labels, dict(spec.task_options))
        getattr(message, spec.task_type.value).CopyFrom(config)
    if spec.sla_deadline is not None:
        message.sla_deadline.FromDatetime(spec.sla_deadline)
    return message
