"""Spam scores: how little a worker's answers say about the truth.

A spammer answers without looking: their answer is independent of the true label, so every
row of their confusion matrix is the same distribution (uniformly random or "always the same
label" alike). Following Raykar & Yu, "Eliminating Spammers and Ranking Annotators for
Crowdsourced Labeling Tasks" (JMLR 13, 2012), the distance from that is

    S = sum over class pairs c < c' of ||pi_c - pi_c'||^2 / (K (K - 1))

which is 0 for a spammer and 1 for a worker whose rows are distinct one-hot vectors (a perfect
worker, or one who systematically swaps labels: their answers still carry full information).
The spam score is ``1 - sqrt(S)``, in [0, 1]; for a one-coin worker of accuracy ``r`` it is
``1 - |K r - 1| / (K - 1)``, i.e. linear in the distance from chance level.

Threshold: :data:`SPAM_THRESHOLD` = 0.9 flags workers whose answers are within 10% of chance
level (e.g. a binary worker right 45-55% of the time, a 5-class worker right under 28%). With
the Bayesian models' priors a new worker starts near the prior, well under the threshold, and
crosses it only once enough answers show chance-level agreement; so tasking may stop handing
tasks to a flagged worker, and payments may withhold pay with "spam score above 0.9" as the
reason. A single class (K = 1) gives every worker 0: there is nothing to inform about.
"""

from __future__ import annotations

import numpy as np

from services.consensus.aggregation._encoding import FloatArray

SPAM_THRESHOLD = 0.9
"""A worker whose spam score exceeds this answers at (nearly) chance level."""


def confusion_spam_scores(errors: FloatArray) -> FloatArray:
    """Spam score per worker from confusion matrices ``errors[w, true, answered]`` (rows sum
    to 1). O(W K^3)."""
    n_workers, k = errors.shape[0], errors.shape[1]
    if k < 2:
        return np.zeros(n_workers)
    diff = errors[:, :, None, :] - errors[:, None, :, :]
    # Both orders of each pair are summed, hence K (K - 1) * 2 in the denominator.
    spread = (diff**2).sum(axis=(1, 2, 3)) / (2.0 * k * (k - 1))
    return np.asarray(1.0 - np.sqrt(np.clip(spread, 0.0, 1.0)), dtype=np.float64)


def accuracy_spam_scores(accuracy: FloatArray, n_classes: int) -> FloatArray:
    """Spam score of one-coin workers (right with probability ``accuracy``, otherwise a
    uniformly random wrong label). O(W)."""
    if n_classes < 2:
        return np.zeros(len(accuracy))
    informative = np.abs(n_classes * np.asarray(accuracy, dtype=np.float64) - 1.0) / (n_classes - 1)
    return np.asarray(1.0 - np.clip(informative, 0.0, 1.0), dtype=np.float64)
