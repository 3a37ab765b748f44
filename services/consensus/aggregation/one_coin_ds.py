"""One-coin Dawid-Skene: each worker is right with probability ``r_w`` and otherwise picks one
of the other K - 1 labels uniformly; ``r_w`` is learnt by EM.

The one-coin special case of Dawid & Skene (1979), studied e.g. by Karger, Oh & Shah
("Iterative Learning for Reliable Crowdsourcing Systems", NeurIPS 2011) and Zhang et al.
("Spectral Methods Meet EM", NeurIPS 2014). The E-step is the weighted vote of
:func:`.one_coin.one_coin_log_posterior` plus a log class prior; the M-step sets ``r_w`` to the
posterior mean of a Beta(2, 1) prior (mean 2/3: workers are assumed better than chance) given
the worker's expected number of right answers, so a worker with one answer never reaches 0
or 1. O(n) per iteration.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Self

import numpy as np

from services.consensus.aggregation._em import converged, log_class_prior, majority_probas, normalise_log
from services.consensus.aggregation._encoding import Answers, FloatArray, Known
from services.consensus.aggregation.base import Aggregator
from services.consensus.aggregation.one_coin import one_coin_log_posterior
from services.consensus.aggregation.spam import accuracy_spam_scores


class OneCoinDawidSkene(Aggregator):
    """EM for the one-coin model. ``skills_`` and ``accuracy_`` (an array over
    ``workers_``) hold each worker's learnt probability of answering right; ``priors_`` the
    class prior (uniform unless ``learn_priors``: a learnt prior lets the model explain
    disagreement by shifting mass to one class, which on sparse data collapses the labels, so
    the default keeps it uniform, as Karger et al. do); ``spam_scores_`` from the accuracy
    (:func:`.spam.accuracy_spam_scores`); ``n_iter_``.

    ``prior`` = (a, b) of the Beta prior on every worker's accuracy. No randomness.
    Raises ValueError for a non-positive prior or negative ``n_iter``/``tol``. O(n) per
    iteration.
    """

    def __init__(
        self,
        n_iter: int = 100,
        tol: float = 1e-6,
        prior: tuple[float, float] = (2.0, 1.0),
        learn_priors: bool = False,
        labels: Sequence[Hashable] | None = None,
    ) -> None:
        super().__init__(labels)
        if n_iter < 0 or tol < 0 or min(prior) <= 0:
            raise ValueError(f"need n_iter, tol >= 0 and a positive prior, got {n_iter}, {tol}, {prior}")
        self.n_iter = n_iter
        self.tol = tol
        self.prior = (float(prior[0]), float(prior[1]))
        self.learn_priors = learn_priors
        self.accuracy_: FloatArray = np.zeros(0)
        self.priors_: FloatArray = np.zeros(0)
        self.n_iter_ = 0

    def fit(self, answers: Answers, known: Known | None = None) -> Self:
        encoded = self._encode(answers, known)
        k, n_workers, n = encoded.n_classes, len(encoded.workers), len(encoded.task_idx)
        probas = self._clamp(majority_probas(encoded))
        a0, b0 = self.prior
        previous = -np.inf
        accuracy = np.full(n_workers, a0 / (a0 + b0))
        self.n_iter_ = 0
        if n and k > 1:
            for _ in range(self.n_iter):
                self.n_iter_ += 1
                right = probas[encoded.task_idx, encoded.label_idx]
                hits = np.bincount(encoded.worker_idx, weights=right, minlength=n_workers)
                seen = np.bincount(encoded.worker_idx, minlength=n_workers)
                accuracy = (hits + a0) / (seen + a0 + b0)
                log_prior = log_class_prior(probas) if self.learn_priors else np.zeros(k)
                log_lik = one_coin_log_posterior(
                    encoded.task_idx, encoded.label_idx, accuracy[encoded.worker_idx], encoded.n_tasks, k
                )
                probas, log_evidence = normalise_log(log_lik + log_prior)
                self._clamp(probas)
                if converged(previous, log_evidence, n, self.tol):
                    break
                previous = log_evidence
        self.accuracy_ = accuracy
        self.priors_ = np.exp(log_class_prior(probas)) if self.learn_priors and k else np.full(k, 1.0 / max(k, 1))
        self._set_probas(probas)
        self.skills_ = self._per_worker(accuracy)
        self.spam_scores_ = self._per_worker(accuracy_spam_scores(accuracy, k))
        return self
