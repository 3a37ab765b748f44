"""Generated images with known boxes, and the simulated crowd drawing boxes on them."""

from __future__ import annotations

import dataclasses
import functools
import io
import itertools
import json
import random
import statistics

import numpy as np
import pytest
from demo_fake_tasking import FakeTasking
from PIL import Image

from quorum.demo.boxes import (
    BOX_IMAGE_SIZE,
    BOX_LABELS,
    TrueBox,
    box_iou,
    boxes_match,
    draw_boxes,
    generate_boxes,
    match_boxes,
)
from quorum.demo.crowd import SimulatedCrowd, Truth, WorkerProfile
from quorum.demo.dataset import content_key, generate
from services.tasking.domain import JobRules, SubmittedAnswer, validate_answer

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
        for a, b in itertools.combinations(image.boxes, 2):
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


# ----------------------------------------------------------------------------- drawing

LABELS = ["cat", "dog", "bird"]
TRUTH = (CAT, DOG)
RULES = JobRules("j", "bounding_boxes", tuple(LABELS), "", 3, 5, 0.0, 30)


def _draws(profile: WorkerProfile, n: int, truth: tuple[TrueBox, ...] | None = TRUTH) -> list[list[TrueBox]]:
    rng = random.Random(1)
    return [draw_boxes(profile, LABELS, truth, rng) for _ in range(n)]


def test_a_perfect_worker_draws_the_truth() -> None:
    perfect = WorkerProfile("w", accuracy=1.0, spammer=False)
    for drawn in _draws(perfect, 50):
        assert [b.label for b in drawn] == [t.label for t in TRUTH]
        assert [box_iou(b, t) for b, t in zip(drawn, TRUTH, strict=True)] == [pytest.approx(1.0)] * len(TRUTH)


def test_honest_workers_miss_mislabel_and_misplace_by_their_skill() -> None:
    figures = {}
    for accuracy in (0.6, 0.9):
        draws = _draws(WorkerProfile("w", accuracy=accuracy, spammer=False), 4000)
        error = 1 - accuracy
        drawn = [b for boxes in draws for b in boxes]
        assert len(drawn) / (2 * len(draws)) == pytest.approx(1 - error / 2, abs=0.02)
        # The two objects are far apart: the true box a drawn one stands for is the nearest.
        nearest = [max(TRUTH, key=functools.partial(box_iou, b)) for b in drawn]
        wrong = sum(b.label != t.label for b, t in zip(drawn, nearest, strict=True))
        assert wrong / len(drawn) == pytest.approx(error / 3, abs=0.02)
        figures[accuracy] = statistics.median(box_iou(b, t) for b, t in zip(drawn, nearest, strict=True))
    # Each edge off by 0.3 * error of the side: median IoU about 0.70 at accuracy 0.6, 0.91 at 0.9.
    assert 0.65 < figures[0.6] < 0.75 < 0.88 < figures[0.9] < 0.94


def test_spammers_and_unknown_images_get_no_or_random_boxes() -> None:
    constant = WorkerProfile("c", accuracy=0.0, spammer=True, spam_strategy="constant")
    assert all(drawn == [] for drawn in _draws(constant, 100))
    uniform = WorkerProfile("u", accuracy=0.0, spammer=True, spam_strategy="uniform")
    honest = WorkerProfile("h", accuracy=1.0, spammer=False)
    for draws in (_draws(uniform, 3000), _draws(honest, 3000, truth=None)):
        assert {len(boxes) for boxes in draws} == {0, 1, 2}
        # Random boxes: hardly ever what is in the image.
        assert sum(boxes_match(boxes, TRUTH) for boxes in draws) < 10
    with pytest.raises(ValueError):
        draw_boxes(honest, [], TRUTH, random.Random(0))


def test_drawn_boxes_always_pass_tasking_answer_validation() -> None:
    # Boxes at the image's edges, where jitter and clamping are most likely to go wrong.
    edges = (TrueBox("cat", 0.0, 0.0, 0.02, 0.5), TrueBox("bird", 0.97, 0.98, 0.03, 0.02))
    profiles = [
        WorkerProfile("bad", accuracy=0.0, spammer=False),
        WorkerProfile("ok", accuracy=0.8, spammer=False),
        WorkerProfile("u", accuracy=0.0, spammer=True, spam_strategy="uniform"),
    ]
    for profile in profiles:
        for drawn in _draws(profile, 1000, truth=edges) + _draws(profile, 1000):
            body = {"boxes": [dataclasses.asdict(b) for b in drawn]}
            validate_answer(RULES, SubmittedAnswer("boxes", body=body))


# ----------------------------------------------------------------------------- against gRPC


def test_the_crowd_answers_box_and_classification_tasks_side_by_side(serve) -> None:
    boxes = generate_boxes(20, seed=6)
    shapes = generate(20, seed=6, kind="image", min_gold=0, gold_share=0.0)
    fake = FakeTasking(
        shapes.images, image_labels=shapes.image_labels, box_images=boxes.images, box_labels=boxes.labels, overlap=3
    )
    truth: dict[str, Truth] = {**shapes.truth_by_key(), **boxes.truth_by_key()}
    crowd = SimulatedCrowd(serve(fake), truth, n_workers=6, seed=3, skip_rate=0.0, spammer_share=0.0)
    report = crowd.run(fake.all_done, deadline_s=10)

    assert report.stopped_by == "stop"
    assert report.errors == {} and report.unknown_content == 0
    assert report.answers == len(fake.answers) == 40 * 3
    by_key = boxes.truth_by_key()
    box_truth = {t.task_id: by_key[content_key(t.content.data)] for t in fake.tasks if t.kind == "boxes"}
    box_answers = [a for a in fake.answers if a.task_id in box_truth]
    assert len(box_answers) == 20 * 3
    right = 0
    for answer in box_answers:
        fields = ("label", "x", "y", "w", "h")
        stored = json.loads(answer.label)["boxes"].get("boxes", [])
        drawn = [TrueBox(*(b.get(f, 0.0) for f in fields)) for b in stored]
        right += boxes_match(drawn, box_truth[answer.task_id])
    # Honest workers only (accuracy 0.55 to 0.98): most answers find every object.
    assert right / len(box_answers) > 0.5
    labels_right = sum(a.label == a.truth for a in fake.answers if a.task_id not in box_truth)
    assert sum(s.correct for s in report.per_worker.values()) == right + labels_right
