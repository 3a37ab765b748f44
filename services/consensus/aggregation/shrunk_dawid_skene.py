"""The ``default`` method: Dawid-Skene whose confusion matrices are shrunk toward each
worker's own two-parameter "knows or guesses" model, fitted by variational Bayes at a ladder
of prior strengths whose posteriors are pooled.

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

The prior strength ``s`` (pseudo-answers per confusion row) is not known in advance, and on
real data no single value is best everywhere: the fitted optimum moves with it, most on the
sparse four-class sets. So the model is fitted once per strength in ``strengths`` (default
1, 2, 4, 8: a log-uniform ladder) and the task posteriors are pooled logarithmically
(normalised geometric mean; Genest & Zidek, "Combining Probability Distributions", Stat.
Sci. 1986), a fixed equal-weight stand-in for integrating ``s`` out. On the eleven datasets
of ``benchmarks/consensus_bench.py`` the pool averages 0.8661 accuracy, against 0.8651 for
the single strength 2 used before, 0.8656 for the best single strength (4) and 0.8633 for 8;
the ladder was chosen once across all eleven, not per dataset, and no gold label reaches the
fit.

Known answers. The members first converge without them and are pooled; the correction then
fixes the known tasks to their label in the pooled posterior, lets every member take one more
variational step from it (worker parameters, then task posteriors), and pools again. So the
known tasks correct the worker parameters around the unsupervised optimum without letting EM
wander to a different one: clamping in every E-step from the start lowered accuracy on the
other tasks of several benchmark datasets, and so did more than one step. A few percent of
known tasks is often too little to tell a worker's skill better than their answers already
do, and then the step only reorders borderline tasks, as often for the worse. So it is taken
only when it demonstrably helps: with each known task left out of the correction in turn,
the log-probability of that task's known label must rise over the unsupervised fit by more
than one standard error on average (:meth:`ShrunkDawidSkene._correction_helps`; cheap, as
leaving one task out changes only its own workers' counts). When the unsupervised labels
disagree with at least half the known answers, EM found the wrong optimum (say, a majority of
workers who are wrong together) and a step cannot leave it: then every member is refitted
with the known tasks fixed in every step. The known tasks' posteriors are their known labels.

Costs O(n K) per iteration per strength for n answers (two sparse products), O(W K^2)
memory; no randomness (majority-vote start).
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Self

import numpy as np
import scipy.sparse as sp
from scipy.special import digamma

from services.consensus.aggregation._em import (
    LOG_FLOOR,
    answer_matrix,
    converged,
    log_class_prior,
    majority_probas,
    normalise_log,
)
from services.consensus.aggregation._encoding import Answers, FloatArray, Known
from services.consensus.aggregation.base import Aggregator
from services.consensus.aggregation.spam import confusion_spam_scores


@dataclass
class _Member:
    """One strength's fit: task posteriors and the worker parameters they came from."""

    probas: FloatArray
    dirichlet: FloatArray
    attention: FloatArray
    bias: FloatArray


class ShrunkDawidSkene(Aggregator):
    """Dawid-Skene with per-worker Dirichlet priors centred on the worker's MACE-style
    two-parameter model, pooled over prior strengths; see the module docstring for the model,
    the pooling and the citations.

    Fitted: ``probas_``, ``labels_``; ``errors_`` (n_workers, K, K) posterior-mean confusion
    matrices over ``workers_`` (averaged over the strengths); ``priors_`` the class prior;
    ``attention_`` (n_workers,) the probability that a worker gives the true label rather
    than guessing; ``skills_`` expected accuracy under ``priors_``; ``spam_scores_``
    (:mod:`.spam`); ``n_iter_`` the iterations run, summed over the strengths.

    Raises ValueError for no strengths, a non-positive strength or negative ``n_iter``/``tol``.
    Costs O(n K) per iteration and strength.
    """

    def __init__(
        self,
        strengths: Sequence[float] = (1.0, 2.0, 4.0, 8.0),
        n_iter: int = 200,
        tol: float = 1e-7,
        labels: Sequence[Hashable] | None = None,
    ) -> None:
        super().__init__(labels)
        if len(strengths) == 0 or min(strengths) <= 0:
            raise ValueError(f"strengths must be one or more values > 0, got {list(strengths)}")
        if n_iter < 0 or tol < 0:
            raise ValueError(f"n_iter and tol must be >= 0, got {n_iter}, {tol}")
        self.strengths = tuple(float(s) for s in strengths)
        self.n_iter = n_iter
        self.tol = tol
        self.errors_: FloatArray = np.zeros((0, 0, 0))
        self.priors_: FloatArray = np.zeros(0)
        self.attention_: FloatArray = np.zeros(0)
        self.n_iter_ = 0

    # MACE priors on the prior mean: Beta(0.5, 0.5) on attention, Dirichlet(1) on the bias.
    _ATTENTION_PRIOR = (0.5, 0.5)
    _BIAS_PRIOR = 1.0
    _START_ATTENTION = 0.7

    def fit(self, answers: Answers, known: Known | None = None) -> Self:
        encoded = self._encode(answers, known)
        k, n_workers, n = encoded.n_classes, len(encoded.workers), len(encoded.task_idx)
        start = majority_probas(encoded)
        self.n_iter_ = 0
        if n == 0 or k == 0:
            uniform = np.full((n_workers, k, k), 1.0 / max(k, 1))
            attention = np.full(n_workers, self._START_ATTENTION)
            self._finish(self._clamp(start), uniform, np.full(k, 1.0 / max(k, 1)), attention)
            return self
        a, a_t = answer_matrix(encoded)
        members = [self._fit_member(a, a_t, start, strength, n_workers, n, False) for strength in self.strengths]
        probas = self._pool(members)
        if len(self._known_rows) and self._contradicted(probas):
            # The unsupervised optimum is the wrong one: refit with the known tasks fixed throughout.
            start = self._clamp(start.copy())
            members = [self._fit_member(a, a_t, start, strength, n_workers, n, True) for strength in self.strengths]
            probas = self._pool(members)
        elif len(self._known_rows) and self._correction_helps(a, a_t, members, probas):
            self._clamp(probas)
            for member, strength in zip(members, self.strengths, strict=True):
                member.probas = probas.copy()
                self._step(a, a_t, member, strength)
            probas = self._pool(members)
        self._clamp(probas)
        errors = np.mean([m.dirichlet / m.dirichlet.sum(axis=2, keepdims=True) for m in members], axis=0)
        priors = np.exp(log_class_prior(probas))
        attention = np.mean([m.attention for m in members], axis=0)
        self._finish(probas, errors, priors / priors.sum(), attention)
        return self

    def _fit_member(
        self,
        a: sp.csr_matrix,
        a_t: sp.csr_matrix,
        start: FloatArray,
        strength: float,
        n_workers: int,
        n: int,
        clamp: bool,
    ) -> _Member:
        """Variational EM at one strength from ``start`` to convergence; with ``clamp`` the
        known tasks are fixed after every step."""
        k = start.shape[1]
        member = _Member(
            start.copy(),
            np.zeros((n_workers, k, k)),
            np.full(n_workers, self._START_ATTENTION),
            np.full((n_workers, k), 1.0 / k),
        )
        previous = -np.inf
        for iteration in range(max(self.n_iter, 1)):
            log_evidence = self._step(a, a_t, member, strength)
            if clamp:
                self._clamp(member.probas)
            if converged(previous, log_evidence, n, self.tol) or iteration + 1 >= self.n_iter:
                break
            previous = log_evidence
        return member

    def _contradicted(self, probas: FloatArray) -> bool:
        """True when the unsupervised labels disagree with at least half the known answers:
        then EM found the wrong optimum (a majority of workers who are wrong together)."""
        hits = int((probas[self._known_rows].argmax(axis=1) == self._known_cls).sum())
        return 2 * hits <= len(self._known_rows)

    def _correction_helps(
        self, a: sp.csr_matrix, a_t: sp.csr_matrix, members: list[_Member], probas: FloatArray
    ) -> bool:
        """True when the correction, made with each known task left out in turn, raises the
        log-probability of that task's known label over the unsupervised ``probas`` by more
        than one standard error on average over the known tasks."""
        rows, known_cls = self._known_rows, self._known_cls
        if len(rows) < 2:
            return False
        left_out = self._left_out_posteriors(a, a_t, members, probas)
        picked = np.arange(len(rows)), known_cls
        gain = np.log(np.maximum(left_out[picked], LOG_FLOOR)) - np.log(np.maximum(probas[rows][picked], LOG_FLOOR))
        return bool(gain.mean() > gain.std(ddof=1) / np.sqrt(len(gain)))

    def _left_out_posteriors(
        self, a: sp.csr_matrix, a_t: sp.csr_matrix, members: list[_Member], probas: FloatArray
    ) -> FloatArray:
        """Each known task's pooled posterior after the correction (one step per member from
        ``probas`` with the known tasks fixed) made with every known task but that one.

        Leaving task ``j`` out puts back its unsupervised row in the counts of the workers who
        answered it, and nothing else, so each posterior needs those workers' confusion rows
        alone: O(answers on known tasks x K^2) in all, no refit."""
        rows = self._known_rows
        k = probas.shape[1]
        n_workers = a.shape[1] // k
        fixed = self._clamp(probas.copy())
        # One (known task, worker) pair per worker who answered a known task.
        on_known = a[rows].tocoo()
        pairs, pair_of = np.unique(on_known.row * n_workers + on_known.col // k, return_inverse=True)
        task, worker = pairs // n_workers, pairs % n_workers
        given = np.zeros((len(pairs), k))
        np.add.at(given, (pair_of, on_known.col % k), on_known.data)
        unfixed = probas[rows] - fixed[rows]
        counts = np.asarray(a_t @ fixed).reshape(n_workers, k, k).transpose(0, 2, 1)[worker]
        counts += unfixed[task][:, :, None] * given[:, None, :]
        class_counts = fixed.sum(axis=0) + 1.0  # as log_class_prior, with the task's row put back
        log_prior = np.log((class_counts + unfixed) / class_counts.sum())
        pooled = np.zeros((len(rows), k))
        for member, strength in zip(members, self.strengths, strict=True):
            *_, log_pi = self._worker_update(counts, member.attention[worker], member.bias[worker], strength)
            log_joint = log_prior.copy()
            np.add.at(log_joint, task, np.einsum("pkl,pl->pk", log_pi, given))
            pooled += np.log(np.maximum(normalise_log(log_joint)[0], LOG_FLOOR))
        return normalise_log(pooled / len(members))[0]

    @staticmethod
    def _pool(members: list[_Member]) -> FloatArray:
        """The normalised geometric mean of the members' task posteriors."""
        pooled = np.mean([np.log(np.maximum(m.probas, LOG_FLOOR)) for m in members], axis=0)
        return normalise_log(pooled)[0]

    def _step(self, a: sp.csr_matrix, a_t: sp.csr_matrix, member: _Member, strength: float) -> float:
        """One variational iteration in place: worker parameters from the current task
        posteriors, then the task posteriors from them. Returns the log evidence."""
        self.n_iter_ += 1
        n_workers, k = member.dirichlet.shape[:2]
        counts = np.asarray(a_t @ member.probas).reshape(n_workers, k, k).transpose(0, 2, 1)
        member.attention, member.bias, member.dirichlet, log_pi = self._worker_update(
            counts, member.attention, member.bias, strength
        )
        log_pi_flat = log_pi.transpose(0, 2, 1).reshape(n_workers * k, k)
        log_joint = np.asarray(a @ log_pi_flat) + log_class_prior(member.probas)
        member.probas, log_evidence = normalise_log(log_joint)
        return log_evidence

    def _worker_update(
        self, counts: FloatArray, attention: FloatArray, bias: FloatArray, strength: float
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """Worker parameters from expected confusion counts (rows of ``counts`` are workers):
        one MACE step for attention and bias, the Dirichlet posterior centred on them, and its
        expected log confusion matrices ``E[log pi]``."""
        attention, bias = self._mace_step(counts, attention, bias)
        theta = attention[:, None, None]
        k = counts.shape[1]
        dirichlet = counts + strength * (theta * np.eye(k) + (1.0 - theta) * bias[:, None, :])
        log_pi = digamma(dirichlet) - digamma(dirichlet.sum(axis=2, keepdims=True))
        return attention, bias, dirichlet, log_pi

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
