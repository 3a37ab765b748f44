"""Inter-annotator agreement of a job: Fleiss' kappa and Krippendorff's alpha (nominal), and
per-worker confusion matrices against the labels consensus settled on.

Both coefficients read a count matrix ``counts[task, label]`` (how many workers gave each label
to each task) and cost O(T K + K^2) once it is built. Tasks with fewer than two answers carry
no agreement information and are left out. Both are 0 when nothing is pairable.
"""

from __future__ import annotations

import numpy as np

from services.consensus.aggregation._encoding import FloatArray


def fleiss_kappa(counts: FloatArray) -> float:
    """Fleiss' kappa (Fleiss 1971, "Measuring nominal scale agreement among many raters"),
    allowing a different number of answers per task: each task's observed agreement is the
    share of agreeing ordered pairs among its own answers. 1 is perfect agreement, 0 what
    chance gives, below 0 systematic disagreement."""
    counts = np.asarray(counts, dtype=np.float64)
    n = counts.sum(axis=1)
    rated = n >= 2
    if not rated.any():
        return 0.0
    counts, n = counts[rated], n[rated]
    observed = float((((counts**2).sum(axis=1) - n) / (n * (n - 1))).mean())
    shares = counts.sum(axis=0) / n.sum()
    expected = float((shares**2).sum())
    if expected >= 1.0:
        return 1.0 if observed >= 1.0 else 0.0
    return (observed - expected) / (1.0 - expected)


def krippendorff_alpha(counts: FloatArray) -> float:
    """Krippendorff's alpha for nominal data (Krippendorff 2011, "Computing Krippendorff's
    alpha-reliability"): 1 - observed / expected disagreement, from the coincidence matrix
    of pairable values. Handles any number of answers per task."""
    counts = np.asarray(counts, dtype=np.float64)
    m = counts.sum(axis=1)
    pairable = m >= 2
    if not pairable.any():
        return 0.0
    counts, m = counts[pairable], m[pairable]
    weighted = counts / (m - 1.0)[:, None]
    # o_ck = sum_u (n_uc n_uk - [c == k] n_uc) / (m_u - 1): a value never pairs with itself.
    coincidences = weighted.T @ counts - np.diag(weighted.sum(axis=0))
    totals = coincidences.sum(axis=1)
    n = totals.sum()
    disagreement = coincidences.sum() - np.trace(coincidences)
    expected = n * n - float((totals**2).sum())
    if expected <= 0.0:
        return 1.0 if disagreement == 0.0 else 0.0
    return float(1.0 - (n - 1.0) * disagreement / expected)


def confusion_matrices(
    worker_codes: np.ndarray, truth_codes: np.ndarray, answer_codes: np.ndarray, n_workers: int, n_labels: int
) -> FloatArray:
    """``errors[w, true, answered]``: each worker's answers against the reference label (gold
    or resolved), rows normalised; a row with no evidence is uniform. O(answers + W K^2)."""
    counts = np.zeros((n_workers, n_labels, n_labels))
    np.add.at(counts, (worker_codes, truth_codes, answer_codes), 1.0)
    rows = counts.sum(axis=2, keepdims=True)
    return np.where(rows > 0, counts / np.where(rows > 0, rows, 1.0), 1.0 / n_labels)
