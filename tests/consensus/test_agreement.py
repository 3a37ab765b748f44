"""Agreement coefficients on published worked examples and edge cases."""

from __future__ import annotations

import numpy as np
import pytest

from services.consensus.aggregation.agreement import confusion_matrices, fleiss_kappa, krippendorff_alpha

# Fleiss (1971) as worked in most textbooks: 10 subjects, 14 raters, 5 categories; kappa 0.210.
FLEISS_TABLE = np.array(
    [
        [0, 0, 0, 0, 14],
        [0, 2, 6, 4, 2],
        [0, 0, 3, 5, 6],
        [0, 3, 9, 2, 0],
        [2, 2, 8, 1, 1],
        [7, 7, 0, 0, 0],
        [3, 2, 6, 3, 0],
        [2, 5, 3, 2, 2],
        [6, 5, 2, 1, 0],
        [0, 2, 2, 3, 7],
    ]
)


def test_fleiss_kappa_matches_the_worked_example() -> None:
    assert fleiss_kappa(FLEISS_TABLE) == pytest.approx(0.2099, abs=5e-4)


def test_krippendorff_alpha_matches_the_nominal_worked_example() -> None:
    # Krippendorff (2011), section C: 4 observers, 12 units, some missing; nominal alpha 0.743.
    units = [
        [1, 1, None, 1],
        [2, 2, 3, 2],
        [3, 3, 3, 3],
        [3, 3, 3, 3],
        [2, 2, 2, 2],
        [1, 2, 3, 4],
        [4, 4, 4, 4],
        [1, 1, 2, 1],
        [2, 2, 2, 2],
        [None, 5, 5, 5],
        [None, None, 1, 1],
        [None, None, 3, None],
    ]
    counts = np.zeros((len(units), 5))
    for row, values in enumerate(units):
        for value in values:
            if value is not None:
                counts[row, value - 1] += 1
    assert krippendorff_alpha(counts) == pytest.approx(0.743, abs=5e-4)


@pytest.mark.parametrize("coefficient", [fleiss_kappa, krippendorff_alpha])
def test_perfect_agreement_is_one_and_nothing_pairable_is_zero(coefficient) -> None:  # type: ignore[no-untyped-def]
    assert coefficient(np.array([[3, 0, 0], [0, 2, 0], [0, 0, 4]])) == pytest.approx(1.0)
    assert coefficient(np.array([[1, 0], [0, 1]])) == 0.0
    assert coefficient(np.zeros((0, 3))) == 0.0


@pytest.mark.parametrize("coefficient", [fleiss_kappa, krippendorff_alpha])
def test_random_answers_are_near_zero(coefficient) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    answers = rng.integers(0, 3, size=(2000, 5))
    counts = np.stack([np.bincount(row, minlength=3) for row in answers])
    assert abs(coefficient(counts)) < 0.03


def test_confusion_matrices_rows_sum_to_one_and_show_the_swap() -> None:
    # Worker 0 is right; worker 1 swaps labels 0 and 1; worker 2 never answered label-1 tasks.
    workers = np.array([0, 0, 1, 1, 2])
    truth = np.array([0, 1, 0, 1, 0])
    answers = np.array([0, 1, 1, 0, 0])
    errors = confusion_matrices(workers, truth, answers, n_workers=3, n_labels=2)
    assert np.allclose(errors.sum(axis=2), 1.0)
    assert np.allclose(errors[0], np.eye(2))
    assert np.allclose(errors[1], [[0, 1], [1, 0]])
    assert np.allclose(errors[2], [[1, 0], [0.5, 0.5]])
