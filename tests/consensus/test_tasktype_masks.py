"""Mask aggregation on constructed masks: polygon rasterisation, reliability-weighted vote and
STAPLE EM against a spammer, known masks, invariance properties."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.consensus.aggregation.masks import MaskEM, MaskVote, polygon_mask

AGGREGATORS = [MaskVote, MaskEM]


def square(shape: tuple[int, int], top: int, left: int, size: int) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    mask[top : top + size, left : left + size] = True
    return mask


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max((a | b).sum(), 1))


def test_polygon_mask_fills_the_polygon_with_its_boundary() -> None:
    mask = polygon_mask([2, 6, 6, 2], [1, 1, 4, 4], (8, 10))
    assert mask.shape == (8, 10)
    assert mask.sum() == 5 * 4  # x 2..6, y 1..4 inclusive
    assert mask[1, 2] and mask[4, 6] and not mask[0, 0]
    # A crop whose corner is pixel (2, 1) of the image holds the same polygon at the origin.
    crop = polygon_mask([2, 6, 6, 2], [1, 1, 4, 4], (4, 5), origin=(2, 1))
    assert crop.all()
    assert polygon_mask([1, 2], [1, 2], (3, 3)).sum() == 0
    with pytest.raises(ValueError):
        polygon_mask([1, 2, 3], [1, 2], (3, 3))


@pytest.mark.parametrize("cls", AGGREGATORS)
def test_agreeing_workers_beat_a_spammer(cls: type) -> None:
    rng = np.random.default_rng(0)
    shape = (40, 40)
    rows = []
    truths = {}
    for t in range(8):
        truth = square(shape, 5 + t, 8, 20)
        truths[t] = truth
        for w, shift in (("a", 0), ("b", 1), ("c", -1)):
            rows.append((t, w, np.roll(truth, shift, axis=1)))
        rows.append((t, "spam", rng.random(shape) < 0.4))
    model = cls().fit(rows)
    for t, truth in truths.items():
        assert jaccard(model.masks_[t], truth) > 0.85
        assert model.probas_[t].shape == shape
        assert 0.0 <= model.confidences_[t] <= 1.0
    assert model.skills_["spam"] < min(model.skills_[w] for w in "abc")


def test_weighted_vote_lets_two_precise_workers_outvote_three_sloppy_ones() -> None:
    rng = np.random.default_rng(1)
    shape = (30, 30)
    rows, truths = [], {}
    for t in range(10):
        truth = square(shape, 5, 5, 15)
        truths[t] = truth
        for w in ("p1", "p2"):
            rows.append((t, w, truth.copy()))
        for w in ("s1", "s2", "s3"):
            noisy = truth ^ (rng.random(shape) < 0.25)
            rows.append((t, w, noisy))
    plain = MaskVote(n_iter=1).fit(rows)
    weighted = MaskVote().fit(rows)
    assert weighted.weights_["p1"] > weighted.weights_["s1"]
    score = np.mean([jaccard(weighted.masks_[t], truths[t]) for t in truths])
    assert score == pytest.approx(1.0)
    assert score >= np.mean([jaccard(plain.masks_[t], truths[t]) for t in truths])


def test_fixed_weights_are_used_as_given() -> None:
    shape = (20, 20)
    small, large = square(shape, 2, 2, 6), square(shape, 2, 2, 14)
    rows = [(0, "sure", small), (0, "new1", large), (0, "new2", large)]
    # One worker outweighing the other two together keeps its mask; learnt weights would not.
    model = MaskVote(weights={"sure": 3.0, "new1": 1.0, "new2": 1.0}).fit(rows)
    assert np.array_equal(model.masks_[0], small)
    assert model.weights_ == {"sure": 3.0, "new1": 1.0, "new2": 1.0}
    assert np.array_equal(MaskVote().fit(rows).masks_[0], large)
    with pytest.raises(ValueError, match="new2"):
        MaskVote(weights={"sure": 3.0, "new1": 1.0}).fit(rows)


def test_staple_learns_sensitivity_and_specificity() -> None:
    shape = (20, 20)
    truth = square(shape, 2, 2, 10)
    rows = []
    for t in range(5):
        rows += [(t, "exact", truth), (t, "exact2", truth), (t, "greedy", square(shape, 1, 1, 14))]
    model = MaskEM().fit(rows)
    assert model.sensitivity_["greedy"] > 0.9  # covers all the object...
    assert model.specificity_["greedy"] < model.specificity_["exact"]  # ...and more
    assert jaccard(model.masks_[0], truth) == 1.0


@pytest.mark.parametrize("cls", AGGREGATORS)
def test_known_masks_are_returned(cls: type) -> None:
    shape = (10, 10)
    rows = [("t", "a", square(shape, 0, 0, 4)), ("t", "b", square(shape, 0, 0, 5))]
    truth = square(shape, 1, 1, 3)
    model = cls().fit(rows, known={"t": truth})
    assert (model.masks_["t"] == truth).all()


@pytest.mark.parametrize("cls", AGGREGATORS)
def test_bad_input(cls: type) -> None:
    with pytest.raises(ValueError):
        cls().fit([("t", "a", np.zeros((3, 3), bool)), ("t", "b", np.zeros((4, 3), bool))])
    with pytest.raises(ValueError):
        cls().fit([("t", "a", np.zeros(3, bool))])
    with pytest.raises(ValueError):
        cls().fit([("t", "a", np.zeros((3, 3), bool))], known={"t": np.zeros((2, 2), bool)})
    assert cls().fit([]).masks_ == {}


def test_nobody_marks_anything() -> None:
    rows = [("t", w, np.zeros((5, 5), bool)) for w in "abc"]
    for cls in AGGREGATORS:
        model = cls().fit(rows)
        assert not model.masks_["t"].any()
        assert model.confidences_["t"] == 1.0


@settings(max_examples=25, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 4), st.integers(0, 6), st.integers(1, 6)), min_size=1, max_size=12
    )
)
def test_worker_order_does_not_change_the_masks(spec: list[tuple[int, int, int, int]]) -> None:
    spec = list({(t, w): (t, w, top, size) for t, w, top, size in spec}.values())
    rows = [(t, f"w{w}", square((12, 12), top, top, size)) for t, w, top, size in spec]
    renamed = [(t, f"x{9 - int(w[1:])}", m) for t, w, m in reversed(rows)]
    for cls in AGGREGATORS:
        a, b = cls().fit(rows), cls().fit(renamed)
        for task in a.masks_:
            assert (a.masks_[task] == b.masks_[task]).all()
            assert np.allclose(a.probas_[task], b.probas_[task])
            assert ((a.probas_[task] >= 0) & (a.probas_[task] <= 1)).all()
