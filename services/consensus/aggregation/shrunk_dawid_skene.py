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

Known answers. The members first converge without them and are pooled; the unsupervised
labels are those of the pool. A known answer that confirms its task's unsupervised label tells
the fit nothing it did not hold already, so only the known answers that correct a label are
used: their tasks are fixed to the known label in each member's own converged posterior, every
member takes one more variational step from there (worker parameters, then task posteriors),
and the members are pooled again. A label of another task then changes only if the new
posterior favours the new label over the unsupervised one by odds of at least 10 to 1
(Jeffreys' "strong evidence"); below that the task keeps its unsupervised posterior. When every
known answer confirms its label, the result is the unsupervised one.

Why so guarded. The product asks that using known answers never lower accuracy on the other
tasks. In the benchmark's "known" scenario (``benchmarks/README.md``: a seeded share of the gold
tasks given as known answers, accuracy on the rest) the earlier rule, one step from the pooled
posterior with every known task fixed, lost tasks in two ways. The pool is no member's fixed
point, so that step moved labels by itself: 13 d_product labels even when every known answer
agreed with the fit.
And a nudge of a few per cent flipped near-ties (0.51 against 0.49) to whichever side it
pushed, a coin toss at best (rte, dog). Stepping from each member's own fit removes the first;
the odds guard the second. Fixing confirming known answers too, in that step, made it worse:
moving the fiftieth of an answer a 0.98 posterior leaves open, in confusion cells that hold
almost no count, where ``digamma`` is steep, turned a 0.92 s_adult label into 0.04. At 5 and
10% known, the earlier rule lowered accuracy in 37 of 242 (dataset, seed, share) cases over
seeds 2024 and 1-10, by up to 7 tasks; this one in none, and in 9 of 2,200 cases over the
unseen seeds 100-199, by one task each (figures in the README). Those are tasks a correction
overturns with a posterior near 1 that is still wrong: on d_product, three answers with one
worker against two, where the fit held the errors of both sides near impossible; corrections
that show the one worker erring overturn such tasks as surely when right as when wrong (over
those seeds d_product's overturned labels were right 427 times and wrong 151).

Clamping in every E-step from the start, as the other methods do, and more than one step both
let EM drift to a different optimum and lowered accuracy more often. When the unsupervised
labels disagree with at least half the known answers, though, EM may have found the wrong
optimum (say, a majority of workers who are wrong together), which one step cannot leave.
Then every member is refitted with the known tasks fixed in every step, and the refit is kept
only if it passes a held-out check: the label each known task gets from the refitted workers
with that task's own answers taken out of their counts (a leave-one-out of one more step) must
be right more often than the unsupervised label. Otherwise fixing the known tasks only forced
their own rows, and the guarded step above is used; a kept refit goes through the same odds
guard. On the real datasets such disagreement arose only with a handful of known tasks (2%
known on bluebirds, dog and s_adult, 5% on bluebirds, and s_rel's 88 tasks at 2%): over seeds
2024 and 1-60 and shares of 2, 5, 10 and 20%, the unchecked refit ran in 16 cases and lowered
accuracy in 7, by up to 3 tasks; the check kept it in 3, which lowered accuracy in one case by
one task. The known tasks' posteriors are their known labels.

Costs O(n K) per iteration per strength for n answers (two sparse products), O(W K^2)
memory; corrections add one iteration per strength, a refit a second fit per strength and a
leave-one-out over the known tasks' answers (O(K^2) each). No randomness (majority-vote start).
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
from services.consensus.aggregation._encoding import Answers, FloatArray, IntArray, Known
from services.consensus.aggregation.base import Aggregator
from services.consensus.aggregation.spam import confusion_spam_scores


def _fix(probas: FloatArray, rows: IntArray, classes: IntArray) -> FloatArray:
    """Sets ``rows`` to certainty in ``classes``, in place; returns ``probas``."""
    probas[rows] = 0.0
    probas[rows, classes] = 1.0
    return probas


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
    # Jeffreys' "strong evidence": the posterior odds a known answer needs to overturn a label.
    _OVERTURN_ODDS = 10.0

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
        members = self._fit_members(a, a_t, start, n_workers, n, None)
        probas = self._pool(members)
        refitted = self._validated_refit(a, a_t, start, n_workers, n, probas) if self._contradicted(probas) else None
        if refitted is not None:
            # The unsupervised optimum is the wrong one: keep the refit with the known tasks fixed.
            members = refitted
            probas = self._strong_changes(self._pool(members), probas)
        elif len(self._known_rows):
            probas = self._correct(a, a_t, members, probas)
        self._clamp(probas)
        errors = np.mean([m.dirichlet / m.dirichlet.sum(axis=2, keepdims=True) for m in members], axis=0)
        priors = np.exp(log_class_prior(probas))
        attention = np.mean([m.attention for m in members], axis=0)
        self._finish(probas, errors, priors / priors.sum(), attention)
        return self

    def _fit_members(
        self,
        a: sp.csr_matrix,
        a_t: sp.csr_matrix,
        start: FloatArray,
        n_workers: int,
        n: int,
        fixed: tuple[IntArray, IntArray] | None,
    ) -> list[_Member]:
        """One converged fit per strength from ``start`` (``n`` answers); ``fixed`` (task rows,
        classes), when given, are set to their class at the start and after every step."""
        k = start.shape[1]
        start = start if fixed is None else _fix(start.copy(), *fixed)
        members = []
        for strength in self.strengths:
            member = _Member(
                start.copy(),
                np.zeros((n_workers, k, k)),
                np.full(n_workers, self._START_ATTENTION),
                np.full((n_workers, k), 1.0 / k),
            )
            previous = -np.inf
            for iteration in range(max(self.n_iter, 1)):
                log_evidence = self._step(a, a_t, member, strength)
                if fixed is not None:
                    _fix(member.probas, *fixed)
                if converged(previous, log_evidence, n, self.tol) or iteration + 1 >= self.n_iter:
                    break
                previous = log_evidence
            members.append(member)
        return members

    def _validated_refit(
        self,
        a: sp.csr_matrix,
        a_t: sp.csr_matrix,
        start: FloatArray,
        n_workers: int,
        n: int,
        unsupervised: FloatArray,
    ) -> list[_Member] | None:
        """The members refitted with the known tasks fixed throughout, if the refit passes a
        held-out check: the labels it gives the known tasks from the other tasks alone
        (:meth:`_held_out`) must be right more often than the unsupervised labels. Otherwise
        None: fixing the known tasks only forced their own rows and found no other optimum."""
        rows, classes = self._known_rows, self._known_cls
        members = self._fit_members(a, a_t, start, n_workers, n, (rows, classes))
        # Pooled like the posteriors: the mean of the members' log posteriors.
        held_out = np.mean([self._held_out(a, a_t, m, s) for m, s in zip(members, self.strengths, strict=True)], axis=0)
        refit_hits = int((held_out.argmax(axis=1) == classes).sum())
        unsupervised_hits = int((unsupervised[rows].argmax(axis=1) == classes).sum())
        return members if refit_hits > unsupervised_hits else None

    def _held_out(self, a: sp.csr_matrix, a_t: sp.csr_matrix, member: _Member, strength: float) -> FloatArray:
        """Normalised log posteriors of the known tasks, each from worker parameters learnt
        with that task left out of the counts (the other tasks' posteriors as fitted): a
        leave-one-out of one more step, O(answers on the known tasks x K^2)."""
        n_workers, k = member.dirichlet.shape[:2]
        counts = np.asarray(a_t @ member.probas).reshape(n_workers, k, k).transpose(0, 2, 1)
        log_joint = np.empty((len(self._known_rows), k))
        log_joint[:] = log_class_prior(member.probas)
        for i, (row, cls) in enumerate(zip(self._known_rows.tolist(), self._known_cls.tolist(), strict=True)):
            cols = a.indices[a.indptr[row] : a.indptr[row + 1]]
            times = a.data[a.indptr[row] : a.indptr[row + 1]]
            workers, inverse = np.unique(cols // k, return_inverse=True)
            labels = cols % k
            without = counts[workers].copy()
            # The task is fixed to ``cls``, so its answers sit in row ``cls`` of their worker's counts.
            np.subtract.at(without, (inverse, cls, labels), times)
            log_pi = self._workers(without, member.attention[workers], member.bias[workers], strength)[3]
            log_joint[i] += (times[:, None] * log_pi[inverse, :, labels]).sum(axis=0)
        return np.log(np.maximum(normalise_log(log_joint)[0], LOG_FLOOR))

    def _correct(
        self, a: sp.csr_matrix, a_t: sp.csr_matrix, members: list[_Member], unsupervised: FloatArray
    ) -> FloatArray:
        """The pooled posterior after the known answers that correct the unsupervised labels
        have taught the workers one step; a label they would overturn stays unless the new
        one is at least ``_OVERTURN_ODDS`` times as probable as the old. Updates ``members``."""
        corrections = unsupervised[self._known_rows].argmax(axis=1) != self._known_cls
        if not corrections.any():
            # Every known answer confirms its label: nothing the fit did not already hold.
            return unsupervised
        rows, classes = self._known_rows[corrections], self._known_cls[corrections]
        for member, strength in zip(members, self.strengths, strict=True):
            # From the member's own optimum, so without corrections the step would stand still.
            _fix(member.probas, rows, classes)
            self._step(a, a_t, member, strength)
        return self._strong_changes(self._pool(members), unsupervised)

    def _strong_changes(self, corrected: FloatArray, unsupervised: FloatArray) -> FloatArray:
        """``corrected``, except that a task whose label it changes keeps its unsupervised row
        unless the new label is at least ``_OVERTURN_ODDS`` times as probable as the old."""
        before, after = unsupervised.argmax(axis=1), corrected.argmax(axis=1)
        every = np.arange(len(before))
        weak = (after != before) & (corrected[every, after] < self._OVERTURN_ODDS * corrected[every, before])
        corrected[weak] = unsupervised[weak]
        return corrected

    def _contradicted(self, probas: FloatArray) -> bool:
        """True when the unsupervised labels disagree with at least half the known answers
        (there are some): then EM may have found the wrong optimum (a majority of workers who
        are wrong together)."""
        hits = int((probas[self._known_rows].argmax(axis=1) == self._known_cls).sum())
        return len(self._known_rows) > 0 and 2 * hits <= len(self._known_rows)

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
        member.attention, member.bias, member.dirichlet, log_pi = self._workers(
            counts, member.attention, member.bias, strength
        )
        log_pi_flat = log_pi.transpose(0, 2, 1).reshape(n_workers * k, k)
        log_joint = np.asarray(a @ log_pi_flat) + log_class_prior(member.probas)
        member.probas, log_evidence = normalise_log(log_joint)
        return log_evidence

    def _workers(
        self, counts: FloatArray, attention: FloatArray, bias: FloatArray, strength: float
    ) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
        """Worker parameters from expected confusion counts (n_workers, K, K): attention and
        bias after one MACE step, the Dirichlet parameters and ``E[log pi]``."""
        attention, bias = self._mace_step(counts, attention, bias)
        theta = attention[:, None, None]
        mean = theta * np.eye(counts.shape[1]) + (1.0 - theta) * bias[:, None, :]
        dirichlet = counts + strength * mean
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
