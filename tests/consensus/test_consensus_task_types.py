"""Structured task types through the consensus event handler and queries on real databases:
boxes, multi-label, spans, keypoints, polygons, transcriptions and pairwise comparisons resolve
to fused labels with confidences, weigh workers by reliability, ask for more answers while
unsure, go to expert review, and come back from GetResult and ExportResults as Answer
messages."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from consensus_helpers import (
    CAR,
    NEAR_CAR,
    NOW,
    STRAY,
    TOPICS,
    answer_accepted,
    answered,
    boxes,
    job_created,
    task_created,
)
from consensus_helpers import emitted_payloads as emitted
from consensus_helpers import structured_job_created as job
from hypothesis import given, settings
from hypothesis import strategies as st

from quorum.errors import InvalidArgument
from quorum.taskmessages import answer_from_text, answer_text
from quorum.v1 import common_pb2, events_pb2
from services.consensus import messages, structured
from services.consensus.aggregation.masks import polygon_mask
from services.consensus.handlers import ConsensusEvents, ConsensusQueries
from services.consensus.review import ExpertReview


def test_boxes_fuse_per_object_with_confidences(handler: ConsensusEvents, engine: sa.Engine) -> None:
    handler.handle(
        [
            job("jb", bounding_boxes=common_pb2.BoundingBoxConfig(labels=["car"])),
            task_created("t1", "jb"),
            answered("t1", "jb", "w1", boxes=boxes(CAR)),
            answered("t1", "jb", "w2", boxes=boxes(NEAR_CAR)),
            answered("t1", "jb", "w3", boxes=boxes(CAR)),
        ]
    )
    (resolved,) = emitted(engine, "task_resolved")
    assert resolved.label.WhichOneof("value") == "boxes"
    (fused,) = resolved.label.boxes.boxes
    assert fused.label == "car" and 0.5 < fused.confidence <= 1
    assert abs(fused.x - 0.10) < 0.011 and abs(fused.w - 0.30) < 0.011
    assert resolved.confidence >= 0.9 and not resolved.low_confidence
    assert [a.answer.WhichOneof("value") for a in resolved.answers] == ["boxes"] * 3

    result = ConsensusQueries(engine, clock=lambda: NOW).get_result("t1")
    assert messages.result_message(result).label == resolved.label
    (exported,) = ConsensusQueries(engine, clock=lambda: NOW).export_results("jb")
    assert messages.result_message(exported).label.boxes.boxes[0].label == "car"


def test_a_boxes_resolution_says_which_answers_agree_with_the_fused_label(
    handler: ConsensusEvents, engine: sa.Engine
) -> None:
    handler.handle(
        [
            job("jv", overlap=(4, 4), bounding_boxes=common_pb2.BoundingBoxConfig(labels=["car"])),
            task_created("t1", "jv"),
            answered("t1", "jv", "w1", boxes=boxes(CAR)),
            answered("t1", "jv", "w2", boxes=boxes(NEAR_CAR)),
            answered("t1", "jv", "w3", boxes=boxes(STRAY)),
            answered("t1", "jv", "w4", boxes=boxes(CAR)),
        ]
    )
    (resolved,) = emitted(engine, "task_resolved")
    assert len(resolved.label.boxes.boxes) == 1
    # Payments pays by these verdicts: a box answer has no class label to compare.
    assert {a.worker_id: a.agreed for a in resolved.answers} == {"w1": True, "w2": True, "w3": False, "w4": True}
    assert all(a.HasField("agreed") for a in resolved.answers)


def test_boxes_in_doubt_ask_for_more_then_resolve_low_confidence(handler: ConsensusEvents, engine: sa.Engine) -> None:
    handler.handle(
        [
            job("jd", overlap=(2, 3), bounding_boxes=common_pb2.BoundingBoxConfig(labels=["car"])),
            task_created("t1", "jd"),
            answered("t1", "jd", "w1", boxes=boxes(CAR)),
            answered("t1", "jd", "w2", boxes=boxes()),
        ]
    )
    (request,) = emitted(engine, "more_answers_requested")
    assert (request.task_id, request.answers_wanted) == ("t1", 3)
    assert not emitted(engine, "task_resolved")
    handler.handle([answered("t1", "jd", "w3", boxes=boxes(STRAY))])
    (resolved,) = emitted(engine, "task_resolved")
    assert resolved.low_confidence and resolved.confidence < 0.9


def test_multi_label_decides_each_label(handler: ConsensusEvents, engine: sa.Engine) -> None:
    def picked(*labels: str) -> common_pb2.MultiLabelAnswer:
        return common_pb2.MultiLabelAnswer(labels=list(labels))

    handler.handle(
        [
            job("jm", multi_label_classification=common_pb2.MultiLabelConfig(labels=["red", "round", "big"])),
            task_created("t1", "jm"),
            answered("t1", "jm", "w1", multi_label=picked("red", "round")),
            answered("t1", "jm", "w2", multi_label=picked("round", "red")),
            answered("t1", "jm", "w3", multi_label=picked("red", "round")),
        ]
    )
    (resolved,) = emitted(engine, "task_resolved")
    assert list(resolved.label.multi_label.labels) == ["red", "round"]
    assert all(0.9 < p <= 1 for p in resolved.label.multi_label.confidences)
    assert resolved.confidence >= 0.9


def test_spans_fuse_boundaries_and_types(handler: ConsensusEvents, engine: sa.Engine) -> None:
    def spans(*triples: tuple[int, int, str]) -> common_pb2.SpansAnswer:
        return common_pb2.SpansAnswer(spans=[common_pb2.Span(start=s, end=e, label=t) for s, e, t in triples])

    handler.handle(
        [
            job("js", overlap=(3, 3), ner_spans=common_pb2.SpansConfig(labels=["PER", "ORG"])),
            task_created("t1", "js"),
            answered("t1", "js", "w1", spans=spans((0, 12, "PER"))),
            answered("t1", "js", "w2", spans=spans((0, 12, "PER"), (17, 24, "ORG"))),
            answered("t1", "js", "w3", spans=spans((0, 12, "PER"))),
        ]
    )
    (resolved,) = emitted(engine, "task_resolved")
    fused = [(s.start, s.end, s.label) for s in resolved.label.spans.spans]
    assert fused == [(0, 12, "PER")]
    assert resolved.label.spans.spans[0].confidence > 0.5


def test_exactly_alike_transcriptions_resolve(handler: ConsensusEvents, engine: sa.Engine) -> None:
    said = common_pb2.TranscriptionAnswer(text="hello world")
    handler.handle(
        [
            job("jt", overlap=(3, 3), transcription=common_pb2.TranscriptionConfig()),
            task_created("t1", "jt"),
            answered("t1", "jt", "w1", transcription=said),
            answered("t1", "jt", "w2", transcription=said),
            answered("t1", "jt", "w3", transcription=common_pb2.TranscriptionAnswer(text="hello word")),
        ]
    )
    (resolved,) = emitted(engine, "task_resolved")
    assert resolved.label.transcription.text == "hello world"


# Keypoints, polygons, transcription and pairwise share one set of scenarios; each case gives
# four answers close to one another (but, where the type allows, not equal), an outlier, four
# answers far apart, and a check that a fused label is what the close answers describe.


def keypoints(nose: tuple[float, float], tail: tuple[float, float]) -> dict[str, Any]:
    return {
        "keypoints": common_pb2.KeypointsAnswer(
            points=[
                common_pb2.Keypoint(label="nose", x=nose[0], y=nose[1]),
                common_pb2.Keypoint(label="tail", x=tail[0], y=tail[1]),
            ]
        )
    }


def square(x0: float, y0: float, x1: float, y1: float) -> dict[str, Any]:
    corners = [common_pb2.Point(x=x, y=y) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))]
    return {"polygons": common_pb2.PolygonsAnswer(polygons=[common_pb2.Polygon(label="car", points=corners)])}


def said(text: str) -> dict[str, Any]:
    return {"transcription": common_pb2.TranscriptionAnswer(text=text)}


def picked(winner: str) -> dict[str, Any]:
    return {"pairwise": common_pb2.PairwiseAnswer(winner=winner)}


def decoded(mask: common_pb2.Mask) -> np.ndarray:
    """The boolean grid of a run-length encoded Mask (runs alternate, background first)."""
    values = np.repeat(np.arange(len(mask.counts)) % 2 == 1, list(mask.counts))
    assert values.size == mask.width * mask.height
    return values.reshape(mask.height, mask.width)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


CAR_SQUARE = polygon_mask([51.2, 153.6, 153.6, 51.2], [51.2, 51.2, 153.6, 153.6], (256, 256))  # (0.2, 0.6) squared


def near_keypoints(label: common_pb2.Answer) -> bool:
    points = {p.label: (p.x, p.y) for p in label.keypoints.points}
    return set(points) == {"nose", "tail"} and (
        np.abs(np.subtract(points["nose"], (0.301, 0.401))).max() < 0.002
        and np.abs(np.subtract(points["tail"], (0.601, 0.700))).max() < 0.002
    )


def car_mask(label: common_pb2.Answer) -> bool:
    (mask,) = label.masks.masks
    return mask.label == "car" and 0.5 < mask.confidence <= 1 and iou(decoded(mask), CAR_SQUARE) > 0.95


@dataclass(frozen=True)
class Case:
    spec: dict[str, Any]
    close: tuple[dict[str, Any], ...]
    outlier: dict[str, Any]
    far: tuple[dict[str, Any], ...]
    # Whether a fused label is what the close answers describe.
    fused_ok: Callable[[common_pb2.Answer], bool]
    # Two conflicting answers: the reliable worker's and a new worker's.
    reliable: dict[str, Any]
    unsure: dict[str, Any]
    reliable_won: Callable[[common_pb2.Answer], bool]


CASES = {
    "keypoints": Case(
        spec={"keypoints": common_pb2.KeypointsConfig(labels=["nose", "tail"])},
        close=(
            keypoints((0.300, 0.400), (0.600, 0.700)),
            keypoints((0.302, 0.401), (0.603, 0.698)),
            keypoints((0.301, 0.403), (0.601, 0.701)),
            keypoints((0.301, 0.401), (0.600, 0.700)),
        ),
        outlier=keypoints((0.9, 0.1), (0.1, 0.9)),
        far=(
            keypoints((0.1, 0.1), (0.2, 0.2)),
            keypoints((0.5, 0.5), (0.6, 0.6)),
            keypoints((0.9, 0.9), (0.8, 0.8)),
            keypoints((0.1, 0.9), (0.2, 0.8)),
        ),
        fused_ok=near_keypoints,
        reliable=keypoints((0.301, 0.401), (0.601, 0.700)),
        unsure=keypoints((0.7, 0.2), (0.9, 0.3)),
        reliable_won=near_keypoints,
    ),
    "polygons": Case(
        spec={"segmentation": common_pb2.SegmentationConfig(labels=["car"])},
        close=(
            square(0.200, 0.200, 0.600, 0.600),
            square(0.205, 0.200, 0.600, 0.605),
            square(0.200, 0.195, 0.595, 0.600),
            square(0.200, 0.200, 0.605, 0.600),
        ),
        outlier=square(0.70, 0.70, 0.95, 0.95),
        far=(
            square(0.0, 0.0, 0.2, 0.2),
            square(0.3, 0.3, 0.5, 0.5),
            square(0.6, 0.6, 0.8, 0.8),
            square(0.0, 0.6, 0.2, 0.8),
        ),
        fused_ok=car_mask,
        reliable=square(0.2, 0.2, 0.6, 0.6),
        unsure=square(0.4, 0.4, 0.9, 0.9),
        reliable_won=car_mask,
    ),
    "transcription": Case(
        spec={"transcription": common_pb2.TranscriptionConfig()},
        close=(
            said("the quick brown fox jumps"),
            said("the quick brown fx jumps"),
            said("teh quick brown fox jumps"),
            said("the quick  brown fox jumps"),
        ),
        outlier=said("buy cheap watches now"),
        far=(said("red car"), said("blue boat parked"), said("green tree"), said("a yellow kite")),
        fused_ok=lambda label: label.transcription.text == "the quick brown fox jumps",
        reliable=said("the cat sat down"),
        unsure=said("a cat sat"),
        reliable_won=lambda label: label.transcription.text == "the cat sat down",
    ),
    "pairwise": Case(
        spec={"pairwise_comparison": common_pb2.PairwiseConfig(question="Which is more faithful?")},
        close=(picked("a"), picked("a"), picked("a"), picked("a")),
        outlier=picked("b"),
        far=(picked("a"), picked("b"), picked("a"), picked("b")),
        fused_ok=lambda label: label.pairwise.winner == "a" and label.pairwise.a_wins > 0.9,
        reliable=picked("b"),
        unsure=picked("a"),
        reliable_won=lambda label: label.pairwise.winner == "b" and label.pairwise.a_wins < 0.5,
    ),
}
KINDS = sorted(CASES)


def graded(worker: str, right: int) -> list[events_pb2.Event]:
    """Gold classification answers that make ``worker`` reliable (all ``right`` of them right)."""
    job_id = f"gold-{worker}"
    events = [job_created(job_id, labels=("cat", "dog"))]
    for k in range(right):
        events += [
            task_created(f"{job_id}-{k}", job_id, gold_label="cat"),
            answer_accepted(f"{job_id}-{k}", job_id, worker, "cat", gold=True),
        ]
    return events


@pytest.mark.parametrize("kind", KINDS)
def test_close_answers_resolve_at_the_target(kind: str, handler: ConsensusEvents, engine: sa.Engine) -> None:
    case = CASES[kind]
    handler.handle([job("j", overlap=(3, 5), **case.spec), task_created("t1", "j")])
    handler.handle([answered("t1", "j", f"w{i}", **answer) for i, answer in enumerate(case.close[:3])])

    (resolved,) = emitted(engine, "task_resolved")
    assert resolved.confidence >= 0.9 and not resolved.low_confidence
    assert case.fused_ok(resolved.label), resolved.label
    assert not emitted(engine, "more_answers_requested")
    result = ConsensusQueries(engine, clock=lambda: NOW).get_result("t1")
    assert messages.result_message(result).label == resolved.label
    assert answer_text(resolved.label) == result.label


def test_keypoints_fuse_to_the_per_point_median(handler: ConsensusEvents, engine: sa.Engine) -> None:
    close = CASES["keypoints"].close[:3]
    handler.handle([job("j", **CASES["keypoints"].spec), task_created("t1", "j")])
    handler.handle([answered("t1", "j", f"w{i}", **answer) for i, answer in enumerate(close)])
    (resolved,) = emitted(engine, "task_resolved")
    fused = {p.label: (p.x, p.y, p.confidence) for p in resolved.label.keypoints.points}
    # Equal weights: the median of each coordinate over the three answers.
    for name in ("nose", "tail"):
        placed = [(p.x, p.y) for a in close for p in a["keypoints"].points if p.label == name]
        assert fused[name][:2] == pytest.approx(tuple(np.median(placed, axis=0)))
        assert fused[name][2] > 0.9


def test_a_point_nobody_placed_stays_out_of_the_fused_keypoints() -> None:
    # Three workers below chance place the nose alike and omit the tail: there is no tail to place.
    point = common_pb2.Keypoint(label="nose", x=0.3, y=0.4)
    nose = answer_text(common_pb2.Answer(keypoints=common_pb2.KeypointsAnswer(points=[point])))
    fused, _, _ = structured.fuse("keypoints", ("nose", "tail"), [(w, nose) for w in "abc"], [0.4, 0.3, 0.3])
    # The fused label is an answer again (a NaN coordinate is not), without the tail.
    assert "tail" not in [p.label for p in answer_from_text(fused).keypoints.points]


def _text(**answer: Any) -> str:
    return answer_text(common_pb2.Answer(**answer))


# Per presence kind: the job's schema, an answer marking one thing (a label, box, span or point),
# an answer marking nothing, and the fused confidence of that thing (None when it is left out).
PRESENCE: dict[str, tuple[tuple[str, ...], str, str, Callable[[common_pb2.Answer], float | None]]] = {
    "multi_label": (
        ("cat",),
        _text(multi_label=common_pb2.MultiLabelAnswer(labels=["cat"])),
        _text(multi_label=common_pb2.MultiLabelAnswer()),
        lambda label: next(iter(label.multi_label.confidences), None),
    ),
    "boxes": (
        ("car",),
        _text(boxes=boxes(CAR)),
        _text(boxes=boxes()),
        lambda label: next((b.confidence for b in label.boxes.boxes), None),
    ),
    "spans": (
        ("PER",),
        _text(spans=common_pb2.SpansAnswer(spans=[common_pb2.Span(start=0, end=12, label="PER")])),
        _text(spans=common_pb2.SpansAnswer()),
        lambda label: next((s.confidence for s in label.spans.spans), None),
    ),
    "keypoints": (
        ("nose",),
        _text(keypoints=common_pb2.KeypointsAnswer(points=[common_pb2.Keypoint(label="nose", x=0.3, y=0.4)])),
        _text(keypoints=common_pb2.KeypointsAnswer()),
        lambda label: next((p.confidence for p in label.keypoints.points), None),
    ),
}


@pytest.mark.parametrize("kind", sorted(PRESENCE))
def test_a_worker_below_chance_is_no_evidence_on_presence(kind: str) -> None:
    schema, marked, blank, confidence = PRESENCE[kind]

    def fused(*answers: tuple[str, float]) -> float | None:
        label, _, _ = structured.fuse(
            kind, schema, [(f"w{i}", text) for i, (text, _) in enumerate(answers)], [w for _, w in answers]
        )
        return confidence(answer_from_text(label))

    # A reliable worker marks it and a middling one does not: kept. Read in reverse, the same
    # mark from a worker whose answers mostly disagree (0.2) would cancel the reliable one's and
    # the middling omission would drop it.
    alone = fused((marked, 0.8), (blank, 0.6))
    assert alone is not None and alone > 0.5
    with_careless = fused((marked, 0.8), (marked, 0.2), (blank, 0.6))
    assert with_careless is not None and with_careless >= alone - 1e-12
    # Nor does its omission pull in what the reliable worker left out.
    assert fused((blank, 0.8), (marked, 0.6)) is None
    assert fused((blank, 0.8), (marked, 0.6), (blank, 0.2)) is None


@pytest.mark.parametrize("kind", KINDS)
def test_an_outlier_is_outvoted(kind: str, handler: ConsensusEvents, engine: sa.Engine) -> None:
    case = CASES[kind]
    handler.handle([job("j", overlap=(3, 5), **case.spec), task_created("t1", "j")])
    order = [case.close[0], case.outlier, *case.close[1:]]
    handler.handle([answered("t1", "j", f"w{i}", **answer) for i, answer in enumerate(order)])

    (resolved,) = emitted(engine, "task_resolved")
    assert case.fused_ok(resolved.label), resolved.label
    assert resolved.confidence >= 0.9 and not resolved.low_confidence
    # The outlier's worker is the one who disagreed with the consensus.
    agreement = {w.worker_id: w.agreement for w in ConsensusQueries(engine, clock=lambda: NOW).list_workers("j")}
    assert agreement == {"w0": 1.0, "w1": 0.0, "w2": 1.0, "w3": 1.0, "w4": 1.0}


@pytest.mark.parametrize("kind", KINDS)
def test_a_reliable_worker_outweighs_a_new_one(kind: str, handler: ConsensusEvents, engine: sa.Engine) -> None:
    case = CASES[kind]
    handler.handle(graded("expert", right=8))
    assert handler.reliability("expert") > handler.reliability("newcomer") + 0.1
    handler.handle([job("j", overlap=(2, 2), **case.spec), task_created("t1", "j")])
    handler.handle([answered("t1", "j", "newcomer", **case.unsure), answered("t1", "j", "expert", **case.reliable)])

    (resolved,) = emitted(engine, "task_resolved")
    assert case.reliable_won(resolved.label), resolved.label
    # Weighted equally, the two would not have given the reliable worker's answer.
    result = messages.result_message(ConsensusQueries(engine, clock=lambda: NOW).get_result("t1"))
    assert result.label == resolved.label
    assert not case.reliable_won(result.majority_label), result.majority_label


@pytest.mark.parametrize("kind", KINDS)
def test_disagreement_asks_for_more_then_resolves_low_confidence(
    kind: str, handler: ConsensusEvents, engine: sa.Engine
) -> None:
    case = CASES[kind]
    handler.handle([job("j", overlap=(3, 4), **case.spec), task_created("t1", "j")])
    handler.handle([answered("t1", "j", f"w{i}", **answer) for i, answer in enumerate(case.far[:3])])
    (request,) = emitted(engine, "more_answers_requested")
    assert (request.task_id, request.answers_wanted) == ("t1", 4)
    assert not emitted(engine, "task_resolved")

    handler.handle([answered("t1", "j", "w3", **case.far[3])])
    (resolved,) = emitted(engine, "task_resolved")
    assert resolved.low_confidence and resolved.confidence < 0.9


def test_structured_job_quality(handler: ConsensusEvents, engine: sa.Engine) -> None:
    # Two tasks of close (unequal) keypoints, one of which has an outlier.
    case = CASES["keypoints"]
    handler.handle([job("j", overlap=(3, 4), **case.spec), task_created("t1", "j"), task_created("t2", "j")])
    handler.handle([answered("t1", "j", f"w{i}", **answer) for i, answer in enumerate(case.close[:3])])
    order = [case.close[0], case.outlier, case.close[1], case.close[2]]
    handler.handle([answered("t2", "j", f"w{i}", **answer) for i, answer in enumerate(order)])

    quality = ConsensusQueries(engine, clock=lambda: NOW).job_quality("j")
    assert (quality.tasks, quality.resolved, quality.answers) == (2, 2, 7)
    assert quality.agreement == pytest.approx((3 / 3 + 3 / 4) / 2)
    # Answers that agree with the fused label count as one category of their task, so close
    # but unequal answers agree; the outlier is a category of its own. Counts per task: [3]
    # and [3, 1]. Fleiss: observed (1 + 6/12) / 2 = 0.75, chance (9 + 9 + 1) / 49.
    assert quality.fleiss_kappa == pytest.approx((0.75 - 19 / 49) / (1 - 19 / 49))
    # Krippendorff: 7 values, disagreement (16 - 10) / 3 = 2, expected 49 - 19 = 30.
    assert quality.krippendorff_alpha == pytest.approx(1 - 6 * 2 / 30)


def test_expert_review_of_a_structured_task(handler: ConsensusEvents, engine: sa.Engine) -> None:
    case = CASES["keypoints"]
    handler.handle([job("j", overlap=(3, 3), expert_review=True, **case.spec), task_created("t1", "j")])
    handler.handle([answered("t1", "j", f"w{i}", **answer) for i, answer in enumerate(case.far[:3])])
    assert not emitted(engine, "task_resolved")

    review = ExpertReview(engine, TOPICS, lambda: None, clock=lambda: NOW)
    (pending,) = review.pending("j")
    assert pending.task_id == "t1" and pending.confidence < 0.9
    assert messages.answer_message(pending.suggested_label).WhichOneof("value") == "keypoints"
    assert messages.review_tasks_message([pending]).tasks[0].suggested_label.keypoints.points

    with pytest.raises(InvalidArgument, match="label"):
        review.submit("t1", "expert-1", "cat")
    with pytest.raises(InvalidArgument, match=r"label\.keypoints"):
        review.submit("t1", "expert-1", answer_text(common_pb2.Answer(**said("nose"))))
    final = common_pb2.Answer(**case.reliable)
    result = review.submit("t1", "expert-1", answer_text(final))
    assert (result.confidence, result.low_confidence) == (1.0, False)
    (resolved,) = emitted(engine, "task_resolved")
    assert resolved.label == final
    assert messages.result_message(ConsensusQueries(engine, clock=lambda: NOW).get_result("t1")).label == final


@pytest.mark.parametrize("kind", KINDS)
def test_gold_and_late_answers_agree_when_close(kind: str, handler: ConsensusEvents, engine: sa.Engine) -> None:
    case = CASES[kind]
    gold = task_created("g", "j")
    gold.task_created.gold = True
    gold.task_created.gold_answer.CopyFrom(common_pb2.Answer(**case.close[0]))
    handler.handle([job("j", overlap=(3, 5), **case.spec), gold, task_created("t1", "j")])
    handler.handle([answered("g", "j", "close", **case.close[1]), answered("g", "j", "off", **case.outlier)])
    handler.handle([answered("t1", "j", f"w{i}", **answer) for i, answer in enumerate(case.close[:3])])
    assert emitted(engine, "task_resolved")
    # An answer after the task resolved is compared with the fused label (masks, for polygons).
    handler.handle([answered("t1", "j", "late", **case.close[3]), answered("t1", "j", "late-off", **case.outlier)])

    workers = {w.worker_id: w for w in ConsensusQueries(engine, clock=lambda: NOW).list_workers("j")}
    assert (workers["close"].gold_answers, workers["close"].gold_correct) == (1, 1)
    assert (workers["off"].gold_answers, workers["off"].gold_correct) == (1, 0)
    assert (workers["late"].agreement, workers["late-off"].agreement) == (1.0, 0.0)


def test_boxes_and_spans_agree_with_a_reference_by_their_own_tests() -> None:
    def text(**answer: Any) -> str:
        return answer_text(common_pb2.Answer(**answer))

    def spans(*triples: tuple[int, int, str]) -> common_pb2.SpansAnswer:
        return common_pb2.SpansAnswer(spans=[common_pb2.Span(start=s, end=e, label=t) for s, e, t in triples])

    gold_box = text(boxes=boxes(CAR))
    assert structured.agrees("boxes", ("car",), text(boxes=boxes(NEAR_CAR)), gold_box)
    assert not structured.agrees("boxes", ("car",), text(boxes=boxes(STRAY)), gold_box)
    assert not structured.agrees("boxes", ("car",), text(boxes=boxes()), gold_box)
    gold_spans = text(spans=spans((0, 12, "PER")))
    assert structured.agrees("spans", ("PER",), text(spans=spans((0, 12, "PER"))), gold_spans)
    assert not structured.agrees("spans", ("PER",), text(spans=spans((0, 11, "PER"))), gold_spans)


def test_keypoints_off_by_a_twelfth_of_the_object_agree() -> None:
    # The threshold measured on a simulated crowd (benchmarks/agreement_thresholds_bench.py):
    # careful workers' points land about this far off (OKS 0.71), and counting them as
    # disagreeing sank their reliabilities to chance and dropped their points from the labels.
    def points(shift: float) -> str:
        placed = [common_pb2.Keypoint(label=n, x=x + shift, y=y) for n, x, y in (("a", 0.2, 0.2), ("b", 0.8, 0.8))]
        return _text(keypoints=common_pb2.KeypointsAnswer(points=placed))

    # Object scale 0.6, so OKS = exp(-shift^2 / (2 (0.6 * 0.1)^2)): 0.71 at 0.05, 0.29 at 0.09.
    assert structured.agrees("keypoints", ("a", "b"), points(0.05), points(0.0))
    assert not structured.agrees("keypoints", ("a", "b"), points(0.09), points(0.0))


box_sets = st.lists(
    st.tuples(
        st.sampled_from([0.1, 0.12, 0.5, 0.52]), st.sampled_from([0.2, 0.22, 0.6]), st.sampled_from(["car", "bus"])
    ),
    max_size=3,
)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(box_sets, box_sets), min_size=1, max_size=6))
def test_box_agreements_at_once_are_agrees_pair_by_pair(pairs: list[tuple[list[Any], list[Any]]]) -> None:
    def text(drawn: list[Any]) -> str:
        shown = [common_pb2.Box(label=label, x=x, y=y, w=0.2, h=0.15) for x, y, label in drawn]
        return answer_text(common_pb2.Answer(boxes=common_pb2.BoxesAnswer(boxes=shown)))

    texts = [(text(answer), text(reference)) for answer, reference in pairs]
    assert structured.agreements("boxes", ("car", "bus"), texts) == [
        structured.agrees("boxes", ("car", "bus"), answer, reference) for answer, reference in texts
    ]


def test_same_label_ignores_posteriors_and_float_noise_only() -> None:
    def box(x: float, confidence: float) -> str:
        return structured._dump({"boxes": {"boxes": [{"label": "car", "x": x, "y": 0.2, "confidence": confidence}]}})

    assert structured.same_label(box(0.1, 0.9), box(0.1, 0.6))
    assert structured.same_label(box(0.1, 0.9), box(0.1 + 1e-15, 0.9))
    assert not structured.same_label(box(0.1, 0.9), box(0.1001, 0.9))
    assert structured.same_label('{"pairwise":{"a_wins":0.9,"winner":"a"}}', '{"pairwise":{"a_wins":0.7,"winner":"a"}}')
    assert not structured.same_label('{"pairwise":{"winner":"a"}}', '{"pairwise":{"winner":"b"}}')
    assert not structured.same_label('{"boxes":{}}', box(0.1, 0.9))
    assert not structured.same_label("cat", "dog")
