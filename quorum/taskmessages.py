"""Task configs and answers as protobuf, for every task type of :mod:`quorum.tasktypes`.

Answers travel as protobuf; services that keep answers in text columns (consensus, payments)
store :func:`answer_text`: the label itself for classification, canonical JSON of the member
for the others, which :func:`answer_from_text` reads back given the answer kind.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from google.protobuf import json_format
from google.protobuf.message import Message

from quorum.tasktypes import TASK_TYPES
from quorum.v1 import common_pb2


def schema_labels(owner: Message, name: str) -> tuple[str, ...]:
    """The labels of ``owner``'s ``name`` config (a JobSpec or a WorkerTask); () for a task
    type without labels or an unknown one."""
    kind = TASK_TYPES.get(name)
    if kind is None or not kind.has_labels:
        return ()
    return tuple(getattr(owner, name).labels)


def config_message(name: str, labels: tuple[str, ...] = (), options: Mapping[str, Any] | None = None) -> Message:
    """The config message of task type ``name`` with ``labels`` and the other ``options``
    (field name -> value, e.g. ``{"max_chars": 200}``). Raises KeyError for an unknown type."""
    kind = TASK_TYPES[name]
    message = _CONFIGS[name]()
    if kind.has_labels:
        message.labels.extend(labels)  # type: ignore[attr-defined]
    for field, value in (options or {}).items():
        setattr(message, field, value)
    return message


def config_options(owner: Message, name: str) -> dict[str, Any]:
    """The fields of ``owner``'s ``name`` config other than ``labels``, as plain values."""
    if name not in TASK_TYPES:
        return {}
    config = getattr(owner, name)
    return {field.name: value for field, value in config.ListFields() if field.name != "labels"}


_CONFIGS: Final[Mapping[str, type[Message]]] = {
    "image_classification": common_pb2.ClassificationConfig,
    "text_classification": common_pb2.ClassificationConfig,
    "multi_label_classification": common_pb2.MultiLabelConfig,
    "bounding_boxes": common_pb2.BoundingBoxConfig,
    "keypoints": common_pb2.KeypointsConfig,
    "segmentation": common_pb2.SegmentationConfig,
    "ner_spans": common_pb2.SpansConfig,
    "transcription": common_pb2.TranscriptionConfig,
    "pairwise_comparison": common_pb2.PairwiseConfig,
}


def answer_text(answer: common_pb2.Answer) -> str:
    """The stored form of an answer: the label of a classification answer, canonical JSON
    (sorted keys, no spaces) of any other member, "" for an empty answer."""
    kind = answer.WhichOneof("value")
    if kind is None:
        return ""
    if kind == "classification":
        return answer.classification.label
    body = json_format.MessageToDict(getattr(answer, kind), preserving_proto_field_name=True)
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def answer_from_text(kind: str, text: str) -> common_pb2.Answer:
    """The answer whose :func:`answer_text` is ``text``, for answer kind ``kind``. An empty
    text of a classification kind is an empty answer. Raises ValueError for a text that is not
    that kind's JSON."""
    if kind == "classification":
        return (
            common_pb2.Answer(classification=common_pb2.ClassificationAnswer(label=text))
            if text
            else common_pb2.Answer()
        )
    answer = common_pb2.Answer()
    try:
        json_format.Parse(text or "{}", getattr(answer, kind))
    except (json_format.ParseError, AttributeError) as exc:
        raise ValueError(f"not a {kind} answer: {exc}") from exc
    # An empty member (e.g. no box) is still an answer of that kind.
    getattr(answer, kind).SetInParent()
    return answer
