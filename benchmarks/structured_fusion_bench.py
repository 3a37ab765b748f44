"""Streaming cost of fusing one structured task: the time consensus spends after each answer.

    .venv/bin/python benchmarks/structured_fusion_bench.py [--repeat 50]

For every structured answer kind, times :func:`services.consensus.structured.fuse` on one
task's 3, 5 and 9 answers (seeded synthetic answers close to one another, with one outlier),
and prints milliseconds per evaluation. The handler fuses twice per answer (reliability
weights, then equal weights for the majority label), so a decision costs about twice the
figure. No network, no database.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from services.consensus import structured

Maker = Callable[[np.random.Generator, bool], dict[str, object]]


def _boxes(rng: np.random.Generator, outlier: bool) -> dict[str, object]:
    x, y = (0.7, 0.7) if outlier else (0.1 + rng.normal(0, 0.005), 0.2 + rng.normal(0, 0.005))
    return {"boxes": {"boxes": [{"label": "car", "x": x, "y": y, "w": 0.2, "h": 0.15}]}}


def _keypoints(rng: np.random.Generator, outlier: bool) -> dict[str, object]:
    names = [f"k{i}" for i in range(17)]
    base = np.linspace(0.2, 0.7, 17)
    xs = rng.random(17) if outlier else base + rng.normal(0, 0.003, 17)
    return {
        "keypoints": {"points": [{"label": n, "x": float(x), "y": float(x)} for n, x in zip(names, xs, strict=True)]}
    }


def _polygons(rng: np.random.Generator, outlier: bool) -> dict[str, object]:
    centre = np.array([0.8, 0.8]) if outlier else np.array([0.4, 0.4]) + rng.normal(0, 0.004, 2)
    angles = np.linspace(0, 2 * np.pi, 24, endpoint=False)
    points = [{"x": float(centre[0] + 0.15 * np.cos(a)), "y": float(centre[1] + 0.15 * np.sin(a))} for a in angles]
    return {"polygons": {"polygons": [{"label": "car", "points": points}]}}


def _transcription(rng: np.random.Generator, outlier: bool) -> dict[str, object]:
    words = [
        "the",
        "quick",
        "brown",
        "fox",
        "jumps",
        "over",
        "the",
        "lazy",
        "dog",
        "near",
        "the",
        "river",
        "bank",
        "at",
        "dawn",
    ]
    if outlier:
        words = list(rng.permutation(words))
    elif rng.random() < 0.5:
        words[int(rng.integers(len(words)))] = "uh"
    return {"transcription": {"text": " ".join(words)}}


def _pairwise(rng: np.random.Generator, outlier: bool) -> dict[str, object]:
    return {"pairwise": {"winner": "b" if outlier else "a"}}


KINDS: dict[str, tuple[tuple[str, ...], Maker]] = {
    "boxes": (("car",), _boxes),
    "keypoints": (tuple(f"k{i}" for i in range(17)), _keypoints),
    "polygons": (("car",), _polygons),
    "transcription": ((), _transcription),
    "pairwise": (("a", "b"), _pairwise),
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=50, help="evaluations timed per cell")
    args = parser.parse_args()
    sizes = (3, 5, 9)
    print(f"{'kind':<14}" + "".join(f"{f'{n} answers':>14}" for n in sizes) + "   (ms per fuse)")
    for kind, (schema, make) in KINDS.items():
        cells = []
        for n in sizes:
            rng = np.random.default_rng(n)
            answers = [
                (f"w{i}", json.dumps(make(rng, i == 1), separators=(",", ":"), sort_keys=True)) for i in range(n)
            ]
            weights = [0.7] * n
            structured.fuse(kind, schema, answers, weights)  # warm-up: imports, caches
            start = time.perf_counter()
            for _ in range(args.repeat):
                structured.fuse(kind, schema, answers, weights)
            cells.append(1000 * (time.perf_counter() - start) / args.repeat)
        print(f"{kind:<14}" + "".join(f"{c:>14.2f}" for c in cells))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
