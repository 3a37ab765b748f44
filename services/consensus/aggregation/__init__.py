"""Answer aggregation: pure numpy, no I/O.

Aggregators follow crowd-kit's shape (:mod:`.base`): configured in the constructor,
``fit(answers) -> self``, ``fit_predict`` and ``fit_predict_proba``, fitted attributes with a
trailing underscore. Answers are (task, worker, label) triples.

- :class:`MajorityVote`, :class:`WeightedMajorityVote` (:mod:`.majority_vote`);
- :class:`OneCoinVote` and the streaming :func:`one_coin_posterior` the service evaluates after
  every answer (:mod:`.one_coin`);
- :class:`BetaReliability` and :class:`GoldReliability`, worker reliability from gold answers
  and consensus agreement (:mod:`.reliability`);
- learnt worker models, one per module: :class:`ReliabilityWeightedVote`
  (:mod:`.weighted_vote`), :class:`Wawa` (:mod:`.wawa`), :class:`DawidSkene`
  (:mod:`.dawid_skene`), :class:`OneCoinDawidSkene` (:mod:`.one_coin_ds`), :class:`GLAD`
  (:mod:`.glad`), :class:`MACE` (:mod:`.mace`) and the default, :class:`ShrunkDawidSkene`
  (:mod:`.shrunk_dawid_skene`);
- spam scores per worker and their threshold (:mod:`.spam`).

Every ``fit`` accepts optional known answers ``{task: label}`` (see :mod:`.base`).
"""

from services.consensus.aggregation._encoding import Answers, EncodedAnswers, Known, encode_answers
from services.consensus.aggregation.base import Aggregator, NotFittedError
from services.consensus.aggregation.dawid_skene import DawidSkene
from services.consensus.aggregation.glad import GLAD
from services.consensus.aggregation.mace import MACE
from services.consensus.aggregation.majority_vote import MajorityVote, WeightedMajorityVote
from services.consensus.aggregation.one_coin import (
    MAX_RELIABILITY,
    MIN_RELIABILITY,
    OneCoinVote,
    one_coin_log_posterior,
    one_coin_posterior,
)
from services.consensus.aggregation.one_coin_ds import OneCoinDawidSkene
from services.consensus.aggregation.reliability import BetaReliability, GoldReliability
from services.consensus.aggregation.shrunk_dawid_skene import ShrunkDawidSkene
from services.consensus.aggregation.spam import SPAM_THRESHOLD, accuracy_spam_scores, confusion_spam_scores
from services.consensus.aggregation.wawa import Wawa
from services.consensus.aggregation.weighted_vote import ReliabilityWeightedVote

__all__ = [
    "GLAD",
    "MACE",
    "MAX_RELIABILITY",
    "MIN_RELIABILITY",
    "SPAM_THRESHOLD",
    "Aggregator",
    "Answers",
    "BetaReliability",
    "DawidSkene",
    "EncodedAnswers",
    "GoldReliability",
    "Known",
    "MajorityVote",
    "NotFittedError",
    "OneCoinDawidSkene",
    "OneCoinVote",
    "ReliabilityWeightedVote",
    "ShrunkDawidSkene",
    "Wawa",
    "WeightedMajorityVote",
    "accuracy_spam_scores",
    "confusion_spam_scores",
    "encode_answers",
    "one_coin_log_posterior",
    "one_coin_posterior",
]
