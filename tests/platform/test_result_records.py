"""`quorum results` lines: a classification label is its string, a structured label (boxes,
masks, ...) the fused answer as a JSON object, never blank."""

from __future__ import annotations

import json

from quorum.client import label_of, result_record
from quorum.v1 import common_pb2, consensus_pb2, events_pb2


def test_a_boxes_result_keeps_its_fused_boxes() -> None:
    fused = common_pb2.Answer(
        boxes=common_pb2.BoxesAnswer(boxes=[common_pb2.Box(label="car", x=0.1, y=0.2, w=0.3, h=0.2, confidence=0.97)])
    )
    drawn = common_pb2.Answer(
        boxes=common_pb2.BoxesAnswer(boxes=[common_pb2.Box(label="car", x=0.1, y=0.2, w=0.3, h=0.2)])
    )
    result = consensus_pb2.TaskResult(
        task_id="t1",
        object_name="street.jpg",
        label=fused,
        majority_label=fused,
        confidence=0.97,
        answers=[events_pb2.WorkerAnswer(worker_id="w1", answer=drawn, weight=0.7)],
    )
    record = json.loads(json.dumps(result_record(result)))

    assert record["label"] == {
        "boxes": {"boxes": [{"label": "car", "x": 0.1, "y": 0.2, "w": 0.3, "h": 0.2, "confidence": 0.97}]}
    }
    assert record["majority_label"] == record["label"]
    assert record["answers"] == [
        {
            "worker": "w1",
            "label": {"boxes": {"boxes": [{"label": "car", "x": 0.1, "y": 0.2, "w": 0.3, "h": 0.2}]}},
            "weight": 0.7,
        }
    ]
    assert json.loads(label_of(fused)) == record["label"]


def test_a_classification_result_keeps_its_label_string() -> None:
    cat = common_pb2.Answer(classification=common_pb2.ClassificationAnswer(label="cat"))
    record = result_record(consensus_pb2.TaskResult(task_id="t1", label=cat, majority_label=cat, confidence=0.9))
    assert (record["label"], record["majority_label"]) == ("cat", "cat")
    assert label_of(cat) == "cat"
