"""Pairwise aggregation: Bradley-Terry with Davidson ties and Crowd-BT reliability on
constructed comparisons, invariance, and a slice of the music-similarity judgments
(tests/consensus/data, see ATTRIBUTION.md)."""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.consensus.aggregation.pairwise import BradleyTerry

DATA = Path(__file__).parent / "data"


def simulate(seed: int = 0, adversary: bool = False) -> list[tuple[str, str, str, str, str]]:
    """Items a > b > c > d (log-strengths 1.5, 0.5, -0.5, -1.5); three honest workers answering
    by the Davidson model, and optionally one who always reverses."""
    rng = np.random.default_rng(seed)
    strength = {"a": 1.5, "b": 0.5, "c": -0.5, "d": -1.5}
    rows = []
    for _ in range(15):
        for i, j in itertools.combinations(strength, 2):
            for w in ("h1", "h2", "h3"):
                e_i, e_j, e_t = np.exp(strength[i]), np.exp(strength[j]), 0.5 * np.exp((strength[i] + strength[j]) / 2)
                u = rng.random() * (e_i + e_j + e_t)
                rows.append(("q", w, i, j, i if u < e_i else j if u < e_i + e_j else "tie"))
            if adversary:
                rows.append(("q", "adv", i, j, j))  # always says the weaker one wins
    return rows


def test_recovers_the_order_and_the_tie_parameter() -> None:
    model = BradleyTerry().fit(simulate())
    assert model.ranking_["q"] == ["a", "b", "c", "d"]
    scores = model.scores_["q"]
    assert sum(scores.values()) == pytest.approx(0.0, abs=1e-9)
    assert scores["a"] - scores["d"] == pytest.approx(3.0, abs=1.0)
    assert 0.2 < model.tie_ < 1.2
    p = model.predict_proba("q", "a", "d")
    assert sum(p) == pytest.approx(1.0) and p[0] > p[1]


def test_an_adversarial_worker_is_read_in_reverse() -> None:
    rows = simulate(adversary=True)
    model = BradleyTerry().fit(rows)
    assert model.skills_["adv"] < 0.2 < 0.7 < min(model.skills_[w] for w in ("h1", "h2", "h3"))
    assert model.ranking_["q"] == ["a", "b", "c", "d"]
    gap = model.scores_["q"]["a"] - model.scores_["q"]["d"]
    plain = BradleyTerry(reliability=False).fit(rows)
    assert gap > plain.scores_["q"]["a"] - plain.scores_["q"]["d"]


def test_without_ties_ties_are_dropped() -> None:
    rows = [("q", "w", "x", "y", "x"), ("q", "w", "x", "y", "tie"), ("q", "v", "y", "z", "y")]
    model = BradleyTerry(ties=False).fit(rows)
    assert model.tie_ == 0.0
    assert model.ranking_["q"] == ["x", "y", "z"]


def test_an_item_that_wins_everything_stays_finite_and_contexts_are_separate() -> None:
    rows = [("q1", "w", "x", "y", "x")] * 20 + [("q2", "w", "x", "y", "y")] * 3
    model = BradleyTerry().fit(rows)
    assert np.isfinite(list(model.scores_["q1"].values())).all()
    assert model.ranking_["q1"] == ["x", "y"] and model.ranking_["q2"] == ["y", "x"]


def test_bad_input() -> None:
    with pytest.raises(ValueError):
        BradleyTerry().fit([("q", "w", "x", "y")])
    with pytest.raises(ValueError):
        BradleyTerry().fit([("q", "w", "x", "x", "x")])
    with pytest.raises(ValueError):
        BradleyTerry().fit([("q", "w", "x", "y", "z")])
    with pytest.raises(ValueError):
        BradleyTerry(regularization=0)
    assert BradleyTerry().fit([]).scores_ == {}


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 4), st.integers(0, 3), st.integers(0, 3), st.sampled_from(["l", "r", "tie"])),
        min_size=1,
        max_size=25,
    )
)
def test_worker_names_and_row_order_do_not_change_the_scores(spec: list[tuple[int, int, int, str]]) -> None:
    rows = []
    for w, i, j, outcome in spec:
        if i == j:
            continue
        left, right = f"i{i}", f"i{j}"
        rows.append(("q", f"w{w}", left, right, left if outcome == "l" else right if outcome == "r" else "tie"))
    if not rows:
        return
    renamed = [(c, f"x{9 - int(w[1:])}", left, right, win) for c, w, left, right, win in reversed(rows)]
    a, b = BradleyTerry().fit(rows), BradleyTerry().fit(renamed)
    for item, score in a.scores_["q"].items():
        assert score == pytest.approx(b.scores_["q"][item], abs=1e-6)
    assert all(0.0 < s < 1.0 for s in a.skills_.values())


def test_on_a_slice_of_music_judgments_it_agrees_with_the_reference_order() -> None:
    with (DATA / "music_similarity_slice.csv").open(newline="") as f:
        rows = [(r["context"], r["worker"], r["left"], r["right"], r["winner"]) for r in csv.DictReader(f)]
    with (DATA / "music_similarity_reference_slice.csv").open(newline="") as f:
        group = {(r["context"], r["item"]): int(r["group"]) for r in csv.DictReader(f)}
    model = BradleyTerry().fit(rows)
    pairs = {(c, *sorted((left, right))) for c, _, left, right, _ in rows}
    decided = [(c, i, j) for c, i, j in pairs if group[(c, i)] != group[(c, j)]]
    agree = [(model.scores_[c][i] > model.scores_[c][j]) == (group[(c, i)] < group[(c, j)]) for c, i, j in decided]
    assert np.mean(agree) >= 0.8
