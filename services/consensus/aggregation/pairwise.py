"""Pairwise comparisons: Bradley-Terry scores with ties, weighted by estimated worker
reliability.

Answers are ``(context, worker, left, right, winner)``: within ``context`` (a query, a prompt,
or one constant for a single global ranking) the worker compared items ``left`` and ``right``
and ``winner`` is one of them or ``tie_label``. Items are scored within their context.

The model:

- **Davidson's Bradley-Terry with ties** (Davidson, "On extending the Bradley-Terry model to
  accommodate ties in paired comparison experiments", JASA 65, 1970): with log-strengths
  ``s`` and a tie parameter ``nu``,
  ``P(i beats j) = e^{s_i} / Z``, ``P(tie) = nu e^{(s_i + s_j) / 2} / Z``, ``Z`` their sum with
  ``e^{s_j}``. With ``ties=False`` ties are dropped and it is plain Bradley-Terry (1952).
- **Worker reliability**, as in Crowd-BT (Chen, Bennett, Collins-Thompson & Horvitz,
  "Pairwise ranking aggregation in a crowdsourced setting", WSDM 2013): a worker of
  reliability ``eta_w`` answers by the model with probability ``eta_w`` and reverses the
  answer otherwise (a tie stays a tie). EM: the E-step gives each answer the posterior
  ``gamma`` that it was given straight; the M-step sets ``eta_w`` to the worker's mean
  ``gamma`` under a Beta prior and refits the scores on every answer counted as given with
  weight ``gamma`` and reversed with weight ``1 - gamma``. A worker at ``eta = 0.5`` (a coin
  flipper) so carries no weight, and one below it is read in reverse.
- **Fitting**: Newton's method on the weighted log-likelihood plus a Gaussian prior of
  precision ``regularization`` on the scores (it keeps an item that won every comparison
  finite and fixes each context's scale). The score Hessian is a weighted graph Laplacian
  plus ``regularization`` times the identity; its system is solved by conjugate gradients,
  so a step costs O(answers) per CG iteration and no dense matrix is formed.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from typing import Any, Self

import numpy as np
import numpy.typing as npt

from services.consensus.aggregation._robust import FloatArray, IntArray, factorize


class BradleyTerry:
    """Reliability-weighted Bradley-Terry (Davidson ties); see the module docstring.

    ``tie_label``: the ``winner`` value of a tie. ``ties``: model ties (else drop them).
    ``reliability``: learn each worker's reliability by EM (else every answer weighs 1).
    ``regularization``: precision of the Gaussian prior on log-strengths. ``prior_reliability``
    and ``prior_strength``: the Beta prior on a worker's reliability. ``n_iter`` bounds the EM
    (or Newton) iterations; it stops when no score moves by more than ``tol``.

    Fitted: ``scores_`` (context -> {item: log-strength}, centred within the context),
    ``ranking_`` (context -> items, strongest first; equal scores keep item order), ``tie_``
    (nu), ``skills_`` (worker -> reliability; 1.0 for everyone without ``reliability``),
    ``answer_weights_`` (per answer, the posterior that it is informative), ``n_iter_``.
    Costs O(answers x CG iterations) per iteration.
    """

    def __init__(
        self,
        tie_label: Hashable = "tie",
        ties: bool = True,
        reliability: bool = True,
        regularization: float = 0.05,
        prior_reliability: float = 0.8,
        prior_strength: float = 4.0,
        n_iter: int = 200,
        tol: float = 1e-6,
    ) -> None:
        if regularization <= 0:
            raise ValueError(f"regularization must be > 0, got {regularization}")
        if not 0.0 < prior_reliability < 1.0:
            raise ValueError(f"prior_reliability must be in (0, 1), got {prior_reliability}")
        if prior_strength <= 0 or n_iter < 1:
            raise ValueError("prior_strength must be > 0 and n_iter >= 1")
        self.tie_label = tie_label
        self.ties = ties
        self.reliability = reliability
        self.regularization = regularization
        self.prior_reliability = prior_reliability
        self.prior_strength = prior_strength
        self.n_iter = n_iter
        self.tol = tol
        self.scores_: dict[Hashable, dict[Hashable, float]] = {}
        self.ranking_: dict[Hashable, list[Hashable]] = {}
        self.tie_ = 0.0
        self.skills_: dict[Hashable, float] = {}
        self.answer_weights_: FloatArray = np.zeros(0)
        self.n_iter_ = 0

    def fit_predict(self, answers: Iterable[Sequence[Any]]) -> dict[Hashable, dict[Hashable, float]]:
        """Fits and returns ``scores_``."""
        return self.fit(answers).scores_

    def fit(self, answers: Iterable[Sequence[Any]]) -> Self:
        """Fits on ``(context, worker, left, right, winner)`` rows.

        Raises ValueError for a malformed row, an item compared with itself, or a winner that
        is neither item nor ``tie_label``."""
        rows = list(answers)
        for i, row in enumerate(rows):
            if len(row) != 5:
                raise ValueError(f"answer {i} is not (context, worker, left, right, winner): {row!r}")
            _, _, left, right, winner = row
            if left == right:
                raise ValueError(f"answer {i} compares {left!r} with itself")
            if winner not in (left, right) and winner != self.tie_label:
                raise ValueError(f"answer {i}: winner {winner!r} is neither item nor {self.tie_label!r}")
        if not self.ties:
            rows = [row for row in rows if row[4] != self.tie_label or row[4] in (row[2], row[3])]
        contexts, context_idx = factorize(row[0] for row in rows)
        workers, worker_idx = factorize(row[1] for row in rows)
        names, name_idx = factorize([row[2] for row in rows] + [row[3] for row in rows])
        n = len(rows)
        # Items are (context, name) pairs, coded densely.
        item_keys, item_idx = np.unique(
            np.concatenate((context_idx, context_idx)) * max(len(names), 1) + name_idx, return_inverse=True
        )
        left, right = item_idx[:n].astype(np.intp), item_idx[n:].astype(np.intp)
        winner = np.array([row[4] for row in rows], dtype=object)
        outcome = np.where(
            winner == np.array([row[2] for row in rows], dtype=object),
            0,
            np.where(winner == np.array([row[3] for row in rows], dtype=object), 1, 2),
        ).astype(np.intp)
        n_items, n_workers = len(item_keys), len(workers)

        scores = np.zeros(n_items)
        theta = np.log(max(float(np.mean(outcome == 2)) * 2.0, 1e-3)) if self.ties and n else -np.inf
        eta = np.full(n_workers, self.prior_reliability)
        gamma = np.ones(n)
        flipped = np.where(outcome == 2, 2, 1 - outcome).astype(np.intp)
        for iteration in range(1, self.n_iter + 1):
            self.n_iter_ = iteration
            if self.reliability:
                p_model = _outcome_probability(scores[left] - scores[right], theta, outcome)
                informative = eta[worker_idx] * p_model
                flipped_p = _outcome_probability(scores[left] - scores[right], theta, flipped)
                gamma = informative / (informative + (1.0 - eta[worker_idx]) * flipped_p)
                a = self.prior_reliability * self.prior_strength
                eta = (np.bincount(worker_idx, weights=gamma, minlength=n_workers) + a) / (
                    np.bincount(worker_idx, minlength=n_workers) + self.prior_strength
                )
                eta = np.clip(eta, 1e-3, 1.0 - 1e-3)
            # Crowd-BT's M-step: an answer counts as given with weight gamma and reversed with
            # weight 1 - gamma (a tie reversed is a tie).
            new_scores, theta = _newton_step(
                scores,
                theta,
                np.concatenate((left, left)),
                np.concatenate((right, right)),
                np.concatenate((outcome, flipped)),
                np.concatenate((gamma, 1.0 - gamma)),
                self.regularization,
                self.ties,
            )
            delta = float(np.max(np.abs(new_scores - scores))) if n_items else 0.0
            scores = new_scores
            if delta < self.tol:
                break
        self.tie_ = float(np.exp(theta)) if self.ties else 0.0
        self.answer_weights_ = gamma
        self.skills_ = dict(
            zip(workers.tolist(), (eta if self.reliability else np.ones(n_workers)).tolist(), strict=True)
        )
        self._store(contexts, names, item_keys, scores)
        return self

    def _store(
        self, contexts: npt.NDArray[np.object_], names: npt.NDArray[np.object_], item_keys: IntArray, scores: FloatArray
    ) -> None:
        n_names = max(len(names), 1)
        item_context = item_keys // n_names
        item_name = item_keys % n_names
        self.scores_, self.ranking_ = {}, {}
        for c, context in enumerate(contexts.tolist()):
            members = np.flatnonzero(item_context == c)
            centred = scores[members] - scores[members].mean()
            items = names[item_name[members]].tolist()
            self.scores_[context] = dict(zip(items, centred.tolist(), strict=True))
            order = np.argsort(-centred, kind="stable")
            self.ranking_[context] = [items[i] for i in order]

    def predict_proba(self, context: Hashable, left: Hashable, right: Hashable) -> tuple[float, float, float]:
        """(P(left wins), P(right wins), P(tie)) under the fitted model. Raises KeyError for an
        unknown context or item. O(1)."""
        d = self.scores_[context][left] - self.scores_[context][right]
        theta = np.log(self.tie_) if self.tie_ > 0 else -np.inf
        p = [float(_outcome_probability(np.array([d]), theta, np.array([k]))[0]) for k in range(3)]
        return p[0], p[1], p[2]


def _outcome_probability(d: FloatArray, theta: float, outcome: IntArray) -> FloatArray:
    """Davidson probability of each observed outcome (0: left won, 1: right won, 2: tie)."""
    half = 0.5 * d
    peak = np.maximum(np.abs(half), theta if np.isfinite(theta) else -np.inf)
    e_left, e_right = np.exp(half - peak), np.exp(-half - peak)
    e_tie = np.exp(theta - peak) if np.isfinite(theta) else np.zeros_like(d)
    z = e_left + e_right + e_tie
    chosen = np.where(outcome == 0, e_left, np.where(outcome == 1, e_right, e_tie))
    return np.asarray(chosen / z, dtype=np.float64)


def _newton_step(
    scores: FloatArray,
    theta: float,
    left: IntArray,
    right: IntArray,
    outcome: IntArray,
    weight: FloatArray,
    regularization: float,
    ties: bool,
) -> tuple[FloatArray, float]:
    """One Newton step on the scores (CG on Laplacian + ridge), then one on the tie parameter."""
    n_items = len(scores)
    d = scores[left] - scores[right]
    p_left = _outcome_probability(d, theta, np.zeros(len(d), dtype=np.intp))
    p_right = _outcome_probability(d, theta, np.ones(len(d), dtype=np.intp))
    p_tie = 1.0 - p_left - p_right
    # d/dd log P(outcome) and the curvature of log Z (see the module docstring's model).
    grad_d = weight * (((outcome == 0).astype(np.float64) - (outcome == 1)) - (p_left - p_right)) / 2.0
    curv = weight * np.maximum((p_left + p_right) / 4.0 - (p_left - p_right) ** 2 / 4.0, 1e-12)
    grad = (
        np.bincount(left, weights=grad_d, minlength=n_items)
        - np.bincount(right, weights=grad_d, minlength=n_items)
        - regularization * scores
    )

    def hessian(v: FloatArray) -> FloatArray:
        flow = curv * (v[left] - v[right])
        return (
            np.bincount(left, weights=flow, minlength=n_items)
            - np.bincount(right, weights=flow, minlength=n_items)
            + regularization * v
        )

    scores = scores + _conjugate_gradient(hessian, grad)
    if ties and len(d):
        d = scores[left] - scores[right]
        p_tie = (
            1.0
            - _outcome_probability(d, theta, np.zeros(len(d), dtype=np.intp))
            - _outcome_probability(d, theta, np.ones(len(d), dtype=np.intp))
        )
        g = float(np.sum(weight * ((outcome == 2) - p_tie)))
        h = float(np.sum(weight * p_tie * (1.0 - p_tie))) + 1e-9
        theta = float(np.clip(theta + g / h, -20.0, 20.0))
    return scores, theta


def _conjugate_gradient(matvec: Any, b: FloatArray, max_iter: int = 200, tol: float = 1e-10) -> FloatArray:
    """Solves ``A x = b`` for a symmetric positive-definite ``A`` given as ``matvec``."""
    x = np.zeros_like(b)
    r = b.copy()
    p = r.copy()
    rs = float(r @ r)
    for _ in range(max_iter):
        if rs <= tol:
            break
        ap = matvec(p)
        alpha = rs / float(p @ ap)
        x += alpha * p
        r -= alpha * ap
        rs_new = float(r @ r)
        p = r + (rs_new / rs) * p
        rs = rs_new
    return x
