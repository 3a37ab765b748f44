"""Keypoints: per-point reliability-weighted median, presence by a two-coin model, agreement
by object keypoint similarity (OKS).

Answers are ``(task, worker, points)`` with ``points`` a (K, 2) array of ``x, y`` for the K
keypoints of the task's object (the same K and order for every task), NaN for a point the
worker did not place (not visible, or not there).

The model:

- **Presence** of keypoint ``k`` in a task: the two-coin Dawid-Skene model of
  :mod:`._presence` over (task, keypoint) items, placing a point being a vote for it.
- **Location**: the weighted median of the placed ``x`` and of the placed ``y`` separately,
  each worker weighted ``1 / b_w`` with ``b_w`` their mean distance to the consensus measured
  in OKS units ``d / (s k_i)`` (``s`` the object scale, ``k_i = 2 sigma_i`` the keypoint's
  falloff): the maximum-likelihood location under Laplace errors of scale ``b_w``. ``b_w`` is
  re-estimated against the consensus (against known points for ``known`` tasks) with a prior
  worth ``error_strength`` points at the crowd's mean, and the points fused again.
- **Agreement**: the OKS of Lin et al., "Microsoft COCO: Common Objects in Context" (ECCV
  2014), ``mean over the consensus' present points of exp(-d^2 / (2 s^2 k_i^2))``, a point the
  worker left out counting 0. ``skills_`` is a worker's mean OKS; a task's confidence is the
  weighted mean OKS of its answers.

The object scale ``s`` is the square root of an area: ``scales`` may give it per task;
otherwise the area of the bounding box of the consensus points is used (floored at
``min_scale``), a slight over-estimate of COCO's segment area.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from services.consensus.aggregation._geometry import keypoint_similarity
from services.consensus.aggregation._presence import PresencePriors, presence_em
from services.consensus.aggregation._robust import FloatArray, factorize, group_weighted_median

COCO_PERSON_SIGMAS = (
    0.026, 0.025, 0.025, 0.035, 0.035, 0.079, 0.079, 0.072, 0.072, 0.062, 0.062, 0.107, 0.107, 0.087, 0.087, 0.089, 0.089,
)  # fmt: skip
"""COCO's per-keypoint sigmas for its 17 person keypoints (nose, eyes, ears, shoulders, ...)."""


class KeypointMedian:
    """Reliability-weighted keypoint aggregation; see the module docstring for the model.

    ``sigmas``: one per keypoint (a float applies to all; default 0.05). ``threshold``: the
    presence probability a point needs to be output. ``n_iter``: rounds of fusion and
    reliability estimation. ``prior_sensitivity``, ``prior_false_mark``, ``prior_strength``:
    the presence model's Beta priors. ``error_strength``: points of evidence it takes to move a
    worker's error scale away from the crowd's. ``min_scale``: floor on the object scale.

    Fitted: ``points_`` (task -> (K, 2) array, NaN for a point judged absent),
    ``presence_`` (task -> (K,) probabilities), ``confidences_`` (task -> weighted mean OKS of
    its answers with the consensus), ``oks_`` (task -> {worker: OKS}), per worker ``errors_``
    (mean distance in OKS units), ``weights_``, ``sensitivity_``, ``false_mark_`` and
    ``skills_`` (mean OKS). Costs O(n K log(n K)) per round for n answers of K points.
    """

    def __init__(
        self,
        sigmas: float | Sequence[float] = 0.05,
        threshold: float = 0.5,
        n_iter: int = 10,
        prior_sensitivity: float = 0.8,
        prior_false_mark: float = 0.1,
        prior_strength: float = 5.0,
        error_strength: float = 8.0,
        min_scale: float = 1.0,
    ) -> None:
        sig = np.atleast_1d(np.asarray(sigmas, dtype=np.float64))
        if (sig <= 0).any():
            raise ValueError("sigmas must be > 0")
        if not 0.0 < threshold < 1.0:
            raise ValueError(f"threshold must be in (0, 1), got {threshold}")
        if n_iter < 1:
            raise ValueError(f"n_iter must be >= 1, got {n_iter}")
        if error_strength <= 0 or min_scale <= 0:
            raise ValueError("error_strength and min_scale must be > 0")
        self.sigmas = sig
        self.threshold = threshold
        self.n_iter = n_iter
        self.priors = PresencePriors(prior_sensitivity, prior_false_mark, prior_strength)
        self.error_strength = error_strength
        self.min_scale = min_scale
        self.points_: dict[Hashable, FloatArray] = {}
        self.presence_: dict[Hashable, FloatArray] = {}
        self.confidences_: dict[Hashable, float] = {}
        self.oks_: dict[Hashable, dict[Hashable, float]] = {}
        self.errors_: dict[Hashable, float] = {}
        self.weights_: dict[Hashable, float] = {}
        self.sensitivity_: dict[Hashable, float] = {}
        self.false_mark_: dict[Hashable, float] = {}
        self.skills_: dict[Hashable, float] = {}

    def fit_predict(
        self,
        answers: Iterable[Sequence[Any]],
        scales: Mapping[Any, float] | None = None,
        known: Mapping[Any, npt.ArrayLike] | None = None,
    ) -> dict[Hashable, FloatArray]:
        """Fits and returns ``points_``."""
        return self.fit(answers, scales, known).points_

    def fit(
        self,
        answers: Iterable[Sequence[Any]],
        scales: Mapping[Any, float] | None = None,
        known: Mapping[Any, npt.ArrayLike] | None = None,
    ) -> Self:
        """Aggregates ``(task, worker, points)`` rows. ``scales`` maps tasks to the object
        scale; ``known`` maps tasks to their true (K, 2) points (NaN: absent), returned as
        they are and used to measure the workers who annotated them.

        Raises ValueError for a malformed row, answers with different K, or a sigma count that
        is neither 1 nor K."""
        rows = list(answers)
        for i, row in enumerate(rows):
            if len(row) != 3 or np.ndim(row[2]) != 2 or np.shape(row[2])[1] != 2:
                raise ValueError(f"answer {i} is not a (task, worker, (K, 2) points) triple")
        tasks, task_idx = factorize(row[0] for row in rows)
        workers, worker_idx = factorize(row[1] for row in rows)
        counts = {np.shape(row[2])[0] for row in rows}
        if len(counts) > 1:
            raise ValueError(f"answers have different numbers of keypoints: {sorted(counts)}")
        n_points = counts.pop() if counts else len(self.sigmas)
        if len(self.sigmas) not in (1, n_points):
            raise ValueError(f"{len(self.sigmas)} sigmas for {n_points} keypoints")
        sigmas = np.broadcast_to(self.sigmas, (n_points,)).astype(np.float64)
        n, n_tasks, n_workers = len(rows), len(tasks), len(workers)
        pts = np.array([np.asarray(row[2], dtype=np.float64) for row in rows]).reshape(n, n_points, 2)
        placed = np.asarray(np.isfinite(pts).all(axis=2), dtype=bool)  # (n, K)

        truth = np.full((n_tasks, n_points, 2), np.nan)
        is_known = np.zeros(n_tasks, dtype=bool)
        task_pos = {task: t for t, task in enumerate(tasks.tolist())}
        for task, value in (known or {}).items():
            if task in task_pos:
                arr = np.asarray(value, dtype=np.float64)
                if arr.shape != (n_points, 2):
                    raise ValueError(f"known points of {task!r} have shape {arr.shape}, not {(n_points, 2)}")
                truth[task_pos[task]] = arr
                is_known[task_pos[task]] = True

        # Presence: items are (task, keypoint); every answer of the task is a vote.
        item = (task_idx[:, None] * n_points + np.arange(n_points)[None, :]).ravel()
        voter = np.repeat(worker_idx, n_points)
        order = np.lexsort((voter, item))
        clamp = np.where(is_known[:, None], np.isfinite(truth).all(axis=2).astype(np.float64), np.nan).ravel()
        q, sens, fmark = presence_em(
            item[order], voter[order], placed.ravel()[order], n_tasks * n_points, n_workers, self.priors, clamp
        )
        present = (q >= self.threshold).reshape(n_tasks, n_points)

        # Location: weighted medians, reweighted by each worker's error in OKS units.
        weights = np.ones(n_workers)
        errors = np.zeros(n_workers)
        flat_placed = placed.ravel()
        groups = item[flat_placed]
        xs, ys = pts[:, :, 0].ravel()[flat_placed], pts[:, :, 1].ravel()[flat_placed]
        consensus = truth.copy()
        for _ in range(self.n_iter):
            w = np.repeat(weights[worker_idx], n_points)[flat_placed]
            fused = np.stack(
                [
                    group_weighted_median(xs, w, groups, n_tasks * n_points),
                    group_weighted_median(ys, w, groups, n_tasks * n_points),
                ],
                axis=1,
            ).reshape(n_tasks, n_points, 2)
            new = np.where(is_known[:, None, None], truth, fused)
            moved = not np.allclose(new, consensus, equal_nan=True)
            consensus = new
            scale = self._scales(consensus, scales, tasks)
            dist = np.linalg.norm(pts - consensus[task_idx], axis=2) / (scale[task_idx, None] * 2.0 * sigmas[None, :])
            ok = placed & np.isfinite(dist)
            err_sum = np.bincount(worker_idx, weights=np.where(ok, dist, 0.0).sum(axis=1), minlength=n_workers)
            err_n = np.bincount(worker_idx, weights=ok.sum(axis=1), minlength=n_workers)
            crowd = float(err_sum.sum() / err_n.sum()) if err_n.sum() > 0 else 1.0
            errors = (err_sum + self.error_strength * crowd) / (err_n + self.error_strength)
            weights = 1.0 / np.maximum(errors, 1e-3)
            if not moved:
                break

        out = np.where(present[:, :, None] | is_known[:, None, None], consensus, np.nan)
        scale = self._scales(out, scales, tasks)
        sim = keypoint_similarity(pts, out[task_idx], scale[task_idx], sigmas)  # (n, K), NaN if either missing
        target = np.asarray(np.isfinite(out).all(axis=2), dtype=bool)[task_idx]  # the consensus' present points
        n_target = target.sum(axis=1)
        oks = np.where(
            n_target > 0, np.where(target, np.nan_to_num(sim, nan=0.0), 0.0).sum(axis=1) / np.maximum(n_target, 1), 1.0
        )
        self._store(tasks, workers, task_idx, worker_idx, out, q.reshape(n_tasks, n_points), oks, weights)
        names = workers.tolist()
        self.errors_ = dict(zip(names, errors.tolist(), strict=True))
        self.weights_ = dict(zip(names, weights.tolist(), strict=True))
        self.sensitivity_ = dict(zip(names, sens.tolist(), strict=True))
        self.false_mark_ = dict(zip(names, fmark.tolist(), strict=True))
        return self

    def _scales(self, points: FloatArray, scales: Mapping[Any, float] | None, tasks: np.ndarray) -> FloatArray:
        """Per task: the given scale, else the square root of the consensus points' box area."""
        finite = np.asarray(np.isfinite(points).all(axis=2), dtype=bool)
        low = np.where(finite[..., None], points, np.inf).min(axis=1)
        high = np.where(finite[..., None], points, -np.inf).max(axis=1)
        any_point = np.asarray(finite.any(axis=1), dtype=bool)
        span = np.where(any_point[:, None], high - low, 0.0)  # (tasks, 2)
        area = span[:, 0] * span[:, 1]
        scale = np.maximum(np.sqrt(np.maximum(area, 0.0)), self.min_scale)
        if scales:
            given = np.array([float(scales.get(task, np.nan)) for task in tasks.tolist()])
            scale = np.where(np.isfinite(given) & (given > 0), given, scale)
        return scale

    def _store(
        self,
        tasks: np.ndarray,
        workers: np.ndarray,
        task_idx: npt.NDArray[np.intp],
        worker_idx: npt.NDArray[np.intp],
        points: FloatArray,
        presence: FloatArray,
        oks: FloatArray,
        weights: FloatArray,
    ) -> None:
        task_list, names = tasks.tolist(), workers.tolist()
        self.points_ = {task: points[t] for t, task in enumerate(task_list)}
        self.presence_ = {task: presence[t] for t, task in enumerate(task_list)}
        self.oks_ = {task: {} for task in task_list}
        for t, w, value in zip(task_idx.tolist(), worker_idx.tolist(), oks.tolist(), strict=True):
            self.oks_[task_list[t]][names[w]] = value
        n_tasks, n_workers = len(task_list), len(names)
        aw = weights[worker_idx]
        conf = np.bincount(task_idx, weights=aw * oks, minlength=n_tasks) / np.maximum(
            np.bincount(task_idx, weights=aw, minlength=n_tasks), 1e-12
        )
        self.confidences_ = dict(zip(task_list, conf.tolist(), strict=True))
        skill = np.bincount(worker_idx, weights=oks, minlength=n_workers) / np.maximum(
            np.bincount(worker_idx, minlength=n_workers), 1
        )
        self.skills_ = dict(zip(names, skill.tolist(), strict=True))
