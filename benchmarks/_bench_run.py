"""One benchmark run in its own process, so its peak memory is its own: fit one method of one
library on one dataset and print one JSON line.

    python benchmarks/_bench_run.py --library quorum|crowdkit --method M --data DIR [--known-share 0.05]

Runs under either virtual environment (crowd-kit's lives in .venv-crowdkit); it imports only the
library it is asked for. With ``--known-share`` it fits twice, without and with a seeded share of
the gold tasks given as known answers, and scores both on the other gold tasks.
"""

from __future__ import annotations

import argparse
import json
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

CROWDKIT = {
    "mv": "MajorityVote",
    "wawa": "Wawa",
    "ds": "DawidSkene",
    "onecoin": "OneCoinDawidSkene",
    "glad": "GLAD",
    "mace": "MACE",
}


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _fit_quorum(method: str, answers: pd.DataFrame, known: dict[Any, Any] | None) -> tuple[dict[Any, Any], float]:
    from services.consensus.offline import aggregate

    aggregator, seconds = aggregate(answers, method, known)
    return aggregator.labels_, seconds


def _fit_crowdkit(method: str, answers: pd.DataFrame, known: dict[Any, Any] | None) -> tuple[dict[Any, Any], float]:
    import crowdkit.aggregation as ck

    model = getattr(ck, CROWDKIT[method])()
    began = time.perf_counter()
    if known and method == "ds":
        labels = model.fit_predict(answers, true_labels=pd.Series(known))
    else:
        labels = model.fit_predict(answers)
    return labels.to_dict(), time.perf_counter() - began


def _accuracy(labels: dict[Any, Any], gold: pd.DataFrame) -> float:
    scored = gold[gold.task.isin(labels.keys())]
    return float(np.mean([labels[t] == label for t, label in zip(scored.task, scored.label, strict=True)]))


def read_dataset(folder: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The answers and the gold labels of tasks that have answers."""
    answers = pd.read_csv(folder / "answers.csv")[["task", "worker", "label"]]
    gold = pd.read_csv(folder / "gold.csv")[["task", "label"]]
    return answers, gold[gold.task.isin(set(answers.task))]


def known_split(gold: pd.DataFrame, share: float, seed: int) -> tuple[dict[Any, Any], pd.DataFrame]:
    """A seeded ``share`` of the gold tasks as known answers, and the other gold tasks to score."""
    chosen = np.random.default_rng(seed).random(len(gold)) < share
    return dict(zip(gold.task[chosen], gold.label[chosen], strict=True)), gold[~chosen]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--library", choices=("quorum", "crowdkit"), required=True)
    parser.add_argument("--method", required=True)
    parser.add_argument("--data", required=True, help="folder with answers.csv and gold.csv")
    parser.add_argument("--known-share", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=2024)
    args = parser.parse_args()
    answers, gold = read_dataset(Path(args.data))
    fit = _fit_quorum if args.library == "quorum" else _fit_crowdkit
    before = _peak_rss_mib()
    if args.known_share <= 0:
        labels, seconds = fit(args.method, answers, None)
        print(
            json.dumps(
                {
                    "accuracy": _accuracy(labels, gold),
                    "fit_seconds": seconds,
                    "peak_rss_mib": _peak_rss_mib(),
                    "rss_before_fit_mib": before,
                }
            )
        )
        return
    known, rest = known_split(gold, args.known_share, args.seed)
    plain, _ = fit(args.method, answers, None)
    helped, seconds = fit(args.method, answers, known)
    print(
        json.dumps(
            {
                "known": len(known),
                "scored": len(rest),
                "accuracy_without": _accuracy(plain, rest),
                "accuracy_with": _accuracy(helped, rest),
                "fit_seconds": seconds,
            }
        )
    )


if __name__ == "__main__":
    main()
