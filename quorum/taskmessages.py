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
    (sorted keys, no spaces) of the whole answer otherwise, e.g. ``{"boxes":{}}``; "" for an
    empty answer. A classification label never starts with "{" (ingest refuses it), so the
    form says which it is."""
    kind = answer.WhichOneof("value")
    if kind is None:
        return ""
    if kind == "classification":
        return answer.classification.label
    body = json_format.MessageToDict(answer, preserving_proto_field_name=True)
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def answer_from_text(text: str) -> common_pb2.Answer:
    """The answer whose :func:`answer_text` is ``text``; "" gives an empty answer. Raises
    ValueError for a JSON text that is no answer."""
    if not text:
        return common_pb2.Answer()
    if not text.startswith(ANSWER_JSON_START):
        return common_pb2.Answer(classification=common_pb2.ClassificationAnswer(label=text))
    answer = common_pb2.Answer()
    try:
        json_format.Parse(text, answer)
    except json_format.ParseError as exc:
        raise ValueError(f"not an answer: {exc}") from exc
    return answer


ANSWER_JSON_START: Final = "{"
