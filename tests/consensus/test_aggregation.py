"""The aggregation library on tiny datasets whose answers are known by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from services.consensus.aggregation import (
    Aggregator,
    BetaReliability,
    GoldReliability,
    MajorityVote,
    NotFittedError,
    OneCoinVote,
    WeightedMajorityVote,
    encode_answers,
    one_coin_posterior,
)

AGGREGATORS = {
    "majority": lambda labels=None: MajorityVote(labels=labels),
    "weighted": lambda labels=None: WeightedMajorityVote({"w1": 2.0, "w2": 0.5}, labels=labels),
    "one_coin": lambda labels=None: OneCoinVote({"w1": 0.9, "w2": 0.6}, labels=labels),
}

SMALL = [
    ("t1", "w1", "cat"),
    ("t1", "w2", "cat"),
    ("t1", "w3", "dog"),
    ("t2", "w1", "dog"),
    ("t3", "w2", "bird"),
    ("t3", "w3", "cat"),
]


def test_majority_vote_picks_the_most_common_label() -> None:
    mv = MajorityVote().fit(SMALL)
    assert mv.labels_ == {"t1": "cat", "t2": "dog", "t3": "bird"}
    assert mv.classes_.tolist() == ["bird", "cat", "dog"]
    row = mv.tasks_.tolist().index("t1")
    assert mv.probas_[row].tolist() == pytest.approx([0.0, 2 / 3, 1 / 3])


def test_majority_vote_ties_go_to_the_first_label() -> None:
    answers = [("t", "w1", "dog"), ("t", "w2", "cat")]
    assert MajorityVote().fit_predict(answers) == {"t": "cat"}  # sorted: cat < dog
    assert MajorityVote(labels=["dog", "cat"]).fit_predict(answers) == {"t": "dog"}
    assert MajorityVote(labels=["cat", "dog"]).fit_predict(answers) == {"t": "cat"}


def test_majority_vote_skills_are_agreement_with_the_majority() -> None:
    mv = MajorityVote().fit(SMALL)
    # w1: cat (agrees), dog (agrees); w2: cat (agrees), bird (agrees on t3's tie winner);
    # w3: dog (disagrees), cat (disagrees).
    assert mv.skills_ == {"w1": 1.0, "w2": 1.0, "w3": 0.0}


def test_weighted_vote_lets_a_reliable_worker_outvote_two_spammers() -> None:
    answers = [("t", "expert", "cat"), ("t", "spam1", "dog"), ("t", "spam2", "dog")]
    assert MajorityVote().fit_predict(answers) == {"t": "dog"}
    weighted = WeightedMajorityVote({"expert": 0.95, "spam1": 0.3, "spam2": 0.3})
    assert weighted.fit_predict(answers) == {"t": "cat"}
    assert weighted.fit_predict_proba(answers)["t"] == pytest.approx({"cat": 0.95 / 1.55, "dog": 0.6 / 1.55})
    one_coin = OneCoinVote({"expert": 0.95, "spam1": 0.4, "spam2": 0.4}, labels=["cat", "dog", "bird"])
    assert one_coin.fit_predict(answers) == {"t": "cat"}


def test_weighted_vote_uses_the_default_weight_for_unknown_workers() -> None:
    answers = [("t", "known", "cat"), ("t", "new1", "dog"), ("t", "new2", "dog")]
    assert WeightedMajorityVote({"known": 3.0}, default_skill=1.0).fit_predict(answers) == {"t": "cat"}
    assert WeightedMajorityVote({"known": 1.5}, default_skill=1.0).fit_predict(answers) == {"t": "dog"}


def test_weighted_vote_with_all_weights_zero_is_uniform() -> None:
    probas = WeightedMajorityVote({"w": 0.0}, labels=["a", "b"]).fit_predict_proba([("t", "w", "a")])
    assert probas == {"t": {"a": 0.5, "b": 0.5}}


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_probabilities_sum_to_one(name: str) -> None:
    agg: Aggregator = AGGREGATORS[name]()
    agg.fit(SMALL)
    assert agg.probas_.shape == (3, 3)
    np.testing.assert_allclose(agg.probas_.sum(axis=1), 1.0)
    assert np.all(agg.probas_ >= 0)
    for dist in agg.fit_predict_proba(SMALL).values():
        assert math.isclose(sum(dist.values()), 1.0)


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_a_single_answer_wins_its_task(name: str) -> None:
    agg: Aggregator = AGGREGATORS[name](["cat", "dog"])
    assert agg.fit_predict([("t", "w1", "dog")]) == {"t": "dog"}
    assert not np.isnan(agg.probas_).any()


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_a_label_nobody_used_gets_no_mass_from_votes(name: str) -> None:
    agg: Aggregator = AGGREGATORS[name](["cat", "dog", "zebra"])
    probas = agg.fit_predict_proba([("t", "w1", "cat"), ("t", "w2", "cat")])["t"]
    assert list(probas) == ["cat", "dog", "zebra"]
    assert probas["cat"] > 0.5
    assert probas["zebra"] == pytest.approx(probas["dog"])
    assert probas["zebra"] < probas["cat"]


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_no_answers_fit_to_nothing(name: str) -> None:
    agg: Aggregator = AGGREGATORS[name]()
    assert agg.fit_predict([]) == {}
    assert agg.probas_.shape[0] == 0


@pytest.mark.parametrize("name", sorted(AGGREGATORS))
def test_a_label_outside_the_given_labels_is_rejected(name: str) -> None:
    with pytest.raises(ValueError, match="'horse' is not one of"):
        AGGREGATORS[name](["cat", "dog"]).fit([("t", "w", "horse")])


def test_malformed_answers_are_rejected_with_the_row() -> None:
    with pytest.raises(ValueError, match="answer 1 is not a"):
        MajorityVote().fit([("t", "w", "cat"), ("t", "w2")])
    with pytest.raises(ValueError, match="comparable"):
        MajorityVote().fit([("t", "w", "cat"), (1, "w", "cat")])


def test_reading_fitted_attributes_before_fit_fails() -> None:
    with pytest.raises(NotFittedError):
        _ = MajorityVote().labels_


def test_answers_can_be_an_array() -> None:
    array = np.array(SMALL, dtype=object)
    assert MajorityVote().fit_predict(array) == MajorityVote().fit_predict(SMALL)


def test_encoding_keeps_the_given_label_order() -> None:
    encoded = encode_answers([("t", "w", "dog")], classes=["dog", "cat"])
    assert encoded.classes.tolist() == ["dog", "cat"]
    assert encoded.label_idx.tolist() == [0]


def test_invalid_weights_and_reliabilities_are_refused() -> None:
    with pytest.raises(ValueError, match="w1"):
        WeightedMajorityVote({"w1": -1.0})
    with pytest.raises(ValueError, match="w1"):
        OneCoinVote({"w1": 1.5})


# The one-coin posterior, streaming form.


def test_one_coin_posterior_of_one_answer() -> None:
    posterior = one_coin_posterior([1], [0.8], 3)
    assert posterior.tolist() == pytest.approx([0.1, 0.8, 0.1])


def test_one_coin_posterior_matches_the_formula() -> None:
    r = [0.9, 0.6, 0.7]
    labels = [0, 1, 0]
    k = 3
    joint = [
        math.prod(ri if li == c else (1 - ri) / (k - 1) for ri, li in zip(r, labels, strict=True)) for c in range(k)
    ]
    expected = [p / sum(joint) for p in joint]
    assert one_coin_posterior(labels, r, k).tolist() == pytest.approx(expected)


def test_one_coin_posterior_is_uniform_without_answers_and_certain_with_one_label() -> None:
    assert one_coin_posterior([], [], 4).tolist() == pytest.approx([0.25] * 4)
    assert one_coin_posterior([0, 0], [0.9, 0.2], 1).tolist() == [1.0]


def test_one_coin_posterior_clips_reliabilities_and_stays_finite() -> None:
    # r = 1 and r = 0 would give log(0); clipping keeps both labels possible.
    posterior = one_coin_posterior([0, 1], [1.0, 1.0], 2)
    assert posterior.tolist() == pytest.approx([0.5, 0.5])
    many = one_coin_posterior([0] * 2000, [0.99] * 2000, 3)
    assert np.isfinite(many).all() and many[0] == pytest.approx(1.0)
    assert one_coin_posterior([0], [0.0], 2).tolist() == pytest.approx([0.01, 0.99])


def test_one_coin_posterior_ignores_labels_outside_the_job() -> None:
    assert one_coin_posterior([-1, 0], [0.9, 0.8], 2).tolist() == pytest.approx([0.8, 0.2])


def test_one_coin_posterior_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="n_labels"):
        one_coin_posterior([], [], 0)
    with pytest.raises(ValueError, match="reliabilities"):
        one_coin_posterior([0, 1], [0.5], 2)


def test_one_coin_with_equal_reliabilities_is_majority_vote() -> None:
    answers = [("t1", "a", "x"), ("t1", "b", "y"), ("t1", "c", "y"), ("t2", "a", "x"), ("t2", "b", "y")]
    equal = OneCoinVote({}, default_skill=0.7, labels=["x", "y"]).fit_predict(answers)
    assert equal == MajorityVote(labels=["x", "y"]).fit_predict(answers) == {"t1": "y", "t2": "x"}


# Reliability.


def test_beta_prior_is_the_estimate_without_evidence() -> None:
    prior = BetaReliability()
    assert (prior.alpha, prior.beta) == pytest.approx((2.8, 1.2))
    assert prior.estimate(0, 0) == pytest.approx(0.7)


def test_gold_counts_fully_and_consensus_counts_a_quarter() -> None:
    prior = BetaReliability()
    assert prior.estimate(4, 4) == pytest.approx(6.8 / 8)
    assert prior.estimate(4, 0) == pytest.approx(2.8 / 8)
    assert prior.estimate(0, 0, compared=4, agreed=4) == pytest.approx(3.8 / 5)
    assert prior.estimate(0, 0, compared=4, agreed=0) == pytest.approx(2.8 / 5)


def test_beta_prior_rejects_nonsense() -> None:
    with pytest.raises(ValueError, match="prior_mean"):
        BetaReliability(prior_mean=1.0)
    with pytest.raises(ValueError, match="prior_strength"):
        BetaReliability(prior_strength=0)


def test_gold_reliability_grades_workers_on_gold_tasks() -> None:
    answers = [
        ("g1", "good", "cat"),
        ("g2", "good", "dog"),
        ("g1", "bad", "dog"),
        ("g2", "bad", "cat"),
        ("t1", "good", "cat"),
        ("t1", "bad", "dog"),
    ]
    fitted = GoldReliability().fit(answers, gold={"g1": "cat", "g2": "dog"})
    assert fitted.gold_answers_ == {"good": 2, "bad": 2}
    assert fitted.gold_correct_ == {"good": 2, "bad": 0}
    assert fitted.skills_["good"] == pytest.approx(4.8 / 6)
    assert fitted.skills_["bad"] == pytest.approx(2.8 / 6)
    with_consensus = GoldReliability().fit(answers, gold={"g1": "cat", "g2": "dog"}, consensus={"t1": "cat"})
    assert with_consensus.skills_["good"] == pytest.approx(5.05 / 6.25)
    assert with_consensus.skills_["bad"] == pytest.approx(2.8 / 6.25)


def test_gold_reliability_counts_a_gold_answer_nobody_gave() -> None:
    fitted = GoldReliability().fit([("g", "w", "cat")], gold={"g": "zebra"})
    assert fitted.gold_answers_ == {"w": 1} and fitted.gold_correct_ == {"w": 0}
