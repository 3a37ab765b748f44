"""Task-type aggregation benchmark: the non-categorical aggregators of
``services/consensus/aggregation`` on the real multi-annotator datasets in ``../shared/datasets``.

    .venv/bin/python benchmarks/task_types_bench.py [--datasets ../shared/datasets]
        [--only ner,transcription,multilabel,boxes,masks,pairwise,keypoints] [--known-share 0.05]
        [--json results.json]

Each section first reproduces the baseline figure the dataset's README states, so the scoring
is the same, then scores Quorum's aggregators, with and without reliability weighting where
that is a switch, and a "known" scenario (a seeded share of the tasks given as known answers,
scored on the other tasks). Prints one table with the targets. No network is used.
Keypoints have no real dataset here; that section is a seeded simulation and says so.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from services.consensus.aggregation.boxes import BoxFusion  # noqa: E402
from services.consensus.aggregation.keypoints import KeypointMedian  # noqa: E402
from services.consensus.aggregation.masks import MaskEM, MaskVote, polygon_mask  # noqa: E402
from services.consensus.aggregation.multilabel import MultiLabelDawidSkene, MultiLabelMajorityVote  # noqa: E402
from services.consensus.aggregation.pairwise import BradleyTerry  # noqa: E402
from services.consensus.aggregation.spans import SpanVote, iob2_to_spans  # noqa: E402
from services.consensus.aggregation.text import ROVER, TextMedoid, levenshtein_batch  # noqa: E402

KNOWN_SEEDS = 5  # draws of the known tasks where a fit is cheap (all but transcription)
SECTIONS = ("ner", "transcription", "multilabel", "boxes", "masks", "pairwise", "keypoints")


@dataclass
class Row:
    section: str
    dataset: str
    method: str
    metric: str
    value: float
    seconds: float | None = None
    target: str = ""
    met: bool | None = None


def timed(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """``fn(*args, **kwargs)`` and the seconds it took."""
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def known_tasks(tasks: Iterable[Any], share: float, seed: int = 0) -> set[Any]:
    """A seeded share of the tasks (sorted first, so the draw does not depend on file order)."""
    ordered = sorted(set(tasks), key=str)
    rng = np.random.default_rng(seed)
    k = max(1, round(share * len(ordered)))
    return {ordered[i] for i in rng.choice(len(ordered), size=k, replace=False)}


# --- NER -----------------------------------------------------------------------------------


def entity_prf(pred: dict[Any, list[Any]], gold: dict[Any, list[Any]], tasks: Iterable[Any]) -> tuple[float, ...]:
    """Strict entity-level micro precision, recall, F1 (exact boundaries and type), in %."""
    tp = fp = fn = 0
    for t in tasks:
        p, g = set(pred.get(t, [])), set(gold[t])
        tp, fp, fn = tp + len(p & g), fp + len(p - g), fn + len(g - p)
    precision = tp / max(tp + fp, 1)
    recall = tp / max(tp + fn, 1)
    f1 = 2 * precision * recall / max(precision + recall, 1e-12)
    return 100 * precision, 100 * recall, 100 * f1


def token_majority_vote(answers: list[dict[str, Any]]) -> dict[Any, list[Any]]:
    """Per token the most common tag, ties broken toward O, then decoded (the README baseline)."""
    by_task: dict[Any, list[list[str]]] = defaultdict(list)
    for a in answers:
        by_task[a["task"]].append(a["tags"])
    out = {}
    for task, tag_lists in by_task.items():
        tags = []
        for column in zip(*tag_lists, strict=True):
            counts: dict[str, int] = defaultdict(int)
            for tag in column:
                counts[tag] += 1
            top = max(counts.values())
            tied = sorted(tag for tag, c in counts.items() if c == top)
            tags.append("O" if "O" in tied else tied[0])
        out[task] = iob2_to_spans(tags)
    return out


def bench_ner(data: Path, share: float) -> list[Row]:
    folder = data / "ner" / "ner_mturk_conll2003_val"
    gold_rows = [json.loads(line) for line in (folder / "gold.jsonl").open()]
    answers = [json.loads(line) for line in (folder / "answers.jsonl").open()]
    gold = {g["task"]: iob2_to_spans(g["tags"]) for g in gold_rows if g["split"] == "val"}
    tasks = sorted({a["task"] for a in answers} & set(gold))
    rows = [(a["task"], a["worker"], iob2_to_spans(a["tags"])) for a in answers]
    ds = "CoNLL-2003 MTurk (val)"
    out = []
    mv, sec = timed(lambda: token_majority_vote(answers))
    p, r, f = entity_prf(mv, gold, tasks)
    out.append(Row("ner", ds, f"token majority vote (P {p:.1f} / R {r:.1f})", "entity F1", f, sec, "README: 65.2"))
    baseline = f
    span_vote, sec = timed(lambda: SpanVote().fit(rows))
    p, r, f = entity_prf(span_vote.spans_, gold, tasks)
    out.append(
        Row(
            "ner",
            ds,
            f"SpanVote (P {p:.1f} / R {r:.1f})",
            "entity F1",
            f,
            sec,
            f">= {baseline + 4:.1f}",
            f >= baseline + 4,
        )
    )
    plain, sec = timed(lambda: SpanVote(n_iter=1, em_iter=1).fit(rows))
    p, r, f = entity_prf(plain.spans_, gold, tasks)
    out.append(
        Row("ner", ds, f"SpanVote, one round of one EM step (P {p:.1f} / R {r:.1f})", "entity F1", f, sec, "ablation")
    )
    without, withk, secs = [], [], []
    for seed in range(KNOWN_SEEDS):
        known = known_tasks(tasks, share, seed)
        rest = [t for t in tasks if t not in known]
        without.append(entity_prf(span_vote.spans_, gold, rest)[2])
        with_known, sec = timed(SpanVote().fit, rows, known={t: gold[t] for t in known})
        withk.append(entity_prf(with_known.spans_, gold, rest)[2])
        secs.append(sec)
    out.append(
        Row(
            "ner",
            ds,
            f"SpanVote + {share:.0%} known (vs {np.mean(without):.2f} without; mean of {KNOWN_SEEDS} draws)",
            "entity F1, other tasks",
            float(np.mean(withk)),
            float(np.mean(secs)),
        )
    )
    return out


# --- transcription -------------------------------------------------------------------------


def normalise(text: str) -> str:
    """Lowercase, punctuation (apostrophes kept) to spaces: reproduces the README's ROVER 6.76."""
    return " ".join(re.sub(r"[^\w\s']", " ", str(text).lower()).split())


def mean_wer(pred: dict[Any, str], gold: dict[Any, str], tasks: list[Any]) -> float:
    """Mean per-task word error rate in %."""
    return float(100 * np.mean(word_error_rates([pred.get(t, "") for t in tasks], [gold[t] for t in tasks])))


def word_error_rates(texts: list[str], references: list[str]) -> np.ndarray:
    """Word error rate (a fraction) of each text against the reference at the same position."""
    vocab: dict[str, int] = {}

    def enc(s: str) -> np.ndarray:
        return np.array([vocab.setdefault(w, len(vocab)) for w in s.split()], dtype=np.int64)

    dist = levenshtein_batch([enc(r) for r in references], [enc(t) for t in texts])
    return np.asarray(dist / np.array([max(len(r.split()), 1) for r in references]), dtype=np.float64)


def read_text_csv(path: Path) -> pd.DataFrame:
    # Some answers contain a bare carriage return; only '\n' ends a record.
    return pd.read_csv(path, keep_default_na=False, dtype=str, lineterminator="\n")


TRANSCRIPTION_SPLITS = ("dev-clean", "dev-other")


def load_transcription(data: Path, split: str) -> tuple[list[tuple[str, str, str]], dict[str, str]]:
    """One CrowdSpeech split: (task, worker, text) answers and task -> gold text, both normalised."""
    folder = data / "transcription" / f"crowdspeech_{split}"
    answers = read_text_csv(folder / "answers.csv")
    gold_df = read_text_csv(folder / "gold.csv")
    gold = {t: normalise(x) for t, x in zip(gold_df.task, gold_df.text, strict=True)}
    rows = [(t, w, normalise(x)) for t, w, x in zip(answers.task, answers.worker, answers.text, strict=True)]
    return rows, gold


def bench_transcription(data: Path, share: float) -> list[Row]:
    out = []
    for split in TRANSCRIPTION_SPLITS:
        rows, gold = load_transcription(data, split)
        reference = read_text_csv(data / "transcription" / f"crowdspeech_{split}" / "reference_predictions.csv")
        tasks = sorted(gold)
        ds = f"CrowdSpeech {split}"
        # Per answer WER, for the random-worker expectation and the per-task oracle.
        vocab: dict[str, int] = {}

        def enc(s: str, vocab: dict[str, int] = vocab) -> np.ndarray:
            return np.array([vocab.setdefault(w, len(vocab)) for w in s.split()], dtype=np.int64)

        per_answer = levenshtein_batch([enc(gold[t]) for t, _, _ in rows], [enc(x) for _, _, x in rows]) / np.array(
            [max(len(gold[t].split()), 1) for t, _, _ in rows]
        )
        frame = pd.DataFrame({"task": [t for t, _, _ in rows], "wer": per_answer})
        clean = split == "dev-clean"
        out.append(
            Row(
                "transcription",
                ds,
                "random worker (expected)",
                "WER %",
                100 * frame.groupby("task").wer.mean().mean(),
                None,
                "README: 17.4 (one draw)" if clean else "",
            )
        )
        out.append(
            Row(
                "transcription",
                ds,
                "best worker per task (oracle)",
                "WER %",
                100 * frame.groupby("task").wer.min().mean(),
                None,
                "README: 3.8" if clean else "",
            )
        )
        authors = dict(zip(reference.task, (normalise(x) for x in reference.rover), strict=True))
        out.append(
            Row(
                "transcription",
                ds,
                "ROVER (authors' outputs)",
                "WER %",
                mean_wer(authors, gold, tasks),
                None,
                "README: 6.76" if clean else "",
            )
        )
        t5 = dict(zip(reference.task, (normalise(x) for x in reference.t5), strict=True))
        out.append(
            Row("transcription", ds, "T5 (authors' outputs, supervised)", "WER %", mean_wer(t5, gold, tasks), None)
        )
        medoid, sec = timed(TextMedoid().fit, rows)
        out.append(Row("transcription", ds, "TextMedoid", "WER %", mean_wer(medoid.texts_, gold, tasks), sec))
        plain, sec = timed(ROVER(n_iter=1).fit, rows)
        out.append(Row("transcription", ds, "ROVER, unweighted", "WER %", mean_wer(plain.texts_, gold, tasks), sec))
        rover, sec = timed(ROVER().fit, rows)
        wer = mean_wer(rover.texts_, gold, tasks)
        out.append(
            Row(
                "transcription",
                ds,
                "ROVER, reliability-weighted",
                "WER %",
                wer,
                sec,
                "<= 6.0" if clean else "",
                wer <= 6.0 if clean else None,
            )
        )
        if clean:
            known = known_tasks(tasks, share)
            rest = [t for t in tasks if t not in known]
            truth = {t: gold[t] for t in known}
            with_known, sec = timed(ROVER().fit, rows, known=truth)
            out.append(
                Row(
                    "transcription",
                    ds,
                    f"ROVER + {share:.0%} known (vs {mean_wer(rover.texts_, gold, rest):.2f} without)",
                    "WER %, other tasks",
                    mean_wer(with_known.texts_, gold, rest),
                    sec,
                )
            )
    return out


# --- multi-label ---------------------------------------------------------------------------


def bench_multilabel(data: Path, share: float) -> list[Row]:
    folder = data / "multilabel" / "crowdtruth_medical_relex"
    answers = pd.read_csv(folder / "answers.csv", keep_default_na=False, dtype=str)
    gold = pd.read_csv(folder / "gold.csv", keep_default_na=False, dtype={"task": str})
    rows = [
        (t, w, [x for x in labels.split("|") if x])
        for t, w, labels in zip(answers.task, answers.worker, answers.labels, strict=True)
    ]
    ds = "CrowdTruth medical RelEx"

    def score(
        proba: dict[Any, dict[Any, float]], threshold: float, tasks: set[Any] | None = None
    ) -> tuple[float, float]:
        sub = gold if tasks is None else gold[gold.task.isin(tasks)]
        pred = np.array([proba[t][label] > threshold for t, label in zip(sub.task, sub.label, strict=True)])
        truth = sub.gold.to_numpy() == 1
        tp, fp, fn = (pred & truth).sum(), (pred & ~truth).sum(), (~pred & truth).sum()
        return 100 * float((pred == truth).mean()), 100 * 2 * tp / max(2 * tp + fp + fn, 1)

    out = []
    mv, sec = timed(lambda: MultiLabelMajorityVote().fit_predict_proba(rows))
    acc, f1 = score(mv, 0.5)
    out.append(Row("multilabel", ds, f"majority vote (acc {acc:.1f})", "F1 (pos.)", f1, sec, "README: 84.2"))
    baseline = f1
    model = MultiLabelDawidSkene()
    ds_proba, sec = timed(lambda: model.fit_predict_proba(rows))
    acc, f1 = score(ds_proba, model.threshold)
    out.append(
        Row(
            "multilabel",
            ds,
            f"MultiLabelDawidSkene (acc {acc:.1f})",
            "F1 (pos.)",
            f1,
            sec,
            f"> {baseline:.1f}",
            f1 > baseline,
        )
    )
    pooled, sec = timed(lambda: MultiLabelDawidSkene(label_strength=1e9).fit_predict_proba(rows))
    acc, f1 = score(pooled, 0.5)
    out.append(Row("multilabel", ds, f"... rates pooled over labels (acc {acc:.1f})", "F1 (pos.)", f1, sec, "ablation"))
    # Known: the gold covers causes/treats only, so those (task, label) values are given and
    # the task's other labels stay inferred.
    gold_tasks = sorted(set(gold.task))
    without, withk, secs = [], [], []
    for seed in range(KNOWN_SEEDS):
        known = known_tasks(gold_tasks, share, seed)
        rest = set(gold_tasks) - known
        truth = {
            t: {label: bool(v) for label, v in zip(sub.label, sub.gold, strict=True)}
            for t, sub in gold[gold.task.isin(known)].groupby("task")
        }
        with_known, sec = timed(MultiLabelDawidSkene().fit_predict_proba, rows, known=truth)
        without.append(score(ds_proba, 0.5, rest)[1])
        withk.append(score(with_known, 0.5, rest)[1])
        secs.append(sec)
    out.append(
        Row(
            "multilabel",
            ds,
            f"MultiLabelDawidSkene + {share:.0%} known (vs {np.mean(without):.2f} without; mean of {KNOWN_SEEDS} draws)",
            "F1, other tasks",
            float(np.mean(withk)),
            float(np.mean(secs)),
        )
    )
    return out


# --- boxes and masks -----------------------------------------------------------------------


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of (n, 4) x, y, w, h boxes row by row."""
    x1 = np.maximum(a[:, 0], b[:, 0])
    y1 = np.maximum(a[:, 1], b[:, 1])
    x2 = np.minimum(a[:, 0] + a[:, 2], b[:, 0] + b[:, 2])
    y2 = np.minimum(a[:, 1] + a[:, 3], b[:, 1] + b[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    return np.asarray(inter / (a[:, 2] * a[:, 3] + b[:, 2] * b[:, 3] - inter))


def bench_boxes(data: Path, share: float) -> list[Row]:
    folder = data / "bbox" / "crowdseg_coco_polygon_boxes"
    answers = pd.read_csv(folder / "answers.csv")
    gold = pd.read_csv(folder / "gold.csv").set_index("task")
    tasks = sorted(gold.index)
    ds = "crowd-seg COCO boxes"
    g = gold.loc[tasks, ["x", "y", "w", "h"]].to_numpy(float)
    out = []
    single = box_iou(
        answers[["x", "y", "w", "h"]].to_numpy(float), gold.loc[answers.task, ["x", "y", "w", "h"]].to_numpy(float)
    )
    out.append(Row("boxes", ds, "single worker (mean)", "IoU", float(single.mean()), None, "README: 0.830"))
    corners = (
        answers.assign(x2=answers.x + answers.w, y2=answers.y + answers.h)
        .groupby("task")[["x", "y", "x2", "y2"]]
        .median()
    )
    median = corners.loc[tasks].to_numpy(float)
    median[:, 2:] -= median[:, :2]
    baseline = float(box_iou(median, g).mean())
    out.append(Row("boxes", ds, "coordinate-wise median", "IoU", baseline, None, "README: 0.890"))
    rows = list(
        zip(answers.task, answers.worker, answers.x, answers.y, answers.w, answers.h, answers.label, strict=True)
    )

    def best(model: BoxFusion, subset: list[Any]) -> float:
        # One object per task: the most confident cluster.
        boxes = np.array([[b.x, b.y, b.w, b.h] for b in (model.clusters_[t][0] for t in subset)])
        return float(box_iou(boxes, gold.loc[subset, ["x", "y", "w", "h"]].to_numpy(float)).mean())

    plain, sec = timed(lambda: BoxFusion(n_iter=1).fit(rows))
    out.append(Row("boxes", ds, "BoxFusion, unweighted (cluster median)", "IoU", best(plain, tasks), sec, "ablation"))
    model, sec = timed(lambda: BoxFusion().fit(rows))
    iou = best(model, tasks)
    out.append(
        Row("boxes", ds, "BoxFusion, reliability-weighted", "IoU", iou, sec, f"> {baseline:.3f}", iou > baseline)
    )
    without, withk, secs = [], [], []
    for seed in range(KNOWN_SEEDS):
        known = known_tasks(tasks, max(share, 0.1), seed)
        rest = [t for t in tasks if t not in known]
        truth = {t: [(*gold.loc[t, ["x", "y", "w", "h"]].tolist(), gold.loc[t, "label"])] for t in known}
        with_known, sec = timed(BoxFusion().fit, rows, known=truth)
        without.append(best(model, rest))
        withk.append(best(with_known, rest))
        secs.append(sec)
    out.append(
        Row(
            "boxes",
            ds,
            f"BoxFusion + {len(known)} known tasks (vs {np.mean(without):.3f} without; mean of {KNOWN_SEEDS} draws)",
            "IoU, other tasks",
            float(np.mean(withk)),
            float(np.mean(secs)),
        )
    )
    return out


Polygon = dict[str, Any]


def load_polygons(data: Path) -> tuple[list[Polygon], dict[Any, Polygon], dict[Any, tuple[int, int, int, int]]]:
    """The crowd-seg polygons: the answers (``task``, ``worker``, ``label``, ``x_locs``,
    ``y_locs`` in pixels), task -> gold polygon, and per task a canvas (x0, y0, x1, y1) that
    covers every polygon, the gold's too, so scoring sees all of it."""
    folder = data / "bbox" / "crowdseg_coco_polygon_boxes"
    answers = [json.loads(line) for line in (folder / "answers_polygons.jsonl").open()]
    gold = {r["task"]: r for r in (json.loads(line) for line in (folder / "gold_polygons.jsonl").open())}
    for r in answers:  # two polygons have missing vertices; drop those vertices
        keep = [(x, y) for x, y in zip(r["x_locs"], r["y_locs"], strict=True) if x is not None and y is not None]
        r["x_locs"], r["y_locs"] = [k[0] for k in keep], [k[1] for k in keep]
    extent: dict[Any, tuple[int, int, int, int]] = {}
    for r in [*answers, *gold.values()]:
        x0, y0, x1, y1 = min(r["x_locs"]), min(r["y_locs"]), max(r["x_locs"]), max(r["y_locs"])
        e = extent.get(r["task"], (x0, y0, x1, y1))
        extent[r["task"]] = (min(e[0], x0), min(e[1], y0), max(e[2], x1), max(e[3], y1))
    return answers, gold, extent


def bench_masks(data: Path, share: float) -> list[Row]:
    answers, gold, extent = load_polygons(data)

    def raster(r: dict[str, Any]) -> np.ndarray:
        x0, y0, x1, y1 = extent[r["task"]]
        return polygon_mask(r["x_locs"], r["y_locs"], (int(y1 - y0) + 2, int(x1 - x0) + 2), (int(x0), int(y0)))

    rows = [(r["task"], r["worker"], raster(r)) for r in answers]
    truth = {t: raster(r) for t, r in gold.items()}
    tasks = sorted(truth)

    def jaccard(a: np.ndarray, b: np.ndarray) -> float:
        return float((a & b).sum() / max((a | b).sum(), 1))

    ds = "crowd-seg COCO polygons"
    out = [
        Row("masks", ds, "single worker (mean)", "Jaccard", float(np.mean([jaccard(m, truth[t]) for t, _, m in rows])))
    ]
    by_task: dict[Any, list[np.ndarray]] = defaultdict(list)
    for t, _, m in rows:
        by_task[t].append(m)
    mv, sec = timed(lambda: {t: np.mean(by_task[t], axis=0) > 0.5 for t in tasks})
    baseline = float(np.mean([jaccard(mv[t], truth[t]) for t in tasks]))
    out.append(Row("masks", ds, "pixel majority vote", "Jaccard", baseline, sec))
    for name, model in (("MaskVote, reliability-weighted", MaskVote()), ("MaskEM (STAPLE)", MaskEM())):
        fitted, sec = timed(model.fit, rows)
        score = float(np.mean([jaccard(fitted.masks_[t], truth[t]) for t in tasks]))
        out.append(Row("masks", ds, name, "Jaccard", score, sec, f"report (MV {baseline:.3f})"))
    return out


# --- pairwise ------------------------------------------------------------------------------


def bench_pairwise(data: Path, share: float) -> list[Row]:
    folder = data / "pairwise" / "music_similarity_mturk_sigir2010"
    answers = pd.read_csv(folder / "answers.csv", dtype=str)
    groups = pd.read_csv(folder / "gold_reference_groups.csv", dtype={"context": str, "item": str})
    group = {(c, i): k for c, i, k in zip(groups.context, groups.item, groups.group, strict=True)}
    ds = "music similarity (reference order)"
    keys = [
        (c, *sorted((left, right))) for c, left, right in zip(answers.context, answers.left, answers.right, strict=True)
    ]
    votes: dict[tuple[str, ...], dict[str, int]] = defaultdict(lambda: defaultdict(int))
    for key, winner in zip(keys, answers.winner, strict=True):
        votes[key][winner] += 1
    decided = [k for k in votes if group[(k[0], k[1])] != group[(k[0], k[2])]]
    # The README's 93.4%: pairs whose reference groups differ and whose non-tie votes are not tied.
    mv_pairs = [k for k in decided if votes[k][k[1]] != votes[k][k[2]]]

    def agree(better: Callable[[tuple[str, ...]], str], pairs: list[tuple[str, ...]]) -> float:
        right = [better(k) == (k[1] if group[(k[0], k[1])] < group[(k[0], k[2])] else k[2]) for k in pairs]
        return 100 * float(np.mean(right))

    single = [
        (w == (k[1] if group[(k[0], k[1])] < group[(k[0], k[2])] else k[2]))
        for k, w in zip(keys, answers.winner, strict=True)
        if w != "tie" and group[(k[0], k[1])] != group[(k[0], k[2])]
    ]
    out = [
        Row("pairwise", ds, "single judgment", "% agree (non-tie)", 100 * float(np.mean(single)), None, "README: 83.1")
    ]
    mv = agree(lambda k: k[1] if votes[k][k[1]] > votes[k][k[2]] else k[2], mv_pairs)
    out.append(Row("pairwise", ds, f"majority vote ({len(mv_pairs)} pairs)", "% agree", mv, None, "README: 93.4"))
    rows = list(zip(answers.context, answers.worker, answers.left, answers.right, answers.winner, strict=True))
    for name, model in (
        ("Bradley-Terry (Davidson ties), unweighted", BradleyTerry(reliability=False)),
        ("Bradley-Terry (Davidson ties), Crowd-BT reliability", BradleyTerry()),
    ):
        fitted, sec = timed(model.fit, rows)
        sc = fitted.scores_

        def better(k: tuple[str, ...], sc: dict[Any, dict[Any, float]] = sc) -> str:
            return k[1] if sc[k[0]][k[1]] > sc[k[0]][k[2]] else k[2]

        out.append(
            Row(
                "pairwise",
                ds,
                f"{name} (all {len(decided)}: {agree(better, decided):.1f})",
                f"% agree ({len(mv_pairs)} pairs)",
                agree(better, mv_pairs),
                sec,
                f"report (MV {mv:.1f})",
            )
        )
    return out


# --- keypoints (simulated) -----------------------------------------------------------------


KEYPOINT_CANVAS = 200  # pixels, the side of the simulated image


def simulated_keypoints() -> tuple[list[tuple[int, str, np.ndarray]], np.ndarray]:
    """No multi-annotator keypoint data ships with the datasets, so this is a seeded crowd:
    200 objects of 17 keypoints on a 200 px image, 7 answers each from 40 workers whose pixel
    noise ranges over 1-12 px, 10% spammers placing points uniformly, 10% of points left out
    (NaN). Returns the (task, worker, (17, 2) points) answers and the (200, 17, 2) truth."""
    rng = np.random.default_rng(7)
    n_tasks, k, n_workers = 200, 17, 40
    noise = rng.uniform(1.0, 12.0, n_workers)
    spam = rng.random(n_workers) < 0.1
    truth = rng.uniform(0, KEYPOINT_CANVAS, (n_tasks, k, 2))
    rows = []
    for t in range(n_tasks):
        for w in rng.choice(n_workers, size=7, replace=False):
            pts = rng.uniform(0, KEYPOINT_CANVAS, (k, 2)) if spam[w] else truth[t] + rng.normal(0, noise[w], (k, 2))
            pts[rng.random(k) < 0.1] = np.nan
            rows.append((t, f"w{w}", pts))
    return rows, truth


def bench_keypoints(data: Path, share: float) -> list[Row]:
    """The seeded crowd of :func:`simulated_keypoints`."""
    rows, truth = simulated_keypoints()
    n_tasks = len(truth)
    by_task: dict[int, list[np.ndarray]] = defaultdict(list)
    for t, _, p in rows:
        by_task[t].append(p)
    median = {t: np.nanmedian(np.stack(v), axis=0) for t, v in by_task.items()}

    def err(points: dict[int, np.ndarray]) -> float:
        return float(np.mean([np.nanmean(np.linalg.norm(points[t] - truth[t], axis=1)) for t in range(n_tasks)]))

    ds = "simulated (seeded)"
    out = [Row("keypoints", ds, "per-point median", "mean error px", err(median))]
    model, sec = timed(lambda: KeypointMedian().fit(rows))
    out.append(Row("keypoints", ds, "KeypointMedian, reliability-weighted", "mean error px", err(model.points_), sec))
    return out


BENCHES: dict[str, Callable[[Path, float], list[Row]]] = {
    "ner": bench_ner,
    "transcription": bench_transcription,
    "multilabel": bench_multilabel,
    "boxes": bench_boxes,
    "masks": bench_masks,
    "pairwise": bench_pairwise,
    "keypoints": bench_keypoints,
}


def print_table(rows: list[Row]) -> None:
    header = ("section", "dataset", "method", "metric", "value", "fit s", "target", "met")
    cells = [
        (
            r.section,
            r.dataset,
            r.method,
            r.metric,
            f"{r.value:.3f}" if abs(r.value) < 2 else f"{r.value:.2f}",
            "" if r.seconds is None else f"{r.seconds:.2f}",
            r.target,
            "" if r.met is None else ("yes" if r.met else "NO"),
        )
        for r in rows
    ]
    print_columns(header, cells)


def print_columns(header: Sequence[str], cells: Sequence[Sequence[str]]) -> None:
    """A plain-text table: ``header`` and the rows of ``cells``, each column as wide as its widest cell."""
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]
    print(" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)))
    print("-+-".join("-" * w for w in widths))
    for c in cells:
        print(" | ".join(v.ljust(w) for v, w in zip(c, widths, strict=True)))


def chosen_sections(parser: argparse.ArgumentParser, only: str, sections: Iterable[str]) -> list[str]:
    """The comma-separated names of ``only``; exits through ``parser`` on a name not in ``sections``."""
    known = list(sections)
    chosen = [name.strip() for name in only.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in known]
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {known}")
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=str(ROOT.parent / "shared" / "datasets"))
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections")
    parser.add_argument("--known-share", type=float, default=0.05)
    parser.add_argument("--json", help="also write every row to this file")
    args = parser.parse_args()
    data = Path(args.datasets)
    chosen = chosen_sections(parser, args.only, BENCHES)
    rows: list[Row] = []
    for section in chosen:
        print(f"running {section} ...", file=sys.stderr, flush=True)
        rows.extend(BENCHES[section](data, args.known_share))
    print_table(rows)
    if args.json:
        Path(args.json).write_text(json.dumps([asdict(r) for r in rows], indent=1, default=lambda o: o.item()))
    missed = [r for r in rows if r.met is False]
    if missed:
        print(f"\n{len(missed)} target(s) not met", file=sys.stderr)


if __name__ == "__main__":
    main()
