"""Generated images with known boxes."""

from __future__ import annotations

import dataclasses
import io

import numpy as np
import pytest
from PIL import Image

from quorum.demo.boxes import (
    BOX_IMAGE_SIZE,
    BOX_LABELS,
    TrueBox,
    box_iou,
    boxes_match,
    generate_boxes,
    match_boxes,
)

# ----------------------------------------------------------------------------- the images


def test_same_seed_gives_the_same_images_and_another_seed_others() -> None:
    assert generate_boxes(20, seed=4) == generate_boxes(20, seed=4)
    a, b = generate_boxes(20, seed=4), generate_boxes(20, seed=5)
    assert set(a.truth_by_key()).isdisjoint(b.truth_by_key())


def test_images_are_distinct_named_and_hold_zero_to_max_objects() -> None:
    ds = generate_boxes(200, seed=1, max_objects=3)
    assert [image.name for image in ds.images[:2]] == ["boxes-00000", "boxes-00001"]
    assert len(ds.truth_by_key()) == 200
    counts = {len(image.boxes) for image in ds.images}
    assert counts == {0, 1, 2, 3}
    assert ds.labels == BOX_LABELS
    assert {box.label for image in ds.images for box in image.boxes} == set(BOX_LABELS)


def test_true_boxes_are_the_drawn_rectangles_and_never_overlap() -> None:
    ds = generate_boxes(30, seed=2)
    palette = {"red": (214, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 200, 30)}
    for image in ds.images:
        pixels = np.asarray(Image.open(io.BytesIO(image.data)).convert("RGB"), dtype=np.float32)
        assert pixels.shape == (BOX_IMAGE_SIZE, BOX_IMAGE_SIZE, 3)
        for box in image.boxes:
            assert box.x >= 0.0 and box.x + box.w <= 1.0 and box.y >= 0.0 and box.y + box.h <= 1.0
            x0, y0 = round(box.x * BOX_IMAGE_SIZE), round(box.y * BOX_IMAGE_SIZE)
            x1, y1 = x0 + round(box.w * BOX_IMAGE_SIZE), y0 + round(box.h * BOX_IMAGE_SIZE)
            inside = pixels[y0:y1, x0:x1].reshape(-1, 3).mean(axis=0)
            # The noise averages out over the rectangle: its mean is the class colour.
            assert np.abs(inside - palette[box.label]).max() < 4, (image.name, box)
            # Its edge rows and columns are inside too: the box is tight, not just close.
            for edge in (pixels[y0, x0:x1], pixels[y1 - 1, x0:x1], pixels[y0:y1, x0], pixels[y0:y1, x1 - 1]):
                assert np.abs(edge.mean(axis=0) - palette[box.label]).max() < 12, (image.name, box)
        for a, b in zip(image.boxes, image.boxes[1:], strict=False):
            assert box_iou(a, b) == 0.0


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError, match="n_images"):
        generate_boxes(-1, seed=0)
    with pytest.raises(ValueError, match="max_objects"):
        generate_boxes(3, seed=0, max_objects=0)


# ----------------------------------------------------------------------------- matching

CAT = TrueBox("cat", 0.1, 0.1, 0.4, 0.4)
DOG = TrueBox("dog", 0.6, 0.6, 0.3, 0.3)


def test_iou_of_constructed_boxes() -> None:
    assert box_iou(CAT, CAT) == pytest.approx(1.0)
    assert box_iou(CAT, DOG) == 0.0
    half = TrueBox("cat", 0.1, 0.1, 0.2, 0.4)
    assert box_iou(CAT, half) == pytest.approx(0.5)


def test_matching_pairs_each_true_box_once_by_label_and_best_iou() -> None:
    shifted = dataclasses.replace(CAT, x=0.15)
    assert match_boxes([shifted, CAT], [CAT]) == [pytest.approx(1.0)]
    # One found box cannot serve two true ones.
    assert match_boxes([CAT], [CAT, dataclasses.replace(CAT, x=0.12)]) == [pytest.approx(1.0), 0.0]
    assert match_boxes([dataclasses.replace(CAT, label="dog")], [CAT]) == [0.0]
    assert match_boxes([], [CAT]) == [0.0]
    assert match_boxes([CAT], []) == []


def test_boxes_match_needs_every_object_and_nothing_else() -> None:
    assert boxes_match([DOG, CAT], [CAT, DOG])
    assert boxes_match([], [])
    assert not boxes_match([CAT], [CAT, DOG])
    assert not boxes_match([CAT, DOG, dataclasses.replace(CAT, y=0.55)], [CAT, DOG])
    assert not boxes_match([dataclasses.replace(CAT, w=0.15)], [CAT])
