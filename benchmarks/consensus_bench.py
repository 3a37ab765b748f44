"""Categorical aggregation benchmark: Quorum's methods and crowd-kit 1.4.2, side by side.

    .venv/bin/python benchmarks/consensus_bench.py [--datasets ../shared/datasets/crowd]
        [--crowdkit-python .venv-crowdkit/bin/python] [--no-crowdkit] [--skip-slow-crowdkit]
        [--json results.json]

Every (library, method, dataset) runs in its own subprocess (``benchmarks/_bench_run.py``) so
the peak RSS it reports belongs to that run alone; fit time excludes reading the CSV. The
datasets are the eleven in ``--datasets`` plus the synthetic 500k-answer set, generated into a
temporary folder by that folder's ``make_synthetic.py`` (fixed seed) unless ``--synthetic``
names a folder that has it. crowd-kit runs in its own virtual environment because it pins
``scikit-learn<1.6`` and ``pandas<3``; see benchmarks/README.md. No network is used.

Prints accuracy on gold, fit seconds and peak RSS per method and dataset, the project's target
checks, and the "5% known" table (a seeded 5% of the gold tasks given as known answers,
accuracy scored on the other 95%, without and with them).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RUNNER = Path(__file__).resolve().parent / "_bench_run.py"
DATASETS = ["bluebirds", "rte", "temp", "d_product", "d_possent", "sp", "trec", "wsd", "dog", "s_rel", "s_adult"]
QUORUM = ["mv", "wmv", "wawa", "ds", "onecoin", "glad", "mace", "default"]
CROWDKIT = ["mv", "wawa", "ds", "onecoin", "glad", "mace"]
SLOW_CROWDKIT = {("glad", "synthetic"), ("mace", "synthetic"), ("glad", "trec")}


def run_one(
    python: str, library: str, method: str, data: Path, known_share: float = 0.0, timeout: float = 1800
) -> dict[str, Any]:
    cmd = [python, str(RUNNER), "--library", library, "--method", method, "--data", str(data)]
    if known_share:
        cmd += ["--known-share", str(known_share)]
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONWARNINGS="ignore")
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    if done.returncode != 0:
        return {"error": (done.stderr.strip().splitlines() or ["failed"])[-1]}
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _cell(result: dict[str, Any] | None, key: str, fmt: str) -> str:
    if not result:
        return "-"
    if "error" in result:
        return "err"
    return format(result[key], fmt)


def print_table(
    title: str, rows: dict[str, dict[str, dict[str, Any]]], names: list[str], key: str, fmt: str, mean: bool
) -> None:
    print(f"\n{title}")
    width = max(len(r) for r in rows) + 1
    print(f"{'':<{width}}" + "".join(f"{n[:9]:>10}" for n in names) + ("      mean" if mean else ""))
    for label, per in rows.items():
        cells = "".join(f"{_cell(per.get(n), key, fmt):>10}" for n in names)
        values = [per[n][key] for n in names if n in per and "error" not in per[n]]
        tail = (
            f"{sum(values) / len(values):>10.4f}"
            if mean and len(values) == len(names)
            else ("         -" if mean else "")
        )
        print(f"{label:<{width}}{cells}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=str(ROOT.parent / "shared" / "datasets" / "crowd"))
    parser.add_argument("--synthetic", help="folder with the synthetic answers.csv/gold.csv (default: generate)")
    parser.add_argument("--crowdkit-python", default=str(ROOT / ".venv-crowdkit" / "bin" / "python"))
    parser.add_argument("--no-crowdkit", action="store_true")
    parser.add_argument(
        "--skip-slow-crowdkit",
        action="store_true",
        help="skip crowd-kit GLAD/MACE on the synthetic set and GLAD on trec",
    )
    parser.add_argument("--known-share", type=float, default=0.05)
    parser.add_argument("--json", help="also write every result to this file")
    args = parser.parse_args()

    crowd = Path(args.datasets)
    with tempfile.TemporaryDirectory() as scratch:
        synthetic = Path(args.synthetic) if args.synthetic else Path(scratch) / "synthetic"
        if not (synthetic / "answers.csv").exists():
            subprocess.run(
                [sys.executable, str(crowd / "make_synthetic.py"), "--out", str(synthetic)],
                check=True,
                stdout=subprocess.DEVNULL,
            )
        folders = {name: crowd / name for name in DATASETS} | {"synthetic": synthetic}
        results: dict[str, dict[str, dict[str, Any]]] = {}
        for method in QUORUM:
            row = results.setdefault(f"quorum {method}", {})
            for name, folder in folders.items():
                row[name] = run_one(sys.executable, "quorum", method, folder)
                print(f"quorum {method:<8} {name:<10} {json.dumps(row[name])}", file=sys.stderr, flush=True)
        use_crowdkit = not args.no_crowdkit and Path(args.crowdkit_python).exists()
        if not args.no_crowdkit and not use_crowdkit:
            print(f"crowd-kit skipped: {args.crowdkit_python} not found (see benchmarks/README.md)", file=sys.stderr)
        if use_crowdkit:
            for method in CROWDKIT:
                row = results.setdefault(f"crowd-kit {method}", {})
                for name, folder in folders.items():
                    if args.skip_slow_crowdkit and (method, name) in SLOW_CROWDKIT:
                        continue
                    row[name] = run_one(args.crowdkit_python, "crowdkit", method, folder)
                    print(f"crowd-kit {method:<8} {name:<10} {json.dumps(row[name])}", file=sys.stderr, flush=True)
        known: dict[str, dict[str, dict[str, Any]]] = {}
        for method in QUORUM:
            row = known.setdefault(f"quorum {method}", {})
            for name in DATASETS:
                row[name] = run_one(sys.executable, "quorum", method, folders[name], args.known_share)
                print(f"known {method:<8} {name:<10} {json.dumps(row[name])}", file=sys.stderr, flush=True)

    print_table("Accuracy on gold (eleven datasets; mean over them)", results, DATASETS, "accuracy", ".3f", True)
    print_table("Fit seconds", results, [*DATASETS, "synthetic"], "fit_seconds", ".3f", False)
    print_table(
        "Peak RSS of the run, MiB (interpreter, libraries and data included)",
        results,
        [*DATASETS, "synthetic"],
        "peak_rss_mib",
        ".0f",
        False,
    )
    print_table("Synthetic 500k answers: accuracy", results, ["synthetic"], "accuracy", ".4f", False)
    print_table(
        f"{args.known_share:.0%} known: accuracy on the other gold tasks WITHOUT known answers",
        known,
        DATASETS,
        "accuracy_without",
        ".3f",
        True,
    )
    print_table(
        f"{args.known_share:.0%} known: the same tasks WITH known answers",
        known,
        DATASETS,
        "accuracy_with",
        ".3f",
        True,
    )
    _targets(results, known)
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "known": known}, indent=1))


def _targets(results: dict[str, dict[str, dict[str, Any]]], known: dict[str, dict[str, dict[str, Any]]]) -> None:
    print("\nTargets")
    default = results["quorum default"]
    mean = sum(default[n]["accuracy"] for n in DATASETS) / len(DATASETS)
    print(f"  default mean accuracy {mean:.4f} (target >= 0.866, aim 0.870)")
    means = {
        label: sum(per[n]["accuracy"] for n in DATASETS) / len(DATASETS)
        for label, per in results.items()
        if label.startswith("quorum") and all(n in per and "error" not in per[n] for n in DATASETS)
    }
    best_other = max((m, label) for label, m in means.items() if label != "quorum default")
    print(f"  best other Quorum method: {best_other[1]} {best_other[0]:.4f}; default better: {mean > best_other[0]}")
    ck_ds = results.get("crowd-kit ds")
    if ck_ds and all(n in ck_ds and "error" not in ck_ds[n] for n in DATASETS):
        worst = min((default[n]["accuracy"] - ck_ds[n]["accuracy"], n) for n in DATASETS)
        print(f"  worst gap to crowd-kit DS: {worst[0] * 100:+.1f} points on {worst[1]} (target >= -0.5)")
        for method, factor in (("ds", 10), ("glad", 50), ("mace", 50)):
            ours, theirs = (
                results[f"quorum {method}"].get("synthetic"),
                results.get(f"crowd-kit {method}", {}).get("synthetic"),
            )
            if ours and theirs and "error" not in ours and "error" not in theirs:
                speedup = theirs["fit_seconds"] / ours["fit_seconds"]
                print(
                    f"  synthetic {method}: {speedup:.0f}x faster (target {factor}x), accuracy {ours['accuracy']:.4f} vs "
                    f"{theirs['accuracy']:.4f}, peak RSS {ours['peak_rss_mib']:.0f} vs {theirs['peak_rss_mib']:.0f} MiB"
                )
    worse = [
        (label, n)
        for label, per in known.items()
        for n in DATASETS
        if "error" not in per[n] and per[n]["accuracy_with"] < per[n]["accuracy_without"]
    ]
    if all("error" not in known["quorum default"][n] for n in DATASETS):
        without, with_known = (
            sum(known["quorum default"][n][key] for n in DATASETS) / len(DATASETS)
            for key in ("accuracy_without", "accuracy_with")
        )
        fell = [n for label, n in worse if label == "quorum default"]
        print(
            f"  known answers, default: mean {without:.4f} -> {with_known:.4f} (target: higher); "
            f"lowered on {fell or 'no dataset'} (target: none)"
        )
    others = [case for case in worse if case[0] != "quorum default"]
    print(f"  known answers lowered the other methods (clamped in every E-step) on: {others or 'no case'}")


if __name__ == "__main__":
    main()
