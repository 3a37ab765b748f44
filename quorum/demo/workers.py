"""Who the simulated workers are: their profiles, drawn from a seed, and the choices several
kinds of answer share: one answer out of a few (a label, a pairwise winner:
:func:`choose_label`) and the class a worker gives an object, if it sees it at all
(:func:`noticed_label`).

A profile's ``accuracy`` drives the quality of every kind of answer: each task kind's answer
generator (next to its dataset: :func:`quorum.demo.boxes.draw_boxes`,
:func:`quorum.demo.keypoints.place_keypoints`, ...) makes an honest worker err in proportion to
its :attr:`WorkerProfile.error_rate`, and a spammer answer without looking. Pure: no I/O.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

__all__ = ["SpamStrategy", "WorkerProfile", "choose_label", "make_profiles", "noticed_label"]

SpamStrategy = Literal["uniform", "constant"]


@dataclass(frozen=True)
class WorkerProfile:
    """How one simulated worker answers.

    ``accuracy`` is the probability that an honest worker picks the true label; in structured
    answers (boxes, points, spans, ...) every kind of mistake is scaled by :attr:`error_rate`.
    Spammers never look at the content, so their ``accuracy`` is 0.0 and :meth:`expected_accuracy` gives what
    they score by chance. ``constant_choice`` picks the label (by position, modulo the label
    count) a ``"constant"`` spammer always gives. ``confusion_bias`` is the share of an honest
    worker's mistakes that go to the label after the true one in the job's list; the rest are
    spread uniformly over the other wrong labels. ``skip_rate`` is the chance of skipping a task.
    """

    worker_id: str
    accuracy: float
    spammer: bool
    spam_strategy: SpamStrategy | None = None
    constant_choice: int = 0
    confusion_bias: float = 0.0
    skip_rate: float = 0.0

    def expected_accuracy(self, n_labels: int) -> float:
        """Expected share of correct answers on tasks with ``n_labels`` balanced labels."""
        if self.spammer:
            return 1.0 / n_labels
        return self.accuracy

    @property
    def error_rate(self) -> float:
        """How often an honest worker errs (``1 - accuracy``); the answer generators scale
        every kind of mistake (a missed object, a misplaced point, a misspelt word) by it."""
        return 1.0 - self.accuracy

    @property
    def constant_spammer(self) -> bool:
        """Whether this is a spammer that always gives the same answer."""
        return self.spammer and self.spam_strategy == "constant"


# The share of a simulated crowd that spams unless told otherwise.
SPAMMER_SHARE = 0.15


def spammer_count(n_workers: int, spammer_share: float = SPAMMER_SHARE) -> int:
    """How many of ``n_workers`` simulated workers are spammers."""
    return round(spammer_share * n_workers)


def make_profiles(
    n_workers: int,
    seed: int,
    *,
    spammer_share: float = SPAMMER_SHARE,
    accuracy_range: tuple[float, float] = (0.55, 0.98),
    skip_rate: float = 0.02,
    worker_id_prefix: str = "sim-worker",
) -> list[WorkerProfile]:
    """Draws ``n_workers`` profiles, deterministic for ``seed``.

    Exactly :func:`spammer_count` workers are spammers, at seeded positions;
    about 60% of them answer uniformly at random and the rest always give one label. Honest
    accuracies follow Beta(4, 1.5) stretched over ``accuracy_range`` (mean about 0.86 with the
    default range), so most workers are good and a few are barely better than a coin.
    Worker ids are ``f"{worker_id_prefix}-{i:03d}"``.

    Raises ValueError for a negative ``n_workers``, a ``spammer_share`` or ``skip_rate``
    outside [0, 1], or an ``accuracy_range`` that is not ``0 <= low <= high <= 1``.
    """
    if n_workers < 0:
        raise ValueError(f"n_workers must be >= 0, got {n_workers}")
    if not 0.0 <= spammer_share <= 1.0:
        raise ValueError(f"spammer_share must be in [0, 1], got {spammer_share}")
    if not 0.0 <= skip_rate <= 1.0:
        raise ValueError(f"skip_rate must be in [0, 1], got {skip_rate}")
    low, high = accuracy_range
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"accuracy_range must satisfy 0 <= low <= high <= 1, got {accuracy_range}")

    rng = random.Random(f"quorum-crowd:{seed}")
    n_spammers = spammer_count(n_workers, spammer_share)
    spammers = set(rng.sample(range(n_workers), n_spammers))
    profiles: list[WorkerProfile] = []
    for i in range(n_workers):
        worker_id = f"{worker_id_prefix}-{i:03d}"
        if i in spammers:
            strategy: SpamStrategy = "uniform" if rng.random() < 0.6 else "constant"
            profiles.append(
                WorkerProfile(
                    worker_id=worker_id,
                    accuracy=0.0,
                    spammer=True,
                    spam_strategy=strategy,
                    constant_choice=rng.randrange(1 << 16),
                    skip_rate=skip_rate,
                )
            )
        else:
            accuracy = low + (high - low) * rng.betavariate(4.0, 1.5)
            profiles.append(
                WorkerProfile(
                    worker_id=worker_id,
                    accuracy=round(accuracy, 4),
                    spammer=False,
                    confusion_bias=round(rng.uniform(0.0, 0.6), 4),
                    skip_rate=skip_rate,
                )
            )
    return profiles


def choose_label(profile: WorkerProfile, labels: Sequence[str], truth: str | None, rng: random.Random) -> str:
    """The label ``profile`` gives to a task whose true label is ``truth``.

    A ``truth`` of None (or one outside ``labels``) means the worker cannot tell, and it answers
    uniformly at random. Raises ValueError when ``labels`` is empty.
    """
    if not labels:
        raise ValueError("a task needs at least one label")
    if profile.spammer:
        if profile.spam_strategy == "constant":
            return labels[profile.constant_choice % len(labels)]
        return rng.choice(labels)
    if truth is None or truth not in labels:
        return rng.choice(labels)
    if len(labels) == 1 or rng.random() < profile.accuracy:
        return truth
    index = labels.index(truth)
    neighbour = labels[(index + 1) % len(labels)]
    if rng.random() < profile.confusion_bias:
        return neighbour
    return rng.choice([label for label in labels if label != truth])


def noticed_label(profile: WorkerProfile, labels: Sequence[str], label: str, rng: random.Random) -> str | None:
    """The class an honest worker gives an object of class ``label`` (a box, a region, an
    entity) in a job asking for the classes ``labels``: None when the job does not ask for
    ``label`` or the worker misses the object (probability ``e / 2``, ``e`` its error rate);
    another of ``labels`` with probability ``e / 3``; else ``label``."""
    error = profile.error_rate
    if label not in labels or rng.random() < error / 2:
        return None
    if len(labels) > 1 and rng.random() < error / 3:
        return rng.choice([other for other in labels if other != label])
    return label
