"""Unit tests of ingest's pure logic: specs, file checks, chunk reassembly, manifests, sharding."""

from __future__ import annotations

import datetime as dt
import json
import math

import ingest_samples as samples
import pytest

from quorum.errors import InvalidArgument
from services.ingest import codec, domain
from services.ingest.domain import (
    Chunk,
    Content,
    FileAssembler,
    JobSpec,
    ManifestFormat,
    Rejection,
    TaskType,
    normalise_spec,
)

LIMITS = domain.Limits(max_file_bytes=10_000, max_text_bytes=100, max_image_pixels=1_000_000)
IMAGE_SPEC = normalise_spec(JobSpec(client_id="acme", task_type=TaskType.IMAGE_CLASSIFICATION, labels=("cat", "dog")))
TEXT_SPEC = normalise_spec(JobSpec(client_id="acme", task_type=TaskType.TEXT_CLASSIFICATION, labels=("pos", "neg")))


def spec(**fields: object) -> JobSpec:
    values: dict[str, object] = {"client_id": "acme", "task_type": TaskType.TEXT_CLASSIFICATION, "labels": ("a", "b")}
    values.update(fields)
    return JobSpec(**values)  # type: ignore[arg-type]


# ----------------------------------------------------------------------------- specs


def test_zero_values_get_the_documented_defaults() -> None:
    normal = normalise_spec(spec(pilot=True, labels=(" a ", "b")))
    assert (normal.overlap_min, normal.overlap_max) == (3, 5)
    assert normal.target_confidence == 0.9
    assert normal.currency == "USD"
    assert normal.pilot_allowance == 100
    assert normal.lease_seconds == 120
    assert normal.labels == ("a", "b")


def test_given_values_are_kept() -> None:
    deadline = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    given = spec(
        overlap_min=1,
        overlap_max=1,
        target_confidence=1.0,
        gold_share=0.25,
        currency="EUR",
        pilot=True,
        pilot_allowance=7,
        lease_seconds=86_400,
        sla_deadline=deadline,
        price_per_object_cents=12,
        pay_per_answer_cents=3,
        price_mode="per_object",
        pay_mode="per_hour",
        pay_per_hour_cents=900,
        budget_cap_cents=5_000,
    )
    assert normalise_spec(given) == given


def test_a_gold_bonus_gets_its_threshold_and_minimum_defaults() -> None:
    normal = normalise_spec(spec(gold_share=0.1, gold_bonus_cents=3))
    assert (normal.gold_bonus_cents, normal.gold_bonus_threshold, normal.gold_bonus_min_answers) == (3, 0.9, 5)
    given = normalise_spec(spec(gold_share=0.1, gold_bonus_cents=3, gold_bonus_threshold=1.0, gold_bonus_min_answers=1))
    assert (given.gold_bonus_threshold, given.gold_bonus_min_answers) == (1.0, 1)
    assert normalise_spec(spec()).gold_bonus_threshold == 0
    assert codec.spec_from_proto(codec.spec_to_proto(normal)) == normal


def test_a_non_pilot_job_keeps_a_zero_allowance() -> None:
    assert normalise_spec(spec(pilot=False)).pilot_allowance == 0


BAD_SPECS = [
    ("spec.client_id", {"client_id": ""}),
    ("spec.client_id", {"client_id": "acme corp"}),
    ("spec.client_id", {"client_id": "a" * 129}),
    ("spec.name", {"name": "n" * 201}),
    ("spec.task", {"task_type": None}),
    ("spec.text_classification.labels", {"labels": ()}),
    ("spec.text_classification.labels", {"labels": ("a", "  ")}),
    ("spec.text_classification.labels", {"labels": ("a", "a ")}),
    ("spec.text_classification.labels", {"labels": tuple(f"l{i}" for i in range(201))}),
    ("spec.text_classification.labels", {"labels": ("x" * 101,)}),
    ("spec.image_classification.labels", {"task_type": TaskType.IMAGE_CLASSIFICATION, "labels": ()}),
    ("spec.overlap.min", {"overlap_min": 0, "overlap_max": 3}),
    ("spec.overlap.min", {"overlap_min": -1, "overlap_max": 3}),
    ("spec.overlap.max", {"overlap_min": 3, "overlap_max": 2}),
    ("spec.overlap.max", {"overlap_min": 3, "overlap_max": 51}),
    ("spec.target_confidence", {"target_confidence": 1.01}),
    ("spec.target_confidence", {"target_confidence": -0.5}),
    ("spec.target_confidence", {"target_confidence": math.nan}),
    ("spec.gold_share", {"gold_share": 1.0}),
    ("spec.gold_share", {"gold_share": -0.1}),
    ("spec.gold_share", {"gold_share": math.nan}),
    ("spec.price_per_object_cents", {"price_per_object_cents": -1}),
    ("spec.pay_per_answer_cents", {"pay_per_answer_cents": -1}),
    ("spec.currency", {"currency": "usd"}),
    ("spec.currency", {"currency": "EURO"}),
    ("spec.pilot_allowance", {"pilot": True, "pilot_allowance": -1}),
    ("spec.lease_seconds", {"lease_seconds": -1}),
    ("spec.lease_seconds", {"lease_seconds": 86_401}),
    ("spec.price_mode", {"price_mode": "#7"}),
    ("spec.pay_mode", {"pay_mode": "per_object"}),
    ("spec.price_per_hour_cents", {"price_mode": "per_hour"}),
    ("spec.price_per_hour_cents", {"price_per_hour_cents": -5}),
    ("spec.pay_per_hour_cents", {"pay_mode": "per_hour"}),
    ("spec.budget_cap_cents", {"budget_cap_cents": -1}),
    ("spec.gold_bonus_cents", {"gold_bonus_cents": -1, "gold_share": 0.1}),
    ("spec.gold_bonus_cents", {"gold_bonus_cents": 5}),
    ("spec.gold_bonus_threshold", {"gold_bonus_cents": 5, "gold_share": 0.1, "gold_bonus_threshold": 1.5}),
    ("spec.gold_bonus_threshold", {"gold_bonus_threshold": -0.1}),
    ("spec.gold_bonus_threshold", {"gold_bonus_threshold": math.nan}),
    ("spec.gold_bonus_min_answers", {"gold_bonus_min_answers": -1}),
    ("spec.gold_bonus_min_answers", {"gold_bonus_min_answers": 10_001}),
]


@pytest.mark.parametrize(("field", "fields"), BAD_SPECS, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD_SPECS)])
def test_a_bad_spec_names_its_field(field: str, fields: dict[str, object]) -> None:
    with pytest.raises(InvalidArgument) as caught:
        normalise_spec(spec(**fields))
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")


def test_limits_are_inclusive() -> None:
    normal = normalise_spec(
        spec(
            name="n" * 200,
            client_id="a" * 128,
            labels=("x" * 100,),
            overlap_min=50,
            overlap_max=50,
        )
    )
    assert normal.overlap_max == 50
    assert normalise_spec(spec(labels=tuple(f"l{i}" for i in range(200)))).labels[-1] == "l199"
    assert normalise_spec(spec(client_id="team.a_b-c@x")).client_id == "team.a_b-c@x"


def test_idempotency_key_length() -> None:
    assert domain.check_idempotency_key("k" * 200) == "k" * 200
    with pytest.raises(InvalidArgument, match="idempotency_key"):
        domain.check_idempotency_key("k" * 201)


def test_ids_have_their_prefix_and_24_hex_digits() -> None:
    job_id = domain.new_id("job")
    assert job_id.startswith("job_") and len(job_id) == 28
    int(job_id[4:], 16)
    assert domain.new_id("job") != job_id


# ----------------------------------------------------------------------------- content checks


@pytest.mark.parametrize(("fmt", "content_type"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("GIF", "image/gif")])
def test_a_good_image_is_accepted_with_its_content_type(fmt: str, content_type: str) -> None:
    data = samples.image(1, fmt=fmt)
    checked = domain.check_content("a", data, len(data), "", IMAGE_SPEC, LIMITS)
    assert checked == Content(data=data, content_type=content_type)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (samples.truncated(samples.image(2)), "truncated image"),
        (samples.truncated(samples.image(2, fmt="JPEG")), "truncated image"),
        (samples.corrupt(), "not a decodable image: cannot identify the image format"),
        (b"just some words", "unsupported file: expected an image for an image_classification job"),
        (samples.bomb(2000, 1000), "image too large: 2000000 pixels > limit 1000000 (2000x1000)"),
        (samples.image(3, fmt="TIFF"), "unsupported image format TIFF: use PNG, JPEG, GIF, WEBP, BMP"),
    ],
    ids=["truncated-png", "truncated-jpeg", "corrupt", "text", "bomb", "tiff"],
)
def test_a_bad_image_is_rejected_with_its_reason(data: bytes, reason: str) -> None:
    assert domain.check_content("a", data, len(data), "", IMAGE_SPEC, LIMITS) == Rejection(reason)


def test_a_png_with_a_damaged_chunk_is_not_decodable() -> None:
    data = bytearray(samples.image(4))
    data[len(data) // 2] ^= 0xFF  # inside the IDAT chunk: its CRC no longer matches
    checked = domain.check_content("a", bytes(data), len(data), "", IMAGE_SPEC, LIMITS)
    assert checked == Rejection("not a decodable image: broken PNG file (bad header checksum in b'IDAT')")


@pytest.mark.parametrize(
    ("data", "size", "reason"),
    [
        (b"", 0, "empty file"),
        (b"", 10_001, "file too large: 10001 bytes > limit 10000 (max_file_bytes)"),
    ],
)
def test_size_checks_come_first(data: bytes, size: int, reason: str) -> None:
    for job_spec in (IMAGE_SPEC, TEXT_SPEC):
        assert domain.check_content("a", data, size, "", job_spec, LIMITS) == Rejection(reason)


def test_a_gold_label_must_be_one_of_the_labels() -> None:
    data = samples.image(5)
    assert domain.check_content("a", data, len(data), "cow", IMAGE_SPEC, LIMITS) == Rejection(
        "gold_label 'cow' is not in the job's labels"
    )
    assert isinstance(domain.check_content("a", data, len(data), "dog", IMAGE_SPEC, LIMITS), Content)


def test_a_text_is_stored_stripped_without_its_byte_order_mark() -> None:
    data = "\ufeff  Hello, wörld \n\n".encode()
    checked = domain.check_content("a.txt", data, len(data), "", TEXT_SPEC, LIMITS)
    assert checked == Content(data="Hello, wörld".encode(), content_type=domain.TEXT_CONTENT_TYPE, text="Hello, wörld")


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"caf\xe9", "not UTF-8 text: invalid byte at offset 3"),
        (b"a\x00b", "not UTF-8 text: contains NUL bytes"),
        (b" \n\t ", "empty text"),
        (b"x" * 101, "text too long: 101 bytes > limit 100 (max_text_bytes)"),
        (samples.image(6), "unsupported file: expected text for a text_classification job"),
    ],
    ids=["latin1", "nul", "blank", "long", "image"],
)
def test_a_bad_text_is_rejected_with_its_reason(data: bytes, reason: str) -> None:
    assert domain.check_content("a.txt", data, len(data), "", TEXT_SPEC, LIMITS) == Rejection(reason)


def test_a_long_name_is_rejected() -> None:
    assert domain.check_content("n" * 1025, b"hi", 2, "", TEXT_SPEC, LIMITS) == Rejection(
        "name too long: 1025 characters > limit 1024"
    )


# ----------------------------------------------------------------------------- chunk reassembly


def test_files_end_at_end_of_file_the_next_name_or_the_stream_end() -> None:
    assembler = FileAssembler(max_file_bytes=100)
    done = assembler.feed(Chunk(filename="a", data=b"12", gold_label=" cat "))
    done += assembler.feed(Chunk(data=b"34"))
    done += assembler.feed(Chunk(filename="a", data=b"5", end_of_file=True))  # the open file's name: same file
    done += assembler.feed(Chunk(filename="a", data=b"new"))  # after end_of_file: a new file
    done += assembler.feed(Chunk(filename="b", data=b"b1"))
    done += assembler.feed(Chunk(data=b"b2"))
    last = assembler.finish()
    assert [(f.name, f.data, f.size, f.gold_label) for f in done] == [
        ("a", b"12345", 5, "cat"),
        ("a", b"new", 3, ""),
    ]
    assert last == domain.IncomingFile("b", b"b1b2", 4, "")
    assert assembler.finish() is None


def test_an_oversized_file_is_counted_but_not_kept() -> None:
    assembler = FileAssembler(max_file_bytes=5)
    assembler.feed(Chunk(filename="big", data=b"1234"))
    done = assembler.feed(Chunk(data=b"5678", end_of_file=True))
    assert done == [domain.IncomingFile("big", b"", 8, "")]


def test_an_empty_file_is_a_file() -> None:
    assembler = FileAssembler(max_file_bytes=5)
    assert assembler.feed(Chunk(filename="empty", end_of_file=True)) == [domain.IncomingFile("empty", b"", 0, "")]


def test_the_first_chunk_must_name_its_file() -> None:
    with pytest.raises(InvalidArgument) as caught:
        FileAssembler(10).feed(Chunk(job_id="job_1", data=b"x"))
    assert caught.value.field == "filename"


def test_data_outside_a_file_is_refused_and_empty_chunks_are_ignored() -> None:
    assembler = FileAssembler(10)
    assembler.feed(Chunk(filename="a", data=b"x", end_of_file=True))
    assert assembler.feed(Chunk()) == []
    with pytest.raises(InvalidArgument, match="filename: chunk 3 carries data but no file is open"):
        assembler.feed(Chunk(data=b"orphan"))


# ----------------------------------------------------------------------------- manifests


def entries(content: str, fmt: ManifestFormat) -> list[domain.ManifestEntry]:
    return list(domain.parse_manifest(content.encode(), fmt))


def test_jsonl_lines_and_their_problems() -> None:
    lines = [
        json.dumps({"id": "first", "text": "hello", "gold_label": "pos"}),
        "",
        json.dumps({"path": "img/a.png"}),
        "{not json",
        json.dumps(["a list"]),
        json.dumps({"id": "x"}),
        json.dumps({"text": "t", "path": "p"}),
        json.dumps({"text": 5}),
        json.dumps({"id": 42, "text": "line\u2028separator"}, ensure_ascii=False),
        json.dumps({"id": True, "text": "t"}),
        json.dumps({"text": "t", "gold_label": 1}),
    ]
    got = entries("\r\n".join(lines), ManifestFormat.JSONL)
    assert got[0] == domain.ManifestEntry(1, "first", text="hello", gold_label="pos")
    assert got[1] == domain.ManifestEntry(3, "line 3", path="img/a.png")
    assert got[2].error is not None and got[2].error.startswith("line 4: not valid JSON: ")
    assert got[3].error == "line 5: expected a JSON object, got list"
    assert got[4].error == "line 6: needs 'text' or 'path'"
    assert got[5].error == "line 7: has both 'text' and 'path'; give one"
    assert got[6].error == "line 8: 'text' must be a string"
    assert got[7] == domain.ManifestEntry(9, "42", text="line\u2028separator")
    assert got[8].error == "line 10: 'id' must be a string"
    assert got[9].error == "line 11: 'gold_label' must be a string"
    assert len(got) == 10


def test_csv_rows_number_their_lines_from_the_header() -> None:
    content = 'id,text,gold_label\na,"multi\nline",pos\n,plain,\n\nc,too,many,fields\nd,,\n'
    got = entries(content, ManifestFormat.CSV)
    assert got[0] == domain.ManifestEntry(2, "a", text="multi\nline", gold_label="pos")
    assert got[1] == domain.ManifestEntry(4, "line 4", text="plain")
    assert got[2].error == "line 6: expected 3 fields as in the header, got 4"
    assert got[3].error == "line 7: needs 'text' or 'path'"
    assert len(got) == 4


def test_csv_with_paths() -> None:
    assert entries("path\nimg/1.png\n", ManifestFormat.CSV) == [domain.ManifestEntry(2, "line 2", path="img/1.png")]


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ("id,label\n", "unknown column 'label'"),
        ("id,text,text\n", "appears twice"),
        ("id,gold_label\n", "needs a 'text' or a 'path' column"),
    ],
)
def test_a_bad_csv_header_is_an_invalid_argument(content: str, problem: str) -> None:
    with pytest.raises(InvalidArgument, match=problem) as caught:
        entries(content, ManifestFormat.CSV)
    assert caught.value.field == "content"


def test_a_manifest_must_be_utf8() -> None:
    with pytest.raises(InvalidArgument) as caught:
        domain.parse_manifest(b'{"text": "caf\xe9"}', ManifestFormat.JSONL)
    assert caught.value.field == "content"


def test_an_empty_manifest_has_no_entries() -> None:
    assert entries("", ManifestFormat.CSV) == []
    assert entries("\n\n", ManifestFormat.JSONL) == []


# ----------------------------------------------------------------------------- sharding


@pytest.mark.parametrize("task_type", list(TaskType))
def test_classification_makes_one_task_for_the_whole_object(task_type: TaskType) -> None:
    obj = domain.AcceptedObject("item_1", "a", "sha256/aa/bb/x", "text/plain", "hello", "")
    tasks = domain.shard(obj, task_type)
    assert len(tasks) == 1
    assert tasks[0].item_id == "item_1"
    assert tasks[0].segment == domain.WHOLE_OBJECT
    assert tasks[0].text == "hello"
    assert tasks[0].task_id.startswith("task_")


def test_money_modes_default_and_round_trip_through_the_proto() -> None:

    normal = normalise_spec(spec(price_mode="per_hour", price_per_hour_cents=1800, budget_cap_cents=10_000))
    assert (normal.price_mode, normal.pay_mode) == ("per_hour", "per_answer")
    assert codec.spec_from_proto(codec.spec_to_proto(normal)) == normal
