"""Stick figures for keypoint jobs: one figure per image, its head, hands and feet marked with
a coloured dot each, some of them hidden behind a grey patch; the truth is where every point
is and whether it is visible.

Points are in the protocol's convention (``common.proto``, ``Keypoint``): ``x, y`` relative
to the image, from its top-left corner. "Left" and "right" are the image's left and right.
A worker places the visible points only, each once. Images are distinct;
:func:`generate_figures` is deterministic for a seed in a given environment.
:func:`place_keypoints` is how a simulated worker answers one, :func:`keypoint_similarity`
(COCO's object keypoint similarity) how an answer is scored.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from quorum.demo.items import ItemSet, distinct_items, noisy_png
from quorum.demo.workers import WorkerProfile

__all__ = [
    "KEYPOINT_IMAGE_SIZE",
    "KEYPOINT_LABELS",
    "KEYPOINT_SIGMA",
    "Figure",
    "Keypoint",
    "generate_figures",
    "keypoint_similarity",
    "keypoints_match",
    "place_keypoints",
]

# Point names and the colour of each one's dot.
_DOTS: dict[str, tuple[int, int, int]] = {
    "head": (214, 40, 40),
    "left_hand": (40, 170, 60),
    "right_hand": (40, 80, 220),
    "left_foot": (235, 160, 30),
    "right_foot": (160, 40, 200),
}
KEYPOINT_LABELS: tuple[str, ...] = tuple(_DOTS)
KEYPOINT_IMAGE_SIZE = 96
# Per-point falloff of the similarity (k = 2 * sigma, relative to the object's scale): the
# consensus service's default, as COCO's sigmas are for person keypoints only.
KEYPOINT_SIGMA = 0.05
# Smallest object scale, relative to the image: as in consensus, a tenth of the image.
_MIN_SCALE = 0.1
# Similarity an answer needs to agree with the truth: COCO's strict (AP75) threshold.
_OKS_AGREES = 0.75

# Torso length in pixels; every other limb is a multiple of it.
_MIN_TORSO, _MAX_TORSO = 16.0, 22.0
_MARGIN = 6.0
_DOT_RADIUS = 2.5
_HIDE_SHARE, _MAX_HIDDEN = 0.2, 2
# An honest worker misplaces a point by a normal error, per coordinate, of this times its
# error rate times the figure's scale: about 3.5% of the scale for the mean worker (0.86).
_POINT_JITTER = 0.25


@dataclass(frozen=True)
class Keypoint:
    """A named point relative to the image."""

    label: str
    x: float
    y: float


@dataclass(frozen=True)
class Figure:
    """The truth of one image: the visible ``points``, the ``hidden`` ones, and the figure's
    ``scale`` (square root of the area its points span, at least 0.1), which OKS divides by."""

    points: tuple[Keypoint, ...]
    hidden: tuple[Keypoint, ...]
    scale: float


def generate_figures(n_images: int, seed: int) -> ItemSet[Figure]:
    """``n_images`` distinct PNGs of ``KEYPOINT_IMAGE_SIZE`` pixels square named
    ``figure-00000``, ..., each a stick figure in a random pose whose points are each hidden
    with probability 0.2 (at most two per figure). Raises ValueError for a negative
    ``n_images``. Costs about 1 ms per image."""
    rng = random.Random(f"quorum-demo-figures:{seed}")
    noise_rng = np.random.default_rng(rng.getrandbits(64))

    def draw() -> tuple[bytes, Figure]:
        torso = rng.uniform(_MIN_TORSO, _MAX_TORSO)
        offsets = _pose(torso, rng)
        xs = [x for x, _ in offsets.values()]
        ys = [y for _, y in offsets.values()]
        # The head's circle reaches above its point.
        top = offsets["head"][1] - 0.3 * torso
        hip = (
            rng.uniform(_MARGIN - min(xs), KEYPOINT_IMAGE_SIZE - _MARGIN - max(xs)),
            rng.uniform(_MARGIN - top, KEYPOINT_IMAGE_SIZE - _MARGIN - max(ys)),
        )
        at = {name: (hip[0] + dx, hip[1] + dy) for name, (dx, dy) in offsets.items()}
        candidates = [name for name in KEYPOINT_LABELS if rng.random() < _HIDE_SHARE]
        hidden = set(rng.sample(candidates, min(len(candidates), _MAX_HIDDEN)))
        data = _render(at, hip, torso, hidden, rng, noise_rng)
        size = KEYPOINT_IMAGE_SIZE
        points = [Keypoint(name, x / size, y / size) for name, (x, y) in at.items()]
        area = (max(xs) - min(xs)) * (max(ys) - min(ys)) / size**2
        return data, Figure(
            points=tuple(p for p in points if p.label not in hidden),
            hidden=tuple(p for p in points if p.label in hidden),
            scale=max(math.sqrt(area), _MIN_SCALE),
        )

    return ItemSet(seed, KEYPOINT_LABELS, distinct_items(n_images, "figure", draw))


def _pose(torso: float, rng: random.Random) -> dict[str, tuple[float, float]]:
    """Each point's offset from the hip in pixels (x right, y down). Any two points are at least
    half a torso (8 pixels) apart along x or y, so the patch hiding one never hides another."""
    neck_y = -torso
    return {
        "head": (0.0, -1.55 * torso),
        "left_hand": (-rng.uniform(0.5, 0.95) * torso, neck_y + rng.uniform(-0.6, 0.8) * torso),
        "right_hand": (rng.uniform(0.5, 0.95) * torso, neck_y + rng.uniform(-0.6, 0.8) * torso),
        "left_foot": (-rng.uniform(0.25, 0.6) * torso, rng.uniform(0.9, 1.2) * torso),
        "right_foot": (rng.uniform(0.25, 0.6) * torso, rng.uniform(0.9, 1.2) * torso),
    }


def _render(
    at: dict[str, tuple[float, float]],
    hip: tuple[float, float],
    torso: float,
    hidden: set[str],
    rng: random.Random,
    noise_rng: np.random.Generator,
) -> bytes:
    grey = rng.randint(190, 240)
    canvas = Image.new("RGB", (KEYPOINT_IMAGE_SIZE, KEYPOINT_IMAGE_SIZE), (grey, grey, grey))
    draw = ImageDraw.Draw(canvas)
    ink = (40, 40, 40)
    neck = (hip[0], hip[1] - torso)
    for start, end in ((neck, hip), (neck, at["left_hand"]), (neck, at["right_hand"])):
        draw.line((start, end), fill=ink, width=2)
    for foot in ("left_foot", "right_foot"):
        draw.line((hip, at[foot]), fill=ink, width=2)
    hx, hy = at["head"]
    r = 0.3 * torso
    draw.line((neck, (hx, hy + r)), fill=ink, width=2)
    draw.ellipse((hx - r, hy - r, hx + r, hy + r), outline=ink, width=2)
    for name, (x, y) in at.items():
        draw.ellipse((x - _DOT_RADIUS, y - _DOT_RADIUS, x + _DOT_RADIUS, y + _DOT_RADIUS), fill=_DOTS[name])
    for name in hidden:
        x, y = at[name]
        draw.rectangle((x - 5, y - 5, x + 5, y + 5), fill=(120, 120, 120))
    return noisy_png(canvas, noise_rng)


def place_keypoints(
    profile: WorkerProfile, labels: Sequence[str], truth: Figure | None, rng: random.Random
) -> tuple[Keypoint, ...]:
    """The points ``profile`` places on an image whose figure is ``truth``, for a job asking
    for the points ``labels``; each name at most once, within the image, in ``labels``' order.

    An honest worker with error rate ``e`` misses each visible point with probability ``e / 3``,
    misplaces each by a normal error per coordinate of ``0.25 * e`` times the figure's scale,
    swaps a left and a right point with probability ``e / 4``, and places a hidden point where
    it guesses it is with probability ``e / 3``. A ``"constant"`` spammer places nothing; a
    ``"uniform"`` one places each point at even odds anywhere, as does anyone when ``truth`` is
    None. Raises ValueError when ``labels`` is empty.
    """
    if not labels:
        raise ValueError("a task needs at least one keypoint name")
    if profile.constant_spammer:
        return ()
    if profile.spammer or truth is None:
        return tuple(Keypoint(name, rng.random(), rng.random()) for name in labels if rng.random() < 0.5)
    error = profile.error_rate
    sigma = _POINT_JITTER * error * truth.scale
    placed: dict[str, tuple[float, float]] = {}
    for point, chance in [(p, 1 - error / 3) for p in truth.points] + [(p, error / 3) for p in truth.hidden]:
        if point.label in labels and rng.random() < chance:
            placed[point.label] = (_clamp(point.x + rng.gauss(0, sigma)), _clamp(point.y + rng.gauss(0, sigma)))
    for side in ("hand", "foot"):
        left, right = f"left_{side}", f"right_{side}"
        if left in placed and right in placed and rng.random() < error / 4:
            placed[left], placed[right] = placed[right], placed[left]
    return tuple(Keypoint(name, *placed[name]) for name in labels if name in placed)


def _clamp(value: float) -> float:
    return min(1.0, max(0.0, value))


def keypoint_similarity(found: Sequence[Keypoint], truth: Figure) -> float:
    """COCO's object keypoint similarity of ``found`` with the visible points of ``truth``:
    the mean over the visible points of ``exp(-d^2 / (2 s^2 k^2))``, ``d`` the distance of the
    found point of that name, ``s`` the figure's scale and ``k = 2 * KEYPOINT_SIGMA``; a point
    not found counts 0. Points placed where nothing is visible are not counted (see
    :func:`keypoints_match`). 1.0 for a figure with no visible point."""
    if not truth.points:
        return 1.0
    at = {p.label: (p.x, p.y) for p in found}
    k = 2 * KEYPOINT_SIGMA
    total = 0.0
    for point in truth.points:
        if point.label in at:
            x, y = at[point.label]
            total += math.exp(-((x - point.x) ** 2 + (y - point.y) ** 2) / (2 * truth.scale**2 * k**2))
    return total / len(truth.points)


def keypoints_match(found: Sequence[Keypoint], truth: Figure) -> bool:
    """Whether ``found`` agrees with ``truth`` as consensus tells agreement: similarity at
    least 0.75 and no point placed that is not visible."""
    visible = {p.label for p in truth.points}
    return keypoint_similarity(found, truth) >= _OKS_AGREES and all(p.label in visible for p in found)
