"""Does a clustered object exist? The two-coin Dawid-Skene model over clusters, shared by the
span, box and keypoint aggregators.

A cluster (of spans, boxes, ...) is a binary item. Each worker who annotated the cluster's
task either contributed to it (1) or did not (0). Worker ``w`` marks an object that is there
with probability ``sensitivity[w]`` and one that is not with probability ``false_mark[w]``;
with base rate ``pi`` the posterior log-odds of existence are

    logit(pi) + sum over the task's workers of
        log(s_w / f_w)                 if w contributed
        log((1 - s_w) / (1 - f_w))     otherwise

(Dawid & Skene 1979; the two-coin form of Raykar et al., "Learning From Crowds", JMLR 11,
2010). EM alternates that posterior with Beta-smoothed rate estimates.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from services.consensus.aggregation._robust import FloatArray, IntArray, shrunk_rate


@dataclass(frozen=True)
class PresencePriors:
    """Beta priors: means of the two rates and their strength in pseudo-observations."""

    sensitivity: float = 0.7
    false_mark: float = 0.1
    strength: float = 5.0

    def __post_init__(self) -> None:
        for name in ("sensitivity", "false_mark"):
            value = getattr(self, name)
            if not 0.0 < value < 1.0:
                raise ValueError(f"prior {name} must be in (0, 1), got {value}")
        if self.sensitivity <= self.false_mark:
            raise ValueError("prior sensitivity must exceed the prior false-mark rate")
        if self.strength <= 0:
            raise ValueError(f"prior strength must be > 0, got {self.strength}")


def annotator_pairs(cluster_task: IntArray, seen_task: IntArray, seen_worker: IntArray) -> tuple[IntArray, IntArray]:
    """Every (cluster, worker) pair where the worker annotated the cluster's task.

    ``seen_task`` / ``seen_worker`` list who annotated what, sorted by task (then worker); the
    pairs come out sorted by (cluster, worker). O(number of pairs)."""
    if len(cluster_task) == 0 or len(seen_task) == 0:
        return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.intp)
    n_tasks = int(max(cluster_task.max(), seen_task.max())) + 1
    per_task = np.bincount(seen_task, minlength=n_tasks)
    first = np.concatenate(([0], np.cumsum(per_task)[:-1]))
    counts = per_task[cluster_task]
    pair_cluster = np.repeat(np.arange(len(cluster_task)), counts)
    within = np.arange(len(pair_cluster)) - np.repeat(np.cumsum(counts) - counts, counts)
    pair_worker = seen_worker[np.repeat(first[cluster_task], counts) + within]
    return pair_cluster.astype(np.intp), pair_worker.astype(np.intp)


def presence_matrix(
    pair_cluster: IntArray, pair_worker: IntArray, member_cluster: IntArray, member_worker: IntArray, n_workers: int
) -> npt.NDArray[np.bool_]:
    """Per pair: whether that worker contributed to that cluster. Members must be among the
    pairs (a member's worker annotated the task). O((pairs + members) log pairs)."""
    pair_key = pair_cluster * n_workers + pair_worker
    member_key = member_cluster * n_workers + member_worker
    present = np.zeros(len(pair_key), dtype=bool)
    if len(member_key):
        present[np.searchsorted(pair_key, member_key)] = True
    return present


def presence_em(
    pair_cluster: IntArray,
    pair_worker: IntArray,
    present: npt.NDArray[np.bool_],
    n_clusters: int,
    n_workers: int,
    priors: PresencePriors,
    clamp: FloatArray | None = None,
    n_iter: int = 50,
    tol: float = 1e-6,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Fits the model; returns (P(exists) per cluster, sensitivity, false-mark rate per worker).

    ``clamp`` (per cluster: 1, 0, or NaN for unknown) fixes clusters whose truth is known.
    The base rate is re-estimated each step (kept within [0.05, 0.95]); the false-mark rate is
    held below the sensitivity so a mark is never evidence against existence. Starts from the
    share of annotators who contributed. Costs O(pairs) per step."""
    sens = np.full(n_workers, priors.sensitivity)
    fmark = np.full(n_workers, priors.false_mark)
    if n_clusters == 0:
        return np.zeros(0), sens, fmark
    clamp = np.full(n_clusters, np.nan) if clamp is None else clamp
    x = present.astype(np.float64)
    votes = np.bincount(pair_cluster, weights=x, minlength=n_clusters)
    voters = np.maximum(np.bincount(pair_cluster, minlength=n_clusters), 1)
    q = np.where(np.isnan(clamp), votes / voters, clamp)
    for _ in range(n_iter):
        # M-step: the rates, with Beta priors; then E-step: the posterior per cluster.
        qp = q[pair_cluster]
        sens = shrunk_rate(
            np.bincount(pair_worker, weights=qp * x, minlength=n_workers),
            np.bincount(pair_worker, weights=qp, minlength=n_workers),
            priors.sensitivity,
            priors.strength,
        )
        fmark = shrunk_rate(
            np.bincount(pair_worker, weights=(1.0 - qp) * x, minlength=n_workers),
            np.bincount(pair_worker, weights=1.0 - qp, minlength=n_workers),
            priors.false_mark,
            priors.strength,
        )
        sens = np.clip(sens, 1e-3, 1.0 - 1e-3)
        fmark = np.clip(np.minimum(fmark, sens * 0.999), 1e-4, 1.0 - 1e-3)
        base = float(np.clip(q.mean(), 0.05, 0.95))
        s, f = sens[pair_worker], fmark[pair_worker]
        llr = np.where(present, np.log(s / f), np.log((1.0 - s) / (1.0 - f)))
        log_odds = np.bincount(pair_cluster, weights=llr, minlength=n_clusters) + np.log(base / (1.0 - base))
        q_new = 1.0 / (1.0 + np.exp(-np.clip(log_odds, -50.0, 50.0)))
        q_new = np.where(np.isnan(clamp), q_new, clamp)
        delta = float(np.max(np.abs(q_new - q)))
        q = q_new
        if delta < tol:
            break
    return q, sens, fmark
