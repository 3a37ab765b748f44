"""Ingest of every task type: spec validation naming the field, the content each type takes,
and the spec's config surviving the round trip through CreateJob and GetJob."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import ingest_samples as samples
import pytest
from quorum_testing import admin_key

from quorum.rpc import channel
from quorum.service import start_service
from quorum.settings import Settings
from quorum.v1 import common_pb2, ingest_pb2, ingest_pb2_grpc
from services.ingest import domain
from services.ingest.bootstrap import build
from services.ingest.domain import Content, JobSpec, Rejection, TaskType, normalise_spec

LIMITS = domain.Limits(max_file_bytes=100_000, max_text_bytes=1000, max_image_pixels=1_000_000)


def spec_of(task_type: TaskType, labels: tuple[str, ...] = ("a", "b"), **fields: Any) -> JobSpec:
    return normalise_spec(JobSpec(client_id="acme", task_type=task_type, labels=labels, **fields))


# ----------------------------------------------------------------------------- domain


@pytest.mark.parametrize("task_type", [t for t in TaskType if t.has_labels])
def test_every_labelled_type_needs_its_labels(task_type: TaskType) -> None:
    with pytest.raises(domain.InvalidArgument) as caught:
        spec_of(task_type, labels=())
    assert caught.value.field == f"spec.{task_type}.labels"


@pytest.mark.parametrize("task_type", [TaskType.TRANSCRIPTION, TaskType.PAIRWISE_COMPARISON])
def test_types_without_a_schema_take_no_labels(task_type: TaskType) -> None:
    assert spec_of(task_type, labels=()).labels == ()


def test_transcription_length_bound_is_checked() -> None:
    with pytest.raises(domain.InvalidArgument) as caught:
        spec_of(TaskType.TRANSCRIPTION, labels=(), task_options=(("max_chars", -1),))
    assert caught.value.field == "spec.transcription.max_chars"


def test_price_per_annotation_is_for_types_that_hold_annotations() -> None:
    assert spec_of(TaskType.BOUNDING_BOXES, price_per_annotation_cents=2).price_per_annotation_cents == 2
    with pytest.raises(domain.InvalidArgument) as negative:
        spec_of(TaskType.BOUNDING_BOXES, price_per_annotation_cents=-1)
    assert negative.value.field == "spec.price_per_annotation_cents"
    with pytest.raises(domain.InvalidArgument) as categorical:
        spec_of(TaskType.IMAGE_CLASSIFICATION, price_per_annotation_cents=1)
    assert categorical.value.field == "spec.price_per_annotation_cents"


@pytest.mark.parametrize("task_type", [TaskType.BOUNDING_BOXES, TaskType.KEYPOINTS, TaskType.SEGMENTATION])
def test_image_types_take_images_only(task_type: TaskType) -> None:
    spec = spec_of(task_type)
    image = samples.image(1)
    accepted = domain.check_content("a.png", image, len(image), "", spec, LIMITS)
    assert isinstance(accepted, Content) and accepted.content_type == "image/png"
    text = b"a street with two cars"
    assert domain.check_content("a.txt", text, len(text), "", spec, LIMITS) == Rejection(
        f"unsupported file: expected an image for a {task_type} job"
    )


def test_spans_take_texts_only() -> None:
    spec = spec_of(TaskType.NER_SPANS, labels=("PER", "ORG"))
    text = b"  Ada Lovelace met Babbage.  "
    accepted = domain.check_content("a.txt", text, len(text), "", spec, LIMITS)
    assert isinstance(accepted, Content) and accepted.text == "Ada Lovelace met Babbage."
    image = samples.image(2)
    assert domain.check_content("a.png", image, len(image), "", spec, LIMITS) == Rejection(
        "unsupported file: expected text for a ner_spans job"
    )


@pytest.mark.parametrize("task_type", [TaskType.MULTI_LABEL_CLASSIFICATION, TaskType.TRANSCRIPTION])
def test_types_for_any_media_take_images_and_texts(task_type: TaskType) -> None:
    spec = spec_of(task_type, labels=("a", "b") if task_type.has_labels else ())
    image, text = samples.image(3), b"hello"
    as_image = domain.check_content("a.png", image, len(image), "", spec, LIMITS)
    as_text = domain.check_content("a.txt", text, len(text), "", spec, LIMITS)
    assert isinstance(as_image, Content) and as_image.content_type == "image/png" and as_image.text == ""
    assert isinstance(as_text, Content) and as_text.text == "hello"


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"a": "first", "b": "second"}', None),
        (b"first versus second", 'a pairwise_comparison object is JSON {"a": ..., "b": ...}'),
        (b'{"a": "first"}', 'a pairwise_comparison object is a JSON object with exactly the keys "a" and "b"'),
        (b'{"a": "first", "b": "  "}', 'item "b" of the pair must be a non-empty string'),
    ],
    ids=["good", "not-json", "one-item", "blank-item"],
)
def test_a_pair_is_a_json_object_of_two_items(body: bytes, reason: str | None) -> None:
    spec = spec_of(TaskType.PAIRWISE_COMPARISON, labels=())
    checked = domain.check_content("pair", body, len(body), "", spec, LIMITS)
    if reason is None:
        assert isinstance(checked, Content)
    else:
        assert isinstance(checked, Rejection) and checked.reason.startswith(reason)


def test_gold_objects_are_for_classification_only() -> None:
    spec = spec_of(TaskType.BOUNDING_BOXES)
    image = samples.image(4)
    assert domain.check_content("a.png", image, len(image), "a", spec, LIMITS) == Rejection(
        "gold_label: gold objects are supported in classification jobs only, not bounding_boxes"
    )


# ----------------------------------------------------------------------------- over gRPC


@pytest.fixture(scope="module")
def stub(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ingest_pb2_grpc.IngestServiceStub]:
    settings = Settings(
        home=tmp_path_factory.mktemp("ingest-types"),
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:12]}",
        kafka_partitions=1,
    )
    service = start_service(build, settings, address="127.0.0.1:0")
    try:
        with channel(f"127.0.0.1:{service.port}", api_key=admin_key(settings)) as ch:
            yield ingest_pb2_grpc.IngestServiceStub(ch)
    finally:
        service.stop()


def _spec(**task: Any) -> common_pb2.JobSpec:
    return common_pb2.JobSpec(name="types", client_id="acme", **task)


def test_configs_round_trip_through_create_and_get(stub: ingest_pb2_grpc.IngestServiceStub) -> None:
    specs = [
        _spec(bounding_boxes=common_pb2.BoundingBoxConfig(labels=["car", "person"]), price_per_annotation_cents=3),
        _spec(multi_label_classification=common_pb2.MultiLabelConfig(labels=["red", "round"])),
        _spec(keypoints=common_pb2.KeypointsConfig(labels=["nose", "left_eye"])),
        _spec(segmentation=common_pb2.SegmentationConfig(labels=["road"])),
        _spec(ner_spans=common_pb2.SpansConfig(labels=["PER", "ORG"])),
        _spec(transcription=common_pb2.TranscriptionConfig(max_chars=200)),
        _spec(pairwise_comparison=common_pb2.PairwiseConfig(question="Which is clearer?", allow_tie=True)),
    ]
    for spec in specs:
        created = stub.CreateJob(ingest_pb2.CreateJobRequest(spec=spec), timeout=10)
        stored = stub.GetJob(ingest_pb2.GetJobRequest(job_id=created.job_id), timeout=10)
        kind = spec.WhichOneof("task")
        assert stored.spec.WhichOneof("task") == kind
        assert getattr(stored.spec, kind) == getattr(spec, kind)
        assert stored.spec.price_per_annotation_cents == spec.price_per_annotation_cents


@pytest.mark.parametrize(
    ("field", "spec"),
    [
        ("spec.bounding_boxes.labels", _spec(bounding_boxes=common_pb2.BoundingBoxConfig())),
        ("spec.ner_spans.labels", _spec(ner_spans=common_pb2.SpansConfig(labels=["PER", "PER"]))),
        ("spec.keypoints.labels", _spec(keypoints=common_pb2.KeypointsConfig(labels=[" "]))),
        ("spec.transcription.max_chars", _spec(transcription=common_pb2.TranscriptionConfig(max_chars=100_001))),
        (
            "spec.pairwise_comparison.question",
            _spec(pairwise_comparison=common_pb2.PairwiseConfig(question="q" * 1001)),
        ),
        (
            "spec.price_per_annotation_cents",
            _spec(segmentation=common_pb2.SegmentationConfig(labels=["road"]), price_per_annotation_cents=-2),
        ),
    ],
    ids=["no-classes", "twice", "blank", "max-chars", "question", "price"],
)
def test_bad_specs_name_their_field(stub: ingest_pb2_grpc.IngestServiceStub, field: str, spec: Any) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        stub.CreateJob(ingest_pb2.CreateJobRequest(spec=spec), timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(f"{field}: ")


def test_manifest_of_an_image_type_refuses_inline_text(stub: ingest_pb2_grpc.IngestServiceStub, tmp_path: Path) -> None:
    job = stub.CreateJob(
        ingest_pb2.CreateJobRequest(spec=_spec(bounding_boxes=common_pb2.BoundingBoxConfig(labels=["car"]))),
        timeout=10,
    )
    manifest = json.dumps({"id": "one", "text": "a car"}).encode()
    summary = stub.ImportManifest(
        ingest_pb2.ImportManifestRequest(job_id=job.job_id, format=ingest_pb2.MANIFEST_FORMAT_JSONL, content=manifest),
        timeout=10,
    )
    assert summary.rejected == 1
    assert summary.items[0].reason == "line 1: inline text in a bounding_boxes job: give a 'path'"


def test_spans_job_accepts_inline_texts(stub: ingest_pb2_grpc.IngestServiceStub) -> None:
    job = stub.CreateJob(
        ingest_pb2.CreateJobRequest(spec=_spec(ner_spans=common_pb2.SpansConfig(labels=["PER"]))), timeout=10
    )
    manifest = b'{"id": "one", "text": "Ada met Charles."}\n{"id": "two", "text": "Nobody here."}\n'
    summary = stub.ImportManifest(
        ingest_pb2.ImportManifestRequest(job_id=job.job_id, format=ingest_pb2.MANIFEST_FORMAT_JSONL, content=manifest),
        timeout=10,
    )
    assert (summary.accepted, summary.rejected) == (2, 0)
