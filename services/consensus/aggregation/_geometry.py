"""Geometry shared by the box, mask and keypoint aggregators: IoU, polygon rasterisation,
object keypoint similarity. All vectorized over arrays of shapes."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from services.consensus.aggregation._robust import FloatArray

BoolArray = npt.NDArray[np.bool_]


def xywh_to_corners(boxes: npt.ArrayLike) -> FloatArray:
    """(n, 4) ``x, y, w, h`` (top-left, size) to (n, 4) ``x1, y1, x2, y2``."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return np.column_stack((b[:, 0], b[:, 1], b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]))


def corners_to_xywh(corners: npt.ArrayLike) -> FloatArray:
    """(n, 4) ``x1, y1, x2, y2`` to (n, 4) ``x, y, w, h``."""
    c = np.asarray(corners, dtype=np.float64).reshape(-1, 4)
    return np.column_stack((c[:, 0], c[:, 1], c[:, 2] - c[:, 0], c[:, 3] - c[:, 1]))


def iou_matrix(a: npt.ArrayLike, b: npt.ArrayLike) -> FloatArray:
    """IoU of every corner box in ``a`` (n, 4) with every one in ``b`` (m, 4): an (n, m) array.

    Degenerate boxes (zero area) have IoU 0 with everything, themselves included. O(n m)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0.0, None)
    ih = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0.0, None)
    inter = iw * ih
    area_a = np.clip(a[:, 2] - a[:, 0], 0.0, None) * np.clip(a[:, 3] - a[:, 1], 0.0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0.0, None) * np.clip(b[:, 3] - b[:, 1], 0.0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def paired_iou(a: npt.ArrayLike, b: npt.ArrayLike) -> FloatArray:
    """IoU of ``a[i]`` with ``b[i]`` for corner boxes of equal count. O(n)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    iw = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0.0, None)
    ih = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0.0, None)
    inter = iw * ih
    area_a = np.clip(a[:, 2] - a[:, 0], 0.0, None) * np.clip(a[:, 3] - a[:, 1], 0.0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0.0, None) * np.clip(b[:, 3] - b[:, 1], 0.0, None)
    union = area_a + area_b - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def rasterize_polygon(
    xs: Sequence[float], ys: Sequence[float], shape: tuple[int, int], origin: tuple[int, int] = (0, 0)
) -> BoolArray:
    """Boolean mask of shape ``(height, width)`` that is True inside the polygon (boundary
    included), drawn with Pillow. ``origin`` is the (x, y) pixel the mask's corner stands for,
    so a crop of a large image can be rasterised without allocating the whole image. Fewer
    than three vertices give an empty mask. Raises ValueError when ``xs`` and ``ys`` differ in
    length. Costs O(height * width)."""
    if len(xs) != len(ys):
        raise ValueError(f"{len(xs)} x coordinates but {len(ys)} y coordinates")
    height, width = shape
    canvas = Image.new("1", (max(width, 1), max(height, 1)), 0)
    if len(xs) >= 3:
        ox, oy = origin
        ImageDraw.Draw(canvas).polygon([(float(x) - ox, float(y) - oy) for x, y in zip(xs, ys, strict=True)], fill=1)
    mask = np.asarray(canvas, dtype=bool)
    return mask[:height, :width]


def keypoint_similarity(points: FloatArray, reference: FloatArray, scale: FloatArray, sigmas: FloatArray) -> FloatArray:
    """Per-point similarity ``exp(-d^2 / (2 s^2 k^2))`` of COCO's object keypoint similarity
    (Lin et al., "Microsoft COCO: Common Objects in Context", ECCV 2014), with ``k = 2 sigma``.

    ``points`` and ``reference`` are (..., K, 2); ``scale`` is the object scale ``s`` (the
    square root of its area) broadcast against (...,); ``sigmas`` is (K,). NaN where either
    point is missing. O(size)."""
    d2 = np.sum((np.asarray(points, dtype=np.float64) - np.asarray(reference, dtype=np.float64)) ** 2, axis=-1)
    k = 2.0 * np.asarray(sigmas, dtype=np.float64)
    s2 = np.asarray(scale, dtype=np.float64)[..., None] ** 2
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(np.exp(-d2 / (2.0 * np.maximum(s2, 1e-12) * k**2)), dtype=np.float64)
