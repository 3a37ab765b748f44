"""Hotel reviews for multi-label jobs: each text talks about some of the aspects
``ASPECT_LABELS`` (food, service, ...), and its truth is the set of aspects it mentions.

A review is an opening plus one clause per aspect, each clause built from a subject and a
predicate that belong to one aspect only ("the breakfast tasted bland" is food), so the
truth is exact. About one review in ten mentions no aspect, which a worker answers with the
empty set. Texts are distinct; :func:`generate_reviews` is deterministic for a seed.
:func:`pick_labels` is how a simulated worker answers one.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from quorum.demo.items import ItemSet, distinct_items
from quorum.demo.workers import WorkerProfile

__all__ = ["ASPECT_LABELS", "generate_reviews", "pick_labels"]

# Per aspect: subjects, and predicates that fit every one of its subjects.
_ASPECTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "food": (
        ("the breakfast", "the dinner", "the coffee", "the pastry", "the soup"),
        ("tasted bland", "was delicious", "was served cold", "was freshly made", "was too salty"),
    ),
    "service": (
        ("the staff", "the receptionist", "the waiter", "the concierge", "the porter"),
        ("was friendly", "was rude", "was slow to help", "went out of their way", "ignored us"),
    ),
    "price": (
        ("the room rate", "the bill", "the parking fee", "the minibar", "the late checkout"),
        ("was a bargain", "was far too expensive", "cost more than advertised", "was fairly priced"),
    ),
    "location": (
        ("the neighbourhood", "the walk to the station", "the view from the room", "the street"),
        ("was noisy at night", "was perfect for sightseeing", "felt a bit remote", "was very central"),
    ),
    "cleanliness": (
        ("the bathroom", "the bed linen", "the carpet", "the pool", "the lobby"),
        ("was spotless", "was dusty", "smelled of mould", "was cleaned every day", "looked grimy"),
    ),
}
ASPECT_LABELS: tuple[str, ...] = tuple(_ASPECTS)

_HOTELS = ("Harbour Inn", "Grand Plaza", "Maple Lodge", "Hotel Aurora", "Seaview Rooms", "Old Mill B&B")
_WHEN = ("last week", "in May", "over Easter", "for a conference", "on our honeymoon", "last winter")
_NOTHING = ("we stayed two nights", "we arrived late", "it was a short trip", "we came by train")
_EMPTY_SHARE = 0.1
_MAX_ASPECTS = 3


def generate_reviews(n_texts: int, seed: int) -> ItemSet[frozenset[str]]:
    """``n_texts`` distinct reviews named ``review-00000``, ..., each with the set of aspects it
    mentions as its truth: none for about 10%, else 1 to 3 at even odds. Raises ValueError for
    a negative ``n_texts``. Costs about 10 microseconds per text."""
    rng = random.Random(f"quorum-demo-reviews:{seed}")

    def draw() -> tuple[str, frozenset[str]]:
        opening = f"At the {rng.choice(_HOTELS)} {rng.choice(_WHEN)}"
        if rng.random() < _EMPTY_SHARE:
            return f"{opening} {rng.choice(_NOTHING)}.", frozenset()
        aspects = rng.sample(ASPECT_LABELS, rng.randint(1, _MAX_ASPECTS))
        clauses = [f"{rng.choice(_ASPECTS[a][0])} {rng.choice(_ASPECTS[a][1])}" for a in aspects]
        listed = clauses[0] if len(clauses) == 1 else f"{', '.join(clauses[:-1])} and {clauses[-1]}"
        return f"{opening}, {listed}.", frozenset(aspects)

    return ItemSet(seed, ASPECT_LABELS, distinct_items(n_texts, "review", draw))


def pick_labels(
    profile: WorkerProfile, labels: Sequence[str], truth: frozenset[str] | None, rng: random.Random
) -> frozenset[str]:
    """The labels ``profile`` picks for an object whose true labels are ``truth``.

    An honest worker with error rate ``e`` leaves out each true label with probability
    ``e / 2`` and adds each absent one with probability ``e / 4``. A ``"constant"`` spammer
    always picks the same labels (chosen by its ``constant_choice``); a ``"uniform"`` one picks
    each label at even odds, as does anyone when ``truth`` is None (an object it cannot tell).
    """
    if profile.constant_spammer:
        return frozenset(label for i, label in enumerate(labels) if profile.constant_choice >> i & 1)
    if profile.spammer or truth is None:
        return frozenset(label for label in labels if rng.random() < 0.5)
    error = profile.error_rate
    return frozenset(
        label for label in labels if (rng.random() >= error / 2 if label in truth else rng.random() < error / 4)
    )
