"""Aggregator factories and small crowds shared by the test_aggregation_* modules."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any

import numpy as np

from services.consensus.aggregation import (
    GLAD,
    MACE,
    Aggregator,
    DawidSkene,
    MajorityVote,
    OneCoinDawidSkene,
    OneCoinVote,
    ReliabilityWeightedVote,
    ShrunkDawidSkene,
    Wawa,
    WeightedMajorityVote,
)

Factory = Callable[[Sequence[Hashable] | None], Aggregator]


LEARNING: dict[str, Factory] = {
    "mv": lambda labels: MajorityVote(labels=labels),
    "wmv": lambda labels: ReliabilityWeightedVote(labels=labels),
    "wawa": lambda labels: Wawa(labels=labels),
    "ds": lambda labels: DawidSkene(labels=labels),
    "onecoin": lambda labels: OneCoinDawidSkene(labels=labels),
    "glad": lambda labels: GLAD(labels=labels),
    "mace": lambda labels: MACE(labels=labels),
    "default": lambda labels: ShrunkDawidSkene(labels=labels),
}
"""The methods ``quorum aggregate`` offers, by their CLI names."""

EVERY: dict[str, Factory] = LEARNING | {
    "weighted_given": lambda labels: WeightedMajorityVote({"w1": 2.0}, labels=labels),
    "one_coin_given": lambda labels: OneCoinVote({"w1": 0.9}, labels=labels),
}
"""Every aggregator in the library, including those given fixed worker weights."""

WITH_SPAM_SCORES = ("wmv", "ds", "onecoin", "glad", "mace", "default")


def simulated_crowd(
    seed: int, n_tasks: int = 300, n_workers: int = 25, per_task: int = 5, n_labels: int = 3, spam: float = 0.2
) -> tuple[list[tuple[str, str, str]], dict[str, str], set[str]]:
    """Answers, truth and spammers of a seeded crowd: honest workers right 55-95% of the
    time (else a random wrong label), spammers uniformly random."""
    rng = np.random.default_rng(seed)
    labels = [f"c{k}" for k in range(n_labels)]
    truth_idx = rng.integers(n_labels, size=n_tasks)
    is_spam = rng.random(n_workers) < spam
    skill = rng.uniform(0.55, 0.95, size=n_workers)
    answers: list[tuple[str, str, str]] = []
    for t in range(n_tasks):
        for w in rng.choice(n_workers, size=per_task, replace=False):
            if is_spam[w]:
                label = int(rng.integers(n_labels))
            elif rng.random() < skill[w]:
                label = int(truth_idx[t])
            else:
                label = int((truth_idx[t] + rng.integers(1, n_labels)) % n_labels)
            answers.append((f"t{t:03d}", f"w{w:02d}", labels[label]))
    truth = {f"t{t:03d}": labels[int(k)] for t, k in enumerate(truth_idx)}
    return answers, truth, {f"w{w:02d}" for w in np.flatnonzero(is_spam)}


def accuracy(labels: dict[Any, Any], truth: dict[Any, Any], tasks: Sequence[Any] | None = None) -> float:
    scored = list(tasks) if tasks is not None else list(truth)
    return sum(labels[t] == truth[t] for t in scored) / len(scored)
