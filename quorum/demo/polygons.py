"""Filled polygons for segmentation jobs: up to three coloured shapes (three to six vertices)
on a noisy background, each a region whose class is its colour; the truth is each shape's
vertices.

Vertices are in the protocol's convention (``common.proto``, ``Polygon``): relative to the
image, from its top-left corner. Shapes sit in rectangles placed as for bounding boxes
(:func:`quorum.demo.boxes.place_rectangles`), so they never overlap; about one image in ten
holds none. Consensus fuses a segmentation's polygons into masks on a grid over the image,
so answers and fused masks are compared on such a grid: :func:`polygon_mask` rasterises
polygons the way consensus does (Pillow, boundary included). Images are distinct;
:func:`generate_shapes` is deterministic for a seed in a given environment.
:func:`draw_polygons` is how a simulated worker answers one.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from quorum.demo.boxes import BOX_IMAGE_SIZE, BOX_LABELS, PALETTE, place_rectangles
from quorum.demo.items import ItemSet, distinct_items, noisy_png
from quorum.demo.workers import WorkerProfile, noticed_label

__all__ = [
    "MASK_GRID",
    "SHAPE_LABELS",
    "TruePolygon",
    "class_ious",
    "draw_polygons",
    "generate_shapes",
    "mask_from_counts",
    "polygon_mask",
    "polygons_match",
]

Mask = npt.NDArray[np.bool_]

SHAPE_LABELS = BOX_LABELS
# Consensus rasterises polygons on a MASK_GRID x MASK_GRID grid over the image.
MASK_GRID = 256
_EMPTY_SHARE = 0.1
_MAX_OBJECTS = 3
# An honest worker misplaces each vertex by a normal error of this times its error rate times
# the shape's width (x) or height (y), as box edges are misplaced.
_VERTEX_JITTER = 0.3
# Mask IoU an answer needs, per class, to agree with the truth: consensus's threshold.
_IOU_AGREES = 0.75


@dataclass(frozen=True)
class TruePolygon:
    """A region: its class and its vertices ``(x, y)`` in order, relative to the image."""

    label: str
    points: tuple[tuple[float, float], ...]


def generate_shapes(n_images: int, seed: int) -> ItemSet[tuple[TruePolygon, ...]]:
    """``n_images`` distinct PNGs of ``BOX_IMAGE_SIZE`` pixels square named ``shapes-00000``,
    ..., each with 0 to 3 non-overlapping polygons (about 10% hold none). Raises ValueError
    for a negative ``n_images``. Costs about 1.5 ms per image."""
    rng = random.Random(f"quorum-demo-shapes:{seed}")
    noise_rng = np.random.default_rng(rng.getrandbits(64))
    size = BOX_IMAGE_SIZE

    def draw() -> tuple[bytes, tuple[TruePolygon, ...]]:
        wanted = 0 if rng.random() < _EMPTY_SHARE else rng.randint(1, _MAX_OBJECTS)
        shapes = tuple(_shape(label, rect, rng) for label, rect in place_rectangles(wanted, rng))
        grey = rng.randint(150, 230)
        canvas = Image.new("RGB", (size, size), (grey, grey, grey))
        pen = ImageDraw.Draw(canvas)
        for shape in shapes:
            pen.polygon([(x * size, y * size) for x, y in shape.points], fill=PALETTE[shape.label])
        return noisy_png(canvas, noise_rng), shapes

    return ItemSet(seed, SHAPE_LABELS, distinct_items(n_images, "shapes", draw))


def _shape(label: str, rect: tuple[int, int, int, int], rng: random.Random) -> TruePolygon:
    """A polygon of 3 to 6 vertices around the rectangle's centre, within it: the vertices go
    round in order of angle, so it never crosses itself."""
    x0, y0, x1, y1 = rect
    cx, cy, rx, ry = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2, (y1 - y0) / 2
    k = rng.randint(3, 6)
    start = rng.uniform(0, 2 * math.pi)
    points = []
    for i in range(k):
        angle = start + (i + rng.uniform(-0.3, 0.3)) * 2 * math.pi / k
        reach = rng.uniform(0.7, 1.0)
        x, y = cx + reach * rx * math.cos(angle), cy + reach * ry * math.sin(angle)
        points.append((x / BOX_IMAGE_SIZE, y / BOX_IMAGE_SIZE))
    return TruePolygon(label, tuple(points))


def draw_polygons(
    profile: WorkerProfile, labels: Sequence[str], truth: Sequence[TruePolygon] | None, rng: random.Random
) -> tuple[TruePolygon, ...]:
    """The polygons ``profile`` draws on an image whose regions are ``truth``, for a job asking
    for the classes ``labels``; every vertex within the image.

    An honest worker with error rate ``e`` misses each region with probability ``e / 2``, names
    another class with probability ``e / 3`` and misplaces each vertex by a normal error of
    ``0.3 * e`` times the region's width (x) and height (y). Regions of a class outside
    ``labels`` are not drawn. A ``"constant"`` spammer draws nothing; a ``"uniform"`` one draws
    0 to 2 random triangles, as does anyone when ``truth`` is None. Raises ValueError when
    ``labels`` is empty.
    """
    if not labels:
        raise ValueError("a task needs at least one label")
    if profile.constant_spammer:
        return ()
    if profile.spammer or truth is None:
        return tuple(
            TruePolygon(rng.choice(labels), tuple((rng.random(), rng.random()) for _ in range(3)))
            for _ in range(rng.randint(0, 2))
        )
    error = profile.error_rate
    drawn: list[TruePolygon] = []
    for region in truth:
        label = noticed_label(profile, labels, region.label, rng)
        if label is None:
            continue
        xs, ys = [x for x, _ in region.points], [y for _, y in region.points]
        sigma_x, sigma_y = _VERTEX_JITTER * error * (max(xs) - min(xs)), _VERTEX_JITTER * error * (max(ys) - min(ys))
        points = tuple((_clamp(x + rng.gauss(0, sigma_x)), _clamp(y + rng.gauss(0, sigma_y))) for x, y in region.points)
        drawn.append(TruePolygon(label, points))
    return tuple(drawn)


def _clamp(value: float) -> float:
    return min(1.0, max(0.0, value))


def polygon_mask(polygons: Sequence[TruePolygon], label: str, grid: tuple[int, int] = (MASK_GRID, MASK_GRID)) -> Mask:
    """The cells of a ``grid`` (width, height) over the image inside any polygon of class
    ``label``, as a (height, width) boolean array; rasterised with Pillow as consensus does.
    Costs O(width * height)."""
    width, height = grid
    canvas = Image.new("1", (width, height), 0)
    pen = ImageDraw.Draw(canvas)
    for polygon in polygons:
        if polygon.label == label:
            pen.polygon([(x * width, y * height) for x, y in polygon.points], fill=1)
    return np.asarray(canvas, dtype=bool)


def mask_from_counts(counts: Sequence[int], width: int, height: int) -> Mask:
    """Decodes a fused mask (``common.proto``, ``Mask``): row-major runs alternating
    background and foreground, background first. Raises ValueError when the runs do not
    cover ``width * height`` cells."""
    cells = np.repeat(np.arange(len(counts)) % 2 == 1, np.asarray(counts, dtype=np.int64))
    if cells.size != width * height:
        raise ValueError(f"mask runs cover {cells.size} cells, not {width} x {height}")
    return cells.reshape(height, width)


def _iou(a: Mask, b: Mask) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else 1.0


def class_ious(found: Mapping[str, Mask], truth: Sequence[TruePolygon]) -> tuple[dict[str, float], list[str]]:
    """IoU, per class of ``truth``, of the found mask of that class (``found``: class ->
    (height, width) mask, e.g. fused masks) with the true regions rasterised on the same grid;
    0.0 for a class not found. Also the classes found that are not in ``truth`` (spurious).
    Costs O(cells) per class."""
    ious: dict[str, float] = {}
    for label in sorted({p.label for p in truth}):
        mask = found.get(label)
        if mask is None:
            ious[label] = 0.0
            continue
        height, width = mask.shape
        ious[label] = _iou(mask, polygon_mask(truth, label, (width, height)))
    spurious = sorted(label for label, mask in found.items() if label not in ious and mask.any())
    return ious, spurious


def polygons_match(drawn: Sequence[TruePolygon], truth: Sequence[TruePolygon]) -> bool:
    """Whether ``drawn`` agrees with ``truth`` as consensus tells agreement: every class either
    draws or the truth holds has masks at IoU >= 0.75."""
    labels = {p.label for p in drawn} | {p.label for p in truth}
    return all(_iou(polygon_mask(drawn, label), polygon_mask(truth, label)) >= _IOU_AGREES for label in labels)
