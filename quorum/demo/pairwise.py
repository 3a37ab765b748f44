"""Pairs of short reviews for pairwise jobs: "which review is more positive?", where one review
of the pair is positive and the other neutral or negative, or one neutral and the other
negative, so the better item is known.

A pair is the JSON object ingest expects, ``{"a": ..., "b": ...}`` (the reviews of
:func:`quorum.demo.dataset.sentiment_text`), and its truth is the winner, ``"a"`` or ``"b"``
(at even odds); there are no ties. Pairs are distinct; :func:`generate_pairs` is
deterministic for a seed. A simulated worker picks the winner with
:func:`quorum.demo.workers.choose_label` over the allowed winners: an honest worker flips the
choice with probability ``1 - accuracy``, a spammer answers without reading.
"""

from __future__ import annotations

import json
import random

from quorum.demo.dataset import sentiment_text
from quorum.demo.items import ItemSet, distinct_items

__all__ = ["PAIRWISE_QUESTION", "generate_pairs"]

PAIRWISE_QUESTION = "Which review is more positive?"
# (better, worse) sentiments of a pair.
_ORDERS = (("positive", "negative"), ("positive", "neutral"), ("neutral", "negative"))


def generate_pairs(n_pairs: int, seed: int) -> ItemSet[str]:
    """``n_pairs`` distinct pairs named ``pair-00000``, ..., each with its winner (``"a"`` or
    ``"b"``) as its truth; the labels are the winners a job without ties allows. Raises
    ValueError for a negative ``n_pairs``. Costs about 40 microseconds per pair."""
    rng = random.Random(f"quorum-demo-pairs:{seed}")

    def draw() -> tuple[str, str]:
        better, worse = (sentiment_text(label, rng) for label in rng.choice(_ORDERS))
        winner = rng.choice(("a", "b"))
        a, b = (better, worse) if winner == "a" else (worse, better)
        return json.dumps({"a": a, "b": b}, ensure_ascii=False), winner

    return ItemSet(seed, ("a", "b"), distinct_items(n_pairs, "pair", draw))
