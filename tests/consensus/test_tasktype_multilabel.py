"""Multi-label aggregation: per-label two-coin Dawid-Skene against majority vote on constructed
crowds, known labels (complete and partial), invariance, and a slice of the CrowdTruth medical
relation set (tests/consensus/data, see ATTRIBUTION.md)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.consensus.aggregation.multilabel import MultiLabelDawidSkene, MultiLabelMajorityVote

DATA = Path(__file__).parent / "data"
LABELS = ("cat", "dog", "bird")


def test_majority_vote_counts_each_label_separately() -> None:
    rows = [("t", "a", ["cat", "dog"]), ("t", "b", ["cat"]), ("t", "c", ["cat", "dog", "bird"])]
    mv = MultiLabelMajorityVote().fit(rows)
    assert mv.labels_ == {"t": ("cat", "dog")}
    assert mv.fit_predict_proba(rows)["t"] == pytest.approx({"bird": 1 / 3, "cat": 1.0, "dog": 2 / 3})


def simulated(seed: int = 0) -> tuple[list[tuple[str, str, list[str]]], dict[str, set[str]]]:
    """60 tasks; two careful workers, one who misses half the labels, four who tick most."""
    rng = np.random.default_rng(seed)
    rows, truth = [], {}
    for t in range(60):
        present = {label for label in LABELS if rng.random() < 0.4}
        truth[f"t{t}"] = present
        for w in ("careful1", "careful2"):
            rows.append((f"t{t}", w, sorted(present)))
        rows.append((f"t{t}", "lazy1", sorted(label for label in present if rng.random() < 0.5)))
        for w in ("eager1", "eager2", "eager3", "eager4"):
            rows.append((f"t{t}", w, sorted(label for label in LABELS if label in present or rng.random() < 0.6)))
    return rows, truth


def test_dawid_skene_learns_who_over_and_under_selects() -> None:
    rows, truth = simulated()
    model = MultiLabelDawidSkene(labels=LABELS).fit(rows)
    assert model.labels_ == {t: tuple(label for label in LABELS if label in truth[t]) for t in truth}
    workers = model.workers_.tolist()
    sens = dict(zip(workers, model.sensitivity_.mean(axis=1), strict=True))
    spec = dict(zip(workers, model.specificity_.mean(axis=1), strict=True))
    assert sens["lazy1"] < sens["careful1"] and spec["eager1"] < spec["careful1"]
    assert model.skills_["careful1"] > model.skills_["eager1"]
    mv = MultiLabelMajorityVote(labels=LABELS).fit(rows)
    assert sum(mv.labels_[t] != model.labels_[t] for t in truth) > 0  # the vote gets some wrong
    assert set(model.priors_) == set(LABELS)


def test_known_complete_and_partial_label_sets() -> None:
    rows = [("t", "a", ["cat"]), ("t", "b", ["cat"]), ("u", "a", ["dog"]), ("u", "b", [])]
    model = MultiLabelDawidSkene(labels=LABELS).fit(rows, known={"t": ["dog"]})
    assert model.labels_["t"] == ("dog",)
    partial = MultiLabelDawidSkene(labels=LABELS).fit(rows, known={"t": {"bird": True}})
    assert partial.labels_["t"] == ("cat", "bird")  # cat is still inferred
    with pytest.raises(ValueError):
        MultiLabelDawidSkene(labels=LABELS).fit(rows, known={"t": ["fish"]})


def test_bad_input_and_edge_cases() -> None:
    with pytest.raises(ValueError):
        MultiLabelDawidSkene().fit([("t", "a", "cat")])  # a string is not a label collection
    with pytest.raises(ValueError):
        MultiLabelDawidSkene(labels=LABELS).fit([("t", "a", ["fish"])])
    with pytest.raises(ValueError):
        MultiLabelDawidSkene(labels=["a", "a"]).fit([("t", "w", ["a"])])
    with pytest.raises(RuntimeError):
        _ = MultiLabelDawidSkene().probas_
    empty = MultiLabelDawidSkene().fit([("t", "a", []), ("t", "b", [])])
    assert empty.labels_ == {"t": ()}
    assert MultiLabelDawidSkene(labels=LABELS).fit([]).labels_ == {}


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 3), st.integers(0, 4), st.sets(st.sampled_from(LABELS))),
        min_size=1,
        max_size=20,
    )
)
def test_probabilities_are_bounded_and_worker_names_do_not_matter(spec: list[tuple[int, int, set[str]]]) -> None:
    rows = [(t, f"w{w}", sorted(labels)) for t, w, labels in spec]
    renamed = [(t, f"x{9 - int(w[1:])}", labels) for t, w, labels in reversed(rows)]
    for cls in (MultiLabelDawidSkene, MultiLabelMajorityVote):
        a, b = cls(labels=LABELS).fit(rows), cls(labels=LABELS).fit(renamed)
        assert np.allclose(a.probas_, b.probas_, atol=1e-9)
        assert ((a.probas_ >= 0) & (a.probas_ <= 1)).all()
        assert a.labels_ == b.labels_


def test_on_a_slice_of_crowdtruth_it_beats_majority_vote() -> None:
    with (DATA / "crowdtruth_relex_slice.csv").open(newline="") as f:
        rows = [(r["task"], r["worker"], [x for x in r["labels"].split("|") if x]) for r in csv.DictReader(f)]
    with (DATA / "crowdtruth_relex_gold_slice.csv").open(newline="") as f:
        gold = [(r["task"], r["label"], r["gold"] == "1") for r in csv.DictReader(f)]

    def accuracy(proba: dict[Any, dict[Any, float]]) -> float:
        return float(np.mean([(proba[t][label] > 0.5) == truth for t, label, truth in gold]))

    mv = accuracy(MultiLabelMajorityVote().fit_predict_proba(rows))
    ds = accuracy(MultiLabelDawidSkene().fit_predict_proba(rows))
    assert ds >= mv
