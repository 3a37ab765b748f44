"""Agreement thresholds of structured fusion, measured on data: ``CER_AGREES`` (transcription),
``IOU_AGREES`` (polygons) and ``OKS_AGREES`` (keypoints) of ``services/consensus/structured.py``.

    .venv/bin/python benchmarks/agreement_thresholds_bench.py [--datasets ../shared/datasets]
        [--only transcription,polygons,keypoints] [--gold-share 0.05] [--overlap 3,5]
        [--target 0.9] [--seeds 1,10,5] [--splits dev-clean,dev-other] [--json results.json]

An answer "agrees" with the fused label when it is within the threshold of it. The flags make
the task's confidence (the one-coin posterior over them) and the workers' agreed/compared
counts, hence their reliabilities and the weights of later fusions. For each candidate
threshold the benchmark replays a dataset through the service's own code: a job of the kind
(overlap 3 to 5, target confidence 0.9: the demo jobs' spec), tasks one after another in a
seeded order, each task's answers in a seeded order fed to ``domain.TaskProgress.add_answer``
until it resolves, with each worker's reliability read from its ``domain.WorkerEvidence``
(gold answers and consensus comparisons as the handler counts them). A seeded share of the
tasks are gold tasks: every answer to one grades its worker (``structured.agrees`` with the
gold answer) and the task is not scored. On the other tasks it prints, per threshold:

- quality of the resolved labels against gold: word error rate (transcription), Jaccard index
  of the fused mask and IoU of its bounding box (polygons), mean point error (keypoints); and
  the change against the current constant, paired by task, with twice its standard error;
- cost: answers used per task, and the share resolved below target at overlap max;
- calibration of the task confidence: its mean, the share of tasks whose label is right (the
  label agrees with gold by the same threshold, which is what the confidence claims), the
  Brier score, and the gap between the two means;
- how well the workers' final reliabilities rank them: Spearman correlation with each
  worker's mean quality against gold over all its answers in the dataset (workers with at
  least 5 answers).

Datasets: CrowdSpeech dev-clean and dev-other (answers and gold normalised as
``task_types_bench.py`` scores them: lowercase, punctuation out), the crowd-seg polygons (47
objects with about 41 answers each, so every seed draws other answers; each task's canvas, as
``task_types_bench.py`` builds it, stands for the image). Keypoints have no real dataset: it
is ``task_types_bench.py``'s seeded simulation (200 objects, 40 workers, 10% spammers). No
network is used.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from task_types_bench import (  # noqa: E402
    KEYPOINT_CANVAS,
    TRANSCRIPTION_SPLITS,
    box_iou,
    chosen_sections,
    known_tasks,
    load_polygons,
    load_transcription,
    print_columns,
    simulated_keypoints,
    word_error_rates,
)

from services.consensus import structured  # noqa: E402
from services.consensus.domain import RELIABILITY, JobSpec, TaskProgress, TaskState, Vote, WorkerEvidence  # noqa: E402

CANDIDATES = {
    "transcription": ("CER_AGREES", (0.02, 0.05, 0.1, 0.15, 0.2, 0.3)),
    "polygons": ("IOU_AGREES", (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9)),
    "keypoints": ("OKS_AGREES", (0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.9)),
}
MIN_WORKER_ANSWERS = 5  # for the reliability ranking


@dataclass
class Dataset:
    """Tasks of one answer kind in the service's stored form, with what scoring needs."""

    name: str
    kind: str
    schema: tuple[str, ...]
    answers: dict[Any, list[tuple[str, str]]]  # task -> (worker, stored answer text)
    gold: dict[Any, str]  # task -> stored gold answer text
    quality: Callable[[dict[Any, str], list[Any]], dict[str, np.ndarray]]  # per-task figures of fused labels
    worker_quality: dict[str, float]  # worker -> mean quality of its answers against gold (higher is better)


@dataclass
class Outcome:
    """One replay's resolved, non-gold tasks."""

    labels: dict[Any, str]
    confidence: dict[Any, float]
    used: dict[Any, int]
    low_confidence: int
    reliability: dict[str, float]


@contextmanager
def threshold(name: str, value: float) -> Iterator[None]:
    """Sets ``structured.<name>`` to ``value`` for the block (fusion reads it on every call)."""
    before = getattr(structured, name)
    setattr(structured, name, value)
    try:
        yield
    finally:
        setattr(structured, name, before)


def replay(data: Dataset, job: JobSpec, gold_tasks: set[Any], seed: int) -> Outcome:
    """Streams the dataset through ``TaskProgress`` as the consensus handler does: tasks one
    after another, answers until the task resolves, worker evidence updated after each step."""
    rng = np.random.default_rng(seed)
    evidence: dict[str, WorkerEvidence] = {}

    def reliability(worker: str) -> float:
        known = evidence.get(worker)
        return known.reliability(RELIABILITY) if known else RELIABILITY.prior_mean

    tasks = sorted(data.answers, key=str)
    outcome = Outcome({}, {}, {}, 0, {})
    for index in rng.permutation(len(tasks)):
        task = tasks[index]
        gold = task in gold_tasks
        state = TaskState.GOLD if gold else TaskState.OPEN
        progress = TaskProgress(str(task), job.job_id, gold, data.gold[task] if gold else "", state)
        answers = data.answers[task]
        for k in rng.permutation(len(answers)):
            worker, text = answers[k]
            step = progress.add_answer(Vote(worker, text), job, reliability)
            if step.gold_correct is not None:
                mine = evidence.setdefault(worker, WorkerEvidence())
                mine.gold_answers += 1
                mine.gold_correct += step.gold_correct
            for other, agreed in step.compared:
                theirs = evidence.setdefault(other, WorkerEvidence())
                theirs.compared += 1
                theirs.agreed += agreed
            if step.resolved and step.evaluation is not None:
                outcome.labels[task] = step.evaluation.label
                outcome.confidence[task] = step.evaluation.confidence
                outcome.used[task] = len(progress.votes)
                outcome.low_confidence += step.evaluation.confidence < job.target_confidence
                break
    outcome.reliability = {worker: reliability(worker) for worker in evidence}
    return outcome


@dataclass
class Row:
    kind: str
    dataset: str
    constant: str
    value: float
    quality: dict[str, float]
    delta: float  # first quality figure minus the current constant's, paired by task
    delta_2se: float
    answers_per_task: float
    low_confidence: float
    mean_confidence: float
    right: float
    brier: float
    rank_correlation: float
    seconds: float


def evaluate_thresholds(data: Dataset, job: JobSpec, gold_share: float, seeds: int) -> list[Row]:
    """Replays ``data`` ``seeds`` times (other task and answer orders, other gold tasks) per
    candidate value of its kind's constant and scores each replay's labels."""
    constant, values = CANDIDATES[data.kind]
    current = getattr(structured, constant)
    per_value: dict[float, dict[str, Any]] = {}
    for value in sorted({*values, current}):
        started = time.perf_counter()
        figures: dict[str, list[np.ndarray]] = defaultdict(list)
        confidence: list[float] = []
        right: list[bool] = []
        used: list[int] = []
        rho: list[float] = []
        keys: list[tuple[int, Any]] = []
        low = 0
        with threshold(constant, value):
            for seed in range(seeds):
                gold_tasks = known_tasks(data.answers, gold_share, seed)
                outcome = replay(data, job, gold_tasks, seed)
                scored = sorted(outcome.labels, key=str)
                for name, per_task in data.quality(outcome.labels, scored).items():
                    figures[name].append(per_task)
                keys.extend((seed, task) for task in scored)
                confidence.extend(outcome.confidence[t] for t in scored)
                right.extend(structured.agrees(data.kind, data.schema, outcome.labels[t], data.gold[t]) for t in scored)
                used.extend(outcome.used[t] for t in scored)
                low += outcome.low_confidence
                workers = [w for w in outcome.reliability if w in data.worker_quality]
                rho.append(
                    float(
                        spearmanr(
                            [outcome.reliability[w] for w in workers], [data.worker_quality[w] for w in workers]
                        ).statistic
                    )
                )
        per_value[value] = {
            "figures": {name: np.concatenate(arrays) for name, arrays in figures.items()},
            "keys": keys,
            "confidence": np.array(confidence),
            "right": np.array(right, dtype=np.float64),
            "used": np.array(used, dtype=np.float64),
            "low": low,
            "rho": float(np.mean(rho)),
            "seconds": time.perf_counter() - started,
        }
        print(f"  {data.name} {constant}={value}: {per_value[value]['seconds']:.0f} s", file=sys.stderr, flush=True)
    first = next(iter(per_value[current]["figures"]))
    baseline = dict(zip(per_value[current]["keys"], per_value[current]["figures"][first], strict=True))
    rows = []
    for value, got in per_value.items():
        # Every replay resolves every non-gold task, so the tasks pair up across values.
        diffs = np.array([x - baseline[k] for k, x in zip(got["keys"], got["figures"][first], strict=True)])
        conf, hit = got["confidence"], got["right"]
        rows.append(
            Row(
                kind=data.kind,
                dataset=data.name,
                constant=constant,
                value=value,
                quality={name: float(np.mean(v)) for name, v in got["figures"].items()},
                delta=float(diffs.mean()),
                delta_2se=float(2 * diffs.std(ddof=1) / np.sqrt(len(diffs))) if len(diffs) > 1 else 0.0,
                answers_per_task=float(got["used"].mean()),
                low_confidence=100 * got["low"] / len(conf),
                mean_confidence=float(conf.mean()),
                right=float(hit.mean()),
                brier=float(np.mean((conf - hit) ** 2)),
                rank_correlation=got["rho"],
                seconds=got["seconds"],
            )
        )
    return rows


# --- datasets in the service's stored form ----------------------------------------------------


def _stored(kind: str, member: dict[str, Any]) -> str:
    return json.dumps({kind: member}, sort_keys=True, separators=(",", ":"))


def _member(text: str, kind: str) -> dict[str, Any]:
    member = json.loads(text).get(kind, {})
    return member if isinstance(member, dict) else {}


def transcription_data(datasets: Path, split: str) -> Dataset:
    rows, gold = load_transcription(datasets, split)

    def stored(text: str) -> str:
        return _stored("transcription", {"text": text} if text else {})

    answers: dict[Any, list[tuple[str, str]]] = defaultdict(list)
    for task, worker, text in rows:
        answers[task].append((str(worker), stored(text)))
    # Word accuracy (1 - WER) of each worker's answers, higher is better like the others.
    per_worker: dict[str, list[float]] = defaultdict(list)
    accuracy = 1 - word_error_rates([text for _, _, text in rows], [gold[task] for task, _, _ in rows])
    for (_, worker, _), value in zip(rows, accuracy, strict=True):
        per_worker[str(worker)].append(float(value))

    def quality(labels: dict[Any, str], tasks: list[Any]) -> dict[str, np.ndarray]:
        fused = [str(_member(labels[t], "transcription").get("text", "")) for t in tasks]
        return {"WER %": 100 * word_error_rates(fused, [gold[t] for t in tasks])}

    return Dataset(
        name=f"CrowdSpeech {split}",
        kind="transcription",
        schema=(),
        answers=dict(answers),
        gold={t: stored(text) for t, text in gold.items()},
        quality=quality,
        worker_quality=_worker_means(per_worker),
    )


def polygons_data(datasets: Path) -> Dataset:
    polygons, gold, extent = load_polygons(datasets)

    def stored(r: dict[str, Any]) -> str:
        # Relative coordinates over the task's canvas, as answers give them over the image.
        x0, y0, x1, y1 = extent[r["task"]]
        points = [
            {"x": (x - x0) / (x1 - x0), "y": (y - y0) / (y1 - y0)}
            for x, y in zip(r["x_locs"], r["y_locs"], strict=True)
        ]
        return _stored("polygons", {"polygons": [{"label": r["label"], "points": points}]})

    def mask(text: str, label: str) -> np.ndarray:
        grid = structured.MASK_GRID
        return structured._class_masks(text, "polygons").get(label, np.zeros((grid, grid), dtype=bool))

    truth = {t: mask(stored(r), r["label"]) for t, r in gold.items()}

    def jaccard(a: np.ndarray, b: np.ndarray) -> float:
        return float((a & b).sum() / max((a | b).sum(), 1))

    def extent_of(m: np.ndarray) -> np.ndarray:
        ys, xs = np.nonzero(m)
        if not len(xs):
            return np.array([0.0, 0.0, 0.0, 0.0])
        return np.array([xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1], dtype=np.float64)

    per_worker: dict[str, list[float]] = defaultdict(list)
    for r in polygons:
        per_worker[str(r["worker"])].append(jaccard(mask(stored(r), r["label"]), truth[r["task"]]))

    def quality(labels: dict[Any, str], tasks: list[Any]) -> dict[str, np.ndarray]:
        fused = [mask(labels[t], gold[t]["label"]) for t in tasks]
        boxes = box_iou(np.array([extent_of(m) for m in fused]), np.array([extent_of(truth[t]) for t in tasks]))
        return {
            "Jaccard": np.array([jaccard(m, truth[t]) for m, t in zip(fused, tasks, strict=True)]),
            "box IoU": np.nan_to_num(boxes),
        }

    answers: dict[Any, list[tuple[str, str]]] = defaultdict(list)
    for r in polygons:
        answers[r["task"]].append((str(r["worker"]), stored(r)))
    return Dataset(
        name="crowd-seg COCO polygons",
        kind="polygons",
        schema=(),
        answers=dict(answers),
        gold={t: stored(r) for t, r in gold.items()},
        quality=quality,
        worker_quality=_worker_means(per_worker),
    )


def keypoints_data() -> Dataset:
    rows, truth = simulated_keypoints()
    names = tuple(f"p{j}" for j in range(truth.shape[1]))

    def stored(points: np.ndarray) -> str:
        placed = [
            {"label": name, "x": float(x) / KEYPOINT_CANVAS, "y": float(y) / KEYPOINT_CANVAS}
            for name, (x, y) in zip(names, points, strict=True)
            if np.isfinite(x) and np.isfinite(y)
        ]
        return _stored("keypoints", {"points": placed} if placed else {})

    def error(points: np.ndarray, task: int) -> float:
        """Mean distance in px of the placed points to the truth, a missing point counting as
        far as a point anywhere on the image would be on average (about 0.52 of its side)."""
        distance = np.linalg.norm(points - truth[task], axis=1)
        return float(np.mean(np.where(np.isfinite(distance), distance, 0.52 * KEYPOINT_CANVAS)))

    def decoded(text: str) -> np.ndarray:
        points = np.full((len(names), 2), np.nan)
        for p in _member(text, "keypoints").get("points", []):
            points[names.index(p["label"])] = (p["x"] * KEYPOINT_CANVAS, p["y"] * KEYPOINT_CANVAS)
        return points

    per_worker: dict[str, list[float]] = defaultdict(list)
    answers: dict[Any, list[tuple[str, str]]] = defaultdict(list)
    for task, worker, points in rows:
        answers[task].append((worker, stored(points)))
        per_worker[worker].append(-error(points, task))

    def quality(labels: dict[Any, str], tasks: list[Any]) -> dict[str, np.ndarray]:
        return {"error px": np.array([error(decoded(labels[t]), t) for t in tasks])}

    return Dataset(
        name="simulated (seeded)",
        kind="keypoints",
        schema=names,
        answers=dict(answers),
        gold={t: stored(truth[t]) for t in range(len(truth))},
        quality=quality,
        worker_quality=_worker_means(per_worker),
    )


def _worker_means(per_worker: dict[str, list[float]]) -> dict[str, float]:
    return {w: float(np.mean(v)) for w, v in per_worker.items() if len(v) >= MIN_WORKER_ANSWERS}


# --- output ------------------------------------------------------------------------------------


def print_table(rows: Sequence[Row], current: dict[str, float]) -> None:
    header = (
        "dataset",
        "threshold",
        "quality",
        "change vs current +- 2se",
        "answers/task",
        "low-conf %",
        "mean conf",
        "right",
        "conf - right",
        "Brier",
        "rel~quality rho",
        "s",
    )
    cells = []
    for r in rows:
        mark = " (current)" if r.value == current[r.constant] else ""
        cells.append(
            (
                r.dataset,
                f"{r.constant} {r.value:g}{mark}",
                ", ".join(f"{name} {v:.4g}" for name, v in r.quality.items()),
                f"{r.delta:+.4f} +- {r.delta_2se:.4f}",
                f"{r.answers_per_task:.2f}",
                f"{r.low_confidence:.1f}",
                f"{r.mean_confidence:.3f}",
                f"{r.right:.3f}",
                f"{r.mean_confidence - r.right:+.3f}",
                f"{r.brier:.3f}",
                f"{r.rank_correlation:.3f}",
                f"{r.seconds:.0f}",
            )
        )
    print_columns(header, cells)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=str(ROOT.parent / "shared" / "datasets"))
    parser.add_argument("--only", default=",".join(CANDIDATES), help="comma-separated kinds")
    parser.add_argument("--gold-share", type=float, default=0.05)
    parser.add_argument("--overlap", default="3,5", help="overlap min,max of the replayed jobs")
    parser.add_argument("--target", type=float, default=0.9, help="target confidence of the replayed jobs")
    parser.add_argument(
        "--seeds", default="1,10,5", help="replays per value for transcription, polygons, keypoints (comma-separated)"
    )
    parser.add_argument(
        "--splits", default=",".join(TRANSCRIPTION_SPLITS), help="CrowdSpeech splits to replay (comma-separated)"
    )
    parser.add_argument("--json", help="also write every row to this file")
    args = parser.parse_args()
    data_dir = Path(args.datasets)
    kinds = chosen_sections(parser, args.only, CANDIDATES)
    low, high = (int(x) for x in args.overlap.split(","))
    seeds = dict(zip(CANDIDATES, (int(x) for x in args.seeds.split(",")), strict=True))
    current = {constant: getattr(structured, constant) for constant, _ in CANDIDATES.values()}
    rows: list[Row] = []
    for kind in kinds:
        print(f"running {kind} ...", file=sys.stderr, flush=True)
        if kind == "transcription":
            splits = chosen_sections(parser, args.splits, TRANSCRIPTION_SPLITS)
            datasets = [transcription_data(data_dir, split) for split in splits]
        elif kind == "polygons":
            datasets = [polygons_data(data_dir)]
        else:
            datasets = [keypoints_data()]
        for data in datasets:
            job = JobSpec.normalised(f"bench-{kind}", data.schema, low, high, args.target, answer_kind=kind)
            rows.extend(evaluate_thresholds(data, job, args.gold_share, seeds[kind]))
    print_table(rows, current)
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=1))


if __name__ == "__main__":
    main()
