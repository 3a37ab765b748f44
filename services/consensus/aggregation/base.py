"""The shape every aggregator shares, after crowd-kit and scikit-learn.

An aggregator is configured in its constructor and learns nothing there. ``fit(answers)``
estimates and returns ``self``; the results are attributes with a trailing underscore:

- ``tasks_``: the tasks, sorted; ``classes_``: the labels, in tie-breaking order;
- ``probas_``: an (n_tasks, n_classes) array, row ``i`` the distribution over ``classes_`` of
  task ``tasks_[i]``; every row sums to 1;
- ``labels_``: ``{task: label}``, the most probable label, ties going to the earlier class;
- ``skills_``: ``{worker: float}``, what the algorithm knows or learnt about each worker;
- ``spam_scores_``: ``{worker: float}`` in [0, 1] where the model can tell (1: the worker's
  answers carry no information about the truth; see :mod:`.spam`).

``fit`` takes optional known answers (``{task: true label}``, e.g. honeypots): those tasks'
distributions are fixed to their known label, and models that learn worker parameters learn
from them as from certain truth. Known answers for tasks nobody answered are ignored.

Deeper models (Dawid-Skene, GLAD, MACE...) fit the same interface: one module each, a
subclass that implements :meth:`Aggregator.fit` and sets those attributes.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Hashable, Sequence
from typing import Self

import numpy as np

from services.consensus.aggregation._encoding import (
    Answers,
    EncodedAnswers,
    FloatArray,
    IntArray,
    Known,
    encode_answers,
    encode_known,
)


class NotFittedError(RuntimeError):
    """A fitted attribute was read before :meth:`Aggregator.fit`."""


class Aggregator(ABC):
    """Base class: subclasses implement :meth:`fit` and call :meth:`_set_probas`."""

    def __init__(self, labels: Sequence[Hashable] | None = None) -> None:
        # Fixes the label order (and so the tie-break) and keeps columns for unused labels.
        self.labels = None if labels is None else tuple(labels)
        self._probas: FloatArray | None = None
        self._encoded: EncodedAnswers | None = None
        self.skills_: dict[Hashable, float] = {}
        self.spam_scores_: dict[Hashable, float] = {}
        self._known_rows: IntArray = np.zeros(0, dtype=np.intp)
        self._known_cls: IntArray = np.zeros(0, dtype=np.intp)

    @abstractmethod
    def fit(self, answers: Answers, known: Known | None = None) -> Self:
        """Estimates from (task, worker, label) triples and optional known answers
        (``{task: label}``); returns ``self``.

        Raises ValueError for malformed answers or a label outside ``labels``."""

    def fit_predict(self, answers: Answers, known: Known | None = None) -> dict[Hashable, Hashable]:
        """Fits and returns ``{task: label}``."""
        return self.fit(answers, known).labels_

    def fit_predict_proba(self, answers: Answers, known: Known | None = None) -> dict[Hashable, dict[Hashable, float]]:
        """Fits and returns ``{task: {label: probability}}`` over every class."""
        self.fit(answers, known)
        classes = list(self.classes_)
        return {
            task: dict(zip(classes, row.tolist(), strict=True))
            for task, row in zip(self.tasks_, self.probas_, strict=True)
        }

    def _encode(self, answers: Answers, known: Known | None = None) -> EncodedAnswers:
        """Encodes the answers and the known answers (kept for :meth:`_clamp`). Without fixed
        ``labels``, a known label nobody answered still gets a class."""
        encoded = encode_answers(answers, self.labels)
        if known and self.labels is None:
            seen = set(encoded.classes.tolist())
            extra = {label for label in known.values() if label not in seen}
            if extra:
                try:
                    classes = sorted(seen | extra)  # type: ignore[type-var]
                except TypeError as exc:
                    raise ValueError(f"labels must be comparable (all str or all int): {exc}") from exc
                encoded = encode_answers(answers, classes)
        self._encoded = encoded
        self._known_rows, self._known_cls = encode_known(encoded, known)
        return encoded

    def _clamp(self, probas: FloatArray) -> FloatArray:
        """Sets the known tasks' rows to their known label, in place; returns ``probas``."""
        if len(self._known_rows):
            probas[self._known_rows] = 0.0
            probas[self._known_rows, self._known_cls] = 1.0
        return probas

    def _set_probas(self, probas: FloatArray) -> None:
        self._probas = probas

    def _per_worker(self, values: FloatArray) -> dict[Hashable, float]:
        """``{worker: value}`` for an array aligned with the encoded workers."""
        if self._encoded is None:
            raise RuntimeError("call fit() first")
        return dict(zip(self._encoded.workers.tolist(), np.asarray(values, dtype=np.float64).tolist(), strict=True))

    def _fitted(self) -> tuple[EncodedAnswers, FloatArray]:
        if self._encoded is None or self._probas is None:
            raise NotFittedError(f"{type(self).__name__} is not fitted: call fit(answers) first")
        return self._encoded, self._probas

    @property
    def tasks_(self) -> np.ndarray:
        return self._fitted()[0].tasks

    @property
    def workers_(self) -> np.ndarray:
        """The workers, sorted; per-worker arrays such as ``errors_`` follow this order."""
        return self._fitted()[0].workers

    @property
    def classes_(self) -> np.ndarray:
        return self._fitted()[0].classes

    @property
    def probas_(self) -> FloatArray:
        return self._fitted()[1]

    @property
    def labels_(self) -> dict[Hashable, Hashable]:
        encoded, probas = self._fitted()
        if encoded.n_tasks == 0:
            return {}
        # argmax returns the first maximum: ties go to the earlier class.
        winners = encoded.classes[np.argmax(probas, axis=1)]
        return dict(zip(encoded.tasks.tolist(), winners.tolist(), strict=True))


def worker_agreement(encoded: EncodedAnswers, probas: FloatArray) -> dict[Hashable, float]:
    """Share of each worker's answers that match the task's winning label. O(n)."""
    if len(encoded.task_idx) == 0:
        return {}
    winners = np.argmax(probas, axis=1)
    agrees = (encoded.label_idx == winners[encoded.task_idx]).astype(np.float64)
    n_workers = len(encoded.workers)
    hits = np.bincount(encoded.worker_idx, weights=agrees, minlength=n_workers)
    totals = np.bincount(encoded.worker_idx, minlength=n_workers)
    return dict(zip(encoded.workers.tolist(), (hits / totals).tolist(), strict=True))
