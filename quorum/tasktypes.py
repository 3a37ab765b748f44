"""The task types every service knows: which answer each takes, what content it labels and
whether it has a label schema.

A task type is the member set in ``JobSpec.task`` (and ``WorkerTask.task``); an answer kind is
the member set in ``Answer.value``. Every task config names its schema ``labels`` (classes,
entity types, keypoint names), except transcription and pairwise comparison, which have none.
Pure: the protobuf side is :mod:`quorum.taskmessages`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True)
class TaskType:
    """One ``JobSpec.task`` member: its ``answer_kind`` (the ``Answer.value`` member a worker
    sets), the ``fused_kind`` consensus resolves it to (the same except for segmentation,
    whose polygons fuse into masks), the ``media`` it labels ("image", "text" or "any") and
    whether its config carries ``labels``."""

    name: str
    answer_kind: str
    fused_kind: str
    media: str
    has_labels: bool = True

    @property
    def categorical(self) -> bool:
        """Whether an answer is one label out of the schema (single-label classification)."""
        return self.answer_kind == "classification"


TASK_TYPES: Final[Mapping[str, TaskType]] = {
    t.name: t
    for t in (
        TaskType("image_classification", "classification", "classification", "image"),
        TaskType("text_classification", "classification", "classification", "text"),
        TaskType("multi_label_classification", "multi_label", "multi_label", "any"),
        TaskType("bounding_boxes", "boxes", "boxes", "image"),
        TaskType("keypoints", "keypoints", "keypoints", "image"),
        TaskType("segmentation", "polygons", "masks", "image"),
        TaskType("ner_spans", "spans", "spans", "text"),
        TaskType("transcription", "transcription", "transcription", "any", has_labels=False),
        TaskType("pairwise_comparison", "pairwise", "pairwise", "text", has_labels=False),
    )
}

# Upper bound of a transcription's length when the job sets none.
DEFAULT_TRANSCRIPTION_CHARS: Final = 10_000
PAIRWISE_WINNERS: Final = ("a", "b", "tie")


def task_type(name: str) -> TaskType | None:
    """The task type called ``name`` (a ``JobSpec.task`` member), None when unknown."""
    return TASK_TYPES.get(name)
