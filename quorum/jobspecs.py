"""What a client orders: the job spec, its limits and defaults, and the one validation
every service applies to it, so that a quote refuses exactly what CreateJob refuses.

Pure: the protobuf side is :mod:`quorum.jobspecmessages`.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

from quorum import tasktypes
from quorum.errors import InvalidArgument

# Spec limits and defaults (see JobSpec in protos/quorum/v1/common.proto).
MAX_LABELS = 200
MAX_LABEL_CHARS = 100
MAX_NAME_CHARS = 200
MAX_INSTRUCTIONS_CHARS = 64 * 1024
MAX_OVERLAP = 50
DEFAULT_OVERLAP_MIN = 3
DEFAULT_OVERLAP_MAX = 5
DEFAULT_TARGET_CONFIDENCE = 0.9
DEFAULT_CURRENCY = "USD"
DEFAULT_PILOT_ALLOWANCE = 100
DEFAULT_LEASE_SECONDS = 120
DEFAULT_GOLD_BONUS_THRESHOLD = 0.9
DEFAULT_GOLD_BONUS_MIN_ANSWERS = 5
MAX_GOLD_BONUS_MIN_ANSWERS = 10_000
MAX_LEASE_SECONDS = 86_400

# A client id (an organisation): what ingest accepts in JobSpec.client_id.
CLIENT_ID = re.compile(r"[A-Za-z0-9._@-]{1,128}")
CLIENT_ID_RULE = "1-128 characters of letters, digits and . _ @ -"
_CURRENCY = re.compile(r"[A-Z]{3}")


def is_client_id(value: str) -> bool:
    """Whether ``value`` is a well-formed client id (:data:`CLIENT_ID`)."""
    return CLIENT_ID.fullmatch(value) is not None


class TaskType(StrEnum):
    """The member of JobSpec's ``task`` oneof; its value is the proto field name."""

    IMAGE_CLASSIFICATION = "image_classification"
    TEXT_CLASSIFICATION = "text_classification"
    MULTI_LABEL_CLASSIFICATION = "multi_label_classification"
    BOUNDING_BOXES = "bounding_boxes"
    KEYPOINTS = "keypoints"
    SEGMENTATION = "segmentation"
    NER_SPANS = "ner_spans"
    TRANSCRIPTION = "transcription"
    PAIRWISE_COMPARISON = "pairwise_comparison"

    @property
    def media(self) -> str:
        """What objects it labels: "image", "text" or "any" (either, told apart by content)."""
        return tasktypes.TASK_TYPES[self.value].media

    @property
    def has_labels(self) -> bool:
        """Whether its config carries a label schema (classes, entity types, point names)."""
        return tasktypes.TASK_TYPES[self.value].has_labels

    @property
    def categorical(self) -> bool:
        """Single-label classification: the only types whose gold answer is one label."""
        return tasktypes.TASK_TYPES[self.value].categorical


@dataclass(frozen=True)
class JobSpec:
    """What a client orders, field for field as in the proto; zero values mean "not given"."""

    name: str = ""
    client_id: str = ""
    task_type: TaskType | None = None
    labels: tuple[str, ...] = ()
    instructions: str = ""
    overlap_min: int = 0
    overlap_max: int = 0
    target_confidence: float = 0.0
    gold_share: float = 0.0
    price_per_object_cents: int = 0
    pay_per_answer_cents: int = 0
    currency: str = ""
    pilot: bool = False
    pilot_allowance: int = 0
    sla_deadline: dt.datetime | None = None
    lease_seconds: int = 0
    # "per_object" (the default when empty) or "per_hour"; anything else is refused.
    price_mode: str = ""
    price_per_hour_cents: int = 0
    # "per_answer" (the default when empty) or "per_hour".
    pay_mode: str = ""
    pay_per_hour_cents: int = 0
    # 0: no cap.
    budget_cap_cents: int = 0
    expert_review: bool = False
    # Quality bonus per paid answer (0: none), the accuracy on gold it needs and the
    # gold answers a worker must have given for it to apply.
    gold_bonus_cents: int = 0
    gold_bonus_threshold: float = 0.0
    gold_bonus_min_answers: int = 0
    # The task config's fields other than labels: transcription's max_chars, pairwise's
    # question and allow_tie.
    task_options: tuple[tuple[str, Any], ...] = ()
    price_per_annotation_cents: int = 0

    @property
    def labels_field(self) -> str:
        """The request field path of the labels, for error messages."""
        task = self.task_type.value if self.task_type else "task"
        return f"spec.{task}.labels"


def normalise_spec(spec: JobSpec) -> JobSpec:
    """Validates a spec and fills in the defaults.

    Returns the spec to store and announce: labels stripped, overlap 3..5 when
    both are zero, target confidence 0.9, currency USD, pilot allowance 100 for
    pilots, lease 120 s. Raises :class:`InvalidArgument` naming the first bad field
    (``spec.client_id``, ``spec.overlap.max``, ...). Costs O(number of labels).
    """
    if not is_client_id(spec.client_id):
        raise InvalidArgument("spec.client_id", f"required: {CLIENT_ID_RULE} (got {spec.client_id!r:.140})")
    if len(spec.name) > MAX_NAME_CHARS:
        raise InvalidArgument("spec.name", f"at most {MAX_NAME_CHARS} characters (got {len(spec.name)})")
    if len(spec.instructions) > MAX_INSTRUCTIONS_CHARS:
        raise InvalidArgument(
            "spec.instructions", f"at most {MAX_INSTRUCTIONS_CHARS} characters (got {len(spec.instructions)})"
        )
    if spec.task_type is None:
        raise InvalidArgument("spec.task", f"missing or unknown task type: set one of {', '.join(TaskType)}")
    if spec.task_type.has_labels:
        labels = _normalise_labels(spec.labels, spec.labels_field)
    elif spec.labels:
        raise InvalidArgument(spec.labels_field, f"a {spec.task_type} job has no labels")
    else:
        labels = ()
    _check_task_options(spec.task_type, dict(spec.task_options))
    overlap_min, overlap_max = _normalise_overlap(spec.overlap_min, spec.overlap_max)

    target = spec.target_confidence
    if target == 0:
        target = DEFAULT_TARGET_CONFIDENCE
    elif not (0 < target <= 1):  # also rejects NaN
        raise InvalidArgument("spec.target_confidence", f"must be in (0, 1] (got {target})")
    if not (0 <= spec.gold_share < 1) or math.isnan(spec.gold_share):
        raise InvalidArgument("spec.gold_share", f"must be in [0, 1) (got {spec.gold_share})")
    if spec.price_per_object_cents < 0:
        raise InvalidArgument("spec.price_per_object_cents", f"must be >= 0 (got {spec.price_per_object_cents})")
    if spec.pay_per_answer_cents < 0:
        raise InvalidArgument("spec.pay_per_answer_cents", f"must be >= 0 (got {spec.pay_per_answer_cents})")
    if spec.price_per_annotation_cents < 0:
        raise InvalidArgument(
            "spec.price_per_annotation_cents", f"must be >= 0 (got {spec.price_per_annotation_cents})"
        )
    if spec.price_per_annotation_cents and spec.task_type.categorical:
        raise InvalidArgument(
            "spec.price_per_annotation_cents", f"a {spec.task_type} object holds no annotations to price"
        )

    currency = spec.currency or DEFAULT_CURRENCY
    if not _CURRENCY.fullmatch(currency):
        raise InvalidArgument("spec.currency", f"an ISO 4217 code of three uppercase letters (got {currency!r:.20})")
    if spec.pilot_allowance < 0:
        raise InvalidArgument("spec.pilot_allowance", f"must be >= 0 (got {spec.pilot_allowance})")
    pilot_allowance = spec.pilot_allowance
    if spec.pilot and pilot_allowance == 0:
        pilot_allowance = DEFAULT_PILOT_ALLOWANCE
    if not (0 <= spec.lease_seconds <= MAX_LEASE_SECONDS):
        raise InvalidArgument("spec.lease_seconds", f"must be in [0, {MAX_LEASE_SECONDS}] (got {spec.lease_seconds})")
    lease_seconds = spec.lease_seconds or DEFAULT_LEASE_SECONDS
    price_mode, pay_mode = _normalise_money_modes(spec)
    bonus_threshold, bonus_min_answers = _normalise_gold_bonus(spec)

    return replace(
        spec,
        labels=labels,
        overlap_min=overlap_min,
        overlap_max=overlap_max,
        target_confidence=target,
        currency=currency,
        pilot_allowance=pilot_allowance,
        lease_seconds=lease_seconds,
        price_mode=price_mode,
        pay_mode=pay_mode,
        gold_bonus_threshold=bonus_threshold,
        gold_bonus_min_answers=bonus_min_answers,
    )


def _normalise_gold_bonus(spec: JobSpec) -> tuple[float, int]:
    """The bonus threshold and minimum gold answers with their defaults (0.9 and 5 when
    zero); raises InvalidArgument naming the field. A job without a bonus keeps zeros."""
    if spec.gold_bonus_cents < 0:
        raise InvalidArgument("spec.gold_bonus_cents", f"must be >= 0 (got {spec.gold_bonus_cents})")
    threshold = spec.gold_bonus_threshold
    if not 0 <= threshold <= 1:  # also rejects NaN
        raise InvalidArgument("spec.gold_bonus_threshold", f"must be in [0, 1] (got {threshold})")
    if not 0 <= spec.gold_bonus_min_answers <= MAX_GOLD_BONUS_MIN_ANSWERS:
        raise InvalidArgument(
            "spec.gold_bonus_min_answers",
            f"must be in [0, {MAX_GOLD_BONUS_MIN_ANSWERS}] (got {spec.gold_bonus_min_answers})",
        )
    if spec.gold_bonus_cents == 0:
        return threshold, spec.gold_bonus_min_answers
    if spec.gold_share == 0:
        raise InvalidArgument("spec.gold_bonus_cents", "needs gold tasks to grade workers: set spec.gold_share > 0")
    return threshold or DEFAULT_GOLD_BONUS_THRESHOLD, spec.gold_bonus_min_answers or DEFAULT_GOLD_BONUS_MIN_ANSWERS


MAX_TRANSCRIPTION_CHARS = 100_000
MAX_QUESTION_CHARS = 1000


def _check_task_options(task_type: TaskType, options: dict[str, Any]) -> None:
    """Raises InvalidArgument naming the config field that is out of range."""
    if task_type is TaskType.TRANSCRIPTION:
        max_chars = int(options.get("max_chars", 0))
        if not 0 <= max_chars <= MAX_TRANSCRIPTION_CHARS:
            raise InvalidArgument(
                "spec.transcription.max_chars", f"must be in [0, {MAX_TRANSCRIPTION_CHARS}] (got {max_chars})"
            )
    if task_type is TaskType.PAIRWISE_COMPARISON:
        question = str(options.get("question", ""))
        if len(question) > MAX_QUESTION_CHARS:
            raise InvalidArgument(
                "spec.pairwise_comparison.question", f"at most {MAX_QUESTION_CHARS} characters (got {len(question)})"
            )


PRICE_MODES = ("per_object", "per_hour")
PAY_MODES = ("per_answer", "per_hour")


def _normalise_money_modes(spec: JobSpec) -> tuple[str, str]:
    """The price and pay modes with their defaults; raises InvalidArgument naming the field."""
    price_mode = spec.price_mode or PRICE_MODES[0]
    if price_mode not in PRICE_MODES:
        raise InvalidArgument("spec.price_mode", f"must be PER_OBJECT or PER_HOUR (got {spec.price_mode!r:.20})")
    pay_mode = spec.pay_mode or PAY_MODES[0]
    if pay_mode not in PAY_MODES:
        raise InvalidArgument("spec.pay_mode", f"must be PER_ANSWER or PER_HOUR (got {spec.pay_mode!r:.20})")
    for name in ("price_per_hour_cents", "pay_per_hour_cents", "budget_cap_cents"):
        value = getattr(spec, name)
        if value < 0:
            raise InvalidArgument(f"spec.{name}", f"must be >= 0 (got {value})")
    if price_mode == "per_hour" and spec.price_per_hour_cents == 0:
        raise InvalidArgument("spec.price_per_hour_cents", "is required when price_mode is PER_HOUR")
    if pay_mode == "per_hour" and spec.pay_per_hour_cents == 0:
        raise InvalidArgument("spec.pay_per_hour_cents", "is required when pay_mode is PER_HOUR")
    return price_mode, pay_mode


def _normalise_labels(labels: Iterable[str], field_path: str) -> tuple[str, ...]:
    stripped = tuple(label.strip() for label in labels)
    if not stripped:
        raise InvalidArgument(field_path, "at least one label is required")
    if len(stripped) > MAX_LABELS:
        raise InvalidArgument(field_path, f"at most {MAX_LABELS} labels (got {len(stripped)})")
    seen: set[str] = set()
    for index, label in enumerate(stripped):
        if not label:
            raise InvalidArgument(field_path, f"label {index} is blank")
        if label.startswith("{"):
            # Stored answers starting with "{" are structured answers (quorum.taskmessages).
            raise InvalidArgument(field_path, f"label {index} starts with '{{'")
        if len(label) > MAX_LABEL_CHARS:
            raise InvalidArgument(field_path, f"label {index} has {len(label)} characters; at most {MAX_LABEL_CHARS}")
        if label in seen:
            raise InvalidArgument(field_path, f"label {label!r} appears twice")
        seen.add(label)
    return stripped


def _normalise_overlap(low: int, high: int) -> tuple[int, int]:
    if low == 0 and high == 0:
        return DEFAULT_OVERLAP_MIN, DEFAULT_OVERLAP_MAX
    if low < 1:
        raise InvalidArgument("spec.overlap.min", f"must be >= 1 (got {low}); leave min and max 0 for 3..5")
    if high < low:
        raise InvalidArgument("spec.overlap.max", f"must be >= overlap.min {low} (got {high})")
    if high > MAX_OVERLAP:
        raise InvalidArgument("spec.overlap.max", f"must be <= {MAX_OVERLAP} (got {high})")
    return low, high
