"""Structured task types through the consensus event handler and queries on real databases:
boxes, multi-label and spans resolve to fused labels with confidences, ask for more answers
while unsure, and come back from GetResult and ExportResults as Answer messages."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa
from consensus_helpers import outbox_events, task_created

from quorum.db import make_engine
from quorum.messaging import Topics
from quorum.v1 import common_pb2, events_pb2
from services.consensus import messages, tables
from services.consensus.handlers import ConsensusEvents, ConsensusQueries

TOPICS = Topics("test")
NOW = dt.datetime(2030, 5, 1, 12, 0, 30, tzinfo=dt.UTC)


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, tmp_path: object) -> Iterator[sa.Engine]:
    url = f"sqlite:///{tmp_path}/consensus.db" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    engine = make_engine(url)
    tables.metadata.create_all(engine)
    try:
        yield engine
    finally:
        engine.dispose()


@pytest.fixture
def handler(engine: sa.Engine) -> ConsensusEvents:
    events = ConsensusEvents(engine, TOPICS, lambda: None, clock=lambda: NOW)
    events.load()
    return events


def job(job_id: str, overlap: tuple[int, int] = (3, 5), **task: Any) -> events_pb2.Event:
    spec = common_pb2.JobSpec(
        name=job_id,
        client_id="client-1",
        overlap=common_pb2.Overlap(min=overlap[0], max=overlap[1]),
        target_confidence=0.9,
        **task,
    )
    return events_pb2.Event(event_id=uuid.uuid4().hex, job_created=events_pb2.JobCreated(job_id=job_id, spec=spec))


def answered(task_id: str, job_id: str, worker_id: str, **answer: Any) -> events_pb2.Event:
    return events_pb2.Event(
        event_id=uuid.uuid4().hex,
        answer_accepted=events_pb2.AnswerAccepted(
            answer_id=uuid.uuid4().hex,
            task_id=task_id,
            job_id=job_id,
            worker_id=worker_id,
            answer=common_pb2.Answer(**answer),
        ),
    )


def boxes(*coords: tuple[float, float, float, float]) -> common_pb2.BoxesAnswer:
    return common_pb2.BoxesAnswer(boxes=[common_pb2.Box(label="car", x=x, y=y, w=w, h=h) for x, y, w, h in coords])


def emitted(engine: sa.Engine, kind: str) -> list[Any]:
    return [getattr(e, kind) for _, _, e in outbox_events(engine) if e.HasField(kind)]


CAR = (0.10, 0.20, 0.30, 0.20)
NEAR_CAR = (0.11, 0.21, 0.29, 0.20)
STRAY = (0.70, 0.70, 0.10, 0.10)


def test_boxes_fuse_per_object_with_confidences(handler: ConsensusEvents, engine: sa.Engine) -> None:
    handler.handle(
        [
            job("jb", bounding_boxes=common_pb2.BoundingBoxConfig(labels=["car"])),
            task_created("t1", "jb"),
            answered("t1", "jb", "w1", boxes=boxes(CAR)),
            answered("t1", "jb", "w2", boxes=boxes(NEAR_CAR)),
            answered("t1", "jb", "w3", boxes=boxes(CAR)),
        ]
    )
    (resolved,) = emitted(engine, "task_resolved")
    assert resolved.label.WhichOneof("value") == "boxes"
    (fused,) = resolved.label.boxes.boxes
    assert fused.label == "car" and 0.5 < fused.confidence <= 1
    assert abs(fused.x - 0.10) < 0.011 and abs(fused.w - 0.30) < 0.011
    assert resolved.confidence >= 0.9 and not resolved.low_confidence
    assert [a.answer.WhichOneof("value") for a in resolved.answers] == ["boxes"] * 3

    result = ConsensusQueries(engine, clock=lambda: NOW).get_result("t1")
    assert messages.result_message(result).label == resolved.label
    (exported,) = ConsensusQueries(engine, clock=lambda: NOW).export_results("jb")
    assert messages.result_message(exported).label.boxes.boxes[0].label == "car"


def test_boxes_in_doubt_ask_for_more_then_resolve_low_confidence(handler: ConsensusEvents, engine: sa.Engine) -> None:
    handler.handle(
        [
            job("jd", overlap=(2, 3), bounding_boxes=common_pb2.BoundingBoxConfig(labels=["car"])),
            task_created("t1", "jd"),
            answered("t1", "jd", "w1", boxes=boxes(CAR)),
            answered("t1", "jd", "w2", boxes=boxes()),
        ]
    )
    (request,) = emitted(engine, "more_answers_requested")
    assert (request.task_id, request.answers_wanted) == ("t1", 3)
    assert not emitted(engine, "task_resolved")
    handler.handle([answered("t1", "jd", "w3", boxes=boxes(STRAY))])
    (resolved,) = emitted(engine, "task_resolved")
    assert resolved.low_confidence and resolved.confidence < 0.9


def test_multi_label_decides_each_label(handler: ConsensusEvents, engine: sa.Engine) -> None:
    def picked(*labels: str) -> common_pb2.MultiLabelAnswer:
        return common_pb2.MultiLabelAnswer(labels=list(labels))

    handler.handle(
        [
            job("jm", multi_label_classification=common_pb2.MultiLabelConfig(labels=["red", "round", "big"])),
            task_created("t1", "jm"),
            answered("t1", "jm", "w1", multi_label=picked("red", "round")),
            answered("t1", "jm", "w2", multi_label=picked("round", "red")),
            answered("t1", "jm", "w3", multi_label=picked("red", "round")),
        ]
    )
    (resolved,) = emitted(engine, "task_resolved")
    assert list(resolved.label.multi_label.labels) == ["red", "round"]
    assert all(0.9 < p <= 1 for p in resolved.label.multi_label.confidences)
    assert resolved.confidence >= 0.9


def test_spans_fuse_boundaries_and_types(handler: ConsensusEvents, engine: sa.Engine) -> None:
    def spans(*triples: tuple[int, int, str]) -> common_pb2.SpansAnswer:
        return common_pb2.SpansAnswer(spans=[common_pb2.Span(start=s, end=e, label=t) for s, e, t in triples])

    handler.handle(
        [
            job("js", overlap=(3, 3), ner_spans=common_pb2.SpansConfig(labels=["PER", "ORG"])),
            task_created("t1", "js"),
            answered("t1", "js", "w1", spans=spans((0, 12, "PER"))),
            answered("t1", "js", "w2", spans=spans((0, 12, "PER"), (17, 24, "ORG"))),
            answered("t1", "js", "w3", spans=spans((0, 12, "PER"))),
        ]
    )
    (resolved,) = emitted(engine, "task_resolved")
    fused = [(s.start, s.end, s.label) for s in resolved.label.spans.spans]
    assert fused == [(0, 12, "PER")]
    assert resolved.label.spans.spans[0].confidence > 0.5


def test_exactly_alike_transcriptions_resolve(handler: ConsensusEvents, engine: sa.Engine) -> None:
    said = common_pb2.TranscriptionAnswer(text="hello world")
    handler.handle(
        [
            job("jt", overlap=(3, 3), transcription=common_pb2.TranscriptionConfig()),
            task_created("t1", "jt"),
            answered("t1", "jt", "w1", transcription=said),
            answered("t1", "jt", "w2", transcription=said),
            answered("t1", "jt", "w3", transcription=common_pb2.TranscriptionAnswer(text="hello word")),
        ]
    )
    (resolved,) = emitted(engine, "task_resolved")
    assert resolved.label.transcription.text == "hello world"
