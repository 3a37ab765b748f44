"""GLAD: worker ability and task difficulty.

Whitehill, Ruvolo, Wu, Bergsma & Movellan, "Whose Vote Should Count More: Optimal Integration
of Labels from Labelers of Unknown Expertise", NeurIPS 2009. Worker ``w`` has ability
``alpha_w`` (negative: adversarial), task ``t`` has inverse difficulty ``beta_t = exp(b_t) >
0``; the worker is right with probability ``sigmoid(alpha_w beta_t)`` and otherwise picks one
of the other K - 1 labels uniformly.

EM: the E-step is a weighted vote in log-space; the M-step maximises the expected
log-likelihood plus Gaussian priors (alpha ~ N(1, 1), b ~ N(0, 1)) over all alphas and b's.
Instead of generic gradient ascent we take diagonal Newton steps: the objective's Hessian
couples each alpha only with the b's of its tasks, and the diagonal terms dominate, so a few
alternating per-parameter Newton steps (clipped for safety) reach the optimum of each M-step
in a handful of vectorized passes over the answers. O(n) per step; no randomness.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Self

import numpy as np

from services.consensus.aggregation._em import converged, log_class_prior, majority_probas, normalise_log
from services.consensus.aggregation._encoding import Answers, FloatArray, IntArray, Known
from services.consensus.aggregation.base import Aggregator
from services.consensus.aggregation.spam import accuracy_spam_scores

_MAX_STEP = 2.0  # a Newton step larger than this in one parameter is clipped


def _sigmoid(x: FloatArray) -> FloatArray:
    return np.asarray(0.5 * (1.0 + np.tanh(0.5 * x)), dtype=np.float64)


class GLAD(Aggregator):
    """GLAD by EM with diagonal Newton M-steps.

    Fitted: ``probas_``, ``labels_``; ``alphas_`` (n_workers,) abilities over ``workers_``;
    ``betas_`` (n_tasks,) inverse difficulties over ``tasks_``; ``skills_`` each worker's
    alpha; ``spam_scores_`` from the accuracy ``sigmoid(alpha)`` on a task of average
    difficulty; ``priors_``; ``n_iter_``. The class prior stays uniform (as in the paper)
    unless ``learn_priors``.

    Raises ValueError for negative ``n_iter``/``tol``/``newton_steps``. O(n) per step.
    """

    def __init__(
        self,
        n_iter: int = 100,
        tol: float = 1e-5,
        newton_steps: int = 2,
        alpha_prior: tuple[float, float] = (1.0, 1.0),
        beta_prior: tuple[float, float] = (0.0, 1.0),
        learn_priors: bool = False,
        labels: Sequence[Hashable] | None = None,
    ) -> None:
        super().__init__(labels)
        if n_iter < 0 or tol < 0 or newton_steps < 0:
            raise ValueError(f"n_iter, tol and newton_steps must be >= 0, got {n_iter}, {tol}, {newton_steps}")
        self.n_iter = n_iter
        self.tol = tol
        self.newton_steps = newton_steps
        self.alpha_prior = alpha_prior  # (mean, precision)
        self.beta_prior = beta_prior  # (mean of log beta, precision)
        self.learn_priors = learn_priors
        self.alphas_: FloatArray = np.zeros(0)
        self.betas_: FloatArray = np.zeros(0)
        self.priors_: FloatArray = np.zeros(0)
        self.n_iter_ = 0

    def fit(self, answers: Answers, known: Known | None = None) -> Self:
        encoded = self._encode(answers, known)
        k, n_workers, n_tasks, n = encoded.n_classes, len(encoded.workers), encoded.n_tasks, len(encoded.task_idx)
        t, w = encoded.task_idx, encoded.worker_idx
        probas = self._clamp(majority_probas(encoded))
        alpha = np.full(n_workers, float(self.alpha_prior[0]))
        log_beta = np.full(n_tasks, float(self.beta_prior[0]))
        previous = -np.inf
        self.n_iter_ = 0
        if n and k > 1:
            for _ in range(self.n_iter):
                self.n_iter_ += 1
                right = probas[t, encoded.label_idx]
                alpha, log_beta = self._m_step(right, t, w, alpha, log_beta)
                x = alpha[w] * np.exp(log_beta)[t]
                log_right = -np.logaddexp(0.0, -x)
                log_wrong = -np.logaddexp(0.0, x) - np.log(k - 1)
                base = np.bincount(t, weights=log_wrong, minlength=n_tasks).astype(np.float64)
                bonus = np.bincount(
                    t * k + encoded.label_idx, weights=log_right - log_wrong, minlength=n_tasks * k
                ).astype(np.float64)
                log_joint = base[:, None] + bonus.reshape(n_tasks, k)
                if self.learn_priors:
                    log_joint += log_class_prior(probas)
                probas, log_evidence = normalise_log(log_joint)
                self._clamp(probas)
                if converged(previous, log_evidence, n, self.tol):
                    break
                previous = log_evidence
        self.alphas_ = alpha
        self.betas_ = np.exp(log_beta)
        self.priors_ = np.exp(log_class_prior(probas)) if self.learn_priors and k else np.full(k, 1.0 / max(k, 1))
        self._set_probas(probas)
        self.skills_ = self._per_worker(alpha)
        self.spam_scores_ = self._per_worker(accuracy_spam_scores(_sigmoid(alpha), k))
        return self

    def _m_step(
        self, right: FloatArray, t: IntArray, w: IntArray, alpha: FloatArray, log_beta: FloatArray
    ) -> tuple[FloatArray, FloatArray]:
        """Maximises sum_i [c_i log s_i + (1 - c_i) log(1 - s_i)] + log priors, s_i =
        sigmoid(alpha_w beta_t), c_i = P(answer i is right), by alternating diagonal Newton
        steps. The gradient in x = alpha beta is c - s, the curvature s (1 - s)."""
        a_mean, a_prec = self.alpha_prior
        b_mean, b_prec = self.beta_prior
        n_workers, n_tasks = len(alpha), len(log_beta)
        for _ in range(self.newton_steps):
            beta = np.exp(log_beta)[t]
            s = _sigmoid(alpha[w] * beta)
            grad = np.bincount(w, weights=(right - s) * beta, minlength=n_workers) - a_prec * (alpha - a_mean)
            curv = np.bincount(w, weights=s * (1.0 - s) * beta * beta, minlength=n_workers) + a_prec
            alpha = alpha + np.clip(grad / curv, -_MAX_STEP, _MAX_STEP)
            x = alpha[w] * beta
            s = _sigmoid(x)
            grad = np.bincount(t, weights=(right - s) * x, minlength=n_tasks) - b_prec * (log_beta - b_mean)
            curv = np.bincount(t, weights=s * (1.0 - s) * x * x, minlength=n_tasks) + b_prec
            log_beta = log_beta + np.clip(grad / curv, -_MAX_STEP, _MAX_STEP)
        return alpha, log_beta
