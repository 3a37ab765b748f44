"""Wawa: Worker Agreement With Aggregate.

Majority vote, then each worker's weight is the share of their answers that agree with it, then
a weighted majority vote with those weights (the "Wawa" baseline of Appen/Figure Eight, as
packaged in crowd-kit; see also Sheshadri & Lease, SQUARE, HCOMP 2013, for agreement-weighted
votes). O(n log n).
"""

from __future__ import annotations

from typing import Self

import numpy as np

from services.consensus.aggregation._em import majority_probas
from services.consensus.aggregation._encoding import Answers, Known, normalise_rows, vote_counts
from services.consensus.aggregation.base import Aggregator


class Wawa(Aggregator):
    """Agreement-weighted majority vote. ``skills_`` is each worker's agreement with the
    (known-answer-clamped) majority label; ``probas_`` each label's share of the task's
    total weight (uniform when every weight is zero). Ties go to the earlier class."""

    def fit(self, answers: Answers, known: Known | None = None) -> Self:
        encoded = self._encode(answers, known)
        n_workers = len(encoded.workers)
        majority = self._clamp(majority_probas(encoded))
        if encoded.n_tasks:
            winners = np.argmax(majority, axis=1)
            agrees = (encoded.label_idx == winners[encoded.task_idx]).astype(np.float64)
            seen = np.bincount(encoded.worker_idx, minlength=n_workers)
            weight = np.bincount(encoded.worker_idx, weights=agrees, minlength=n_workers) / np.maximum(seen, 1)
        else:
            weight = np.zeros(n_workers)
        probas = normalise_rows(vote_counts(encoded, weight[encoded.worker_idx]))
        self._set_probas(self._clamp(probas))
        self.skills_ = self._per_worker(weight)
        return self
