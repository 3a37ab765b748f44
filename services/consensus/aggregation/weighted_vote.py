"""Reliability-weighted vote: the service's own rule, run to a fixed point over a batch.

Each worker's reliability is the Beta-posterior mean of :class:`.reliability.BetaReliability`
(known answers count fully, agreement with the current consensus label counts
``consensus_weight`` of an answer); each answer then votes with the one-coin weight
``log(r (K - 1) / (1 - r))`` (:func:`.one_coin.one_coin_log_posterior`), which gives the
posterior under the one-coin model of Dawid & Skene (1979). Starting from majority vote, the
two steps alternate until no label changes (at most ``n_iter`` rounds). O(n) per round.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Self

import numpy as np

from services.consensus.aggregation._em import majority_probas
from services.consensus.aggregation._encoding import Answers, FloatArray, Known
from services.consensus.aggregation.base import Aggregator
from services.consensus.aggregation.one_coin import one_coin_log_posterior
from services.consensus.aggregation.reliability import BetaReliability
from services.consensus.aggregation.spam import accuracy_spam_scores


class ReliabilityWeightedVote(Aggregator):
    """Weighted vote with reliabilities re-estimated from known answers and consensus.

    Fitted: ``probas_``, ``labels_``; ``reliability_`` (n_workers,) over ``workers_`` and
    ``skills_``; ``spam_scores_`` from the reliability; ``n_iter_`` rounds run.
    Raises ValueError for a negative ``n_iter``. O(n) per round.
    """

    def __init__(
        self, prior: BetaReliability | None = None, n_iter: int = 20, labels: Sequence[Hashable] | None = None
    ) -> None:
        super().__init__(labels)
        if n_iter < 0:
            raise ValueError(f"n_iter must be >= 0, got {n_iter}")
        self.prior = prior or BetaReliability()
        self.n_iter = n_iter
        self.reliability_: FloatArray = np.zeros(0)
        self.n_iter_ = 0

    def fit(self, answers: Answers, known: Known | None = None) -> Self:
        encoded = self._encode(answers, known)
        k, n_workers = encoded.n_classes, len(encoded.workers)
        w = encoded.worker_idx
        probas = self._clamp(majority_probas(encoded))
        # Known answers grade workers fully; other tasks count as consensus comparisons.
        is_known = np.zeros(encoded.n_tasks, dtype=bool)
        is_known[self._known_rows] = True
        known_answer = is_known[encoded.task_idx]
        truth = np.full(encoded.n_tasks, -1, dtype=np.intp)
        truth[self._known_rows] = self._known_cls
        gold_seen = np.bincount(w[known_answer], minlength=n_workers).astype(np.float64)
        gold_hits = np.bincount(
            w[known_answer & (truth[encoded.task_idx] == encoded.label_idx)], minlength=n_workers
        ).astype(np.float64)
        compared = np.bincount(w[~known_answer], minlength=n_workers).astype(np.float64)
        reliability = np.asarray(self.prior.estimate(gold_seen, gold_hits, np.zeros(n_workers), np.zeros(n_workers)))
        winners = np.argmax(probas, axis=1) if encoded.n_tasks else np.zeros(0, dtype=np.intp)
        self.n_iter_ = 0
        for _ in range(self.n_iter if k > 1 else 0):
            self.n_iter_ += 1
            agrees = (~known_answer) & (winners[encoded.task_idx] == encoded.label_idx)
            agreed = np.bincount(w[agrees], minlength=n_workers).astype(np.float64)
            reliability = np.asarray(self.prior.estimate(gold_seen, gold_hits, compared, agreed))
            log_post = one_coin_log_posterior(encoded.task_idx, encoded.label_idx, reliability[w], encoded.n_tasks, k)
            probas = self._clamp(np.exp(log_post))
            new_winners = np.argmax(probas, axis=1)
            if np.array_equal(new_winners, winners):
                break
            winners = new_winners
        self.reliability_ = reliability
        self._set_probas(probas)
        self.skills_ = self._per_worker(reliability)
        self.spam_scores_ = self._per_worker(accuracy_spam_scores(reliability, k))
        return self
