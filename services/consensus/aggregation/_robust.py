"""Grouped weighted statistics and reliability shrinkage shared by the task-type aggregators.

Everything here works on flat arrays with a group index per element, so a whole job (every
task, every coordinate) is one numpy call instead of a Python loop per task.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.intp]
BoolArray = npt.NDArray[np.bool_]

_TOLERANCE = 1e-9


def group_weighted_median(values: FloatArray, weights: FloatArray, groups: IntArray, n_groups: int) -> FloatArray:
    """Weighted median of ``values`` within each group; NaN for an empty group.

    The median is the value where the cumulative weight (values sorted ascending) reaches half
    the group's total; when it lands exactly on half, the two neighbouring values are averaged,
    so with equal weights this is the ordinary median. A group whose weights are all zero is
    treated as equally weighted. Under Laplace errors with scale ``b_i`` the weighted median
    with weights ``1 / b_i`` is the maximum-likelihood location. Costs O(n log n).
    """
    values = np.asarray(values, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    groups = np.asarray(groups, dtype=np.intp)
    out = np.full(n_groups, np.nan)
    if len(values) == 0:
        return out
    totals = np.bincount(groups, weights=weights, minlength=n_groups)
    counts = np.bincount(groups, minlength=n_groups)
    weightless = (totals <= 0) & (counts > 0)
    if weightless.any():
        weights = np.where(weightless[groups], 1.0, weights)
        totals = np.bincount(groups, weights=weights, minlength=n_groups)
    order = np.lexsort((values, groups))
    v, w, g = values[order], weights[order], groups[order]
    cumulative = np.cumsum(w)
    before = np.concatenate(([0.0], np.cumsum(totals)[:-1]))
    fraction = (cumulative - before[g]) / totals[g]
    # Groups occupy disjoint bands [2g, 2g + 1] of the key, so one searchsorted serves all.
    key = 2.0 * g + fraction
    present = np.flatnonzero(counts > 0)
    first = np.concatenate(([0], np.cumsum(counts)[:-1]))[present]
    last = first + counts[present] - 1
    lo = np.searchsorted(key, 2.0 * present + 0.5 - _TOLERANCE, side="left")
    hi = np.searchsorted(key, 2.0 * present + 0.5 + _TOLERANCE, side="right")
    lo = np.clip(lo, first, last)
    hi = np.clip(hi, first, last)
    out[present] = 0.5 * (v[lo] + v[hi])
    return out


def group_weighted_mode(
    codes: IntArray, weights: FloatArray, groups: IntArray, n_groups: int, n_codes: int
) -> tuple[IntArray, FloatArray, BoolArray]:
    """Per group: the code with the largest total weight, that weight's share of the group's
    total, and whether the maximum is unique. Ties go to the smaller code; an empty group gets
    code -1 and share 0. Costs O(n + n_groups * n_codes) memory and time."""
    table = np.bincount(
        np.asarray(groups, dtype=np.intp) * n_codes + np.asarray(codes, dtype=np.intp),
        weights=np.asarray(weights, dtype=np.float64),
        minlength=n_groups * n_codes,
    ).reshape(n_groups, n_codes)
    best = np.argmax(table, axis=1)
    top = table[np.arange(n_groups), best]
    totals = table.sum(axis=1)
    unique = (np.isclose(table, top[:, None], rtol=0.0, atol=_TOLERANCE).sum(axis=1) == 1) & (totals > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(totals > 0, top / np.where(totals > 0, totals, 1.0), 0.0)
    best = np.where(totals > 0, best, -1)
    return best.astype(np.intp), share, unique


def shrunk_rate(events: npt.ArrayLike, trials: npt.ArrayLike, prior_mean: float, prior_strength: float) -> FloatArray:
    """Posterior mean of a rate under a Beta prior of the given mean and strength (pseudo-trials):
    ``(events + m s) / (trials + s)``. A worker with few answers stays near the prior. O(n)."""
    return (np.asarray(events, dtype=np.float64) + prior_mean * prior_strength) / (
        np.asarray(trials, dtype=np.float64) + prior_strength
    )


def factorize(values: Iterable[Hashable]) -> tuple[npt.NDArray[np.object_], IntArray]:
    """Sorted distinct values and each element's index into them (ids of one kind must be
    mutually comparable). Raises ValueError otherwise. O(n log n)."""
    items = list(values)
    array = np.empty(len(items), dtype=object)
    array[:] = items
    if len(items) == 0:
        return array, np.zeros(0, dtype=np.intp)
    try:
        uniques, inverse = np.unique(array, return_inverse=True)
    except TypeError as exc:
        raise ValueError(f"ids of one kind must be comparable (all str or all int): {exc}") from exc
    return uniques, inverse.astype(np.intp, copy=False)


def fixed_weights(weights: Mapping[Hashable, float], workers: npt.NDArray[np.object_]) -> FloatArray:
    """The given per-worker ``weights`` in the order of ``workers``, for an aggregator told to
    use weights it does not learn. Raises ValueError naming a worker that has none, or whose
    weight is negative or not finite. O(workers)."""
    missing = [w for w in workers.tolist() if w not in weights]
    if missing:
        raise ValueError(f"no weight given for workers {missing[:5]!r}")
    out = np.array([float(weights[w]) for w in workers.tolist()], dtype=np.float64)
    bad = ~np.isfinite(out) | (out < 0)
    if bad.any():
        raise ValueError(f"weights must be finite and >= 0; not so for {workers[bad].tolist()[:5]!r}")
    return out
