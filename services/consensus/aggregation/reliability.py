"""Worker reliability: the probability that a worker's answer is right, estimated from
answers whose truth is known.

The estimate is the mean of a Beta posterior. The prior is Beta(2.8, 1.2): mean 0.7 and
strength 4, i.e. a new worker counts as if they had answered 4 gold tasks and got 2.8 right.
0.7 is the honest-but-imperfect worker the platform expects; strength 4 lets about five gold
answers outweigh the prior, so one lucky or unlucky answer moves the estimate by at most 0.2.

Evidence:

- a gold answer counts fully: right adds 1 to alpha, wrong adds 1 to beta;
- agreement with a resolved consensus label counts ``consensus_weight`` (0.25) of a gold
  answer. It is weaker because the consensus can be wrong and the worker's own answer helped
  make it; it still matters because gold is scarce (a few per worker) while consensus
  comparisons accrue on every resolved task, which is what exposes spammers quickly.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Self, overload

import numpy as np

from services.consensus.aggregation._encoding import Answers, FloatArray, encode_answers


@dataclass(frozen=True)
class BetaReliability:
    """The Beta-prior reliability estimate; see the module docstring for the choices.

    Raises ValueError for a mean outside (0, 1), a non-positive strength or a negative
    consensus weight.
    """

    prior_mean: float = 0.7
    prior_strength: float = 4.0
    consensus_weight: float = 0.25

    def __post_init__(self) -> None:
        if not 0.0 < self.prior_mean < 1.0:
            raise ValueError(f"prior_mean must be in (0, 1), got {self.prior_mean}")
        if self.prior_strength <= 0:
            raise ValueError(f"prior_strength must be > 0, got {self.prior_strength}")
        if self.consensus_weight < 0:
            raise ValueError(f"consensus_weight must be >= 0, got {self.consensus_weight}")

    @property
    def alpha(self) -> float:
        return self.prior_mean * self.prior_strength

    @property
    def beta(self) -> float:
        return (1.0 - self.prior_mean) * self.prior_strength

    @overload
    def estimate(self, gold_answers: float, gold_correct: float, compared: float = 0, agreed: float = 0) -> float: ...

    @overload
    def estimate(
        self, gold_answers: FloatArray, gold_correct: FloatArray, compared: FloatArray, agreed: FloatArray
    ) -> FloatArray: ...

    def estimate(self, gold_answers, gold_correct, compared=0, agreed=0):
        """Posterior mean reliability from counts (scalars or numpy arrays, element-wise).

        ``gold_correct`` of ``gold_answers`` gold answers were right; ``agreed`` of ``compared``
        answers matched a resolved consensus label. With no evidence: ``prior_mean``. O(1).
        """
        w = self.consensus_weight
        return (self.alpha + gold_correct + w * agreed) / (self.alpha + self.beta + gold_answers + w * compared)


class GoldReliability:
    """Batch reliability of every worker from gold answers (and optionally consensus labels).

    ``fit(answers, gold, consensus)``: ``answers`` are (task, worker, label) triples, ``gold``
    maps a gold task to its true label, ``consensus`` maps other tasks to a resolved label (its
    agreements count ``prior.consensus_weight`` each). Fitted: ``skills_`` (worker ->
    reliability), ``gold_answers_`` and ``gold_correct_`` (worker -> count). Costs O(n log n).
    """

    def __init__(self, prior: BetaReliability | None = None) -> None:
        self.prior = prior or BetaReliability()
        self.skills_: dict[Hashable, float] = {}
        self.gold_answers_: dict[Hashable, int] = {}
        self.gold_correct_: dict[Hashable, int] = {}

    def fit(
        self,
        answers: Answers,
        gold: Mapping[Any, Hashable],
        consensus: Mapping[Any, Hashable] | None = None,
    ) -> Self:
        encoded = encode_answers(answers)
        n_workers = len(encoded.workers)
        position = {label: k for k, label in enumerate(encoded.classes.tolist())}

        def tally(truth: Mapping[Any, Hashable]) -> tuple[FloatArray, FloatArray]:
            # Per task: the true class index, -1 for a truth no one answered, -2 when unknown.
            truth_idx = np.array(
                [position.get(truth[t], -1) if t in truth else -2 for t in encoded.tasks.tolist()], dtype=np.intp
            )
            per_answer = truth_idx[encoded.task_idx]
            known = per_answer != -2
            right = per_answer == encoded.label_idx
            seen = np.bincount(encoded.worker_idx[known], minlength=n_workers).astype(np.float64)
            hits = np.bincount(encoded.worker_idx[right], minlength=n_workers).astype(np.float64)
            return seen, hits

        gold_seen, gold_hits = tally(gold)
        if consensus:
            plain = {t: label for t, label in consensus.items() if t not in gold}
            compared, agreed = tally(plain)
        else:
            compared = agreed = np.zeros(n_workers)
        reliability = self.prior.estimate(gold_seen, gold_hits, compared, agreed)
        workers = encoded.workers.tolist()
        self.skills_ = dict(zip(workers, np.asarray(reliability).tolist(), strict=True))
        self.gold_answers_ = dict(zip(workers, gold_seen.astype(int).tolist(), strict=True))
        self.gold_correct_ = dict(zip(workers, gold_hits.astype(int).tolist(), strict=True))
        return self
