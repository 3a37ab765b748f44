"""Keypoint aggregation: weighted medians, presence, OKS, reliability and invariances."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.consensus.aggregation._geometry import keypoint_similarity
from services.consensus.aggregation.keypoints import COCO_PERSON_SIGMAS, KeypointMedian


def test_the_median_ignores_one_wild_point() -> None:
    truth = np.array([[10.0, 10.0], [50.0, 20.0], [30.0, 60.0]])
    rows = [
        ("t", "a", truth + 1),
        ("t", "b", truth - 1),
        ("t", "c", truth),
        ("t", "d", truth + np.array([[200, 0], [0, 0], [0, 0]])),
    ]
    model = KeypointMedian().fit(rows)
    assert np.abs(model.points_["t"] - truth).max() <= 1.0
    assert model.presence_["t"].min() > 0.5


def test_precise_workers_get_the_weight_and_spammers_none() -> None:
    rng = np.random.default_rng(5)
    truth = rng.uniform(0, 100, (30, 6, 2))
    rows = []
    for t in range(30):
        rows += [(t, w, truth[t] + rng.normal(0, 0.5, (6, 2))) for w in ("p1", "p2")]
        rows += [(t, w, truth[t] + rng.normal(0, 6.0, (6, 2))) for w in ("s1", "s2")]
        rows.append((t, "spam", rng.uniform(0, 100, (6, 2))))
    model = KeypointMedian().fit(rows)
    assert model.weights_["p1"] > 3 * model.weights_["s1"] > 3 * model.weights_["spam"]
    assert model.skills_["p1"] > model.skills_["s1"] > model.skills_["spam"]
    weighted = np.mean([np.linalg.norm(model.points_[t] - truth[t], axis=1).mean() for t in range(30)])
    plain = KeypointMedian(n_iter=1).fit(rows)
    unweighted = np.mean([np.linalg.norm(plain.points_[t] - truth[t], axis=1).mean() for t in range(30)])
    assert weighted < unweighted
    assert all(0.0 <= c <= 1.0 for c in model.confidences_.values())


def test_a_point_most_workers_leave_out_is_absent() -> None:
    pts = np.array([[10.0, 10.0], [20.0, 20.0]])
    lone = pts.copy()
    rows = []
    for t in range(6):
        for w in "abcd":
            p = pts.copy()
            p[1] = np.nan  # the second point is not visible
            rows.append((t, w, p))
        rows.append((t, "e", lone))  # e always places it
    model = KeypointMedian().fit(rows)
    for t in range(6):
        assert np.isnan(model.points_[t][1]).all()
        assert model.presence_[t][1] < 0.5 < model.presence_[t][0]
    # OKS counts only the consensus' present points: e places both, so its OKS is still 1.
    assert model.oks_[0]["e"] == pytest.approx(1.0)


def test_oks_matches_the_coco_formula() -> None:
    p = np.array([[[0.0, 0.0], [3.0, 4.0]]])
    r = np.array([[[0.0, 0.0], [0.0, 0.0]]])
    sim = keypoint_similarity(p, r, np.array([10.0]), np.array([0.1, 0.1]))
    assert sim[0, 0] == 1.0
    assert sim[0, 1] == pytest.approx(np.exp(-25 / (2 * 100 * 0.2**2)))


def test_scales_sigmas_and_known_points() -> None:
    truth = np.array([[10.0, 10.0], [40.0, 40.0]])
    rows = [("t", "a", truth + 2), ("t", "b", truth + 3), ("u", "a", truth + 2), ("u", "b", truth + 3)]
    model = KeypointMedian(sigmas=[0.05, 0.1]).fit(rows, scales={"t": 100.0}, known={"u": truth})
    assert np.allclose(model.points_["u"], truth)
    assert model.errors_["a"] < model.errors_["b"]  # measured on the known task
    with pytest.raises(ValueError):
        KeypointMedian(sigmas=[0.1, 0.1, 0.1]).fit(rows)
    with pytest.raises(ValueError):
        KeypointMedian().fit([("t", "a", np.zeros((2, 2))), ("t", "b", np.zeros((3, 2)))])
    assert len(COCO_PERSON_SIGMAS) == 17
    assert KeypointMedian().fit([]).points_ == {}


@settings(max_examples=30, deadline=None)
@given(
    st.lists(
        st.tuples(st.integers(0, 2), st.integers(0, 4), st.lists(st.floats(0, 100), min_size=6, max_size=6)),
        min_size=1,
        max_size=12,
    )
)
def test_worker_names_and_row_order_do_not_change_the_points(spec: list[tuple[int, int, list[float]]]) -> None:
    spec = list({(t, w): (t, w, v) for t, w, v in spec}.values())
    rows = [(t, f"w{w}", np.array(v).reshape(3, 2)) for t, w, v in spec]
    renamed = [(t, f"x{9 - int(w[1:])}", p) for t, w, p in reversed(rows)]
    a, b = KeypointMedian().fit(rows), KeypointMedian().fit(renamed)
    for task in a.points_:
        assert np.allclose(a.points_[task], b.points_[task], equal_nan=True)
        assert np.allclose(a.presence_[task], b.presence_[task])
    assert sorted(a.weights_.values()) == pytest.approx(sorted(b.weights_.values()))
