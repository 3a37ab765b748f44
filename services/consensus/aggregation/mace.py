"""MACE: Multi-Annotator Competence Estimation.

Hovy, Berg-Kirkpatrick, Vaswani & Hovy, "Learning Whom to Trust with MACE", NAACL-HLT 2013.
Worker ``w`` either knows the answer (probability ``theta_w``, the competence) and gives the
true label, or guesses, drawing a label from their own spamming distribution ``xi_w``:

    P(answer l | true k) = theta_w [l = k] + (1 - theta_w) xi_w[l]

EM with the paper's priors: Beta(a, b) on theta (default a = b = 0.5) and a symmetric
Dirichlet on xi (``bias_prior``, default 1, i.e. add-one). The E-step gives each task's
posterior; the expected "knew it" indicator of an answer ``l`` is ``P(task = l) theta /
(theta + (1 - theta) xi[l])``, and the M-step counts them. The paper runs random restarts;
starting from majority vote makes that unnecessary and the result deterministic. Every step is
a bincount over the answers: O(n) per iteration.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Self

import numpy as np

from services.consensus.aggregation._em import LOG_FLOOR, converged, log_class_prior, majority_probas, normalise_log
from services.consensus.aggregation._encoding import Answers, FloatArray, Known
from services.consensus.aggregation.base import Aggregator


class MACE(Aggregator):
    """MACE by EM from a majority-vote start.

    Fitted: ``probas_``, ``labels_``; ``competence_`` (n_workers,) theta over ``workers_``;
    ``spam_distributions_`` (n_workers, K) xi; ``skills_`` the competence; ``spam_scores_``
    = 1 - competence (the model's own probability that an answer is a guess); ``n_iter_``.
    The class prior is learnt (the smoothed mean posterior) unless ``learn_priors`` is off,
    which gives the paper's uniform prior; on imbalanced data (most product pairs do not
    match) the uniform prior makes guessers look like experts.

    Raises ValueError for non-positive priors or negative ``n_iter``/``tol``. O(n) per
    iteration.
    """

    def __init__(
        self,
        n_iter: int = 100,
        tol: float = 1e-6,
        competence_prior: tuple[float, float] = (0.5, 0.5),
        bias_prior: float = 1.0,
        learn_priors: bool = True,
        labels: Sequence[Hashable] | None = None,
    ) -> None:
        super().__init__(labels)
        if n_iter < 0 or tol < 0 or min(competence_prior) <= 0 or bias_prior <= 0:
            raise ValueError("need n_iter, tol >= 0 and positive priors")
        self.n_iter = n_iter
        self.tol = tol
        self.competence_prior = (float(competence_prior[0]), float(competence_prior[1]))
        self.bias_prior = float(bias_prior)
        self.learn_priors = learn_priors
        self.competence_: FloatArray = np.zeros(0)
        self.spam_distributions_: FloatArray = np.zeros((0, 0))
        self.priors_: FloatArray = np.zeros(0)
        self.n_iter_ = 0

    def fit(self, answers: Answers, known: Known | None = None) -> Self:
        encoded = self._encode(answers, known)
        k, n_workers, n_tasks, n = encoded.n_classes, len(encoded.workers), encoded.n_tasks, len(encoded.task_idx)
        t, w, y = encoded.task_idx, encoded.worker_idx, encoded.label_idx
        probas = self._clamp(majority_probas(encoded))
        theta = np.full(n_workers, 0.7)
        xi = np.full((n_workers, max(k, 1)), 1.0 / max(k, 1))
        a0, b0 = self.competence_prior
        seen = np.bincount(w, minlength=n_workers)
        previous = -np.inf
        self.n_iter_ = 0
        if n and k > 1:
            for _ in range(self.n_iter):
                self.n_iter_ += 1
                # M-step from the current posteriors and parameters.
                tw, xw = theta[w], xi[w, y]
                knew = probas[t, y] * tw / (tw + (1.0 - tw) * xw)
                theta = (np.bincount(w, weights=knew, minlength=n_workers) + a0) / (seen + a0 + b0)
                guesses = np.bincount(w * k + y, weights=1.0 - knew, minlength=n_workers * k).astype(np.float64)
                guesses = guesses.reshape(n_workers, k) + self.bias_prior
                xi = guesses / guesses.sum(axis=1, keepdims=True)
                # E-step: every class gets the guess likelihood, the answered one also theta.
                tw, xw = theta[w], xi[w, y]
                log_guess = np.log(np.maximum((1.0 - tw) * xw, LOG_FLOOR))
                log_hit = np.log(np.maximum(tw + (1.0 - tw) * xw, LOG_FLOOR))
                base = np.bincount(t, weights=log_guess, minlength=n_tasks).astype(np.float64)
                bonus = np.bincount(t * k + y, weights=log_hit - log_guess, minlength=n_tasks * k).astype(np.float64)
                log_joint = base[:, None] + bonus.reshape(n_tasks, k)
                if self.learn_priors:
                    log_joint += log_class_prior(probas)
                probas, log_evidence = normalise_log(log_joint)
                self._clamp(probas)
                if converged(previous, log_evidence, n, self.tol):
                    break
                previous = log_evidence
        self.competence_ = theta
        self.spam_distributions_ = xi[:, :k]
        self.priors_ = np.exp(log_class_prior(probas)) if self.learn_priors and k else np.full(k, 1.0 / max(k, 1))
        self._set_probas(probas)
        self.skills_ = self._per_worker(theta)
        self.spam_scores_ = self._per_worker(1.0 - theta)
        return self
