"""What every generated dataset of a structured task kind is made of: objects (a PNG or a text)
each with its exact truth, and the pieces the kinds share to make and score them.

A kind's module (:mod:`~quorum.demo.keypoints`, :mod:`~quorum.demo.spans`, ...) draws objects
with :func:`distinct_items`, which names them and keeps their content distinct, so that the
content fingerprint (:func:`~quorum.demo.dataset.content_key`) of whatever a worker is shown
identifies the object and its truth (:meth:`ItemSet.truth_by_key`), exactly as for
:mod:`~quorum.demo.dataset` and :mod:`~quorum.demo.boxes`. Pure: no I/O.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Collection, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import numpy as np
from PIL import Image

from quorum.demo.dataset import content_key

__all__ = ["Item", "ItemSet", "distinct_items", "micro_f1", "noisy_png"]

T = TypeVar("T")


@dataclass(frozen=True)
class Item(Generic[T]):
    """One object: its ``content`` as uploaded (PNG bytes, or a text) and its ``truth``."""

    name: str
    content: bytes | str
    truth: T

    @property
    def data(self) -> bytes:
        """The bytes uploaded: the PNG, or the text in UTF-8."""
        return self.content.encode("utf-8") if isinstance(self.content, str) else self.content

    @property
    def key(self) -> str:
        """Content fingerprint, as :func:`~quorum.demo.dataset.content_key` computes it."""
        return content_key(self.content)


@dataclass(frozen=True)
class ItemSet(Generic[T]):
    """The objects of one job, labeled with the schema ``labels`` (classes, entity types,
    point names, or the allowed pairwise winners)."""

    seed: int
    labels: tuple[str, ...]
    items: list[Item[T]] = field(default_factory=list)

    def truth_by_key(self) -> dict[str, T]:
        """Maps each object's content fingerprint to its truth. Costs one SHA-256 pass over
        every object."""
        return {item.key: item.truth for item in self.items}

    def truth_by_name(self) -> dict[str, T]:
        """Maps each object's name (the name results are exported under) to its truth."""
        return {item.name: item.truth for item in self.items}


def distinct_items(n: int, prefix: str, draw: Callable[[], tuple[bytes | str, T]]) -> list[Item[T]]:
    """``n`` objects from ``draw()`` (content and truth), named ``{prefix}-00000``, ... A draw
    whose content repeats an earlier one's is drawn again, so every fingerprint is unique.
    Raises ValueError for a negative ``n``."""
    if n < 0:
        raise ValueError(f"the number of objects must be >= 0, got {n}")
    seen: set[str] = set()
    items: list[Item[T]] = []
    while len(items) < n:
        content, truth = draw()
        key = content_key(content)
        if key not in seen:
            seen.add(key)
            items.append(Item(f"{prefix}-{len(items):05d}", content, truth))
    return items


def noisy_png(canvas: Image.Image, noise_rng: np.random.Generator, sigma: float = 8.0) -> bytes:
    """``canvas`` with Gaussian pixel noise of standard deviation ``sigma``, as PNG bytes. The
    noise makes every image distinct, as photos are."""
    pixels = np.asarray(canvas.convert("RGB"), dtype=np.float32)
    noise = noise_rng.normal(0.0, sigma, size=pixels.shape).astype(np.float32)
    noisy = np.clip(pixels + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noisy, "RGB").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def micro_f1(pairs: Iterable[tuple[Collection[Hashable], Collection[Hashable]]]) -> dict[str, float]:
    """Precision, recall and F1 pooled over every object, each pair being the set found and the
    true set (labels of a multi-label object, entity spans of a text), and the share of objects
    found exactly. An empty truth and an empty finding count as right (1.0)."""
    true_positives = found = expected = exact = objects = 0
    for got, want in pairs:
        got_set, want_set = set(got), set(want)
        true_positives += len(got_set & want_set)
        found += len(got_set)
        expected += len(want_set)
        exact += got_set == want_set
        objects += 1
    precision = true_positives / found if found else 1.0
    recall = true_positives / expected if expected else 1.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "exact": round(exact / objects, 4) if objects else 0.0,
    }
