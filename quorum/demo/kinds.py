"""The structured task kinds ``quorum demo --task KIND`` runs, one :class:`DemoKind` each: how
to generate its dataset, the job that labels it, and how its fused labels are scored against
the generated truth.

=================  =============================  ==============================================
kind               objects                        quality of the fused labels
=================  =============================  ==============================================
``boxes``          images of coloured rectangles  objects found, IoU of the boxes found
``multi_label``    hotel reviews, aspects         label F1 (pooled), share of exact label sets
``keypoints``      stick figures, 5 points        mean OKS, points found, points placed wrongly
``segmentation``   images of coloured polygons    mean mask IoU per class, classes found
``spans``          news sentences, entities       strict span F1 (pooled), share exact
``transcription``  images of short sentences      word error rate, share exact
``pairwise``       pairs of reviews               share of pairs with the right winner
=================  =============================  ==============================================

Every kind's job is a pilot with the same overlap (3 answers, up to 5 below 0.9 confidence)
and prices. Reading fused labels from protobuf happens here; the datasets, answer generators
and measures themselves are pure (:mod:`quorum.demo.items` and the kinds' modules).
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from quorum.demo.boxes import TrueBox, generate_boxes, match_boxes
from quorum.demo.items import Item, ItemSet, micro_f1
from quorum.demo.keypoints import Figure, Keypoint, generate_figures, keypoint_similarity
from quorum.demo.multilabel import generate_reviews
from quorum.demo.pairwise import PAIRWISE_QUESTION, generate_pairs
from quorum.demo.polygons import TruePolygon, class_ious, generate_shapes, mask_from_counts
from quorum.demo.spans import TrueSpan, generate_sentences
from quorum.demo.transcription import generate_lines, word_errors
from quorum.taskmessages import config_message
from quorum.v1 import common_pb2

__all__ = ["ANNOTATION_CENTS", "KINDS", "PAY_CENTS", "PILOT_ALLOWANCE", "PRICE_CENTS", "DemoKind", "job_spec"]

# What a structured demo job costs and pays, in cents: per object, per annotation in the
# fused label (box, point, polygon, span, chosen label) where the kind has annotations, and
# per accepted answer.
PRICE_CENTS, ANNOTATION_CENTS, PAY_CENTS = 8, 2, 2
PILOT_ALLOWANCE = 100

# Fused labels with the truths of their objects.
Scored = Sequence[tuple[common_pb2.Answer, Any]]


@dataclass(frozen=True)
class DemoKind:
    """One structured task kind of the demo.

    ``task_type`` is the JobSpec member (:mod:`quorum.tasktypes`), set with the dataset's labels
    and ``options`` (the config's other fields). ``generate(n, seed)`` makes the dataset;
    ``score(pairs)`` turns fused labels with their truths into the quality figures (a flat
    dict of numbers), ``describe(quality)`` into report lines. ``noun`` names the objects
    ("images"), ``title`` the demo ("keypoint"); ``annotations`` says whether the job is priced
    per annotation too.
    """

    name: str
    task_type: str
    title: str
    noun: str
    instructions: str
    annotations: bool
    generate: Callable[[int, int], ItemSet[Any]]
    score: Callable[[Scored], dict[str, Any]]
    describe: Callable[[Mapping[str, Any]], list[str]]
    options: Mapping[str, Any] = field(default_factory=dict)


def job_spec(kind: DemoKind, labels: tuple[str, ...]) -> common_pb2.JobSpec:
    """The demo's job for ``kind`` with the schema ``labels``: a pilot, priced per object (and
    per annotation for kinds that have them)."""
    spec = common_pb2.JobSpec(
        name=f"demo {kind.name}",
        client_id="demo-client",
        instructions=kind.instructions,
        overlap=common_pb2.Overlap(min=3, max=5),
        target_confidence=0.9,
        price_per_object_cents=PRICE_CENTS,
        price_per_annotation_cents=ANNOTATION_CENTS if kind.annotations else 0,
        pay_per_answer_cents=PAY_CENTS,
        currency="USD",
        pilot=True,
        pilot_allowance=PILOT_ALLOWANCE,
        lease_seconds=60,
    )
    getattr(spec, kind.task_type).CopyFrom(config_message(kind.task_type, labels, kind.options))
    return spec


def _share(part: int, whole: int) -> float:
    return round(part / whole, 4) if whole else 0.0


# --------------------------------------------------------------------------- boxes


def _box_items(n: int, seed: int) -> ItemSet[tuple[TrueBox, ...]]:
    dataset = generate_boxes(n, seed)
    return ItemSet(seed, dataset.labels, [Item(image.name, image.data, image.boxes) for image in dataset.images])


def _score_boxes(scored: Scored) -> dict[str, Any]:
    """Each true box paired with a fused box of its class (:func:`~quorum.demo.boxes.match_boxes`),
    IoU 0 when none; fused boxes left unpaired are spurious."""
    ious: list[float] = []
    spurious = 0
    for label, truth in scored:
        found = [TrueBox(b.label, b.x, b.y, b.w, b.h) for b in label.boxes.boxes]
        matched = match_boxes(found, truth)
        ious += matched
        spurious += len(found) - sum(iou > 0 for iou in matched)
    found_ious = [iou for iou in ious if iou > 0]
    return {
        "true": len(ious),
        "found": len(found_ious),
        "found_share": _share(len(found_ious), len(ious)),
        "found_iou_0_7": sum(iou >= 0.7 for iou in found_ious),
        "mean_iou": round(statistics.fmean(found_ious), 4) if found_ious else 0.0,
        "median_iou": round(statistics.median(found_ious), 4) if found_ious else 0.0,
        "spurious": spurious,
    }


def _describe_boxes(q: Mapping[str, Any]) -> list[str]:
    return [
        f"boxes vs truth       {q['found']} of {q['true']} objects found ({q['found_share']:.1%}), {q['spurious']} spurious",
        f"IoU of found boxes   mean {q['mean_iou']:.3f}, median {q['median_iou']:.3f}; {q['found_iou_0_7']} at IoU >= 0.7",
    ]


# --------------------------------------------------------------------------- multi-label


def _score_multi_label(scored: Scored) -> dict[str, Any]:
    return micro_f1((set(label.multi_label.labels), truth) for label, truth in scored)


def _describe_f1(what: str, noun: str) -> Callable[[Mapping[str, Any]], list[str]]:
    def describe(q: Mapping[str, Any]) -> list[str]:
        return [
            f"{what:<21}F1 {q['f1']:.3f} (precision {q['precision']:.3f}, recall {q['recall']:.3f})",
            f"exactly right        {q['exact']:.1%} of the {noun}",
        ]

    return describe


# --------------------------------------------------------------------------- keypoints


def _score_keypoints(scored: Scored) -> dict[str, Any]:
    """COCO's object keypoint similarity of each fused figure with the truth; fused points
    placed where nothing is visible are counted apart (OKS does not see them)."""
    similarities: list[float] = []
    visible = found = spurious = 0
    for label, truth in scored:
        points = [Keypoint(p.label, p.x, p.y) for p in label.keypoints.points]
        figure: Figure = truth
        names = {p.label for p in figure.points}
        similarities.append(keypoint_similarity(points, figure))
        visible += len(names)
        found += sum(p.label in names for p in points)
        spurious += sum(p.label not in names for p in points)
    return {
        "mean_oks": round(statistics.fmean(similarities), 4) if similarities else 0.0,
        "oks_0_75": _share(sum(s >= 0.75 for s in similarities), len(similarities)),
        "points_visible": visible,
        "points_found": found,
        "spurious": spurious,
    }


def _describe_keypoints(q: Mapping[str, Any]) -> list[str]:
    return [
        f"OKS vs truth         mean {q['mean_oks']:.3f}; {q['oks_0_75']:.1%} of the figures at OKS >= 0.75",
        f"points               {q['points_found']} of {q['points_visible']} visible points found, "
        f"{q['spurious']} placed where none is visible",
    ]


# --------------------------------------------------------------------------- segmentation


def _score_segmentation(scored: Scored) -> dict[str, Any]:
    """Per image and true class, the IoU of the fused mask with the true regions on the mask's
    grid (0 when the class was not found); fused classes absent from the truth are spurious."""
    ious: list[float] = []
    spurious = 0
    for label, truth in scored:
        masks = {m.label: mask_from_counts(m.counts, m.width, m.height) for m in label.masks.masks}
        regions: tuple[TruePolygon, ...] = truth
        by_class, extra = class_ious(masks, regions)
        ious += by_class.values()
        spurious += len(extra)
    return {
        "classes_true": len(ious),
        "classes_found": sum(iou > 0 for iou in ious),
        "mean_iou": round(statistics.fmean(ious), 4) if ious else 0.0,
        "iou_0_75": _share(sum(iou >= 0.75 for iou in ious), len(ious)),
        "spurious": spurious,
    }


def _describe_segmentation(q: Mapping[str, Any]) -> list[str]:
    return [
        f"masks vs truth       mean IoU {q['mean_iou']:.3f} over {q['classes_true']} classes in images; "
        f"{q['iou_0_75']:.1%} at IoU >= 0.75",
        f"classes              {q['classes_found']} of {q['classes_true']} found, {q['spurious']} spurious",
    ]


# --------------------------------------------------------------------------- spans


def _score_spans(scored: Scored) -> dict[str, Any]:
    return micro_f1(
        ({TrueSpan(s.start, s.end, s.label) for s in label.spans.spans}, set(truth)) for label, truth in scored
    )


# --------------------------------------------------------------------------- transcription


def _score_transcription(scored: Scored) -> dict[str, Any]:
    """Word error rate pooled over the objects (word edits over true words) and the share of
    sentences fused exactly."""
    edits = words = exact = 0
    for label, truth in scored:
        typed = label.transcription.text
        edits += word_errors(typed, truth)
        words += len(truth.split())
        exact += typed.split() == truth.split()
    return {"wer": _share(edits, words), "exact": _share(exact, len(scored))}


def _describe_transcription(q: Mapping[str, Any]) -> list[str]:
    return [f"text vs truth        word error rate {q['wer']:.2%}; {q['exact']:.1%} of the sentences exact"]


# --------------------------------------------------------------------------- pairwise


def _score_pairwise(scored: Scored) -> dict[str, Any]:
    right = sum(label.pairwise.winner == truth for label, truth in scored)
    return {"accuracy": _share(right, len(scored)), "right": right}


def _describe_pairwise(q: Mapping[str, Any]) -> list[str]:
    return [f"winner vs truth      {q['right']} right ({q['accuracy']:.1%})"]


KINDS: Mapping[str, DemoKind] = {
    kind.name: kind
    for kind in (
        DemoKind(
            name="boxes",
            task_type="bounding_boxes",
            title="bounding-box",
            noun="images",
            instructions="Draw a box around every coloured rectangle and name its colour.",
            annotations=True,
            generate=_box_items,
            score=_score_boxes,
            describe=_describe_boxes,
        ),
        DemoKind(
            name="multi_label",
            task_type="multi_label_classification",
            title="multi-label",
            noun="texts",
            instructions="Tick every aspect of the stay the review talks about.",
            annotations=True,
            generate=generate_reviews,
            score=_score_multi_label,
            describe=_describe_f1("labels vs truth", "texts"),
        ),
        DemoKind(
            name="keypoints",
            task_type="keypoints",
            title="keypoint",
            noun="images",
            instructions="Place the figure's head, hands and feet where you can see them (left is the image's left).",
            annotations=True,
            generate=generate_figures,
            score=_score_keypoints,
            describe=_describe_keypoints,
        ),
        DemoKind(
            name="segmentation",
            task_type="segmentation",
            title="segmentation",
            noun="images",
            instructions="Outline every coloured shape with a polygon and name its colour.",
            annotations=True,
            generate=generate_shapes,
            score=_score_segmentation,
            describe=_describe_segmentation,
        ),
        DemoKind(
            name="spans",
            task_type="ner_spans",
            title="named-entity",
            noun="texts",
            instructions="Mark every person, place and organisation named in the sentence.",
            annotations=True,
            generate=generate_sentences,
            score=_score_spans,
            describe=_describe_f1("spans vs truth", "texts"),
        ),
        DemoKind(
            name="transcription",
            task_type="transcription",
            title="transcription",
            noun="images",
            instructions="Type the words shown in the image.",
            annotations=False,
            generate=generate_lines,
            score=_score_transcription,
            describe=_describe_transcription,
            options={"max_chars": 200},
        ),
        DemoKind(
            name="pairwise",
            task_type="pairwise_comparison",
            title="pairwise",
            noun="pairs",
            instructions=PAIRWISE_QUESTION,
            annotations=False,
            generate=generate_pairs,
            score=_score_pairwise,
            describe=_describe_pairwise,
            options={"question": PAIRWISE_QUESTION, "allow_tie": False},
        ),
    )
}
