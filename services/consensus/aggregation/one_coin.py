"""The one-coin model: worker ``w`` gives the true label with probability ``r_w`` and
otherwise one of the other ``K - 1`` labels uniformly at random.

With a uniform prior over labels the posterior of a task is

    log P(label = k | answers) = sum over answers a of
        log r_w(a)                    if a's label is k
        log((1 - r_w(a)) / (K - 1))   otherwise
    (then normalised over k)

which is a weighted vote with weight ``log(r (K - 1) / (1 - r))`` per answer: a worker at
chance level (r = 1/K) weighs nothing, a worker below it votes against its own label. This is
the one-coin special case of Dawid & Skene, "Maximum Likelihood Estimation of Observer
Error-Rates Using the EM Algorithm" (1979), with the reliabilities given rather than learnt.

Reliabilities are clipped to [0.01, 0.99] so a single answer never makes a label certain or
impossible, and the sum is normalised in log-space, so nothing overflows or turns into NaN.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Self

import numpy as np

from services.consensus.aggregation._encoding import Answers, FloatArray, IntArray, Known
from services.consensus.aggregation.base import Aggregator

MIN_RELIABILITY = 0.01
MAX_RELIABILITY = 0.99


def one_coin_log_posterior(
    task_idx: IntArray, label_idx: IntArray, reliabilities: FloatArray, n_tasks: int, n_labels: int
) -> FloatArray:
    """Normalised log posteriors, an (n_tasks, n_labels) array; rows ``logsumexp`` to 0.

    Answer ``i`` belongs to task ``task_idx[i]``, chose class ``label_idx[i]`` (-1: a label
    outside the K classes, which says nothing about them) and comes from a worker of
    reliability ``reliabilities[i]``. A task without answers gets the uniform prior.
    Costs O(n + n_tasks * K).
    """
    if n_labels <= 1:
        return np.zeros((n_tasks, max(n_labels, 0)))
    r = np.clip(np.asarray(reliabilities, dtype=np.float64), MIN_RELIABILITY, MAX_RELIABILITY)
    log_right = np.log(r)
    log_wrong = np.log((1.0 - r) / (n_labels - 1))
    # Every answer adds log_wrong to every label, and log_right - log_wrong to the one it chose.
    base = np.bincount(task_idx, weights=log_wrong, minlength=n_tasks)
    known = label_idx >= 0
    bonus = np.bincount(
        task_idx[known] * n_labels + label_idx[known],
        weights=(log_right - log_wrong)[known],
        minlength=n_tasks * n_labels,
    ).reshape(n_tasks, n_labels)
    log_joint = base[:, None] + bonus
    peak = log_joint.max(axis=1, keepdims=True)
    log_norm = peak + np.log(np.exp(log_joint - peak).sum(axis=1, keepdims=True))
    return np.asarray(log_joint - log_norm, dtype=np.float64)


def one_coin_posterior(label_idx: Sequence[int], reliabilities: Sequence[float], n_labels: int) -> FloatArray:
    """Posterior over ``n_labels`` classes of one task from its answers; sums to 1.

    ``label_idx[i]`` is the class chosen by answer ``i`` (-1: outside the classes) and
    ``reliabilities[i]`` its worker's reliability. With no answers: uniform. Raises
    ValueError when ``n_labels < 1`` or the two sequences differ in length. Costs O(n + K);
    about 15 microseconds for a handful of answers, dominated by numpy's per-call overhead.
    """
    if n_labels < 1:
        raise ValueError(f"n_labels must be >= 1, got {n_labels}")
    labels = np.asarray(label_idx, dtype=np.intp)
    if len(labels) != len(reliabilities):
        raise ValueError(f"{len(labels)} labels but {len(reliabilities)} reliabilities")
    log_post = one_coin_log_posterior(
        np.zeros(len(labels), dtype=np.intp), labels, np.asarray(reliabilities, dtype=np.float64), 1, n_labels
    )
    return np.asarray(np.exp(log_post[0]), dtype=np.float64)


class OneCoinVote(Aggregator):
    """Posterior labels under the one-coin model with known worker reliabilities.

    ``skills`` maps worker -> reliability in [0, 1] (the probability that the worker's answer is
    right, e.g. from :class:`~services.consensus.aggregation.reliability.GoldReliability`);
    workers not in it get ``default_skill``. ``labels`` fixes K and the tie-breaking order; with
    equal reliabilities the result is plain majority vote. ``skills_`` holds the clipped
    reliability used per worker. Raises ValueError for a reliability outside [0, 1].
    Costs O(n log n) for n answers.
    """

    def __init__(
        self,
        skills: Mapping[Any, float],
        default_skill: float = 0.7,
        labels: Sequence[Hashable] | None = None,
    ) -> None:
        super().__init__(labels)
        bad = [worker for worker, r in skills.items() if not 0.0 <= r <= 1.0]
        if bad or not 0.0 <= default_skill <= 1.0:
            raise ValueError(f"reliabilities must be in [0, 1]; not so for {bad or ['default_skill']!r}")
        self.skills = dict(skills)
        self.default_skill = float(default_skill)

    def fit(self, answers: Answers, known: Known | None = None) -> Self:
        encoded = self._encode(answers, known)
        per_worker = np.clip(
            np.array([float(self.skills.get(w, self.default_skill)) for w in encoded.workers], dtype=np.float64),
            MIN_RELIABILITY,
            MAX_RELIABILITY,
        )
        log_post = one_coin_log_posterior(
            encoded.task_idx,
            encoded.label_idx,
            per_worker[encoded.worker_idx],
            encoded.n_tasks,
            encoded.n_classes,
        )
        self._set_probas(self._clamp(np.exp(log_post)))
        self.skills_ = dict(zip(encoded.workers.tolist(), per_worker.tolist(), strict=True))
        return self
