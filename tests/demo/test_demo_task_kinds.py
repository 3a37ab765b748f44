"""The generated datasets of every structured task kind, the simulated workers' answers to
them, and the measures `quorum demo --task KIND` scores fused labels with.

Boxes have their own file (test_demo_boxes.py); here they only take part where every kind does.
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import json
import math
import random
import statistics
import typing
from collections import defaultdict

import numpy as np
import pytest
from demo_fake_tasking import FakeTasking
from PIL import Image

from quorum.cli import DEMO_TASKS
from quorum.demo import multilabel
from quorum.demo.crowd import SimulatedCrowd, Truth
from quorum.demo.items import micro_f1
from quorum.demo.keypoints import (
    KEYPOINT_IMAGE_SIZE,
    KEYPOINT_LABELS,
    Figure,
    Keypoint,
    generate_figures,
    keypoint_similarity,
    keypoints_match,
    place_keypoints,
)
from quorum.demo.kinds import KINDS, job_spec
from quorum.demo.multilabel import ASPECT_LABELS, generate_reviews, pick_labels
from quorum.demo.pairwise import generate_pairs
from quorum.demo.polygons import (
    MASK_GRID,
    SHAPE_LABELS,
    TruePolygon,
    class_ious,
    draw_polygons,
    generate_shapes,
    mask_from_counts,
    polygon_mask,
    polygons_match,
)
from quorum.demo.run import DemoTask
from quorum.demo.spans import _ENTITIES, ENTITY_LABELS, TrueSpan, generate_sentences, mark_spans
from quorum.demo.transcription import WORDS, generate_lines, transcribe, word_errors
from quorum.demo.workers import WorkerProfile, choose_label
from quorum.taskmessages import answer_from_text, schema_labels
from quorum.tasktypes import TASK_TYPES
from services.consensus.structured import fuse
from services.ingest import domain as ingest
from services.ingest.codec import spec_from_proto

PERFECT = WorkerProfile("perfect", accuracy=1.0, spammer=False)
GOOD = WorkerProfile("good", accuracy=0.9, spammer=False)
POOR = WorkerProfile("poor", accuracy=0.6, spammer=False)
CONSTANT = WorkerProfile("constant", accuracy=0.0, spammer=True, spam_strategy="constant", constant_choice=5)
UNIFORM = WorkerProfile("uniform", accuracy=0.0, spammer=True, spam_strategy="uniform")
LIMITS = ingest.Limits(max_file_bytes=1_000_000, max_text_bytes=10_000, max_image_pixels=1_000_000)


def test_the_cli_offers_classification_and_every_kind() -> None:
    assert DEMO_TASKS == ("classification", *KINDS) == typing.get_args(DemoTask)
    assert {TASK_TYPES[kind.task_type].answer_kind for kind in KINDS.values()} | {"classification"} == {
        t.answer_kind for t in TASK_TYPES.values()
    }


# ----------------------------------------------------------------------------- every dataset


@pytest.mark.parametrize("name", list(KINDS))
def test_datasets_are_deterministic_distinct_and_named_in_order(name: str) -> None:
    kind = KINDS[name]
    first = kind.generate(12, 4)
    assert first == kind.generate(12, 4)
    assert len(first.truth_by_key()) == 12
    assert set(first.truth_by_key()).isdisjoint(kind.generate(12, 5).truth_by_key())
    names = [item.name for item in first.items]
    assert names == sorted(names) and len(set(names)) == 12
    with pytest.raises(ValueError):
        kind.generate(-1, 4)


@pytest.mark.parametrize("name", list(KINDS))
def test_every_object_is_accepted_by_ingest_for_its_job(name: str) -> None:
    kind = KINDS[name]
    dataset = kind.generate(10, 1)
    spec = ingest.normalise_spec(spec_from_proto(job_spec(kind, dataset.labels)))
    for item in dataset.items:
        checked = ingest.check_content(item.name, item.data, len(item.data), "", spec, LIMITS)
        assert isinstance(checked, ingest.Content), (item.name, checked)
        # Text tasks carry the text as stored: the very string the truth is keyed by.
        assert checked.text == (item.content if isinstance(item.content, str) else "")


def test_the_kinds_share_no_content_so_one_crowd_can_label_them_all() -> None:
    keys = [key for kind in KINDS.values() for key in kind.generate(20, 1).truth_by_key()]
    assert len(set(keys)) == len(keys) == 20 * len(KINDS)


# ----------------------------------------------------------------------------- truth is exact


def _pixels(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), dtype=np.float32)


def test_keypoints_are_dots_of_their_colour_and_hidden_points_are_covered() -> None:
    dots = {"head": (214, 40, 40), "left_hand": (40, 170, 60), "right_hand": (40, 80, 220)}
    dots |= {"left_foot": (235, 160, 30), "right_foot": (160, 40, 200)}
    dataset = generate_figures(40, seed=2)
    hidden = 0
    for item in dataset.items:
        pixels, figure = _pixels(item.data), item.truth
        assert pixels.shape == (KEYPOINT_IMAGE_SIZE, KEYPOINT_IMAGE_SIZE, 3)
        assert sorted(p.label for p in figure.points + figure.hidden) == sorted(KEYPOINT_LABELS)
        assert len(figure.hidden) <= 2 and 0.1 <= figure.scale < 1
        for point in figure.points + figure.hidden:
            col, row = int(point.x * KEYPOINT_IMAGE_SIZE), int(point.y * KEYPOINT_IMAGE_SIZE)
            seen = pixels[row - 1 : row + 2, col - 1 : col + 2].reshape(-1, 3).mean(axis=0)
            want = (120, 120, 120) if point in figure.hidden else dots[point.label]
            assert np.abs(seen - want).max() < 25, (item.name, point, seen)
        hidden += len(figure.hidden)
    assert 0 < hidden < 40 * 2


def test_polygons_are_the_filled_regions_of_their_colour() -> None:
    palette = {"red": (214, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 200, 30)}
    dataset = generate_shapes(30, seed=2)
    assert {len(item.truth) for item in dataset.items} == {0, 1, 2, 3}
    for item in dataset.items:
        pixels = _pixels(item.data)
        size = pixels.shape[0]
        for polygon in item.truth:
            assert 3 <= len(polygon.points) <= 6
            assert all(0 <= x <= 1 and 0 <= y <= 1 for x, y in polygon.points)
            # The same rasteriser on the image's own grid: exactly the pixels drawn.
            inside = polygon_mask([polygon], polygon.label, (size, size))
            mean = pixels[inside].mean(axis=0)
            assert np.abs(mean - palette[polygon.label]).max() < 5, (item.name, polygon.label, mean)
        covered = np.zeros((size, size), dtype=bool)
        for polygon in item.truth:
            covered |= polygon_mask([polygon], polygon.label, (size, size))
        background = pixels[~covered].mean(axis=0)
        assert np.abs(background - background.mean()).max() < 3  # grey: nothing else is drawn


def test_entity_spans_cover_the_entities_in_order() -> None:
    dataset = generate_sentences(60, seed=3)
    assert any(not item.truth for item in dataset.items)
    for item in dataset.items:
        text = item.content
        assert isinstance(text, str) and text == text.strip()
        for span in item.truth:
            name = text[span.start : span.end]
            assert name in _ENTITIES[span.label] or name[0].lower() + name[1:] in _ENTITIES[span.label]
        for before, after in zip(item.truth, item.truth[1:], strict=False):
            assert before.end < after.start and text[before.end : after.start].strip()


def test_reviews_mention_exactly_their_aspects() -> None:
    dataset = generate_reviews(60, seed=3)
    assert {len(item.truth) for item in dataset.items} == {0, 1, 2, 3}
    for item in dataset.items:
        mentioned = {
            aspect
            for aspect, (subjects, _) in multilabel._ASPECTS.items()
            if any(subject in item.content for subject in subjects)
        }
        assert mentioned == item.truth, item.content


def test_lines_show_sentences_of_the_word_list() -> None:
    dataset = generate_lines(20, seed=3)
    widths = []
    for item in dataset.items:
        words = item.truth.split()
        assert 3 <= len(words) <= 6 and set(words) <= set(WORDS)
        image = Image.open(io.BytesIO(item.data))
        widths.append((len(item.truth), image.width))
    # Longer sentences make wider images: the text is in the picture.
    assert statistics.correlation(*zip(*widths, strict=True)) > 0.9


def test_pairs_are_json_pairs_with_either_winner() -> None:
    dataset = generate_pairs(100, seed=3)
    assert dataset.labels == ("a", "b")
    for item in dataset.items:
        pair = json.loads(item.content)
        assert set(pair) == {"a", "b"} and pair["a"] != pair["b"]
    winners = [item.truth for item in dataset.items]
    assert 30 < winners.count("a") < 70 and set(winners) == {"a", "b"}


# ----------------------------------------------------------------------------- answers


def _answers(make, n: int, seed: int = 1) -> list:
    rng = random.Random(seed)
    return [make(rng) for _ in range(n)]


FIGURE = Figure(
    points=(Keypoint("head", 0.5, 0.2), Keypoint("left_hand", 0.3, 0.4), Keypoint("right_hand", 0.7, 0.4)),
    hidden=(Keypoint("left_foot", 0.4, 0.8), Keypoint("right_foot", 0.6, 0.8)),
    scale=0.5,
)
REGIONS = (
    TruePolygon("red", ((0.1, 0.1), (0.4, 0.1), (0.25, 0.4))),
    TruePolygon("blue", ((0.6, 0.6), (0.9, 0.6), (0.9, 0.9), (0.6, 0.9))),
)
SENTENCE = "Anna Berg flew to Rio de Janeiro for the final."
ENTITIES = (TrueSpan(0, 9, "person"), TrueSpan(18, 32, "place"))
ASPECTS = frozenset({"food", "price"})
LINE = "apple river window green quiet"


def test_a_perfect_worker_answers_the_truth_of_every_kind() -> None:
    rng = random.Random(0)
    for _ in range(20):
        assert place_keypoints(PERFECT, KEYPOINT_LABELS, FIGURE, rng) == FIGURE.points
        assert draw_polygons(PERFECT, SHAPE_LABELS, REGIONS, rng) == REGIONS
        assert mark_spans(PERFECT, ENTITY_LABELS, ENTITIES, SENTENCE, rng) == ENTITIES
        assert pick_labels(PERFECT, ASPECT_LABELS, ASPECTS, rng) == ASPECTS
        assert transcribe(PERFECT, LINE, rng) == LINE
        assert choose_label(PERFECT, ["a", "b"], "b", rng) == "b"


def test_answers_are_deterministic_for_a_seed() -> None:
    for profile in (POOR, UNIFORM):
        for make in (
            lambda rng, p=profile: place_keypoints(p, KEYPOINT_LABELS, FIGURE, rng),
            lambda rng, p=profile: draw_polygons(p, SHAPE_LABELS, REGIONS, rng),
            lambda rng, p=profile: mark_spans(p, ENTITY_LABELS, ENTITIES, SENTENCE, rng),
            lambda rng, p=profile: pick_labels(p, ASPECT_LABELS, ASPECTS, rng),
            lambda rng, p=profile: transcribe(p, LINE, rng),
        ):
            assert _answers(make, 30, seed=4) == _answers(make, 30, seed=4) != _answers(make, 30, seed=5)


def test_honest_workers_drop_and_add_labels_by_their_skill() -> None:
    for profile in (GOOD, POOR):
        picks = _answers(lambda rng, p=profile: pick_labels(p, ASPECT_LABELS, ASPECTS, rng), 8000)
        error = profile.error_rate
        kept = sum(len(p & ASPECTS) for p in picks) / (8000 * len(ASPECTS))
        added = sum(len(p - ASPECTS) for p in picks) / (8000 * (len(ASPECT_LABELS) - len(ASPECTS)))
        assert kept == pytest.approx(1 - error / 2, abs=0.015)
        assert added == pytest.approx(error / 4, abs=0.015)


def test_honest_workers_miss_retype_and_misplace_entities_by_their_skill() -> None:
    for profile in (GOOD, POOR):
        marked = _answers(lambda rng, p=profile: mark_spans(p, ENTITY_LABELS, ENTITIES, SENTENCE, rng), 8000)
        error = profile.error_rate
        spans = [s for answer in marked for s in answer]
        assert len(spans) / (8000 * 2) == pytest.approx(1 - error / 2, abs=0.015)
        retyped = sum((s.start, s.end) in {(e.start, e.end) for e in ENTITIES} and s not in ENTITIES for s in spans)
        assert retyped / len(spans) == pytest.approx(error / 3 * (1 - error / 4), abs=0.015)
        for answer in marked:
            assert all(a.end <= b.start for a, b in itertools.pairwise(answer))
            assert all(0 <= s.start < s.end <= len(SENTENCE) for s in answer)


def test_a_wrong_boundary_leaves_off_a_last_word_or_takes_in_the_word_before() -> None:
    def boundaries(text: str, truth: tuple[TrueSpan, ...], label: str) -> set[tuple[int, int]]:
        answers = _answers(lambda rng: mark_spans(POOR, [label], truth, text, rng), 2000)
        return {(s.start, s.end) for answer in answers for s in answer}

    assert boundaries(SENTENCE, ENTITIES, "place") == {(18, 32), (18, 24)}  # "Rio de Janeiro", "Rio de"
    short = "Olga flew to Lyon."
    olga_lyon = (TrueSpan(0, 4, "person"), TrueSpan(13, 17, "place"))
    assert boundaries(short, olga_lyon, "place") == {(13, 17), (10, 17)}  # "Lyon", "to Lyon"
    assert boundaries(short, olga_lyon, "person") == {(0, 4)}  # nothing before "Olga"


def test_honest_workers_drop_and_misspell_words_by_their_skill() -> None:
    for profile in (GOOD, POOR):
        typed = _answers(lambda rng, p=profile: transcribe(p, LINE, rng), 6000)
        error = profile.error_rate
        words = [word for text in typed for word in text.split()]
        assert len(words) / (6000 * 5) == pytest.approx(1 - error / 6, abs=0.01)
        misspelt = sum(word not in WORDS for word in words) / len(words)
        assert misspelt == pytest.approx((error / 3) / (1 - error / 6), abs=0.015)
        assert sum(word_errors(t, LINE) for t in typed) / (6000 * 5) == pytest.approx(error / 2, abs=0.015)


def test_honest_workers_miss_swap_misplace_and_invent_points_by_their_skill() -> None:
    figures = {}
    for profile in (GOOD, POOR):
        placed = _answers(lambda rng, p=profile: place_keypoints(p, KEYPOINT_LABELS, FIGURE, rng), 6000)
        error = profile.error_rate
        visible = sum(p.label in ("head", "left_hand", "right_hand") for answer in placed for p in answer)
        invented = sum(p.label.endswith("foot") for answer in placed for p in answer)
        assert visible / (6000 * 3) == pytest.approx(1 - error / 3, abs=0.015)
        assert invented / (6000 * 2) == pytest.approx(error / 3, abs=0.015)
        heads = [p for answer in placed for p in answer if p.label == "head"]
        assert statistics.pstdev(p.x for p in heads) == pytest.approx(0.25 * error * FIGURE.scale, rel=0.08)
        figures[profile.accuracy] = statistics.fmean(keypoint_similarity(answer, FIGURE) for answer in placed)
        swapped = sum(any(p.label == "left_hand" and p.x > 0.5 for p in answer) for answer in placed) / len(placed)
        assert swapped == pytest.approx(error / 4 * (1 - error / 3) ** 2, abs=0.01)
    assert figures[0.6] < figures[0.9] < 1.0


def test_honest_workers_miss_retype_and_misplace_regions_by_their_skill() -> None:
    for profile in (GOOD, POOR):
        drawn = _answers(lambda rng, p=profile: draw_polygons(p, SHAPE_LABELS, REGIONS, rng), 3000)
        error = profile.error_rate
        regions = [r for answer in drawn for r in answer]
        assert len(regions) / (3000 * 2) == pytest.approx(1 - error / 2, abs=0.02)
        # Blue's region lies right of x = 0.5, red's left of it: the label says which was meant.
        wrong = sum(r.label != ("blue" if r.points[0][0] > 0.5 else "red") for r in regions)
        assert wrong / len(regions) == pytest.approx(error / 3, abs=0.02)
    good = statistics.fmean(
        polygons_match(a, REGIONS) for a in _answers(lambda rng: draw_polygons(GOOD, SHAPE_LABELS, REGIONS, rng), 300)
    )
    poor = statistics.fmean(
        polygons_match(a, REGIONS) for a in _answers(lambda rng: draw_polygons(POOR, SHAPE_LABELS, REGIONS, rng), 300)
    )
    assert poor < good


def test_spammers_answer_without_looking() -> None:
    for make in (
        lambda p, rng: place_keypoints(p, KEYPOINT_LABELS, FIGURE, rng),
        lambda p, rng: draw_polygons(p, SHAPE_LABELS, REGIONS, rng),
        lambda p, rng: mark_spans(p, ENTITY_LABELS, ENTITIES, SENTENCE, rng),
    ):
        assert {make(CONSTANT, rng) for rng in [random.Random(s) for s in range(20)]} == {()}
    assert len({pick_labels(CONSTANT, ASPECT_LABELS, frozenset(), random.Random(s)) for s in range(20)}) == 1
    assert len({transcribe(CONSTANT, LINE, random.Random(s)) for s in range(20)}) == 1
    rng = random.Random(2)
    for truth in (FIGURE, None):
        assert (
            sum(keypoints_match(place_keypoints(UNIFORM, KEYPOINT_LABELS, truth, rng), FIGURE) for _ in range(500)) < 5
        )
    assert sum(polygons_match(draw_polygons(UNIFORM, SHAPE_LABELS, REGIONS, rng), REGIONS) for _ in range(300)) == 0
    assert sum(mark_spans(UNIFORM, ENTITY_LABELS, ENTITIES, SENTENCE, rng) == ENTITIES for _ in range(500)) == 0
    assert sum(transcribe(UNIFORM, LINE, rng) == LINE for _ in range(500)) == 0
    picks = [pick_labels(UNIFORM, ASPECT_LABELS, ASPECTS, rng) for _ in range(4000)]
    assert sum(p == ASPECTS for p in picks) / 4000 == pytest.approx(1 / 32, abs=0.01)


# ----------------------------------------------------------------------------- measures


def test_micro_f1_pools_every_object() -> None:
    figures = micro_f1([({"a", "b"}, {"a"}), (set(), set()), ({"c"}, {"c", "d"})])
    assert figures == {"precision": pytest.approx(2 / 3, abs=1e-4), "recall": pytest.approx(2 / 3, abs=1e-4),
                       "f1": pytest.approx(2 / 3, abs=1e-4), "exact": pytest.approx(1 / 3, abs=1e-4)}  # fmt: skip
    assert micro_f1([(set(), set())]) == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "exact": 1.0}
    assert micro_f1([(set(), {"a"})])["f1"] == 0.0


def test_word_errors_count_substitutions_deletions_and_insertions() -> None:
    assert word_errors("apple river", "apple river") == 0
    assert word_errors("apple rivre", "apple river") == 1
    assert word_errors("river", "apple river") == 1
    assert word_errors("apple apple river green", "apple river") == 2
    assert word_errors("", "apple river") == 2 and word_errors("apple", "") == 1


def test_keypoint_similarity_is_cocos_oks() -> None:
    assert keypoint_similarity(FIGURE.points, FIGURE) == 1.0
    assert keypoint_similarity(FIGURE.points[:2], FIGURE) == pytest.approx(2 / 3)
    moved = dataclasses.replace(FIGURE.points[0], x=0.55)
    # d = 0.05, s = 0.5, k = 0.1: exp(-0.0025 / (2 * 0.25 * 0.01)) = exp(-0.5)
    assert keypoint_similarity((moved, *FIGURE.points[1:]), FIGURE) == pytest.approx((math.exp(-0.5) + 2) / 3)
    assert keypoints_match(FIGURE.points, FIGURE)
    assert not keypoints_match((*FIGURE.points, FIGURE.hidden[0]), FIGURE)


def test_fused_masks_are_decoded_and_scored_against_the_true_regions() -> None:
    answer = json.dumps({"polygons": {"polygons": [
        {"label": r.label, "points": [{"x": x, "y": y} for x, y in r.points]} for r in REGIONS[:1]
    ]}})  # fmt: skip
    fused, _, _ = fuse("polygons", list(SHAPE_LABELS), [("w1", answer), ("w2", answer)], [0.9, 0.9])
    masks = {m.label: mask_from_counts(m.counts, m.width, m.height) for m in answer_from_text(fused).masks.masks}
    assert list(masks) == ["red"] and masks["red"].shape == (MASK_GRID, MASK_GRID)
    assert class_ious(masks, REGIONS) == ({"blue": 0.0, "red": 1.0}, [])
    assert class_ious(masks, ()) == ({}, ["red"])
    with pytest.raises(ValueError):
        mask_from_counts([3, 4], 2, 2)


@pytest.mark.parametrize("name", list(KINDS))
def test_scores_of_a_perfect_crowd_fused_by_consensus_are_perfect(serve, name: str) -> None:
    kind = KINDS[name]
    dataset = kind.generate(12, 6)
    spec = job_spec(kind, dataset.labels)
    fake = FakeTasking(structured=[(spec, dataset.items)], overlap=3)
    crowd = SimulatedCrowd(serve(fake), dataset.truth_by_key(), 3, seed=1, spammer_share=0.0, skip_rate=0.0,
                           accuracy_range=(1.0, 1.0))  # fmt: skip
    report = crowd.run(fake.all_done, deadline_s=10)
    assert report.errors == {} and report.answers == 36 and report.correct == 36
    answers = defaultdict(list)
    for answer in fake.answers:
        answers[answer.task_id].append((answer.worker_id, answer.label))
    answer_kind = TASK_TYPES[kind.task_type].answer_kind
    schema = list(schema_labels(spec, kind.task_type)) or (["a", "b"] if name == "pairwise" else [])
    truth = {task.task_id: item.truth for task, item in zip(fake.tasks, dataset.items, strict=True)}
    scored = [
        (answer_from_text(fuse(answer_kind, schema, given, [0.9] * len(given))[0]), truth[task_id])
        for task_id, given in answers.items()
    ]
    quality = kind.score(scored)
    perfect = {
        "boxes": {"found_share": 1.0, "spurious": 0},
        "multi_label": {"f1": 1.0, "exact": 1.0},
        "keypoints": {"mean_oks": 1.0, "spurious": 0},
        "segmentation": {"mean_iou": 1.0, "spurious": 0},
        "spans": {"f1": 1.0, "exact": 1.0},
        "transcription": {"wer": 0.0, "exact": 1.0},
        "pairwise": {"accuracy": 1.0},
    }[name]
    assert {key: quality[key] for key in perfect} == perfect, quality


def test_the_crowd_answers_every_kind_side_by_side_and_tasking_accepts_every_answer(serve) -> None:
    datasets = {name: KINDS[name].generate(15, 8) for name in KINDS}
    fake = FakeTasking(structured=[(job_spec(KINDS[n], d.labels), d.items) for n, d in datasets.items()], overlap=4)
    truth: dict[str, Truth] = {}
    for dataset in datasets.values():
        truth |= dataset.truth_by_key()
    # Poor workers and spammers of both kinds: the answers most likely to break a rule.
    crowd = SimulatedCrowd(serve(fake), truth, 8, seed=5, spammer_share=0.5, skip_rate=0.0, accuracy_range=(0.3, 0.7))
    report = crowd.run(fake.all_done, deadline_s=20)
    assert report.stopped_by == "stop"
    assert report.errors == {} and report.unknown_content == 0
    assert report.answers == len(fake.answers) == 15 * len(KINDS) * 4
    by_kind = defaultdict(set)
    for answer in fake.answers:
        by_kind[fake.tasks[int(answer.task_id.removeprefix("task-"))].kind].add(json.loads(answer.label).popitem()[0])
    assert dict(by_kind) == {kind.task_type: {TASK_TYPES[kind.task_type].answer_kind} for kind in KINDS.values()}
    # Honest workers at 0.3 to 0.7 get some answers right, spammers hardly any.
    assert 0 < report.correct < report.answers
