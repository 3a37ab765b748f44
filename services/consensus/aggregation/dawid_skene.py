"""Dawid-Skene: every worker has a full confusion matrix, learnt by EM.

Dawid & Skene, "Maximum Likelihood Estimation of Observer Error-Rates Using the EM
Algorithm", Applied Statistics 28(1), 1979. Worker ``w`` answers ``l`` on a task whose true
class is ``k`` with probability ``errors[w, k, l]``; classes have prior ``priors``. EM
alternates

- E-step: ``log P(task = k | answers) = log priors[k] + sum over its answers of
  log errors[w, k, l]``, normalised in log-space;
- M-step: ``errors[w, k, l]`` = expected number of times ``w`` answered ``l`` on a class-``k``
  task, normalised per row; ``priors`` = mean task distribution.

It starts from majority vote and stops when the log-likelihood per answer improves by less
than ``tol`` (the convergence rule of crowd-kit's implementation, so the two agree in
accuracy). Both steps are sparse matrix products (:func:`._em.answer_matrix`): O(n K) per
iteration for n answers, O(W K^2) memory for W workers.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Self

import numpy as np

from services.consensus.aggregation._em import answer_matrix, converged, majority_probas, normalise_log
from services.consensus.aggregation._encoding import Answers, FloatArray, Known
from services.consensus.aggregation.base import Aggregator
from services.consensus.aggregation.spam import confusion_spam_scores

_FLOOR = 1e-10  # an answer never seen for a class stays possible, so log() stays finite


class DawidSkene(Aggregator):
    """Dawid-Skene EM with full per-worker confusion matrices.

    Fitted: ``probas_``, ``labels_``; ``errors_`` an (n_workers, K, K) array over
    ``workers_``, ``errors_[w, k, l]`` = P(worker answers l | true class k); ``priors_`` the
    class prior; ``skills_`` each worker's expected accuracy under ``priors_``;
    ``spam_scores_`` (:mod:`.spam`); ``n_iter_`` the iterations run.

    A row with no evidence (a class the worker never met) is uniform. Known answers are fixed
    in every E-step, so their tasks teach the confusion matrices with certainty.
    No randomness: the same answers give the same result. Costs O(n K) per iteration.
    """

    def __init__(self, n_iter: int = 100, tol: float = 1e-5, labels: Sequence[Hashable] | None = None) -> None:
        super().__init__(labels)
        if n_iter < 0 or tol < 0:
            raise ValueError(f"n_iter and tol must be >= 0, got {n_iter}, {tol}")
        self.n_iter = n_iter
        self.tol = tol
        self.errors_: FloatArray = np.zeros((0, 0, 0))
        self.priors_: FloatArray = np.zeros(0)
        self.n_iter_ = 0

    def fit(self, answers: Answers, known: Known | None = None) -> Self:
        encoded = self._encode(answers, known)
        k, n_workers, n = encoded.n_classes, len(encoded.workers), len(encoded.task_idx)
        probas = self._clamp(majority_probas(encoded))
        if n == 0 or k == 0:
            self._finish(probas, np.zeros((n_workers, k, k)), np.full(k, 1.0 / max(k, 1)))
            return self
        a, a_t = answer_matrix(encoded)
        errors, priors = self._m_step(a_t, probas, n_workers, k)
        previous = -np.inf
        self.n_iter_ = 0
        for _ in range(self.n_iter):
            self.n_iter_ += 1
            log_errors = np.log(errors).transpose(0, 2, 1).reshape(n_workers * k, k)
            probas, log_evidence = normalise_log(np.asarray(a @ log_errors) + np.log(priors))
            self._clamp(probas)
            errors, priors = self._m_step(a_t, probas, n_workers, k)
            if converged(previous, log_evidence, n, self.tol):
                break
            previous = log_evidence
        self._finish(probas, errors, priors)
        return self

    @staticmethod
    def _m_step(a_t: object, probas: FloatArray, n_workers: int, k: int) -> tuple[FloatArray, FloatArray]:
        counts = np.asarray(a_t @ probas).reshape(n_workers, k, k).transpose(0, 2, 1)  # type: ignore[operator]
        counts = np.maximum(counts, _FLOOR)
        errors = counts / counts.sum(axis=2, keepdims=True)
        priors = np.maximum(probas.mean(axis=0), _FLOOR)
        return errors, priors / priors.sum()

    def _finish(self, probas: FloatArray, errors: FloatArray, priors: FloatArray) -> None:
        self._set_probas(probas)
        self.errors_ = errors
        self.priors_ = priors
        self.skills_ = self._per_worker(np.einsum("wkk,k->w", errors, priors))
        self.spam_scores_ = self._per_worker(confusion_spam_scores(errors))
