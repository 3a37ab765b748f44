"""Synthetic images with known objects for bounding-box jobs: coloured rectangles on a noisy
background, each rectangle an object whose class is its colour.

Boxes are in the protocol's convention (``common.proto``, ``Box``): top-left corner ``x, y``
and size ``w, h`` relative to the image, x from the left edge, y from the top. Rectangles are
drawn on whole pixels, so a true box is exact: its edges are the rectangle's pixel edges.
Rectangles of one image never overlap (they keep a gap of a few pixels), so every object is
plainly visible. About one image in ten holds no object, which a worker answers with no box.

Like :mod:`quorum.demo.dataset`, nothing is downloaded and :func:`generate_boxes` is
deterministic for a seed in a given environment; the content fingerprint
(:func:`~quorum.demo.dataset.content_key`) of an image identifies it, so the simulated crowd
looks up its true boxes with :meth:`BoxDataset.truth_by_key`, and draws its own with
:func:`draw_boxes`.

Gold is not generated: ingest accepts gold objects in single-label classification jobs only.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, ImageDraw

from quorum.demo.dataset import content_key
from quorum.demo.items import noisy_png
from quorum.demo.workers import WorkerProfile, noticed_label

__all__ = [
    "BOX_IMAGE_SIZE",
    "BOX_LABELS",
    "PALETTE",
    "BoxDataset",
    "BoxImage",
    "TrueBox",
    "box_iou",
    "boxes_match",
    "draw_boxes",
    "generate_boxes",
    "match_boxes",
    "place_rectangles",
]

# Colour names and the RGB each is drawn in: far apart in hue, so the class is unambiguous.
PALETTE: dict[str, tuple[int, int, int]] = {
    "red": (214, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (235, 200, 30),
}
BOX_LABELS: tuple[str, ...] = tuple(PALETTE)
BOX_IMAGE_SIZE = 96

# Side of a rectangle in pixels, and the free pixels kept between two rectangles.
_MIN_SIDE, _MAX_SIDE = 18, 48
_GAP = 4
_NOISE_SIGMA = 8.0
_EMPTY_SHARE = 0.1
# How far an honest worker misplaces a box edge: a normal error whose standard deviation is
# this times the worker's error rate (1 - accuracy) times the box's side. The mean worker
# (accuracy 0.86) is off by about 4% of the side per edge, the worst (0.55) by about 13%.
_EDGE_JITTER = 0.3
# Smallest side of a drawn box, relative to the image: tasking refuses an empty box.
_MIN_BOX_SIDE = 0.01


@dataclass(frozen=True)
class TrueBox:
    """One object: its class and its box relative to the image (``x + w <= 1``, ``y + h <= 1``)."""

    label: str
    x: float
    y: float
    w: float
    h: float


@dataclass(frozen=True)
class BoxImage:
    """A PNG (``data``) and the objects in it (``boxes``, possibly none)."""

    name: str
    data: bytes
    boxes: tuple[TrueBox, ...]

    @property
    def key(self) -> str:
        """Content fingerprint, as :func:`~quorum.demo.dataset.content_key` computes it."""
        return content_key(self.data)


@dataclass(frozen=True)
class BoxDataset:
    """Images to label with boxes of the classes ``labels``."""

    seed: int
    labels: tuple[str, ...]
    images: list[BoxImage] = field(default_factory=list)

    def truth_by_key(self) -> dict[str, tuple[TrueBox, ...]]:
        """Maps each image's content fingerprint to its true boxes. Costs one SHA-256 pass
        over every image."""
        return {image.key: image.boxes for image in self.images}


def box_iou(a: TrueBox, b: TrueBox) -> float:
    """Intersection over union of two boxes, ignoring their labels; 0.0 when both are empty."""
    width = min(a.x + a.w, b.x + b.w) - max(a.x, b.x)
    height = min(a.y + a.h, b.y + b.h) - max(a.y, b.y)
    inter = max(0.0, width) * max(0.0, height)
    union = a.w * a.h + b.w * b.h - inter
    return inter / union if union > 0 else 0.0


def match_boxes(found: Sequence[TrueBox], truth: Sequence[TrueBox]) -> list[float]:
    """Pairs each true box with at most one found box of the same label, greedily by
    decreasing IoU, and returns per true box (in ``truth``'s order) the IoU of its pair; 0.0
    for a true box left without one. Costs O(len(found) * len(truth)) IoUs and a sort."""
    pairs = sorted(
        ((box_iou(f, t), i, j) for i, t in enumerate(truth) for j, f in enumerate(found) if f.label == t.label),
        reverse=True,
    )
    ious = [0.0] * len(truth)
    paired_truth: set[int] = set()
    paired_found: set[int] = set()
    for iou, i, j in pairs:
        if iou > 0 and i not in paired_truth and j not in paired_found:
            ious[i] = iou
            paired_truth.add(i)
            paired_found.add(j)
    return ious


def boxes_match(found: Sequence[TrueBox], truth: Sequence[TrueBox], threshold: float = 0.5) -> bool:
    """Whether ``found`` holds exactly the objects of ``truth``: as many boxes, each true box
    paired (:func:`match_boxes`) with one of the same label at IoU >= ``threshold`` (0.5 is the
    PASCAL VOC criterion for a detection)."""
    return len(found) == len(truth) and all(iou >= threshold for iou in match_boxes(found, truth))


def generate_boxes(n_images: int, seed: int, *, max_objects: int = 3) -> BoxDataset:
    """Generates ``n_images`` distinct images of ``BOX_IMAGE_SIZE`` pixels square, each with
    0 to ``max_objects`` non-overlapping coloured rectangles (about 10% hold none; the others
    hold 1 to ``max_objects`` at even odds, fewer when the rectangles drawn do not fit).
    Images are named ``boxes-00000``, ``boxes-00001``, ...

    Raises ValueError for a negative ``n_images`` or a ``max_objects`` outside [1, 6]. Costs
    about 3 ms per image on a busy 2-core machine (400 images in 1.15 s), most of it PNG
    encoding of the noise; images average 19 KB.
    """
    if n_images < 0:
        raise ValueError(f"n_images must be >= 0, got {n_images}")
    if not 1 <= max_objects <= 6:
        raise ValueError(f"max_objects must be in [1, 6], got {max_objects}")
    rng = random.Random(f"quorum-demo-boxes:{seed}")
    noise_rng = np.random.default_rng(rng.getrandbits(64))
    seen: set[str] = set()
    images: list[BoxImage] = []
    while len(images) < n_images:
        wanted = 0 if rng.random() < _EMPTY_SHARE else rng.randint(1, max_objects)
        rects = place_rectangles(wanted, rng)
        data = _render(rects, rng, noise_rng)
        key = content_key(data)
        # The background noise makes a repeat practically impossible; this only guarantees it.
        if key in seen:
            continue
        seen.add(key)
        size = BOX_IMAGE_SIZE
        boxes = tuple(
            TrueBox(label, x0 / size, y0 / size, (x1 - x0) / size, (y1 - y0) / size)
            for label, (x0, y0, x1, y1) in sorted(rects, key=lambda r: (r[1][1], r[1][0]))
        )
        images.append(BoxImage(f"boxes-{len(images):05d}", data, boxes))
    return BoxDataset(seed=seed, labels=BOX_LABELS, images=images)


def draw_boxes(
    profile: WorkerProfile, labels: Sequence[str], truth: Sequence[TrueBox] | None, rng: random.Random
) -> list[TrueBox]:
    """The boxes ``profile`` draws on an image whose objects are ``truth``, for a job asking
    for the classes ``labels``.

    An honest worker with error rate ``e = 1 - accuracy`` misses each object with probability
    ``e / 2``, names another class with probability ``e / 3`` and misplaces each edge by a
    normal error of ``0.3 * e`` times the box's side; boxes stay within the image. Objects of
    a class outside ``labels`` are not drawn. A ``"constant"`` spammer never draws anything; a
    ``"uniform"`` one draws 0 to 2 random boxes, as does anyone when ``truth`` is None (an
    image it cannot tell). Raises ValueError when ``labels`` is empty.
    """
    if not labels:
        raise ValueError("a task needs at least one label")
    if profile.constant_spammer:
        return []
    if profile.spammer or truth is None:
        return [_random_box(labels, rng) for _ in range(rng.randint(0, 2))]
    error = profile.error_rate
    drawn: list[TrueBox] = []
    for box in truth:
        label = noticed_label(profile, labels, box.label, rng)
        if label is None:
            continue
        sigma_x, sigma_y = _EDGE_JITTER * error * box.w, _EDGE_JITTER * error * box.h
        x0, x1 = _edges(box.x + rng.gauss(0, sigma_x), box.x + box.w + rng.gauss(0, sigma_x))
        y0, y1 = _edges(box.y + rng.gauss(0, sigma_y), box.y + box.h + rng.gauss(0, sigma_y))
        drawn.append(TrueBox(label, x0, y0, x1 - x0, y1 - y0))
    return drawn


def _edges(low: float, high: float) -> tuple[float, float]:
    """Two edges of a box in order, within [0, 1] and at least ``_MIN_BOX_SIDE`` apart."""
    low, high = sorted((min(1.0, max(0.0, low)), min(1.0, max(0.0, high))))
    if high - low < _MIN_BOX_SIDE:
        low = min(low, 1.0 - _MIN_BOX_SIDE)
        high = low + _MIN_BOX_SIDE
    return low, high


def _random_box(labels: Sequence[str], rng: random.Random) -> TrueBox:
    x0, x1 = _edges(rng.random(), rng.random())
    y0, y1 = _edges(rng.random(), rng.random())
    return TrueBox(rng.choice(labels), x0, y0, x1 - x0, y1 - y0)


_Rect = tuple[str, tuple[int, int, int, int]]


def place_rectangles(wanted: int, rng: random.Random) -> list[_Rect]:
    """Up to ``wanted`` rectangles ``(label, (x0, y0, x1, y1))`` of a random colour of
    ``PALETTE``, in pixels of a ``BOX_IMAGE_SIZE`` image, end-exclusive, apart by at least a few
    pixels; a rectangle that finds no room in 50 tries is left out."""
    placed: list[_Rect] = []
    for _ in range(wanted):
        for _ in range(50):
            w, h = rng.randint(_MIN_SIDE, _MAX_SIDE), rng.randint(_MIN_SIDE, _MAX_SIDE)
            x0, y0 = rng.randint(0, BOX_IMAGE_SIZE - w), rng.randint(0, BOX_IMAGE_SIZE - h)
            rect = (x0, y0, x0 + w, y0 + h)
            if all(_apart(rect, other) for _, other in placed):
                placed.append((rng.choice(BOX_LABELS), rect))
                break
    return placed


def _apart(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[2] + _GAP <= b[0] or b[2] + _GAP <= a[0] or a[3] + _GAP <= b[1] or b[3] + _GAP <= a[1]


def _render(rects: list[_Rect], rng: random.Random, noise_rng: np.random.Generator) -> bytes:
    grey = rng.randint(150, 230)
    canvas = Image.new("RGB", (BOX_IMAGE_SIZE, BOX_IMAGE_SIZE), (grey, grey, grey))
    draw = ImageDraw.Draw(canvas)
    for label, (x0, y0, x1, y1) in rects:
        # Pillow's rectangle includes its end coordinates; the boxes are end-exclusive.
        draw.rectangle((x0, y0, x1 - 1, y1 - 1), fill=PALETTE[label])
    return noisy_png(canvas, noise_rng, _NOISE_SIGMA)
