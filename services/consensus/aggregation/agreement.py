"""Inter-annotator agreement of a job: Fleiss' kappa and Krippendorff's alpha (nominal), and
per-worker confusion matrices against the labels consensus settled on.

Both coefficients read a count matrix ``counts[task, category]`` (how many workers gave each
label to each task), dense or sparse, and cost O(its non-zero entries) once it is built. Tasks
with fewer than two answers carry no agreement information and are left out. Both are 0 when
nothing is pairable.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from services.consensus.aggregation._encoding import FloatArray


def _pairable(counts: FloatArray | sp.sparray | sp.spmatrix) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Per task with two answers or more: its answer count ``m`` and sum of squared category
    counts; per category: its count over those tasks."""
    table = sp.csr_array(counts if sp.issparse(counts) else np.asarray(counts, dtype=np.float64), dtype=np.float64)
    m = np.asarray(table.sum(axis=1), dtype=np.float64).ravel()
    keep = np.flatnonzero(m >= 2)
    table = table[keep]
    squares = np.asarray(table.multiply(table).sum(axis=1), dtype=np.float64).ravel()
    totals = np.asarray(table.sum(axis=0), dtype=np.float64).ravel()
    return m[keep], squares, totals


def fleiss_kappa(counts: FloatArray | sp.sparray | sp.spmatrix) -> float:
    """Fleiss' kappa (Fleiss 1971, "Measuring nominal scale agreement among many raters"),
    allowing a different number of answers per task: each task's observed agreement is the
    share of agreeing ordered pairs among its own answers. 1 is perfect agreement, 0 what
    chance gives, below 0 systematic disagreement. ``counts`` may be a scipy sparse matrix."""
    n, squares, totals = _pairable(counts)
    if not len(n):
        return 0.0
    observed = float(((squares - n) / (n * (n - 1))).mean())
    shares = totals / n.sum()
    expected = float((shares**2).sum())
    if expected >= 1.0:
        return 1.0 if observed >= 1.0 else 0.0
    return (observed - expected) / (1.0 - expected)


def krippendorff_alpha(counts: FloatArray | sp.sparray | sp.spmatrix) -> float:
    """Krippendorff's alpha for nominal data (Krippendorff 2011, "Computing Krippendorff's
    alpha-reliability"): 1 - observed / expected disagreement, from the coincidences of
    pairable values (a value never pairs with itself). Handles any number of answers per task;
    ``counts`` may be a scipy sparse matrix. The coincidence matrix is never formed: category
    ``c``'s row sums to its count, and task ``u`` adds ``(m_u^2 - sum_c n_uc^2) / (m_u - 1)``
    off the diagonal."""
    m, squares, totals = _pairable(counts)
    if not len(m):
        return 0.0
    n = float(totals.sum())
    disagreement = float(((m * m - squares) / (m - 1.0)).sum())
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
