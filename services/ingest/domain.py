"""Ingest's pure logic: jobs (their specs, defaults and spec checks are
:mod:`quorum.jobspecs`', shared with payments' quotes), the checks a file must pass,
reassembling files from upload chunks, parsing manifests and cutting objects
into micro-tasks.

Nothing here does I/O beyond decoding bytes in memory (Pillow for images);
the service layer (:mod:`services.ingest.handlers`) stores and publishes.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from PIL import Image, UnidentifiedImageError

from quorum.errors import InvalidArgument
from quorum.jobspecs import JobSpec as JobSpec
from quorum.jobspecs import TaskType as TaskType
from quorum.jobspecs import normalise_spec as normalise_spec

MAX_IDEMPOTENCY_KEY_CHARS = 200
# Object names end up in reasons, events and the database; a path is rarely longer.
MAX_OBJECT_NAME_CHARS = 1024


class JobState(StrEnum):
    OPEN = "open"
    SEALED = "sealed"
    # The client deleted the dataset; the row stays so that the id keeps naming the job.
    DELETED = "deleted"


class ItemStatus(StrEnum):
    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    REJECTED = "rejected"


class ManifestFormat(StrEnum):
    JSONL = "jsonl"
    CSV = "csv"


def new_id(prefix: str) -> str:
    """``<prefix>_`` and 24 random hex digits, e.g. ``job_3f2a...``."""
    return f"{prefix}_{secrets.token_hex(12)}"


# --------------------------------------------------------------------------- jobs


def check_idempotency_key(key: str) -> str:
    """Returns the key. Raises InvalidArgument("idempotency_key") when it is too long."""
    if len(key) > MAX_IDEMPOTENCY_KEY_CHARS:
        raise InvalidArgument("idempotency_key", f"at most {MAX_IDEMPOTENCY_KEY_CHARS} characters (got {len(key)})")
    return key


@dataclass(frozen=True)
class Job:
    """A job as stored: its normalised spec, state and object counts."""

    job_id: str
    spec: JobSpec
    state: JobState
    objects: int
    gold_objects: int
    rejected: int
    created_at: dt.datetime


def with_sla_deadline(spec: JobSpec, deadline: dt.datetime | None, now: dt.datetime) -> JobSpec:
    """The spec with a new SLA deadline (None: none). Raises InvalidArgument("sla_deadline")
    for a deadline that is not in the future."""
    if deadline is not None and deadline <= now:
        raise InvalidArgument("sla_deadline", f"must be in the future (got {deadline.isoformat()})")
    return replace(spec, sla_deadline=deadline)


def scrubbed_spec(spec: JobSpec) -> JobSpec:
    """What a deleted job keeps of its spec: the terms, without the client's free text."""
    return replace(spec, name="", instructions="")


@dataclass(frozen=True)
class DeleteSummary:
    """What one DeleteJob call removed."""

    job_id: str
    items_deleted: int
    objects_deleted: int


# --------------------------------------------------------------------------- files


@dataclass(frozen=True)
class Limits:
    """Size limits of one object (from the settings)."""

    max_file_bytes: int
    max_text_bytes: int
    max_image_pixels: int


@dataclass(frozen=True)
class Content:
    """A file that passed its checks: the bytes to store (texts are stripped UTF-8)."""

    data: bytes
    content_type: str
    # The inline body of a text object; "" for media.
    text: str = ""


@dataclass(frozen=True)
class Rejection:
    reason: str


# Formats browsers (and so the worker UI) display.
IMAGE_CONTENT_TYPES = {
    "PNG": "image/png",
    "JPEG": "image/jpeg",
    "GIF": "image/gif",
    "WEBP": "image/webp",
    "BMP": "image/bmp",
}
TEXT_CONTENT_TYPE = "text/plain; charset=utf-8"
_IMAGE_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF87a", b"GIF89a")


def check_content(
    name: str, data: bytes, size: int, gold_label: str, spec: JobSpec, limits: Limits
) -> Content | Rejection:
    """Decides whether one object may join a job.

    ``size`` is the number of bytes received (``data`` is empty when it exceeded
    ``limits.max_file_bytes``, as the bytes were not kept). Images must decode
    fully with Pillow and stay within ``max_image_pixels``; texts must be UTF-8,
    non-empty once stripped and within ``max_text_bytes``; a gold label must be one
    of the job's labels. Never raises for bad content: returns a
    :class:`Rejection` with the reason. Costs one full decode of the image.
    """
    if len(name) > MAX_OBJECT_NAME_CHARS:
        return Rejection(f"name too long: {len(name)} characters > limit {MAX_OBJECT_NAME_CHARS}")
    if size == 0:
        return Rejection("empty file")
    if size > limits.max_file_bytes:
        return Rejection(f"file too large: {size} bytes > limit {limits.max_file_bytes} (max_file_bytes)")
    if spec.task_type is None:
        return Rejection("the job has no task type")
    if gold_label and not spec.task_type.categorical:
        return Rejection(f"gold_label: gold objects are supported in classification jobs only, not {spec.task_type}")
    if gold_label and gold_label not in spec.labels:
        return Rejection(f"gold_label {gold_label!r} is not in the job's labels")
    media = spec.task_type.media
    if media == "any":
        media = "image" if _looks_like_image(data) else "text"
    if media == "image":
        return check_image(data, limits.max_image_pixels, spec.task_type)
    checked = check_text(data, limits.max_text_bytes, spec.task_type)
    if spec.task_type is TaskType.PAIRWISE_COMPARISON and isinstance(checked, Content):
        return check_pair(checked)
    return checked


def _looks_like_image(data: bytes) -> bool:
    return data.startswith(_IMAGE_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP") or data[:2] == b"BM"


def check_pair(content: Content) -> Content | Rejection:
    """A pairwise object: a JSON object with the two items as non-empty strings "a" and "b"."""
    try:
        pair = json.loads(content.text)
    except json.JSONDecodeError as exc:
        return Rejection(f'a pairwise_comparison object is JSON {{"a": ..., "b": ...}}: {exc}')
    if not isinstance(pair, dict) or set(pair) != {"a", "b"}:
        return Rejection('a pairwise_comparison object is a JSON object with exactly the keys "a" and "b"')
    for key in ("a", "b"):
        if not isinstance(pair[key], str) or not pair[key].strip():
            return Rejection(f'item "{key}" of the pair must be a non-empty string')
    return content


def check_image(
    data: bytes, max_pixels: int, task_type: TaskType = TaskType.IMAGE_CLASSIFICATION
) -> Content | Rejection:
    """Decodes an image completely (header, checksums, every pixel). Returns its
    content type or a rejection: not an image, truncated, too many pixels, or a
    format browsers cannot show."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt = image.format or "unknown"
            width, height = image.size
            # Checked before decoding anything, so a decompression bomb costs only its header.
            if width * height > max_pixels:
                return Rejection(f"image too large: {width * height} pixels > limit {max_pixels} ({width}x{height})")
            image.verify()
        # verify() leaves the image unusable and skips the pixel data; only load() sees truncation.
        with Image.open(io.BytesIO(data)) as image:
            image.load()
    except Image.DecompressionBombError as exc:
        return Rejection(f"image too large: {exc}")
    except UnidentifiedImageError:
        if _looks_like_text(data):
            return Rejection(f"unsupported file: expected an image for {article(task_type)} job")
        return Rejection("not a decodable image: cannot identify the image format")
    except Exception as exc:
        # Decoders of untrusted bytes raise many kinds (OSError, SyntaxError, struct.error, ...).
        message = str(exc) or type(exc).__name__
        if isinstance(exc, EOFError) or "truncated" in message.lower():
            return Rejection("truncated image")
        return Rejection(f"not a decodable image: {message}")
    content_type = IMAGE_CONTENT_TYPES.get(fmt)
    if content_type is None:
        supported = ", ".join(IMAGE_CONTENT_TYPES)
        return Rejection(f"unsupported image format {fmt}: use {supported}")
    return Content(data=data, content_type=content_type)


def check_text(
    data: bytes, max_text_bytes: int, task_type: TaskType = TaskType.TEXT_CLASSIFICATION
) -> Content | Rejection:
    """Checks a text object and returns it stripped, as UTF-8 without a byte-order mark."""
    if data.startswith(_IMAGE_MAGIC) or (data[:4] == b"RIFF" and data[8:12] == b"WEBP"):
        return Rejection(f"unsupported file: expected text for {article(task_type)} job")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        return Rejection(f"not UTF-8 text: invalid byte at offset {exc.start}")
    if "\x00" in text:
        return Rejection("not UTF-8 text: contains NUL bytes")
    text = text.strip()
    if not text:
        return Rejection("empty text")
    body = text.encode()
    if len(body) > max_text_bytes:
        return Rejection(f"text too long: {len(body)} bytes > limit {max_text_bytes} (max_text_bytes)")
    return Content(data=body, content_type=TEXT_CONTENT_TYPE, text=text)


def _looks_like_text(data: bytes) -> bool:
    try:
        sample = data[:4096].decode("utf-8")
    except UnicodeDecodeError as exc:
        # A multi-byte character cut by the 4 KiB sample is still text.
        if exc.start < 4096 - 4:
            return False
        sample = data[: exc.start].decode("utf-8")
    return "\x00" not in sample


# --------------------------------------------------------------------------- upload streams


@dataclass(frozen=True)
class Chunk:
    """One UploadChunk."""

    job_id: str = ""
    filename: str = ""
    data: bytes = b""
    end_of_file: bool = False
    gold_label: str = ""


@dataclass(frozen=True)
class IncomingFile:
    """A whole file from a stream. ``data`` is empty when ``size`` exceeded the limit."""

    name: str
    data: bytes
    size: int
    gold_label: str


@dataclass
class _OpenFile:
    name: str
    gold_label: str
    pieces: list[bytes] = field(default_factory=list)
    size: int = 0
    oversized: bool = False


class FileAssembler:
    """Turns a stream of chunks into whole files.

    A chunk with a filename other than the open file's starts a new file; a file
    ends at ``end_of_file``, at the next filename or at :meth:`finish`. Bytes
    beyond ``max_file_bytes`` are counted but not kept, so an oversized file costs
    no more memory than the limit.
    """

    def __init__(self, max_file_bytes: int) -> None:
        self._max_file_bytes = max_file_bytes
        self._open: _OpenFile | None = None
        self._chunks = 0

    def feed(self, chunk: Chunk) -> list[IncomingFile]:
        """Returns the files this chunk completed (zero, one or two).

        Raises InvalidArgument("filename") for a first chunk without a filename or
        for data that belongs to no open file.
        """
        self._chunks += 1
        done: list[IncomingFile] = []
        current = self._open
        if chunk.filename and (current is None or chunk.filename != current.name):
            if current is not None:
                done.append(self._close(current))
            current = self._open = _OpenFile(chunk.filename, chunk.gold_label.strip())
        elif current is None:
            if self._chunks == 1:
                raise InvalidArgument("filename", "the first chunk must name its file")
            if chunk.data:
                raise InvalidArgument(
                    "filename", f"chunk {self._chunks} carries data but no file is open: name the file"
                )
            return done
        current.size += len(chunk.data)
        if current.size > self._max_file_bytes:
            current.oversized = True
            current.pieces.clear()
        elif chunk.data:
            current.pieces.append(chunk.data)
        if chunk.end_of_file:
            done.append(self._close(current))
        return done

    def finish(self) -> IncomingFile | None:
        """Closes the file still open at the end of the stream, if any."""
        return self._close(self._open) if self._open is not None else None

    def _close(self, current: _OpenFile) -> IncomingFile:
        self._open = None
        data = b"" if current.oversized else b"".join(current.pieces)
        return IncomingFile(current.name, data, current.size, current.gold_label)


# --------------------------------------------------------------------------- manifests


@dataclass(frozen=True)
class ManifestEntry:
    """One manifest line: inline ``text`` or a server-side ``path`` (exactly one),
    or ``error`` ("line N: ...") when the line is malformed."""

    line: int
    name: str
    text: str | None = None
    path: str | None = None
    gold_label: str = ""
    error: str | None = None


MANIFEST_COLUMNS = ("id", "text", "path", "gold_label")


def parse_manifest(content: bytes, fmt: ManifestFormat) -> Iterator[ManifestEntry]:
    """Parses a JSONL manifest (one object per line) or a CSV one (header row of
    columns among id, text, path, gold_label). Blank lines are skipped.

    Raises InvalidArgument("content") at once when the content is not UTF-8 or
    the CSV header is unusable; a malformed line becomes an entry with ``error``
    and the other lines go on. Lazy: costs one line at a time.
    """
    try:
        text = content.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidArgument("content", f"not UTF-8: invalid byte at offset {exc.start}") from exc
    if fmt is ManifestFormat.JSONL:
        return _jsonl_entries(text)
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise InvalidArgument("content", f"CSV header: {exc}") from exc
    if header is None:
        return iter(())
    columns = [column.strip().lower() for column in header]
    for column in columns:
        if column not in MANIFEST_COLUMNS:
            raise InvalidArgument(
                "content", f"CSV header: unknown column {column!r}; use {', '.join(MANIFEST_COLUMNS)}"
            )
    if len(set(columns)) != len(columns):
        raise InvalidArgument("content", "CSV header: a column appears twice")
    if "text" not in columns and "path" not in columns:
        raise InvalidArgument("content", "CSV header: needs a 'text' or a 'path' column")
    return _csv_entries(reader, columns)


def _jsonl_entries(text: str) -> Iterator[ManifestEntry]:
    # Not splitlines(): JSON strings may hold U+2028 and other separators it would split on.
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw.rstrip("\r")
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            yield ManifestEntry(number, f"line {number}", error=f"line {number}: not valid JSON: {exc}")
            continue
        if not isinstance(record, dict):
            kind = type(record).__name__
            yield ManifestEntry(number, f"line {number}", error=f"line {number}: expected a JSON object, got {kind}")
            continue
        yield _entry(number, record)


def _csv_entries(reader: Any, columns: list[str]) -> Iterator[ManifestEntry]:
    while True:
        number = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield ManifestEntry(number, f"line {number}", error=f"line {number}: bad CSV: {exc}")
            continue
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(columns):
            yield ManifestEntry(
                number,
                f"line {number}",
                error=f"line {number}: expected {len(columns)} fields as in the header, got {len(row)}",
            )
            continue
        # An empty CSV cell is an absent value.
        yield _entry(number, {column: cell for column, cell in zip(columns, row, strict=True) if cell != ""})


def _entry(number: int, record: dict[str, Any]) -> ManifestEntry:
    ident = record.get("id")
    if isinstance(ident, int) and not isinstance(ident, bool):
        ident = str(ident)
    name = ident if isinstance(ident, str) and ident else f"line {number}"

    def bad(problem: str) -> ManifestEntry:
        return ManifestEntry(number, name, error=f"line {number}: {problem}")

    if ident is not None and not isinstance(ident, str):
        return bad("'id' must be a string")
    text, path, gold = record.get("text"), record.get("path"), record.get("gold_label")
    if text is not None and not isinstance(text, str):
        return bad("'text' must be a string")
    if path is not None and (not isinstance(path, str) or not path.strip()):
        return bad("'path' must be a non-empty string")
    if gold is not None and not isinstance(gold, str):
        return bad("'gold_label' must be a string")
    if text is not None and path is not None:
        return bad("has both 'text' and 'path'; give one")
    if text is None and path is None:
        return bad("needs 'text' or 'path'")
    return ManifestEntry(number, name, text=text, path=path, gold_label=(gold or "").strip())


# --------------------------------------------------------------------------- sharding


@dataclass(frozen=True)
class AcceptedObject:
    """An object that joined a job, about to be cut into tasks."""

    item_id: str
    name: str
    object_key: str
    content_type: str
    text: str
    gold_label: str


# The part of an object a task covers. Classification labels the whole object; later
# task types name their part here ("tile:x,y,w,h", "chars:0-4096", "ms:0-30000", "frames:0-120").
WHOLE_OBJECT = "whole"


@dataclass(frozen=True)
class TaskDraft:
    task_id: str
    item_id: str
    segment: str
    # The inline body for text tasks: the whole text or, later, its chunk.
    text: str


def shard(obj: AcceptedObject, task_type: TaskType) -> list[TaskDraft]:
    """Cuts an accepted object into micro-tasks.

    Every task type labels the whole object: exactly one task (span offsets and
    box coordinates then refer to the whole text or image). This is where image
    tiling, text chunking, audio segments and video frame spans go when they
    arrive.
    """
    return [TaskDraft(new_id("task"), obj.item_id, WHOLE_OBJECT, obj.text)]


# --------------------------------------------------------------------------- outcomes


@dataclass(frozen=True)
class ItemOutcome:
    """What became of one file or manifest line."""

    name: str
    status: ItemStatus
    item_id: str = ""
    reason: str = ""


@dataclass(frozen=True)
class UploadSummary:
    job_id: str
    items: tuple[ItemOutcome, ...]

    def count(self, status: ItemStatus) -> int:
        return sum(1 for item in self.items if item.status is status)


def article(task_type: TaskType) -> str:
    """``task_type`` with its indefinite article, for messages."""
    return f"an {task_type}" if task_type[0] in "aeiou" else f"a {task_type}"
