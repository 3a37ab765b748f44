"""Answer aggregation: pure numpy, no I/O.

Aggregators follow crowd-kit's shape (:mod:`.base`): configured in the constructor,
``fit(answers) -> self``, ``fit_predict`` and ``fit_predict_proba``, fitted attributes with a
trailing underscore. Answers are (task, worker, label) triples.

- :class:`MajorityVote`, :class:`WeightedMajorityVote` (:mod:`.majority_vote`);
- :class:`OneCoinVote` and the streaming :func:`one_coin_posterior` the service evaluates after
  every answer (:mod:`.one_coin`);
- :class:`BetaReliability` and :class:`GoldReliability`, worker reliability from gold answers
  and consensus agreement (:mod:`.reliability`).
"""

from services.consensus.aggregation._encoding import Answers, EncodedAnswers, encode_answers
from services.consensus.aggregation.base import Aggregator, NotFittedError
from services.consensus.aggregation.majority_vote import MajorityVote, WeightedMajorityVote
from services.consensus.aggregation.one_coin import (
    MAX_RELIABILITY,
    MIN_RELIABILITY,
    OneCoinVote,
    one_coin_log_posterior,
    one_coin_posterior,
)
from services.consensus.aggregation.reliability import BetaReliability, GoldReliability

__all__ = [
    "MAX_RELIABILITY",
    "MIN_RELIABILITY",
    "Aggregator",
    "Answers",
    "BetaReliability",
    "EncodedAnswers",
    "GoldReliability",
    "MajorityVote",
    "NotFittedError",
    "OneCoinVote",
    "WeightedMajorityVote",
    "encode_answers",
    "one_coin_log_posterior",
    "one_coin_posterior",
]
