"""The "known" scenario of ``consensus_bench.py`` over many seeds and shares, for one method.

    .venv/bin/python benchmarks/known_seeds_bench.py [--datasets ../shared/datasets/crowd]
        [--method default] [--seeds 2024,1-10] [--shares 0.05,0.1]

For each dataset, share and seed: the same split as ``_bench_run.py --known-share SHARE --seed
SEED`` (a seeded share of the gold tasks given as known answers, the other gold tasks scored),
the method fitted without and with the known answers, and the scored tasks gained and lost.
The fit without known answers does not depend on the seed, so it runs once per dataset; all
fits run in this process. Prints, per share, a row per dataset (cases, cases where accuracy
fell, the worst case, tasks gained and lost over all seeds) and the mean accuracy over the
datasets without and with, averaged over the seeds. No network is used.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from _bench_run import known_split, read_dataset
from consensus_bench import DATASETS

from services.consensus.offline import aggregate

ROOT = Path(__file__).resolve().parent.parent


def parse_seeds(text: str) -> list[int]:
    """``"2024,1-10"`` -> [2024, 1, 2, ..., 10]."""
    seeds: list[int] = []
    for part in text.split(","):
        low, _, high = part.partition("-")
        seeds += list(range(int(low), int(high) + 1)) if high else [int(low)]
    return seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", type=Path, default=ROOT.parent / "shared" / "datasets" / "crowd")
    parser.add_argument("--method", default="default")
    parser.add_argument("--seeds", default="2024,1-10")
    parser.add_argument("--shares", default="0.05,0.1")
    args = parser.parse_args()
    seeds = parse_seeds(args.seeds)
    shares = [float(s) for s in args.shares.split(",")]
    # (share, dataset) -> one (gained, lost, accuracy without, accuracy with) per seed
    runs: dict[tuple[float, str], list[tuple[int, int, float, float]]] = {}
    for name in DATASETS:
        answers, gold = read_dataset(args.datasets / name)
        plain = aggregate(answers, args.method)[0].labels_
        for share in shares:
            for seed in seeds:
                known, rest = known_split(gold, share, seed)
                helped = aggregate(answers, args.method, known)[0].labels_
                runs.setdefault((share, name), []).append(_score(plain, helped, rest))
            print(f"{name} {share:g} done", file=sys.stderr, flush=True)
    print(f"method {args.method}, seeds {args.seeds} ({len(seeds)}), scored tasks gained/lost with known answers")
    for share in shares:
        print(f"\nshare {share:g}: {'cases':>6} {'fell':>5} {'worst':>6} {'gained':>7} {'lost':>5}")
        for name in DATASETS:
            rows = runs[(share, name)]
            nets = [gained - lost for gained, lost, _, _ in rows]
            print(
                f"{name:<12}{len(rows):>7} {sum(n < 0 for n in nets):>5} {min(nets):>+6d} "
                f"{sum(r[0] for r in rows):>7} {sum(r[1] for r in rows):>5}"
            )
        without = sum(r[2] for name in DATASETS for r in runs[(share, name)]) / len(DATASETS) / len(seeds)
        with_known = sum(r[3] for name in DATASETS for r in runs[(share, name)]) / len(DATASETS) / len(seeds)
        fell = sum(r[0] < r[1] for name in DATASETS for r in runs[(share, name)])
        print(f"mean accuracy {without:.5f} -> {with_known:.5f} ({with_known - without:+.5f}); cases that fell: {fell}")


def _score(plain: dict[Any, Any], helped: dict[Any, Any], rest: Any) -> tuple[int, int, float, float]:
    """Scored tasks gained and lost, and the accuracy without and with."""
    gained = lost = right_before = right_after = 0
    for task, label in zip(rest.task, rest.label, strict=True):
        before, after = plain[task] == label, helped[task] == label
        gained += after and not before
        lost += before and not after
        right_before += before
        right_after += after
    return gained, lost, right_before / len(rest), right_after / len(rest)


if __name__ == "__main__":
    main()
