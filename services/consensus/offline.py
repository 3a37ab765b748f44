"""Offline aggregation for users: ``quorum aggregate ANSWERS.csv --method METHOD --out
LABELS.csv [--known KNOWN.csv] [--gold GOLD.csv] [--json]``.

Reads ``task,worker,label`` answers (every id and label kept as text, exactly as written),
fits one aggregator from :mod:`services.consensus.aggregation`, writes
``task,label,confidence`` (confidence: the posterior probability of the label) and returns a
summary. Known answers (``task,label``) are handed to the method; gold answers (same format)
only score the result and never reach the method.
"""

from __future__ import annotations

import csv
import time
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.consensus.aggregation import (
    GLAD,
    MACE,
    Aggregator,
    DawidSkene,
    MajorityVote,
    OneCoinDawidSkene,
    ReliabilityWeightedVote,
    ShrunkDawidSkene,
    Wawa,
)

METHODS: dict[str, Callable[[], Aggregator]] = {
    "mv": MajorityVote,
    "wmv": ReliabilityWeightedVote,
    "wawa": Wawa,
    "ds": DawidSkene,
    "onecoin": OneCoinDawidSkene,
    "glad": GLAD,
    "mace": MACE,
    "default": ShrunkDawidSkene,
}
"""CLI method name -> aggregator factory with the library defaults."""


class InputError(ValueError):
    """A CSV file is missing, lacks a column or has an empty field; the message names it."""


@dataclass(frozen=True)
class Outcome:
    """What one aggregation run produced."""

    method: str
    tasks: int
    answers: int
    workers: int
    fit_seconds: float
    accuracy: float | None
    gold_tasks: int
    known_tasks: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "tasks": self.tasks,
            "answers": self.answers,
            "workers": self.workers,
            "fit_seconds": round(self.fit_seconds, 6),
            "accuracy": self.accuracy,
            "gold_tasks": self.gold_tasks,
            "known_tasks": self.known_tasks,
        }


def read_answers(path: Path) -> Any:
    """A DataFrame of ``task,worker,label`` strings. Raises InputError when the file is
    missing, a column is absent or a field is empty."""
    import pandas as pd

    if not path.is_file():
        raise InputError(f"{path} does not exist")
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("task", "worker", "label") if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: needs a header task,worker,label; missing {', '.join(missing)}")
    frame = frame[["task", "worker", "label"]]
    empty = (frame == "").any(axis=1).to_numpy()
    if empty.any():
        raise InputError(f"{path}: row {int(np.argmax(empty)) + 2} has an empty field")
    return frame


def read_truth(path: Path) -> dict[str, str]:
    """``{task: label}`` from a ``task,label`` CSV (known or gold answers). Raises InputError
    like :func:`read_answers`; a task listed twice keeps its last label."""
    if not path.is_file():
        raise InputError(f"{path} does not exist")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if reader.fieldnames is None or not {"task", "label"} <= set(reader.fieldnames):
            raise InputError(f"{path}: needs a header task,label")
        truth: dict[str, str] = {}
        for line, row in enumerate(reader, start=2):
            if not row["task"] or not row["label"]:
                raise InputError(f"{path}: row {line} has an empty field")
            truth[row["task"]] = row["label"]
    return truth


def aggregate(answers: Any, method: str, known: Mapping[Any, Hashable] | None = None) -> tuple[Aggregator, float]:
    """Fits ``method`` (a key of :data:`METHODS`) and returns it with the fit's wall time in
    seconds. Raises KeyError for an unknown method, ValueError for bad answers."""
    aggregator = METHODS[method]()
    began = time.perf_counter()
    aggregator.fit(answers, known or None)
    return aggregator, time.perf_counter() - began


def accuracy(labels: Mapping[Any, Hashable], gold: Mapping[Any, Hashable]) -> tuple[float | None, int]:
    """Share of gold tasks (that have answers) whose label matches, and how many were scored."""
    scored = [task for task in gold if task in labels]
    if not scored:
        return None, 0
    return sum(labels[t] == gold[t] for t in scored) / len(scored), len(scored)


def write_labels(aggregator: Aggregator, out: Path) -> None:
    """Writes ``task,label,confidence`` rows, tasks in sorted order."""
    probas = aggregator.probas_
    winners = np.argmax(probas, axis=1) if len(probas) else np.zeros(0, dtype=np.intp)
    confidence = probas[np.arange(len(winners)), winners] if len(probas) else np.zeros(0)
    classes = aggregator.classes_
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["task", "label", "confidence"])
        for task, cls, conf in zip(aggregator.tasks_.tolist(), winners.tolist(), confidence.tolist(), strict=True):
            writer.writerow([task, classes[cls], f"{conf:.6f}"])


def run(
    answers_path: Path, method: str, out: Path, known_path: Path | None = None, gold_path: Path | None = None
) -> Outcome:
    """The whole ``quorum aggregate`` job: read, fit (timed alone), write, score.

    Raises InputError for unreadable input, KeyError for an unknown method, ValueError when
    a known label is not among the answered labels' type."""
    if method not in METHODS:
        raise KeyError(method)
    frame = read_answers(answers_path)
    known = read_truth(known_path) if known_path else {}
    gold = read_truth(gold_path) if gold_path else None
    aggregator, seconds = aggregate(frame, method, known)
    write_labels(aggregator, out)
    labels = aggregator.labels_
    score, scored = accuracy(labels, gold) if gold is not None else (None, 0)
    return Outcome(
        method=method,
        tasks=len(labels),
        answers=len(frame),
        workers=len(aggregator.workers_) if len(frame) else 0,
        fit_seconds=seconds,
        accuracy=score,
        gold_tasks=scored,
        known_tasks=sum(task in labels for task in known),
    )
