"""Fusing one task's structured answers (every task type but single-label classification) into
a label with a confidence, for the streaming decision after each answer.

An answer arrives as its stored text (:func:`quorum.taskmessages.answer_text`: the whole Answer
as JSON, e.g. ``{"boxes":{"boxes":[...]}}``); the fused label goes back in the same form, with
per-object confidences inside it. Pure: json and numpy, no protobuf.

- multi-label: each label is its own binary question, decided by the one-coin posterior over
  the answers with the workers' reliabilities (as single-label classification is); the task's
  confidence is that of its least certain label;
- boxes: :class:`~services.consensus.aggregation.boxes.BoxFusion` clusters the boxes by IoU
  and fuses each cluster's corners (weighted medians); whether a cluster's object exists is
  the one-coin posterior of the workers' reliabilities (a box votes for it, an annotator
  without one against); the confidence is that of the least certain existence decision,
  kept or dropped;
- spans: :class:`~services.consensus.aggregation.spans.SpanVote` clusters overlapping spans
  and votes their boundaries and type; existence is decided as for boxes; the confidence is
  that of the least certain existence decision;
- any other type (keypoints, polygons, transcription, pairwise): the answers that are exactly
  alike vote as one label under the one-coin posterior; close but unequal answers do not
  pool, so such tasks reach the target only when workers agree exactly, else they resolve at
  ``overlap.max`` flagged low-confidence.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from services.consensus.aggregation import MAX_RELIABILITY, MIN_RELIABILITY, one_coin_posterior
from services.consensus.aggregation.boxes import BoxFusion, FusedBox
from services.consensus.aggregation.spans import SpanVote


def _dump(answer: dict[str, Any]) -> str:
    return json.dumps(answer, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _member(text: str, kind: str) -> dict[str, Any]:
    """The ``kind`` member of a stored answer; {} for a text of another kind or no JSON."""
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError:
        return {}
    member = parsed.get(kind) if isinstance(parsed, dict) else None
    return member if isinstance(member, dict) else {}


# The weight of a worker nothing is known about: what plain majority vote gives everyone.
NEUTRAL = 0.7


def clipped(weight: float) -> float:
    return min(MAX_RELIABILITY, max(MIN_RELIABILITY, weight))


def fuse(
    kind: str, schema: Sequence[str], answers: Sequence[tuple[str, str]], weights: Sequence[float]
) -> tuple[str, float, tuple[bool, ...]]:
    """Fuses ``answers`` (``(worker_id, stored text)``, one per worker) of answer kind ``kind``
    given the job's ``schema`` labels and each answer's reliability ``weights``.

    Returns the fused answer's stored text, the task's confidence in [0, 1] and, per answer,
    whether it agrees with the fused label (for the workers' consensus evidence). Raises
    ValueError with no answers. Costs one library fit over the task's answers.
    """
    if not answers:
        raise ValueError("fusing needs at least one answer")
    fuser = _FUSERS.get(kind, _fuse_exact)
    return fuser(kind, schema, answers, [clipped(w) for w in weights])


def _fuse_multi_label(
    kind: str, schema: Sequence[str], answers: Sequence[tuple[str, str]], weights: list[float]
) -> tuple[str, float, tuple[bool, ...]]:
    chosen = [set(_member(text, kind).get("labels", [])) for _, text in answers]
    labels = list(schema) or sorted(set().union(*chosen))
    present: list[str] = []
    confidences: list[float] = []
    certainty = 1.0
    for label in labels:
        votes = [1 if label in picked else 0 for picked in chosen]
        p_present = float(one_coin_posterior(votes, weights, 2)[1])
        certainty = min(certainty, max(p_present, 1.0 - p_present))
        if p_present > 0.5:
            present.append(label)
            confidences.append(p_present)
    fused = {"labels": present, "confidences": confidences} if present else {}
    agreed = tuple(picked == set(present) for picked in chosen)
    return _dump({kind: fused}), certainty, agreed


def _fuse_boxes(
    kind: str, schema: Sequence[str], answers: Sequence[tuple[str, str]], weights: list[float]
) -> tuple[str, float, tuple[bool, ...]]:
    rows = []
    for worker, text in answers:
        for box in _member(text, kind).get("boxes", []):
            corner = (box.get("x", 0.0), box.get("y", 0.0), box.get("w", 0.0), box.get("h", 0.0))
            rows.append(("t", worker, *corner, box.get("label", "")))
    seen = [("t", worker) for worker, _ in answers]
    if not rows:
        return _dump({kind: {}}), 1.0, tuple(True for _ in answers)
    fusion = BoxFusion().fit(rows, seen)
    reliability = {worker: weight for (worker, _), weight in zip(answers, weights, strict=True)}
    kept: list[tuple[FusedBox, float]] = []
    certainty = 1.0
    drew: dict[str, set[int]] = {worker: set() for worker, _ in answers}
    for index, cluster in enumerate(fusion.clusters_.get("t", [])):
        # Existence by the one-coin posterior with the service's reliabilities: a box in the
        # cluster votes for the object, an annotator without one against. A fit on one task
        # alone would learn its own weights from two or three answers and be overconfident.
        votes = [1 if worker in cluster.workers else 0 for worker, _ in answers]
        exists = float(one_coin_posterior(votes, [reliability[w] for w, _ in answers], 2)[1])
        certainty = min(certainty, max(exists, 1.0 - exists))
        for member in cluster.workers:
            drew.setdefault(str(member), set()).add(index)
        if exists > 0.5:
            kept.append((cluster, exists))
    fused = [
        {"label": b.label, "x": b.x, "y": b.y, "w": b.w, "h": b.h, "confidence": p}
        for b, p in sorted(kept, key=lambda pair: (pair[0].y, pair[0].x, str(pair[0].label)))
    ]
    kept_ids = {i for i, c in enumerate(fusion.clusters_.get("t", [])) if any(c is k for k, _ in kept)}
    # A worker agrees when it drew exactly the objects the crowd kept.
    agreed = tuple(drew[worker] == kept_ids for worker, _ in answers)
    return _dump({kind: {"boxes": fused} if fused else {}}), certainty, agreed


def _fuse_spans(
    kind: str, schema: Sequence[str], answers: Sequence[tuple[str, str]], weights: list[float]
) -> tuple[str, float, tuple[bool, ...]]:
    given = [
        [
            (int(s.get("start", 0)), int(s.get("end", 0)), s.get("label", ""))
            for s in _member(text, kind).get("spans", [])
        ]
        for _, text in answers
    ]
    rows = [("t", worker, spans) for (worker, _), spans in zip(answers, given, strict=True)]
    vote = SpanVote().fit(rows)
    found: list[tuple[tuple[int, int, Any], float]] = []
    certainty = 1.0
    for cluster in vote.clusters_:
        # As for boxes: existence by the one-coin posterior with the service's reliabilities.
        votes = [1 if worker in cluster["workers"] else 0 for worker, _ in answers]
        exists = float(one_coin_posterior(votes, weights, 2)[1])
        certainty = min(certainty, max(exists, 1.0 - exists))
        if exists > 0.5:
            found.append(((cluster["start"], cluster["end"], cluster["type"]), exists * cluster["type_share"]))
    found.sort(key=lambda pair: pair[0][:2])
    spans = [span for span, _ in found]
    fused = [
        {"start": start, "end": end, "label": label, "confidence": confidence}
        for (start, end, label), confidence in found
    ]
    agreed = tuple(sorted(mine) == sorted(spans) for mine in given)
    return _dump({kind: {"spans": fused} if fused else {}}), float(certainty), agreed


def _fuse_exact(
    kind: str, schema: Sequence[str], answers: Sequence[tuple[str, str]], weights: list[float]
) -> tuple[str, float, tuple[bool, ...]]:
    texts = sorted({text for _, text in answers})
    index = {text: k for k, text in enumerate(texts)}
    votes = [index[text] for _, text in answers]
    posterior = one_coin_posterior(votes, weights, max(2, len(texts)))[: len(texts)]
    winner = int(posterior.argmax())
    return texts[winner], float(posterior[winner]), tuple(text == texts[winner] for _, text in answers)


_FUSERS: dict[str, Callable[..., tuple[str, float, tuple[bool, ...]]]] = {
    "multi_label": _fuse_multi_label,
    "boxes": _fuse_boxes,
    "spans": _fuse_spans,
}
