"""Building blocks the EM-style aggregators share: the sparse answer matrix, log-space
normalisation, the class prior and the convergence test. Pure numpy/scipy, no I/O."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from services.consensus.aggregation._encoding import EncodedAnswers, FloatArray, normalise_rows, vote_counts

LOG_FLOOR = 1e-300
"""Probabilities are floored here before a log, so log(0) never appears."""


def answer_matrix(encoded: EncodedAnswers) -> tuple[sp.csr_matrix, sp.csr_matrix]:
    """The (n_tasks, n_workers * K) count matrix ``A[t, w * K + l]`` = how many times worker
    ``w`` answered ``l`` on task ``t`` (repeated answers count each time), and its transpose,
    both CSR. With per-worker log-likelihoods ``L[w * K + l, k] = log P(l | true k, w)`` the
    E-step is ``A @ L`` and the M-step's expected counts are ``A.T @ probas``: two sparse
    products, no loop over answers. O(n log n) to build."""
    k = encoded.n_classes
    n_workers = len(encoded.workers)
    ones = np.ones(len(encoded.task_idx), dtype=np.float64)
    cols = encoded.worker_idx * k + encoded.label_idx
    a = sp.csr_matrix((ones, (encoded.task_idx, cols)), shape=(encoded.n_tasks, n_workers * k))
    a.sum_duplicates()
    return a, a.T.tocsr()


def majority_probas(encoded: EncodedAnswers) -> FloatArray:
    """Share of each task's answers per class: the usual EM starting point. O(n)."""
    return normalise_rows(vote_counts(encoded, np.ones(len(encoded.task_idx))))


def row_max(values: FloatArray) -> FloatArray:
    """Each row's maximum as an (n, 1) column. Rows here are short (one entry per class) and
    many, where numpy's reduction along a row is about 20x slower than a running maximum over
    the columns; this loops over the columns, never over the rows."""
    peak = values[:, 0].copy()
    for column in range(1, values.shape[1]):
        np.maximum(peak, values[:, column], out=peak)
    return peak[:, None]


def normalise_log(log_joint: FloatArray) -> tuple[FloatArray, float]:
    """Rows of ``exp(log_joint)`` scaled to sum to 1, and the summed log normaliser (the log
    evidence). Subtracts each row's maximum first, so nothing overflows; a row of -inf (every
    class impossible, which the callers' floors prevent) would come out uniform."""
    if log_joint.size == 0:
        return np.zeros_like(log_joint), 0.0
    peak = row_max(log_joint)
    peak = np.where(np.isfinite(peak), peak, 0.0)
    scaled = np.exp(log_joint - peak)
    totals = scaled.sum(axis=1, keepdims=True)
    # A finite peak puts exp(0) = 1 in its row, so only an all -inf row has a zero total.
    probas = scaled / totals if (totals > 0).all() else normalise_rows(scaled)
    log_evidence = float((np.log(np.maximum(totals, LOG_FLOOR)) + peak).sum())
    return probas, log_evidence


def log_class_prior(probas: FloatArray, pseudo_count: float = 1.0) -> FloatArray:
    """Log of the expected class frequencies, with ``pseudo_count`` added per class so a class
    with no mass keeps a finite log prior."""
    counts = probas.sum(axis=0) + pseudo_count
    return np.asarray(np.log(np.maximum(counts / counts.sum(), LOG_FLOOR)), dtype=np.float64)


def converged(previous: float, current: float, n_answers: int, tol: float) -> bool:
    """True when the log evidence per answer moved by less than ``tol``."""
    return abs(current - previous) < tol * max(n_answers, 1)
