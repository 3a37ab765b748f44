"""Images of short sentences for transcription jobs: a few words from a fixed list rendered
on a noisy background; the truth is the sentence.

Ingest takes an image in a transcription job as the thing to transcribe (the job's media is
"any": images by their format, texts otherwise) and makes one task of it. Sentences are
lower-case words separated by single spaces, no punctuation, so word error rate is plain to
compute. Images are distinct; :func:`generate_lines` is deterministic for a seed in a given
environment (the glyphs come from Pillow's default font). :func:`transcribe` is how a
simulated worker answers one, :func:`word_errors` how an answer is scored.
"""

from __future__ import annotations

import random
import string

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from quorum.demo.items import ItemSet, distinct_items, noisy_png
from quorum.demo.workers import WorkerProfile

__all__ = ["WORDS", "generate_lines", "transcribe", "word_errors"]

WORDS: tuple[str, ...] = (
    "apple", "river", "window", "green", "quiet", "market", "yellow", "paper", "garden", "stone",
    "winter", "silver", "bridge", "orange", "castle", "forest", "little", "purple", "candle", "summer",
    "harbour", "pencil", "rabbit", "thunder", "valley", "blanket", "copper", "meadow", "lantern", "island",
    "basket", "ladder", "pocket", "ribbon", "saddle", "tunnel", "violet", "wander", "zipper", "anchor",
)  # fmt: skip
_MIN_WORDS, _MAX_WORDS = 3, 6
_FONT_SIZE = 16
_HEIGHT = 28


def generate_lines(n_images: int, seed: int) -> ItemSet[str]:
    """``n_images`` distinct PNGs named ``line-00000``, ..., each showing a sentence of 3 to 6
    words of ``WORDS``, its truth. Raises ValueError for a negative ``n_images``. Costs about
    1 ms per image; images are about 6 KB."""
    rng = random.Random(f"quorum-demo-lines:{seed}")
    noise_rng = np.random.default_rng(rng.getrandbits(64))
    font = ImageFont.load_default(size=_FONT_SIZE)

    def draw() -> tuple[bytes, str]:
        sentence = " ".join(rng.choices(WORDS, k=rng.randint(_MIN_WORDS, _MAX_WORDS)))
        width = round(ImageDraw.Draw(Image.new("L", (1, 1))).textlength(sentence, font=font)) + 16
        ink = rng.randint(0, 70)
        canvas = Image.new("RGB", (width, _HEIGHT), (rng.randint(200, 250),) * 3)
        ImageDraw.Draw(canvas).text((8, 5), sentence, fill=(ink, ink, ink), font=font)
        return noisy_png(canvas, noise_rng), sentence

    return ItemSet(seed, (), distinct_items(n_images, "line", draw))


def transcribe(profile: WorkerProfile, truth: str | None, rng: random.Random) -> str:
    """What ``profile`` types for an image that shows ``truth``.

    An honest worker with error rate ``e`` leaves out each word with probability ``e / 6`` and
    misspells it with probability ``e / 3`` (two neighbouring letters swapped, or one letter
    replaced). A ``"constant"`` spammer always types the same words (chosen by its
    ``constant_choice``); a ``"uniform"`` one types 3 to 6 random words, as does anyone when
    ``truth`` is None (an image it cannot read)."""
    if profile.constant_spammer:
        return " ".join(WORDS[(profile.constant_choice + i) % len(WORDS)] for i in range(_MIN_WORDS))
    if profile.spammer or truth is None:
        return " ".join(rng.choices(WORDS, k=rng.randint(_MIN_WORDS, _MAX_WORDS)))
    error = profile.error_rate
    typed: list[str] = []
    for word in truth.split():
        draw = rng.random()
        if draw < error / 6:
            continue
        typed.append(_misspelt(word, rng) if draw < error / 2 else word)
    return " ".join(typed)


def _misspelt(word: str, rng: random.Random) -> str:
    i = rng.randrange(max(len(word) - 1, 1))
    # Swapping two equal letters ("apple") would change nothing: such a word gets a wrong letter.
    if len(word) > 1 and word[i] != word[i + 1] and rng.random() < 0.5:
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    j = rng.randrange(len(word))
    return word[:j] + rng.choice([c for c in string.ascii_lowercase if c != word[j]]) + word[j + 1 :]


def word_errors(typed: str, truth: str) -> int:
    """Word-level edit distance (substitutions, deletions, insertions) between ``typed`` and
    ``truth``, each split on whitespace: the numerator of the word error rate. Costs
    O(words * words)."""
    hyp, ref = typed.split(), truth.split()
    previous = list(range(len(hyp) + 1))
    for i, word in enumerate(ref, start=1):
        current = [i]
        for j, other in enumerate(hyp, start=1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (word != other)))
        previous = current
    return previous[-1]
