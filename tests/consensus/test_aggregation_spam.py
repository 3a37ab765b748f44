"""Spam scores: the formula on constructed confusion matrices, and the fitted scores on a
simulated crowd with spammers."""

from __future__ import annotations

import numpy as np
import pytest
from aggregation_cases import LEARNING, WITH_SPAM_SCORES, simulated_crowd

from services.consensus.aggregation import SPAM_THRESHOLD, accuracy_spam_scores, confusion_spam_scores


def test_spam_score_of_constructed_workers() -> None:
    k = 3
    perfect = np.eye(k)
    swapper = np.eye(k)[[1, 2, 0]]
    uniform = np.full((k, k), 1 / k)
    constant = np.zeros((k, k))
    constant[:, 0] = 1.0
    scores = confusion_spam_scores(np.stack([perfect, swapper, uniform, constant]))
    assert scores.tolist() == pytest.approx([0.0, 0.0, 1.0, 1.0])


def test_one_coin_spam_score_matches_the_confusion_formula() -> None:
    for k, r in ((2, 0.75), (3, 0.5), (5, 0.28)):
        one_coin = np.full((k, k), (1 - r) / (k - 1))
        np.fill_diagonal(one_coin, r)
        expected = accuracy_spam_scores(np.array([r]), k)[0]
        assert confusion_spam_scores(one_coin[None])[0] == pytest.approx(expected)
        assert expected == pytest.approx(1 - (k * r - 1) / (k - 1))


def test_a_single_class_has_no_spammers() -> None:
    assert confusion_spam_scores(np.ones((2, 1, 1))).tolist() == [0.0, 0.0]
    assert accuracy_spam_scores(np.array([0.3]), 1).tolist() == [0.0]


@pytest.mark.parametrize("name", WITH_SPAM_SCORES)
def test_fitted_spam_scores_rank_spammers_above_honest_workers(name: str) -> None:
    answers, _, spammers = simulated_crowd(11, n_tasks=600, n_workers=20, spam=0.25)
    scores = LEARNING[name](None).fit(answers).spam_scores_
    assert spammers
    spam = [scores[w] for w in spammers]
    honest = [s for w, s in scores.items() if w not in spammers]
    assert np.mean(spam) > np.mean(honest)
    if name in ("ds", "default", "mace"):
        assert min(spam) > max(honest) - 0.1
        assert max(honest) < SPAM_THRESHOLD


def test_the_default_flags_spammers_with_the_threshold() -> None:
    answers, _, spammers = simulated_crowd(11, n_tasks=600, n_workers=20, spam=0.25)
    scores = LEARNING["default"](None).fit(answers).spam_scores_
    flagged = {w for w, s in scores.items() if s > SPAM_THRESHOLD}
    assert flagged and flagged <= spammers
