"""Short news sentences for named-entity jobs: people, places and organisations put into
templates, so the character span and type of every entity is known exactly.

Spans are in the protocol's convention (``common.proto``, ``Span``): characters
``[start, end)`` of the text, in code points (Python string indices). Templates keep at least
one word between two entities, and about one sentence in ten holds none. Texts are distinct;
:func:`generate_sentences` is deterministic for a seed. :func:`mark_spans` is how a simulated
worker answers one.
"""

from __future__ import annotations

import random
import re
import string
from collections.abc import Sequence
from dataclasses import dataclass

from quorum.demo.items import ItemSet, distinct_items
from quorum.demo.workers import WorkerProfile, noticed_label

__all__ = ["ENTITY_LABELS", "TrueSpan", "generate_sentences", "mark_spans"]

_ENTITIES: dict[str, tuple[str, ...]] = {
    "person": (
        "Anna Berg", "Tom Okafor", "Maria Lopez", "Kenji Sato", "Olga", "Peter Novak", "Leila Haddad",
        "Sam", "Ines Duarte", "Ravi Menon", "Chloe Martin", "Jonas",
    ),
    "place": (
        "Lisbon", "New York", "Oslo", "Cape Town", "Kyoto", "Rio de Janeiro", "Nairobi", "Lyon",
        "Santiago", "Hamburg", "Perth", "Quebec City",
    ),
    "organisation": (
        "Globex", "Northwind Traders", "Initech", "Blue Harbor Bank", "Umbrella Labs", "Acme",
        "the Red Cross", "Stark Industries", "Vandelay Imports", "Hooli",
    ),
}  # fmt: skip
ENTITY_LABELS: tuple[str, ...] = tuple(_ENTITIES)

_TEMPLATES = (
    "{person} moved from {place} to {place} last year.",
    "{person} joined {organisation} in {place}.",
    "{organisation} opened a new office in {place} on Monday.",
    "{person} and {person} met at the {organisation} stand.",
    "The report by {organisation} was praised by {person}.",
    "{person} flew to {place} for the final.",
    "Shares of {organisation} rose after the news from {place}.",
    "{person} called {person} about the {organisation} contract.",
    "According to {person}, {organisation} will hire in {place}.",
    "Rain is expected in {place} this weekend.",
)
_NO_ENTITY = (
    "The meeting was moved to Thursday afternoon.",
    "Nobody answered the phone this morning.",
    "Prices rose slightly in the second quarter.",
)
_EMPTY_SHARE = 0.1
_WORD = re.compile(r"\w+")


@dataclass(frozen=True, order=True)
class TrueSpan:
    """An entity: characters ``[start, end)`` of the text and its type."""

    start: int
    end: int
    label: str


def generate_sentences(n_texts: int, seed: int) -> ItemSet[tuple[TrueSpan, ...]]:
    """``n_texts`` distinct sentences named ``news-00000``, ..., each with its entity spans in
    order as its truth (none for about 10%). An entity appears at most once per sentence.
    Raises ValueError for a negative ``n_texts``. Costs about 20 microseconds per text."""
    rng = random.Random(f"quorum-demo-news:{seed}")
    formatter = string.Formatter()

    def draw() -> tuple[str, tuple[TrueSpan, ...]]:
        if rng.random() < _EMPTY_SHARE:
            return rng.choice(_NO_ENTITY), ()
        text, spans, used = "", [], set()
        for literal, kind, _, _ in formatter.parse(rng.choice(_TEMPLATES)):
            text += literal
            if kind:
                name = rng.choice([e for e in _ENTITIES[kind] if e not in used])
                used.add(name)
                spans.append(TrueSpan(len(text), len(text) + len(name), kind))
                text += name
        # A sentence starting with a lower-case entity ("the Red Cross") starts upper-case.
        return text[0].upper() + text[1:], tuple(spans)

    return ItemSet(seed, ENTITY_LABELS, distinct_items(n_texts, "news", draw))


def mark_spans(
    profile: WorkerProfile,
    labels: Sequence[str],
    truth: Sequence[TrueSpan] | None,
    text: str,
    rng: random.Random,
) -> tuple[TrueSpan, ...]:
    """The entity spans ``profile`` marks in ``text``, whose true entities are ``truth``, for a
    job asking for the types ``labels``; non-overlapping, within the text, in order.

    An honest worker with error rate ``e`` misses each entity with probability ``e / 2``, gives
    it another type with probability ``e / 3`` and gets its boundary wrong with probability
    ``e / 4``: it leaves off the last word of a several-word entity, or takes in the word before
    a one-word one. Entities of a type outside ``labels`` are not marked. A ``"constant"``
    spammer marks nothing; a ``"uniform"`` one marks 0 to 2 random words with random types, as
    does anyone when ``truth`` is None. Raises ValueError when ``labels`` is empty.
    """
    if not labels:
        raise ValueError("a task needs at least one entity type")
    if profile.constant_spammer:
        return ()
    words = [TrueSpan(m.start(), m.end(), "") for m in _WORD.finditer(text)]
    if profile.spammer or truth is None:
        picked = rng.sample(words, min(len(words), rng.randint(0, 2)))
        return tuple(sorted(TrueSpan(w.start, w.end, rng.choice(labels)) for w in picked))
    error = profile.error_rate
    marked: list[TrueSpan] = []
    for span in truth:
        label = noticed_label(profile, labels, span.label, rng)
        if label is None:
            continue
        start, end = span.start, span.end
        if rng.random() < error / 4:
            inside = [w for w in words if start <= w.start and w.end <= end]
            before = [w for w in words if w.end <= start and (not marked or w.start >= marked[-1].end)]
            if len(inside) > 1:
                end = inside[-2].end
            elif before:
                start = before[-1].start
        marked.append(TrueSpan(start, end, label))
    return tuple(marked)
