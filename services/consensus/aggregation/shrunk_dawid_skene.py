"""The ``default`` method: Dawid-Skene whose confusion matrices are shrunk toward each
worker's own two-parameter "knows or guesses" model, fitted by variational Bayes.

Why. Full Dawid-Skene (Dawid & Skene 1979) learns K (K - 1) free numbers per worker: right
for prolific workers, noise for the many who answer a handful of tasks. A one-coin or MACE
model (Hovy et al., "Learning Whom to Trust with MACE", NAACL 2013) learns one or K numbers
per worker: robust when sparse, blind to systematic confusions when data is plentiful. This
model lets the data choose per worker, as in the Bayesian treatments of Kim & Ghahramani
("Bayesian Classifier Combination", AISTATS 2012) and Venanzi et al. ("Community-based
Bayesian Aggregation Models for Crowdsourcing", WWW 2014), but with the prior centred on the
worker's own MACE fit instead of a fixed or community matrix:

- each worker ``w`` has a confusion matrix ``pi_w[k, :] ~ Dirichlet(s * m_w[k, :])`` with
  ``m_w = theta_w I + (1 - theta_w) 1 xi_w^T``: with probability ``theta_w`` the worker gives
  the true label, otherwise a label drawn from their own bias ``xi_w``;
- ``theta_w`` and ``xi_w`` are refitted every iteration (one MACE EM step on the worker's
  expected confusion counts, Beta(0.5, 0.5) and Dirichlet(1) priors), so a worker with few
  answers is described by the two-parameter model and one with many by their own counts;
- the task posterior uses the variational expectation ``E[log pi_w[k, l]] = digamma(a_kl) -
  digamma(sum_l a_kl)`` with ``a = counts + s m_w``, which discounts evidence from sparse rows
  (mean-field VB as in Kim & Ghahramani); the class prior is the smoothed mean posterior.

Known answers are fixed in every E-step (``warm_start=True`` first fits without them and then
refines; on the benchmark neither order dominates, so the default is the plain one).

``strength`` s = 2 pseudo-answers per row. It was chosen once across all eleven benchmark
datasets in ``benchmarks/consensus_bench.py`` (values 1-16 move the mean accuracy by 0.3
points); it is not set per dataset, and nothing here sees gold labels except the optional
known answers, which are fixed in every E-step.

Costs O(n K) per iteration for n answers (two sparse products), O(W K^2) memory; no
randomness (majority-vote start).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Self

import numpy as np
from scipy.special import digamma

from services.consensus.aggregation._em import (
    answer_matrix,
    converged,
    log_class_prior,
    majority_probas,
    normalise_log,
)
from services.consensus.aggregation._encoding import Answers, FloatArray, Known
from services.consensus.aggregation.base import Aggregator
from services.consensus.aggregation.spam import confusion_spam_scores


class ShrunkDawidSkene(Aggregator):
    """Dawid-Skene with per-worker Dirichlet priors centred on the worker's MACE-style
    two-parameter model; see the module docstring for the model and the citations.

    Fitted: ``probas_``, ``labels_``; ``errors_`` (n_workers, K, K) posterior-mean confusion
    matrices over ``workers_``; ``priors_`` the class prior; ``attention_`` (n_workers,) the
    probability that a worker gives the true label rather than guessing; ``skills_`` expected
    accuracy under ``priors_``; ``spam_scores_`` (:mod:`.spam`); ``n_iter_``.

    Raises ValueError for a non-positive strength or negative ``n_iter``/``tol``.
    Costs O(n K) per iteration.
    """

    def __init__(
        self,
        strength: float = 2.0,
        n_iter: int = 200,
        tol: float = 1e-7,
        warm_start: bool = False,
        labels: Sequence[Hashable] | None = None,
    ) -> None:
        super().__init__(labels)
        self.warm_start = warm_start
        if strength <= 0:
            raise ValueError(f"strength must be > 0, got {strength}")
        if n_iter < 0 or tol < 0:
            raise ValueError(f"n_iter and tol must be >= 0, got {n_iter}, {tol}")
        self.strength = float(strength)
        self.n_iter = n_iter
        self.tol = tol
        self.errors_: FloatArray = np.zeros((0, 0, 0))
        self.priors_: FloatArray = np.zeros(0)
        self.attention_: FloatArray = np.zeros(0)
        self.n_iter_ = 0

    # MACE priors on the prior mean: Beta(0.5, 0.5) on attention, Dirichlet(1) on the bias.
    _ATTENTION_PRIOR = (0.5, 0.5)
    _BIAS_PRIOR = 1.0

    def fit(self, answers: Answers, known: Known | None = None) -> Self:
        encoded = self._encode(answers, known)
        k, n_workers, n = encoded.n_classes, len(encoded.workers), len(encoded.task_idx)
        probas = majority_probas(encoded)
        attention = np.full(n_workers, 0.7)
        if n == 0 or k == 0:
            uniform = np.full((n_workers, k, k), 1.0 / max(k, 1))
            self._finish(self._clamp(probas), uniform, np.full(k, 1.0 / max(k, 1)), attention)
            return self
        a, a_t = answer_matrix(encoded)
        self.n_iter_ = 0
        clamped = len(self._known_rows) > 0 and self.warm_start
        if clamped:
            # Optionally fit unsupervised first, so known answers only refine that optimum.
            probas, _, _, _ = self._em(a, a_t, probas, n, n_workers, k, clamp=False)
        probas, errors, priors, attention = self._em(a, a_t, self._clamp(probas), n, n_workers, k, clamp=True)
        self._finish(probas, errors, priors, attention)
        return self

    def _em(
        self, a: object, a_t: object, probas: FloatArray, n: int, n_workers: int, k: int, clamp: bool
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """Variational EM from ``probas`` to convergence; returns the task posteriors, the
        posterior-mean confusion matrices, the class prior and the attention."""
        eye = np.eye(k)
        attention = np.full(n_workers, 0.7)
        bias = np.full((n_workers, k), 1.0 / k)
        dirichlet = np.zeros((n_workers, k, k))
        previous = -np.inf
        for iteration in range(max(self.n_iter, 1)):
            self.n_iter_ += 1
            counts = np.asarray(a_t @ probas).reshape(n_workers, k, k).transpose(0, 2, 1)  # type: ignore[operator]
            attention, bias = self._mace_step(counts, attention, bias)
            mean = attention[:, None, None] * eye + (1.0 - attention)[:, None, None] * bias[:, None, :]
            dirichlet = counts + self.strength * mean
            log_pi = digamma(dirichlet) - digamma(dirichlet.sum(axis=2, keepdims=True))
            log_pi_flat = log_pi.transpose(0, 2, 1).reshape(n_workers * k, k)
            log_joint = np.asarray(a @ log_pi_flat) + log_class_prior(probas)
            probas, log_evidence = normalise_log(log_joint)
            if clamp:
                self._clamp(probas)
            if converged(previous, log_evidence, n, self.tol) or iteration + 1 >= self.n_iter:
                break
            previous = log_evidence
        errors = dirichlet / dirichlet.sum(axis=2, keepdims=True)
        priors = np.exp(log_class_prior(probas))
        return probas, errors, priors / priors.sum(), attention

    def _mace_step(self, counts: FloatArray, attention: FloatArray, bias: FloatArray) -> tuple[FloatArray, FloatArray]:
        """One EM step of the knows-or-guesses model on expected confusion counts. A diagonal
        answer is "known" with probability theta / (theta + (1 - theta) xi_l); off-diagonal
        answers are guesses."""
        diag = np.diagonal(counts, axis1=1, axis2=2)
        theta = attention[:, None]
        knew = diag * theta / (theta + (1.0 - theta) * bias)
        a0, b0 = self._ATTENTION_PRIOR
        attention = (knew.sum(axis=1) + a0) / (counts.sum(axis=(1, 2)) + a0 + b0)
        guesses = counts.sum(axis=1) - knew + self._BIAS_PRIOR
        return attention, guesses / guesses.sum(axis=1, keepdims=True)

    def _finish(self, probas: FloatArray, errors: FloatArray, priors: FloatArray, attention: FloatArray) -> None:
        self._set_probas(probas)
        self.errors_ = errors
        self.priors_ = priors
        self.attention_ = attention
        self.skills_ = self._per_worker(np.einsum("wkk,k->w", errors, priors) if errors.size else np.zeros(0))
        self.spam_scores_ = self._per_worker(confusion_spam_scores(errors))
