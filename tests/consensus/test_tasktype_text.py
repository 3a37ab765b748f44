"""Transcription aggregation: batched word edit distance, ROVER and the weighted medoid on
constructed answers, reliability, known texts, invariance, and a slice of CrowdSpeech dev-clean
(tests/consensus/data, see ATTRIBUTION.md)."""

from __future__ import annotations

import csv
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.consensus.aggregation.text import ROVER, TextMedoid, levenshtein_batch

DATA = Path(__file__).parent / "data"
AGGREGATORS = [ROVER, TextMedoid]


def reference_distance(a: list[int], b: list[int]) -> int:
    prev = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        cur = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] != b[j - 1]))
        prev = cur
    return prev[-1]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.lists(st.integers(0, 4), max_size=9), st.lists(st.integers(0, 4), max_size=9)), max_size=12)
)
def test_batched_edit_distance_matches_the_textbook_one(pairs: list[tuple[list[int], list[int]]]) -> None:
    got = levenshtein_batch(
        [np.array(a, dtype=np.int64) for a, _ in pairs], [np.array(b, dtype=np.int64) for _, b in pairs]
    )
    assert got.tolist() == [reference_distance(a, b) for a, b in pairs]


def test_edit_distance_rejects_unequal_batches() -> None:
    with pytest.raises(ValueError):
        levenshtein_batch([np.zeros(2, dtype=np.int64)], [])


def test_rover_fixes_each_answers_single_error() -> None:
    rows = [
        ("t", "a", "the cat sat on the mat"),
        ("t", "b", "the cat sat in the mat"),
        ("t", "c", "a cat sat on the mat"),
        ("t", "d", "the cat sat on mat"),
        ("t", "e", "the cat sat on the mat today"),
    ]
    model = ROVER().fit(rows)
    assert model.texts_["t"] == "the cat sat on the mat"
    assert 0.5 < model.confidences_["t"] <= 1.0


def test_rover_survives_a_backbone_that_carries_no_weight() -> None:
    # Weights too small to survive the medoid's rounding tie-break pick a weightless backbone
    # (the streaming fusion gives a worker at chance weight 0); aligning to it divided by zero.
    rows = [("t", "a", "x y z w"), ("t", "b", "q"), ("t", "c", "x y")]
    model = ROVER(weights={"a": 1e-12, "b": 0.0, "c": 0.0}).fit(rows)
    assert model.texts_["t"] == "q"
    assert 0.0 <= model.confidences_["t"] <= 1.0


def test_the_medoid_is_one_of_the_answers() -> None:
    rows = [("t", "a", "one two three"), ("t", "b", "one two tree"), ("t", "c", "won two three")]
    model = TextMedoid().fit(rows)
    assert model.texts_["t"] in {"one two three", "one two tree", "won two three"}
    assert model.texts_["t"] == "one two three"


@pytest.mark.parametrize("cls", AGGREGATORS)
def test_a_reliable_worker_outweighs_two_who_agree_on_errors(cls: type) -> None:
    # On 20 calibration tasks "good" agrees with three others while "x" and "y" garble words;
    # on the test task x and y agree with each other against good and one other worker.
    rows = []
    for t in range(20):
        text = f"sentence number {t} is spoken clearly here"
        rows += [(f"c{t}", w, text) for w in ("good", "o1", "o2", "o3")]
        rows += [(f"c{t}", w, text.replace("clearly", "queerly").replace("spoken", "broken")) for w in ("x", "y")]
    rows += [("test", "good", "alpha beta gamma"), ("test", "o1", "alpha beta gamma")]
    rows += [
        ("test", "x", "alpha better gamma"),
        ("test", "y", "alpha better gamma"),
        ("test", "o2", "alpha better gamma"),
    ]
    model = cls().fit(rows)
    assert model.skills_["good"] > model.skills_["x"]
    assert model.weights_["good"] > model.weights_["x"]
    assert model.texts_["test"] == "alpha beta gamma"


@pytest.mark.parametrize("cls", AGGREGATORS)
def test_fixed_weights_are_used_as_given(cls: type) -> None:
    rows = [("t", "sure", "alpha beta gamma"), ("t", "n1", "alpha better gamma"), ("t", "n2", "alpha better gamma")]
    model = cls(weights={"sure": 3.0, "n1": 1.0, "n2": 1.0}).fit(rows)
    assert model.texts_["t"] == "alpha beta gamma"
    assert model.weights_ == {"sure": 3.0, "n1": 1.0, "n2": 1.0}
    assert cls().fit(rows).texts_["t"] == "alpha better gamma"
    with pytest.raises(ValueError, match="n2"):
        cls(weights={"sure": 3.0, "n1": 1.0}).fit(rows)
    with pytest.raises(ValueError, match="sure"):
        cls(weights={"sure": -1.0, "n1": 1.0, "n2": 1.0}).fit(rows)


@pytest.mark.parametrize("cls", AGGREGATORS)
def test_known_texts_are_returned_and_measure_workers(cls: type) -> None:
    rows = [("t", "a", "hello world"), ("t", "b", "hello word"), ("t", "c", "hello word")]
    model = cls().fit(rows, known={"t": "hello world"})
    assert model.texts_["t"] == "hello world"
    assert model.confidences_["t"] == 1.0
    assert model.errors_["a"] < model.errors_["b"]


@pytest.mark.parametrize("cls", AGGREGATORS)
def test_edge_cases(cls: type) -> None:
    assert cls().fit([]).texts_ == {}
    assert cls().fit_predict([("t", "a", "")]) == {"t": ""}
    assert cls().fit_predict([("t", "a", "just one")]) == {"t": "just one"}
    with pytest.raises(ValueError):
        cls().fit([("t", "a")])
    with pytest.raises(ValueError):
        cls().fit([("t", "a", 3)])
    with pytest.raises(ValueError):
        cls(n_iter=0)


@pytest.mark.parametrize("cls", AGGREGATORS)
@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 4), st.lists(st.sampled_from(["a", "b", "c", "d"]), max_size=6)),
        min_size=1,
        max_size=12,
    )
)
def test_worker_names_and_row_order_do_not_change_the_text(cls: type, spec: list[tuple[int, int, list[str]]]) -> None:
    rows = [(t, f"w{w}", " ".join(words)) for t, w, words in {(t, w): (t, w, ws) for t, w, ws in spec}.values()]
    renamed = [(t, f"x{9 - int(w[1:])}", text) for t, w, text in reversed(rows)]
    a, b = cls().fit(rows), cls().fit(renamed)
    assert a.texts_ == b.texts_
    assert [a.confidences_[t] for t in sorted(a.confidences_)] == pytest.approx(
        [b.confidences_[t] for t in sorted(b.confidences_)]
    )
    assert all(0.0 <= c <= 1.0 for c in a.confidences_.values())


def normalise(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s']", " ", text.lower()).split())


def test_on_a_slice_of_crowdspeech_rover_beats_a_random_worker_and_the_medoid() -> None:
    with (DATA / "crowdspeech_dev_clean_slice.csv").open(newline="") as f:
        rows = [(r["task"], r["worker"], normalise(r["text"])) for r in csv.DictReader(f)]
    with (DATA / "crowdspeech_dev_clean_gold_slice.csv").open(newline="") as f:
        gold = {r["task"]: normalise(r["text"]) for r in csv.DictReader(f)}
    vocab: dict[str, int] = {}

    def enc(s: str) -> np.ndarray:
        return np.array([vocab.setdefault(w, len(vocab)) for w in s.split()], dtype=np.int64)

    def wer(pred: dict[Any, str]) -> float:
        tasks = sorted(gold)
        d = levenshtein_batch([enc(gold[t]) for t in tasks], [enc(pred[t]) for t in tasks])
        return float(np.mean(d / np.array([len(gold[t].split()) for t in tasks])))

    per_answer = levenshtein_batch([enc(gold[t]) for t, _, _ in rows], [enc(x) for _, _, x in rows])
    random_worker = float(np.mean(per_answer / np.array([len(gold[t].split()) for t, _, _ in rows])))
    rover = wer(ROVER().fit_predict(rows))
    medoid = wer(TextMedoid().fit_predict(rows))
    assert rover < medoid < random_worker
    assert rover < 0.5 * random_worker
