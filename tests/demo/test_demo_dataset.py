from __future__ import annotations

import io
import json
from collections import Counter

import pytest
from PIL import Image

from quorum.demo import dataset
from quorum.demo.dataset import (
    IMAGE_LABELS,
    IMAGE_SIZE,
    TEXT_LABELS,
    content_key,
    generate,
    write_image_folder,
    write_text_jsonl,
)


def test_same_seed_gives_the_same_dataset() -> None:
    assert generate(40, seed=11) == generate(40, seed=11)


def test_another_seed_gives_other_objects() -> None:
    a, b = generate(40, seed=11), generate(40, seed=12)
    assert {o.key for o in a.all_objects()}.isdisjoint(o.key for o in b.all_objects())


def test_mixed_split_and_gold_counts() -> None:
    ds = generate(201, seed=1)
    assert (len(ds.images), len(ds.texts)) == (101, 100)
    # 5% of 101 is 5; the floor of 5 applies below 100 objects of a kind.
    assert (len(ds.gold_images), len(ds.gold_texts)) == (5, 5)
    big = generate(400, seed=1, kind="text", gold_share=0.1)
    assert (len(big.images), len(big.texts), len(big.gold_images), len(big.gold_texts)) == (0, 400, 0, 40)


@pytest.mark.parametrize("kind", ["image", "text"])
def test_single_kind(kind: str) -> None:
    ds = generate(30, seed=2, kind=kind)  # type: ignore[arg-type]
    objects = ds.all_objects()
    assert len(objects) == 35
    assert {o.kind for o in objects} == {kind}


def test_every_object_is_distinct_and_the_truth_map_covers_it() -> None:
    ds = generate(600, seed=5)
    objects = ds.all_objects()
    truth = ds.truth_by_key()
    assert len(truth) == len(objects)
    for obj in objects:
        assert truth[content_key(obj.data if obj.kind == "image" else obj.text)] == obj.label  # type: ignore[arg-type]
    assert len({o.name for o in objects}) == len(objects)


def test_objects_are_well_formed() -> None:
    ds = generate(80, seed=3)
    for obj in ds.images + ds.gold_images:
        assert obj.label in IMAGE_LABELS and obj.text is None and obj.data is not None
        img = Image.open(io.BytesIO(obj.data))
        assert img.format == "PNG" and img.size == (IMAGE_SIZE, IMAGE_SIZE)
    for obj in ds.texts + ds.gold_texts:
        assert obj.label in TEXT_LABELS and obj.data is None and obj.text
    assert not any(o.gold for o in ds.images + ds.texts)
    assert all(o.gold and o.name.startswith("gold-") for o in ds.gold_images + ds.gold_texts)


def test_labels_are_balanced() -> None:
    ds = generate(240, seed=4)
    image_counts = Counter(o.label for o in ds.images)
    text_counts = Counter(o.label for o in ds.texts)
    assert set(image_counts.values()) == {30}
    assert set(text_counts.values()) == {40}


def test_repeated_texts_get_a_distinguishing_detail(monkeypatch: pytest.MonkeyPatch) -> None:
    # With one template per label and a single choice per slot every draw is the same text.
    for name in ("_PRODUCTS", "_EXPERIENCES", "_PRODUCT_FACTS", "_EXPERIENCE_FACTS", "_WHEN", "_WHO"):
        monkeypatch.setattr(dataset, name, getattr(dataset, name)[:1])
    monkeypatch.setattr(dataset, "_PRODUCTS", dataset._EXPERIENCES)
    monkeypatch.setattr(dataset, "_PRODUCT_FACTS", dataset._EXPERIENCE_FACTS)
    monkeypatch.setattr(dataset, "_TEMPLATES", {"positive": ("Good {item}.",), "negative": ("Bad {item}.",),
                                                "neutral": ("The {item} {fact}.",)})  # fmt: skip
    ds = generate(60, seed=1, kind="text")
    texts = [o.text for o in ds.all_objects()]
    assert len(set(texts)) == len(texts)
    assert sum("(order #" in t for t in texts) == len(texts) - 3  # type: ignore[operator]


def test_generating_2000_objects_gives_2000_distinct_objects() -> None:
    ds = generate(2000, seed=9)
    assert len(ds.images) + len(ds.texts) == 2000
    assert len({o.key for o in [*ds.images, *ds.texts]}) == 2000


@pytest.mark.parametrize(
    "kwargs",
    [
        {"n_objects": -1, "seed": 0},
        {"n_objects": 10, "seed": 0, "kind": "audio"},
        {"n_objects": 10, "seed": 0, "gold_share": 1.0},
        {"n_objects": 10, "seed": 0, "min_gold": -1},
    ],
)
def test_bad_arguments_are_rejected(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        generate(**kwargs)


def test_zero_objects_gives_an_empty_dataset() -> None:
    ds = generate(0, seed=0)
    assert ds.all_objects() == [] and ds.truth_by_key() == {}


def test_write_image_folder(tmp_path) -> None:
    ds = generate(10, seed=6, kind="image")
    paths = write_image_folder(ds.images + ds.gold_images, tmp_path / "images")
    assert [p.name for p in paths] == [f"{o.name}.png" for o in ds.images + ds.gold_images]
    assert all(p.read_bytes() == o.data for p, o in zip(paths, ds.images + ds.gold_images, strict=True))
    with pytest.raises(ValueError):
        write_image_folder(generate(2, seed=6, kind="text").texts, tmp_path / "nope")
    assert not (tmp_path / "nope").exists()


def test_write_text_jsonl(tmp_path) -> None:
    ds = generate(10, seed=7, kind="text")
    path = write_text_jsonl(ds.texts + ds.gold_texts, tmp_path / "sub" / "texts.jsonl")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert len(rows) == 15
    for row, obj in zip(rows, ds.texts + ds.gold_texts, strict=True):
        assert row["id"] == obj.name and row["text"] == obj.text
        assert row.get("gold_label") == (obj.label if obj.gold else None)
    with pytest.raises(ValueError):
        write_text_jsonl(generate(2, seed=7, kind="image").images, tmp_path / "nope.jsonl")


def test_gold_objects_cover_every_label() -> None:
    ds = generate(100, seed=8)
    assert {o.label for o in ds.gold_images} == set(IMAGE_LABELS)
    assert {o.label for o in ds.gold_texts} == set(TEXT_LABELS)
