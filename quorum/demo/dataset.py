"""Synthetic pilot data with known ground truth: shape images and short sentiment texts.

Nothing is downloaded. :func:`generate` is deterministic for a seed in a given environment
(the PNG bytes depend on the zlib build, so another machine may produce different bytes for
the same pictures). Every object in a dataset is distinct by content, so the content
fingerprint (:func:`content_key`) identifies it: the simulated crowd uses that to look up the
true label of whatever task it is shown, exactly as a real service would deduplicate uploads.

Typical use::

    ds = generate(200, seed=7)
    write_image_folder(ds.images, "pilot/images")
    write_text_jsonl(ds.texts + ds.gold_texts, "pilot/texts.jsonl")
    truth = ds.truth_by_key()
"""

from __future__ import annotations

import colorsys
import hashlib
import io
import json
import math
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "IMAGE_LABELS",
    "IMAGE_SIZE",
    "TEXT_LABELS",
    "DatasetKind",
    "DemoDataset",
    "DemoObject",
    "ObjectKind",
    "content_key",
    "generate",
    "sentiment_text",
    "write_image_folder",
    "write_text_jsonl",
]

ObjectKind = Literal["image", "text"]
DatasetKind = Literal["mixed", "image", "text"]

IMAGE_LABELS: tuple[str, ...] = ("circle", "square", "triangle", "star")
TEXT_LABELS: tuple[str, ...] = ("positive", "negative", "neutral")
IMAGE_SIZE = 64

# Shapes are drawn at this multiple of the final size and box-filtered down: Pillow draws
# polygons without anti-aliasing, and jagged edges at 64 px make small triangles look like noise.
_SUPERSAMPLE = 3
_NOISE_SIGMA = 9.0


@dataclass(frozen=True)
class DemoObject:
    """One pilot object with its true label.

    Images carry PNG bytes in ``data`` and ``text`` is None; texts carry ``text`` and ``data``
    is None. ``gold`` marks known-answer objects that a client uploads with their label.
    """

    name: str
    kind: ObjectKind
    label: str
    data: bytes | None = None
    text: str | None = None
    gold: bool = False

    @property
    def content(self) -> bytes:
        """The bytes a service stores for this object: the PNG, or the UTF-8 text."""
        if self.data is not None:
            return self.data
        if self.text is not None:
            return self.text.encode("utf-8")
        raise ValueError(f"object {self.name!r} has neither data nor text")

    @property
    def key(self) -> str:
        """Content fingerprint, as :func:`content_key` computes it. Costs one SHA-256 pass."""
        return content_key(self.content)


def content_key(content: bytes | str) -> str:
    """SHA-256 hex digest of raw bytes, or of a string's UTF-8 encoding.

    This is the fingerprint used by :meth:`DemoDataset.truth_by_key`; a worker that receives
    the same bytes (or text) computes the same key.
    """
    if isinstance(content, str):
        content = content.encode("utf-8")
    return hashlib.sha256(content).hexdigest()


@dataclass(frozen=True)
class DemoDataset:
    """A generated pilot dataset.

    ``images`` and ``texts`` are the objects to label; ``gold_images`` and ``gold_texts`` are
    extra known-answer objects (distinct from every other object) for the client to upload with
    ``gold_label`` set. ``image_labels`` and ``text_labels`` are the label sets of the two jobs.
    """

    seed: int
    image_labels: tuple[str, ...]
    text_labels: tuple[str, ...]
    images: list[DemoObject] = field(default_factory=list)
    texts: list[DemoObject] = field(default_factory=list)
    gold_images: list[DemoObject] = field(default_factory=list)
    gold_texts: list[DemoObject] = field(default_factory=list)

    def all_objects(self) -> list[DemoObject]:
        """Every object: images, texts, then gold images and gold texts."""
        return [*self.images, *self.texts, *self.gold_images, *self.gold_texts]

    def truth_by_key(self) -> dict[str, str]:
        """Maps each object's content fingerprint (:func:`content_key`) to its true label.

        Includes gold objects. Costs one SHA-256 pass over every object (about 10 ms for 2000
        objects); callers that need it repeatedly should keep the result.
        """
        return {obj.key: obj.label for obj in self.all_objects()}


def generate(
    n_objects: int,
    seed: int,
    kind: DatasetKind = "mixed",
    *,
    gold_share: float = 0.05,
    min_gold: int = 5,
) -> DemoDataset:
    """Generates ``n_objects`` distinct objects with known labels, plus gold objects.

    ``kind="mixed"`` splits the objects between images (the odd one goes to images) and texts;
    ``"image"`` or ``"text"`` makes only that kind. Labels are balanced (counts differ by at
    most one) and shuffled, within each kind and separately for regular and gold objects. For
    each kind that has objects, ``max(min_gold, round(gold_share * count))`` gold objects are
    added on top of ``n_objects``.

    Raises ValueError for a negative ``n_objects`` or ``min_gold``, an unknown ``kind`` or a
    ``gold_share`` outside [0, 1). Costs about 0.75 ms per image (half of it PNG encoding) and
    about 20 microseconds per text: ``generate(2000, seed)`` takes about 0.8 s on one core;
    images average 9 KB.
    """
    if n_objects < 0:
        raise ValueError(f"n_objects must be >= 0, got {n_objects}")
    if kind not in ("mixed", "image", "text"):
        raise ValueError(f"kind must be 'mixed', 'image' or 'text', got {kind!r}")
    if not 0.0 <= gold_share < 1.0:
        raise ValueError(f"gold_share must be in [0, 1), got {gold_share}")
    if min_gold < 0:
        raise ValueError(f"min_gold must be >= 0, got {min_gold}")

    if kind == "mixed":
        n_images, n_texts = (n_objects + 1) // 2, n_objects // 2
    elif kind == "image":
        n_images, n_texts = n_objects, 0
    else:
        n_images, n_texts = 0, n_objects

    def gold_count(n: int) -> int:
        return max(min_gold, round(gold_share * n)) if n > 0 else 0

    # One stream per kind, so the images of a seed do not change when texts are added.
    image_rng = random.Random(f"quorum-demo:{seed}:image")
    text_rng = random.Random(f"quorum-demo:{seed}:text")

    # Regular and gold labels are balanced separately, so both sets have every label.
    image_labels = _balanced_labels(n_images, IMAGE_LABELS, image_rng)
    image_labels += _balanced_labels(gold_count(n_images), IMAGE_LABELS, image_rng)
    text_labels = _balanced_labels(n_texts, TEXT_LABELS, text_rng)
    text_labels += _balanced_labels(gold_count(n_texts), TEXT_LABELS, text_rng)
    images, gold_images = _split_gold(_make_images(image_labels, image_rng), n_images, "image")
    texts, gold_texts = _split_gold(_make_texts(text_labels, text_rng), n_texts, "text")
    return DemoDataset(
        seed=seed,
        image_labels=IMAGE_LABELS,
        text_labels=TEXT_LABELS,
        images=images,
        texts=texts,
        gold_images=gold_images,
        gold_texts=gold_texts,
    )


def write_image_folder(objects: Iterable[DemoObject], folder: str | Path) -> list[Path]:
    """Writes each image object as ``<folder>/<name>.png``, creating the folder.

    Existing files with the same names are overwritten. Returns the paths written, in order.
    Raises ValueError for an object that is not an image (checked before anything is
    written) and OSError when the folder cannot be written.
    """
    items = list(objects)
    for obj in items:
        if obj.kind != "image" or obj.data is None:
            raise ValueError(f"object {obj.name!r} is not an image")
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    for obj in items:
        path = out / f"{obj.name}.png"
        path.write_bytes(obj.data)  # type: ignore[arg-type]  # checked above
        paths.append(path)
    return paths


def write_text_jsonl(objects: Iterable[DemoObject], path: str | Path) -> Path:
    """Writes text objects as a JSONL manifest: ``{"id", "text"}`` plus ``"gold_label"`` on gold.

    This is the manifest format of ``IngestService.ImportManifest``. Creates the parent folder
    and overwrites the file. Returns the path. Raises ValueError for an object that is not a
    text (checked before anything is written) and OSError when the file cannot be written.
    """
    lines: list[str] = []
    for obj in objects:
        if obj.kind != "text" or obj.text is None:
            raise ValueError(f"object {obj.name!r} is not a text")
        row: dict[str, str] = {"id": obj.name, "text": obj.text}
        if obj.gold:
            row["gold_label"] = obj.label
        lines.append(json.dumps(row, ensure_ascii=False))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return out


# --------------------------------------------------------------------------- shared helpers


def _balanced_labels(n: int, labels: Sequence[str], rng: random.Random) -> list[str]:
    out = [labels[i % len(labels)] for i in range(n)]
    rng.shuffle(out)
    return out


def _split_gold(
    objects: list[DemoObject], n_regular: int, kind: ObjectKind
) -> tuple[list[DemoObject], list[DemoObject]]:
    regular = [DemoObject(f"{kind}-{i:05d}", kind, o.label, o.data, o.text) for i, o in enumerate(objects[:n_regular])]
    gold = [
        DemoObject(f"gold-{kind}-{i:04d}", kind, o.label, o.data, o.text, gold=True)
        for i, o in enumerate(objects[n_regular:])
    ]
    return regular, gold


# --------------------------------------------------------------------------- images


def _make_images(labels: list[str], rng: random.Random) -> list[DemoObject]:
    noise_rng = np.random.default_rng(rng.getrandbits(64))
    seen: set[bytes] = set()
    out: list[DemoObject] = []
    for label in labels:
        # Background noise makes a repeat practically impossible; the loop only guarantees it.
        while True:
            data = _render_image(label, rng, noise_rng)
            digest = hashlib.sha256(data).digest()
            if digest not in seen:
                seen.add(digest)
                break
        out.append(DemoObject("", "image", label, data=data))
    return out


def _hls(h: float, lightness: float, s: float) -> tuple[int, int, int]:
    r, g, b = colorsys.hls_to_rgb(h % 1.0, lightness, s)
    return round(r * 255), round(g * 255), round(b * 255)


def _colours(rng: random.Random) -> tuple[tuple[int, int, int], tuple[int, int, int], tuple[int, int, int]]:
    """Background, fill and outline colours with enough lightness contrast to see the shape."""
    bg_hue = rng.random()
    # Hue at least 60 degrees away from the background, so the shape never blends in.
    fg_hue = bg_hue + rng.uniform(1 / 6, 5 / 6)
    if rng.random() < 0.75:
        bg_l, fg_l = rng.uniform(0.78, 0.95), rng.uniform(0.25, 0.5)
    else:
        bg_l, fg_l = rng.uniform(0.08, 0.25), rng.uniform(0.55, 0.8)
    bg = _hls(bg_hue, bg_l, rng.uniform(0.1, 0.6))
    fg = _hls(fg_hue, fg_l, rng.uniform(0.55, 1.0))
    outline = _hls(fg_hue, fg_l * 0.6, rng.uniform(0.5, 1.0))
    return bg, fg, outline


def _shape_points(label: str, cx: float, cy: float, r: float, angle: float) -> list[tuple[float, float]]:
    if label == "square":
        corners = [angle + math.pi / 4 + k * math.pi / 2 for k in range(4)]
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in corners]
    if label == "triangle":
        corners = [angle + k * 2 * math.pi / 3 for k in range(3)]
        return [(cx + r * math.cos(a), cy + r * math.sin(a)) for a in corners]
    if label == "star":
        points = []
        for k in range(10):
            radius = r if k % 2 == 0 else r * 0.42
            a = angle + k * math.pi / 5
            points.append((cx + radius * math.cos(a), cy + radius * math.sin(a)))
        return points
    raise ValueError(f"no polygon for label {label!r}")


def _render_image(label: str, rng: random.Random, noise_rng: np.random.Generator) -> bytes:
    size = IMAGE_SIZE * _SUPERSAMPLE
    bg, fg, outline = _colours(rng)
    canvas = Image.new("RGB", (size, size), bg)
    draw = ImageDraw.Draw(canvas)

    # Circumradius in final pixels, scaled per shape so that all shapes cover comparable areas
    # and size alone does not give the label away.
    r = rng.uniform(0.2, 0.4) * IMAGE_SIZE
    if label == "circle":
        r *= 0.8
    elif label == "triangle":
        r *= 1.15
    margin = r + 2
    cx = rng.uniform(margin, IMAGE_SIZE - margin) * _SUPERSAMPLE
    cy = rng.uniform(margin, IMAGE_SIZE - margin) * _SUPERSAMPLE
    rs = r * _SUPERSAMPLE
    width = rng.choice((0, _SUPERSAMPLE, 2 * _SUPERSAMPLE))
    if label == "circle":
        draw.ellipse((cx - rs, cy - rs, cx + rs, cy + rs), fill=fg, outline=outline, width=width)
    else:
        points = _shape_points(label, cx, cy, rs, rng.uniform(0, 2 * math.pi))
        draw.polygon(points, fill=fg, outline=outline if width else None, width=max(width, 1))

    small = canvas.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BOX)
    pixels = np.asarray(small, dtype=np.float32)
    # A random linear gradient plus per-pixel noise: real photos are never flat.
    gx, gy = rng.uniform(-25, 25), rng.uniform(-25, 25)
    ramp = np.linspace(-0.5, 0.5, IMAGE_SIZE, dtype=np.float32)
    gradient = gx * ramp[np.newaxis, :, np.newaxis] + gy * ramp[:, np.newaxis, np.newaxis]
    noise = noise_rng.normal(0.0, _NOISE_SIGMA, size=pixels.shape).astype(np.float32)
    noisy = np.clip(pixels + gradient + noise, 0, 255).astype(np.uint8)

    buf = io.BytesIO()
    Image.fromarray(noisy, "RGB").save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


# --------------------------------------------------------------------------- texts

# Products and experiences get different neutral facts: "the haircut uses two AA batteries"
# reads as a joke, and jokes are not neutral.
_PRODUCTS = (
    "battery", "camera", "pair of headphones", "user manual", "keyboard", "laptop", "phone case",
    "pair of running shoes", "backpack", "tent", "desk chair", "rental car", "blender", "e-reader",
    "board game", "winter jacket", "coffee grinder", "lamp", "water bottle", "umbrella",
)  # fmt: skip
_EXPERIENCES = (
    "delivery", "customer support", "checkout process", "hotel stay", "app update", "train ride",
    "onboarding call", "movie", "concert", "haircut", "yoga class", "website", "museum tour",
    "podcast episode", "dentist visit", "bike repair", "sushi dinner", "cooking course",
    "city tour", "flight",
)  # fmt: skip
_PRODUCT_FACTS = (
    "arrived in a brown box", "comes in three colours", "was delivered at noon",
    "has a one-year warranty", "weighs about a kilogram", "was bought with a voucher",
    "is made in Portugal", "uses two AA batteries", "is listed in the spring catalogue",
    "was picked up from the store", "ships with a printed receipt", "has a grey label",
)  # fmt: skip
_EXPERIENCE_FACTS = (
    "was booked for seven o'clock", "lasted about an hour", "took place downtown",
    "was paid for by card", "started on time", "was scheduled for a Tuesday",
    "was arranged through the front desk", "happened on the second floor",
    "was listed in the weekly newsletter", "was confirmed by email", "had twelve participants",
    "was moved to a different room",
)  # fmt: skip
_WHEN = (
    "last week", "yesterday", "on Monday", "this morning", "over the weekend", "last month",
    "during the holidays", "on my birthday", "after work", "two days ago", "in March", "today",
)  # fmt: skip
_WHO = ("my sister", "a colleague", "my kids", "our team", "a friend", "my partner", "my parents")
_INTENSIFIERS = ("really", "truly", "absolutely", "very", "incredibly", "genuinely", "remarkably")

_POSITIVE_ADJ = (
    "excellent", "fantastic", "wonderful", "great", "superb", "delightful", "impressive",
    "reliable", "lovely", "brilliant", "outstanding", "pleasant",
)  # fmt: skip
_NEGATIVE_ADJ = (
    "terrible", "awful", "disappointing", "useless", "frustrating", "poor", "unreliable",
    "horrible", "shoddy", "dreadful", "annoying", "overpriced",
)  # fmt: skip
_POSITIVE_CLAUSES = (
    "it exceeded every expectation", "I would happily pay for it again", "it made my day",
    "everything worked perfectly", "it was worth every penny", "I am thrilled with it",
)  # fmt: skip
_NEGATIVE_CLAUSES = (
    "it fell apart within days", "I want my money back", "it ruined my afternoon",
    "nothing worked as promised", "it was a waste of money", "I am fed up with it",
)  # fmt: skip

_TEMPLATES: dict[str, tuple[str, ...]] = {
    "positive": (
        "The {item} was {intens} {adj}.",
        "I tried the {item} {when} and {pclause}.",
        "Really happy with the {item}: {adj} from start to finish.",
        "Five stars for the {item}, {intens} {adj}!",
        "{Who} loved the {item}; {pclause}.",
        "What {a_adj} {item}. {Pclause}.",
        "Would recommend the {item} to anyone, it is {adj}.",
    ),
    "negative": (
        "The {item} was {intens} {nadj}.",
        "I tried the {item} {when} and {nclause}.",
        "Really unhappy with the {item}: {nadj} from start to finish.",
        "One star for the {item}, {intens} {nadj}!",
        "{Who} hated the {item}; {nclause}.",
        "What {a_nadj} {item}. {Nclause}.",
        "Would not recommend the {item} to anyone, it is {nadj}.",
    ),
    "neutral": (
        "The {item} {fact}.",
        "I checked the {item} {when}; it {fact}.",
        "{Who} asked about the {item}, which {fact}.",
        "Note: the {item} {fact}.",
        "The {item} I ordered {when} {fact}.",
        "For the record, the {item} {fact}.",
        "{Who} mentioned {when} that the {item} {fact}.",
        "As {who} noticed {when}, the {item} {fact}.",
    ),
}


def _capitalised(phrase: str) -> str:
    return phrase[0].upper() + phrase[1:]


def _with_article(word: str) -> str:
    return f"an {word}" if word[0] in "aeiou" else f"a {word}"


def _fill(template: str, rng: random.Random) -> str:
    if rng.random() < 0.5:
        item, fact = rng.choice(_PRODUCTS), rng.choice(_PRODUCT_FACTS)
    else:
        item, fact = rng.choice(_EXPERIENCES), rng.choice(_EXPERIENCE_FACTS)
    adj, nadj = rng.choice(_POSITIVE_ADJ), rng.choice(_NEGATIVE_ADJ)
    pclause, nclause = rng.choice(_POSITIVE_CLAUSES), rng.choice(_NEGATIVE_CLAUSES)
    who = rng.choice(_WHO)
    return template.format(
        item=item,
        fact=fact,
        when=rng.choice(_WHEN),
        intens=rng.choice(_INTENSIFIERS),
        adj=adj,
        a_adj=_with_article(adj),
        nadj=nadj,
        a_nadj=_with_article(nadj),
        pclause=pclause,
        Pclause=_capitalised(pclause),
        nclause=nclause,
        Nclause=_capitalised(nclause),
        who=who,
        Who=_capitalised(who),
    )


def sentiment_text(label: str, rng: random.Random) -> str:
    """A short review whose sentiment is ``label`` (one of ``TEXT_LABELS``), drawn from
    ``rng``. Raises KeyError for another label."""
    return _fill(rng.choice(_TEMPLATES[label]), rng)


def _make_texts(labels: list[str], rng: random.Random) -> list[DemoObject]:
    seen: set[str] = set()
    out: list[DemoObject] = []
    for label in labels:
        base = text = sentiment_text(label, rng)
        # The templates give tens of thousands of combinations per label, so repeats are rare
        # for pilot sizes; a sentiment-free order number keeps large sets distinct.
        while text in seen:
            text = f"{base} (order #{rng.randrange(10_000, 100_000)})"
        seen.add(text)
        out.append(DemoObject("", "text", label, text=text))
    return out
