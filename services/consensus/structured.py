"""Fusing one task's structured answers (every task type but single-label classification) into
a label with a confidence, for the streaming decision after each answer.

An answer arrives as its stored text (:func:`quorum.taskmessages.answer_text`: the whole Answer
as JSON, e.g. ``{"boxes":{"boxes":[...]}}``); the fused label goes back in the same form, with
per-object confidences inside it. Pure: json, numpy and Pillow (to rasterise polygons), no protobuf.

- multi-label: each label is its own binary question, decided by the one-coin posterior over
  the answers with the workers' reliabilities floored at chance (:func:`_presence_weights`);
  the task's confidence is that of its least certain label;
- boxes: :class:`~services.consensus.aggregation.boxes.BoxFusion` clusters the boxes by IoU
  and fuses each cluster's corners (weighted medians); whether a cluster's object exists is
  the one-coin posterior of the workers' reliabilities floored at chance (a box votes for it,
  an annotator without one against); the confidence is that of the least certain existence
  decision, kept or dropped;
- spans: :class:`~services.consensus.aggregation.spans.SpanVote` clusters overlapping spans
  and votes their boundaries and type; existence is decided as for boxes; the confidence is
  that of the least certain existence decision;
- keypoints, segmentation, transcription: the library's weighted median, per-pixel vote and
  ROVER, each worker weighted by the one-coin log-odds of its reliability (see
  :func:`_vote_weights`); an answer *agrees* with the result when it is close enough to it
  (object keypoint similarity at least 0.6, mask IoU at least 0.75, character error rate at
  most 0.1), and the task's confidence is the one-coin posterior that the result is right, the
  agreeing answers voting for it and the others against it. So close but unequal answers pool,
  an outlier is out-voted, and a reliable worker counts for more than a new one:

  - keypoints: each point is present by the one-coin posterior (placing it votes for it), at
    the per-coordinate weighted median of the placed points, with that posterior as its
    confidence; OKS as in :mod:`~services.consensus.aggregation.keypoints`, relative
    coordinates, a point placed where the crowd sees none being a disagreement;
  - polygons: per class, each worker's polygons are rasterised on a 256 x 256 grid over the
    image and fused by :class:`~services.consensus.aggregation.masks.MaskVote` with fixed
    weights; the label is a masks answer (run-length encoded), each mask with its expected
    Jaccard index as confidence;
  - transcription: :class:`~services.consensus.aggregation.text.ROVER` with fixed weights
    (word alignment, weighted vote per slot);

- pairwise: one task is one comparison, so the winner is the one-coin vote over the job's
  allowed winners (``a``, ``b`` and, when allowed, ``tie``), with ``a_wins`` its posterior for
  ``a``; Bradley-Terry scores across comparisons are the offline path
  (:mod:`~services.consensus.aggregation.pairwise`).

A gold answer, or an answer that arrives after its task resolved, is compared with the gold or
resolved label by :func:`agrees`: the same closeness test, spans by strict entity match. A
refit (:func:`services.consensus.domain.refit_structured`) checks a whole job's answers at once
with :func:`agreements` and asks :func:`same_label` whether a re-fused label says something new.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from quorum.tasktypes import PAIRWISE_WINNERS
from services.consensus.aggregation import (
    MAX_RELIABILITY,
    MIN_RELIABILITY,
    one_coin_log_posterior,
    one_coin_posterior,
)
from services.consensus.aggregation._geometry import BoolArray, keypoint_similarity
from services.consensus.aggregation._robust import FloatArray, group_weighted_median
from services.consensus.aggregation.boxes import BoxFusion, FusedBox
from services.consensus.aggregation.masks import MaskVote, polygon_mask
from services.consensus.aggregation.spans import SpanVote
from services.consensus.aggregation.text import ROVER, levenshtein_batch


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


# Chance on a yes/no question: a vote at this reliability carries no evidence either way.
CHANCE = 0.5


def _presence_weights(weights: Sequence[float]) -> list[float]:
    """The reliabilities for the yes/no votes on whether a label, box, span or point is there:
    each floored at chance.

    A reliability is how often a worker's whole answer agreed with gold or consensus, so one
    well below chance says the worker is often wrong somewhere, not that each of its marks is
    reliably wrong. Read in reverse, a careless worker's box on a real object would push the
    object out and its omission would pull one in; floored, it counts for nothing."""
    return [max(weight, CHANCE) for weight in weights]


def fuse(
    kind: str, schema: Sequence[str], answers: Sequence[tuple[str, str]], weights: Sequence[float]
) -> tuple[str, float, tuple[bool, ...]]:
    """Fuses ``answers`` (``(worker_id, stored text)``, one per worker) of answer kind ``kind``
    given the job's ``schema`` labels and each answer's reliability ``weights``.

    Returns the fused answer's stored text, the task's confidence in [0, 1] and, per answer,
    whether it agrees with the fused label (for the workers' consensus evidence). Raises
    ValueError with no answers or for the classification kind (see ``domain.evaluate``).
    Costs one library fit over the task's answers; a polygon task a few milliseconds per
    class for the rasterising.
    """
    if not answers:
        raise ValueError("fusing needs at least one answer")
    fuser = _FUSERS.get(kind)
    if fuser is None:
        raise ValueError(f"no fusion for answer kind {kind!r}")
    return fuser(kind, schema, answers, [clipped(w) for w in weights])


def agrees(kind: str, schema: Sequence[str], answer: str, reference: str) -> bool:
    """Whether ``answer`` (stored text) is close enough to ``reference`` (a gold answer, or a
    label resolved before the answer came) to count as agreeing with it: the test :func:`fuse`
    applies to each answer, with the reference taking all the weight. Costs one fusion of the
    two."""
    if answer == reference:
        return True
    if kind == "spans":
        # Strict entity match, as NER is scored (span boundaries are voted with SpanVote's own
        # weights, which would not let the reference decide them).
        return _span_set(answer, kind) == _span_set(reference, kind)
    # The answer at chance (0.5) carries no evidence on a yes/no question and no weight in a
    # median or vote, so the fused label is the reference's.
    _, _, agreed = fuse(kind, schema, [("reference", reference), ("answer", answer)], [MAX_RELIABILITY, 0.5])
    return agreed[1]


def agreements(kind: str, schema: Sequence[str], pairs: Sequence[tuple[str, str]]) -> list[bool]:
    """:func:`agrees` of every ``(answer, reference)`` pair, the same answers at a lower cost.

    Boxes: in :func:`agrees` the reference alone decides which clusters exist, so an answer
    agrees when every cluster of the two holds a box of each; the clusters come from one
    library fit over all pairs (clustering never crosses tasks, and only clusters are read, not
    the fused corners the fit's worker weights move): 2,500 pairs take about a tenth of the
    time of a fit per pair. Other kinds: :func:`agrees` pair by pair."""
    if kind != "boxes":
        return [agrees(kind, schema, answer, reference) for answer, reference in pairs]
    rows = [
        row
        for i, (answer, reference) in enumerate(pairs)
        for worker, text in (("reference", reference), ("answer", answer))
        for row in _box_rows(i, worker, text, kind)
    ]
    clusters = BoxFusion().fit(rows).clusters_ if rows else {}
    return [
        answer == reference or all(len(set(c.workers)) == 2 for c in clusters.get(i, ()))
        for i, (answer, reference) in enumerate(pairs)
    ]


# Members of a fused label that are posteriors, not the label itself.
_POSTERIORS = frozenset({"confidence", "confidences", "a_wins"})


def same_label(first: str, second: str) -> bool:
    """Whether two fused labels (stored text) say the same thing: equal JSON once the
    posteriors inside them (per-object confidences, ``a_wins``) are left out, numbers equal up
    to floating-point noise (relative 1e-9). Texts that are not JSON compare as text. Costs
    one parse of each."""
    if first == second:
        return True
    try:
        return _same(json.loads(first), json.loads(second))
    except json.JSONDecodeError:
        return False


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        keys = a.keys() - _POSTERIORS
        return keys == b.keys() - _POSTERIORS and all(_same(a[k], b[k]) for k in keys)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-12)
    return bool(a == b)


def _span_set(text: str, kind: str) -> set[tuple[int, int, str]]:
    return {
        (int(s.get("start", 0)), int(s.get("end", 0)), str(s.get("label", "")))
        for s in _member(text, kind).get("spans", [])
    }


def _fuse_multi_label(
    kind: str, schema: Sequence[str], answers: Sequence[tuple[str, str]], weights: list[float]
) -> tuple[str, float, tuple[bool, ...]]:
    chosen = [set(_member(text, kind).get("labels", [])) for _, text in answers]
    labels = list(schema) or sorted(set().union(*chosen))
    present: list[str] = []
    confidences: list[float] = []
    certainty = 1.0
    presence = _presence_weights(weights)
    for label in labels:
        votes = [1 if label in picked else 0 for picked in chosen]
        p_present = float(one_coin_posterior(votes, presence, 2)[1])
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
    rows = [row for worker, text in answers for row in _box_rows("t", worker, text, kind)]
    seen = [("t", worker) for worker, _ in answers]
    if not rows:
        return _dump({kind: {}}), 1.0, tuple(True for _ in answers)
    fusion = BoxFusion().fit(rows, seen)
    reliability = {worker: weight for (worker, _), weight in zip(answers, _presence_weights(weights), strict=True)}
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


def _box_rows(task: Hashable, worker: str, text: str, kind: str) -> list[tuple[Any, ...]]:
    """BoxFusion rows (task, worker, x, y, w, h, label) of one answer's boxes."""
    return [
        (task, worker, box.get("x", 0.0), box.get("y", 0.0), box.get("w", 0.0), box.get("h", 0.0), box.get("label", ""))
        for box in _member(text, kind).get("boxes", [])
    ]


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
    presence = _presence_weights(weights)
    for cluster in vote.clusters_:
        # As for boxes: existence by the one-coin posterior with the service's reliabilities.
        votes = [1 if worker in cluster["workers"] else 0 for worker, _ in answers]
        exists = float(one_coin_posterior(votes, presence, 2)[1])
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


def _vote_weights(weights: Sequence[float]) -> FloatArray:
    """Each reliability's one-coin log-odds for a yes/no question, floored at 0.

    A per-pixel vote with these weights is the one-coin posterior's decision for every pixel;
    a weighted median with them is that decision for every question "is the true value at most
    t?", which is why medians, medoids and votes all use them. A worker at or below chance
    counts for nothing (rather than being read in reverse, which one answer cannot justify)."""
    r = np.asarray(weights, dtype=np.float64)
    return np.asarray(np.maximum(np.log(r / (1.0 - r)), 0.0), dtype=np.float64)


def _agreement(agreed: Sequence[bool], weights: Sequence[float]) -> float:
    """The one-coin posterior that the fused label is right when the answers in ``agreed``
    vote for it and the others against it: the same reading of reliabilities as a
    classification vote, on the question "is the fused answer right?"."""
    return float(one_coin_posterior([1 if a else 0 for a in agreed], list(weights), 2)[1])


# An answer agrees with the fused one above these similarities. Chosen by replaying crowds
# through the service (benchmarks/agreement_thresholds_bench.py; figures in benchmarks/README.md).
# A threshold stricter than honest workers reach marks them as disagreeing: their reliabilities
# sink toward chance, their answers stop counting and confidence stays under target.
# - OKS 0.6 (simulated crowd only: no real keypoint data): 0.75 put a quarter of the honest
#   workers at chance and dropped their points, 9.1 px mean error against 6.4 px at 0.6.
# - Mask IoU 0.75: on crowd-seg, 0.5 to 0.8 give the same Jaccard within noise; kept.
# - CER 0.1: CrowdSpeech splits disagree. 0.15 resolves with 10% fewer answers, lowering the
#   word error rate of noisy dev-other by 0.5 points but raising clean dev-clean's by 0.56;
#   0.2 costs dev-clean 1.1 points. Kept.
OKS_AGREES = 0.6
IOU_AGREES = 0.75
CER_AGREES = 0.1
# Keypoint falloff (KeypointMedian's default; COCO's sigmas are for person keypoints only) and
# the smallest object scale, in the relative coordinates answers use: a tenth of the image.
KEYPOINT_SIGMA = 0.05
MIN_OBJECT_SCALE = 0.1
# Polygons are rasterised on a MASK_GRID x MASK_GRID grid over the image.
MASK_GRID = 256


def _fuse_keypoints(
    kind: str, schema: Sequence[str], answers: Sequence[tuple[str, str]], weights: list[float]
) -> tuple[str, float, tuple[bool, ...]]:
    placed = [
        {
            str(p.get("label", "")): (float(p.get("x", 0.0)), float(p.get("y", 0.0)))
            for p in _member(text, kind).get("points", [])
        }
        for _, text in answers
    ]
    names = list(schema) or sorted(set().union(*placed))
    n, k = len(answers), len(names)
    points = np.full((n, k, 2), np.nan)
    for i, given in enumerate(placed):
        for j, name in enumerate(names):
            if name in given:
                points[i, j] = given[name]
    has = np.isfinite(points).all(axis=2)  # (n, k)
    point_of = np.tile(np.arange(k), n)
    # Presence of each point by the one-coin posterior (placing it votes for it); its location
    # by the per-coordinate weighted median of the placed points.
    presence = np.repeat(_presence_weights(weights), k)
    present_p = np.exp(one_coin_log_posterior(point_of, has.ravel().astype(np.intp), presence, k, 2)[:, 1])
    flat = has.ravel()
    w = np.repeat(_vote_weights(weights), k)[flat]
    located = np.stack(
        [group_weighted_median(points[:, :, c].ravel()[flat], w, point_of[flat], k) for c in (0, 1)], axis=1
    )
    # A point nobody placed has no location: it stays out of the label whatever the vote says.
    present = (present_p > 0.5) & has.any(axis=0)
    fused = np.where(present[:, None], located, np.nan)
    # OKS of each answer with the fused points, a fused point the answer lacks counting 0.
    span = np.nanmax(fused, axis=0) - np.nanmin(fused, axis=0) if present.any() else np.zeros(2)
    scale = max(float(np.sqrt(span[0] * span[1])), MIN_OBJECT_SCALE)
    similarity = keypoint_similarity(points, fused[None], np.full(n, scale), np.full(k, KEYPOINT_SIGMA))
    oks = np.where(present, np.nan_to_num(similarity, nan=0.0), 0.0).sum(axis=1) / max(int(present.sum()), 1)
    oks = np.where(present.any(), oks, 1.0)
    # Placing a point the crowd judged absent is a disagreement OKS does not see.
    agreed = tuple(bool(o >= OKS_AGREES) and not (row & ~present).any() for o, row in zip(oks, has, strict=True))
    fused_points = [
        {"label": name, "x": float(fused[j, 0]), "y": float(fused[j, 1]), "confidence": float(present_p[j])}
        for j, name in enumerate(names)
        if present[j]
    ]
    label = {"points": fused_points} if fused_points else {}
    return _dump({kind: label}), _agreement(agreed, weights), agreed


def _fuse_polygons(
    kind: str, schema: Sequence[str], answers: Sequence[tuple[str, str]], weights: list[float]
) -> tuple[str, float, tuple[bool, ...]]:
    drawn = [_class_masks(text, kind) for _, text in answers]
    labels = [label for label in (list(schema) or sorted(set().union(*drawn))) if any(label in d for d in drawn)]
    workers = [worker for worker, _ in answers]
    vote = MaskVote(weights=dict(zip(workers, _vote_weights(weights).tolist(), strict=True)))
    empty = np.zeros((MASK_GRID, MASK_GRID), dtype=bool)
    agreed = [True] * len(answers)
    masks = []
    for label in labels:
        # One fit per class: a worker's skill is then its IoU with this class's fused mask.
        vote.fit([(label, worker, d.get(label, empty)) for worker, d in zip(workers, drawn, strict=True)])
        agreed = [a and vote.skills_[worker] >= IOU_AGREES for a, worker in zip(agreed, workers, strict=True)]
        mask = vote.masks_[label]
        if mask.any():
            masks.append(
                {
                    "label": label,
                    "width": MASK_GRID,
                    "height": MASK_GRID,
                    "counts": _run_lengths(mask),
                    "confidence": vote.confidences_[label],
                }
            )
    # Segmentation fuses into masks (quorum.tasktypes: the fused kind of polygons).
    return _dump({"masks": {"masks": masks} if masks else {}}), _agreement(agreed, weights), tuple(agreed)


def _class_masks(text: str, kind: str) -> dict[str, BoolArray]:
    """Per class, the union of an answer's polygons rasterised on the mask grid; or the masks
    of a fused label (a label resolved earlier, which later answers are compared with)."""
    out: dict[str, BoolArray] = {}
    for mask in _member(text, "masks").get("masks", []):
        if (mask.get("width"), mask.get("height")) == (MASK_GRID, MASK_GRID):
            runs = [int(c) for c in mask.get("counts", [])]
            cells = np.repeat(np.arange(len(runs)) % 2 == 1, runs)
            if cells.size == MASK_GRID * MASK_GRID:
                out[str(mask.get("label", ""))] = cells.reshape(MASK_GRID, MASK_GRID)
    for polygon in _member(text, kind).get("polygons", []):
        vertices = polygon.get("points", [])
        xs = [float(p.get("x", 0.0)) * MASK_GRID for p in vertices]
        ys = [float(p.get("y", 0.0)) * MASK_GRID for p in vertices]
        label = str(polygon.get("label", ""))
        drawn = polygon_mask(xs, ys, (MASK_GRID, MASK_GRID))
        out[label] = out[label] | drawn if label in out else drawn
    return out


def _run_lengths(mask: BoolArray) -> list[int]:
    """Row-major run lengths alternating background and foreground, background first (the
    Mask message's encoding)."""
    flat = mask.ravel()
    bounds = np.concatenate(([0], np.flatnonzero(flat[1:] != flat[:-1]) + 1, [flat.size]))
    runs = np.diff(bounds).tolist()
    return [0, *runs] if flat[0] else runs


def _fuse_transcription(
    kind: str, schema: Sequence[str], answers: Sequence[tuple[str, str]], weights: list[float]
) -> tuple[str, float, tuple[bool, ...]]:
    texts = [" ".join(str(_member(text, kind).get("text", "")).split()) for _, text in answers]
    workers = [worker for worker, _ in answers]
    rover = ROVER(weights=dict(zip(workers, _vote_weights(weights).tolist(), strict=True)))
    fused = rover.fit([("t", worker, text) for worker, text in zip(workers, texts, strict=True)]).texts_["t"]
    # Agreement by character error rate against the result, so a typo still agrees.
    codes = [np.array([ord(c) for c in text], dtype=np.int64) for text in texts]
    errors = levenshtein_batch(codes, [np.array([ord(c) for c in fused], dtype=np.int64)] * len(codes))
    agreed = tuple(bool(e <= CER_AGREES * max(len(fused), 1)) for e in errors)
    return _dump({kind: {"text": fused} if fused else {}}), _agreement(agreed, weights), agreed


def _fuse_pairwise(
    kind: str, schema: Sequence[str], answers: Sequence[tuple[str, str]], weights: list[float]
) -> tuple[str, float, tuple[bool, ...]]:
    # One task is one comparison: the one-coin vote over the allowed winners. (Bradley-Terry
    # scores need many comparisons of the same items: the offline path.)
    choices = list(schema) or list(PAIRWISE_WINNERS)
    winners = [str(_member(text, kind).get("winner", "")) for _, text in answers]
    index = {choice: k for k, choice in enumerate(choices)}
    posterior = one_coin_posterior([index.get(w, -1) for w in winners], weights, len(choices))
    best = int(posterior.argmax())
    fused = {"winner": choices[best], "a_wins": float(posterior[index["a"]]) if "a" in index else 0.0}
    return _dump({kind: fused}), float(posterior[best]), tuple(w == choices[best] for w in winners)


_FUSERS: dict[str, Callable[..., tuple[str, float, tuple[bool, ...]]]] = {
    "multi_label": _fuse_multi_label,
    "boxes": _fuse_boxes,
    "spans": _fuse_spans,
    "keypoints": _fuse_keypoints,
    "polygons": _fuse_polygons,
    "transcription": _fuse_transcription,
    "pairwise": _fuse_pairwise,
}
