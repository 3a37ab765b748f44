"""Majority vote and weighted majority vote.

The baseline of every crowdsourcing study (see Sheshadri & Lease, "SQUARE: A Benchmark for
Research on Computing Crowd Consensus", HCOMP 2013): each answer is one vote, or a vote worth
the worker's weight; a task's distribution is its share of the votes.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Self

import numpy as np

from services.consensus.aggregation._encoding import Answers, Known, normalise_rows, vote_counts
from services.consensus.aggregation.base import Aggregator, worker_agreement


class MajorityVote(Aggregator):
    """Every answer counts one; ``probas_`` holds each label's share of a task's answers.

    Ties go to the first label in ``labels`` (sorted labels when not given), so the result is
    deterministic. ``skills_`` is each worker's agreement with the majority label.
    Costs O(n log n) for n answers (sorting the ids), the vote itself O(n).
    """

    def fit(self, answers: Answers, known: Known | None = None) -> Self:
        encoded = self._encode(answers, known)
        counts = vote_counts(encoded, np.ones(len(encoded.task_idx)))
        probas = self._clamp(normalise_rows(counts))
        self._set_probas(probas)
        self.skills_ = worker_agreement(encoded, probas)
        return self


class WeightedMajorityVote(Aggregator):
    """Every answer counts its worker's weight: ``probas_`` is each label's share of a task's
    total weight (uniform when every weight is zero).

    ``skills`` maps worker -> non-negative weight; workers not in it weigh ``default_skill``.
    ``skills_`` holds the weight used for each worker seen. Ties go to the earlier label, as in
    :class:`MajorityVote`. Raises ValueError for a negative weight. Costs O(n log n).
    """

    def __init__(
        self,
        skills: Mapping[Any, float],
        default_skill: float = 1.0,
        labels: Sequence[Hashable] | None = None,
    ) -> None:
        super().__init__(labels)
        negative = [worker for worker, weight in skills.items() if weight < 0]
        if negative or default_skill < 0:
            raise ValueError(f"weights must be >= 0; negative for {negative or ['default_skill']!r}")
        self.skills = dict(skills)
        self.default_skill = float(default_skill)

    def fit(self, answers: Answers, known: Known | None = None) -> Self:
        encoded = self._encode(answers, known)
        per_worker = np.array(
            [float(self.skills.get(w, self.default_skill)) for w in encoded.workers], dtype=np.float64
        )
        counts = vote_counts(encoded, per_worker[encoded.worker_idx])
        self._set_probas(self._clamp(normalise_rows(counts)))
        self.skills_ = dict(zip(encoded.workers.tolist(), per_worker.tolist(), strict=True))
        return self
