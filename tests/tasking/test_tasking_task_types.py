"""Tasking for every task type: the worker sees the job's config, and SubmitAnswer checks the
answer against the task type and its schema, naming the offending field."""

from __future__ import annotations

from typing import Any

import pytest
from tasking_helpers import Built, event, task_created

from quorum.errors import InvalidArgument
from quorum.v1 import common_pb2, events_pb2
from services.tasking import tables
from services.tasking.servicer import _submitted, worker_task

TEXT = "Ada Lovelace met Charles Babbage."


def job_of(job_id: str, **task: Any) -> events_pb2.Event:
    spec = common_pb2.JobSpec(
        name=job_id, client_id="acme", overlap=common_pb2.Overlap(min=1, max=3), instructions="Label it.", **task
    )
    return event(job_created=events_pb2.JobCreated(job_id=job_id, spec=spec))


def lease_of(built: Built, job: events_pb2.Event, content_type: str = "text/plain") -> tuple[str, str, Any]:
    job_id = job.job_created.job_id
    built.service.handle_events([job, task_created(f"{job_id}-t", job_id, text=TEXT, content_type=content_type)])
    session = built.session(f"{job_id}-worker")
    handed = built.service.next_task(session)
    assert handed is not None
    return session, handed.lease_id, handed


def submit(built: Built, session: str, lease_id: str, **answer: Any) -> str:
    return built.service.submit_answer(session, lease_id, _submitted(common_pb2.Answer(**answer)))


def refused(built: Built, session: str, lease_id: str, **answer: Any) -> InvalidArgument:
    with pytest.raises(InvalidArgument) as caught:
        submit(built, session, lease_id, **answer)
    return caught.value


BOXES = {"bounding_boxes": common_pb2.BoundingBoxConfig(labels=["car", "person"])}


def box(**fields: Any) -> common_pb2.BoxesAnswer:
    values: dict[str, Any] = {"label": "car", "x": 0.1, "y": 0.1, "w": 0.2, "h": 0.2}
    values.update(fields)
    return common_pb2.BoxesAnswer(boxes=[common_pb2.Box(label="person", x=0.0, y=0.0, w=1.0, h=1.0), values])


@pytest.mark.parametrize(
    ("field", "answer"),
    [
        ("answer.boxes.boxes[1].label", box(label="truck")),
        ("answer.boxes.boxes[1].w", box(w=0.0)),
        ("answer.boxes.boxes[1].h", box(h=-0.1)),
        ("answer.boxes.boxes[1].x", box(x=-0.01)),
        ("answer.boxes.boxes[1].w", box(x=0.9, w=0.2)),
        ("answer.boxes.boxes[1].h", box(y=0.5, h=0.6)),
        ("answer.boxes.boxes[1].y", box(y=float("nan"))),
    ],
    ids=["label", "no-width", "negative-height", "left-of-image", "past-right", "past-bottom", "nan"],
)
def test_a_bad_box_is_refused_naming_it(tasking_db: Built, field: str, answer: common_pb2.BoxesAnswer) -> None:
    session, lease_id, _ = lease_of(tasking_db, job_of("boxes", **BOXES), "image/png")
    error = refused(tasking_db, session, lease_id, boxes=answer)
    assert error.field == field


def test_boxes_are_accepted_stored_and_announced_as_given(tasking_db: Built) -> None:
    session, lease_id, handed = lease_of(tasking_db, job_of("boxes", **BOXES), "image/png")
    message = worker_task(handed)
    assert message.WhichOneof("task") == "bounding_boxes"
    assert list(message.bounding_boxes.labels) == ["car", "person"]
    drawn = box(x=0.5, w=0.5)
    with pytest.raises(InvalidArgument) as wrong_kind:
        submit(tasking_db, session, lease_id, classification=common_pb2.ClassificationAnswer(label="car"))
    assert wrong_kind.value.field == "answer"
    answer_id = submit(tasking_db, session, lease_id, boxes=drawn)
    (row,) = tasking_db.rows(tables.answers, tables.answers.c.answer_id == answer_id)
    assert row.label.startswith('{"boxes":{"boxes":[')
    (accepted,) = [e.answer_accepted for _, _, e in tasking_db.outbox_events() if e.HasField("answer_accepted")]
    assert accepted.answer.boxes == drawn


def test_no_box_is_an_answer(tasking_db: Built) -> None:
    session, lease_id, _ = lease_of(tasking_db, job_of("empty", **BOXES), "image/png")
    submit(tasking_db, session, lease_id, boxes=common_pb2.BoxesAnswer())
    (accepted,) = [e.answer_accepted for _, _, e in tasking_db.outbox_events() if e.HasField("answer_accepted")]
    assert accepted.answer.WhichOneof("value") == "boxes" and not accepted.answer.boxes.boxes


def test_multi_label_answers_stay_in_the_schema(tasking_db: Built) -> None:
    job = job_of("ml", multi_label_classification=common_pb2.MultiLabelConfig(labels=["red", "round", "big"]))
    session, lease_id, handed = lease_of(tasking_db, job)
    assert list(worker_task(handed).multi_label_classification.labels) == ["red", "round", "big"]
    outside = refused(tasking_db, session, lease_id, multi_label=common_pb2.MultiLabelAnswer(labels=["red", "blue"]))
    assert outside.field == "answer.multi_label.labels[1]"
    twice = refused(tasking_db, session, lease_id, multi_label=common_pb2.MultiLabelAnswer(labels=["red", "red"]))
    assert twice.field == "answer.multi_label.labels"
    submit(tasking_db, session, lease_id, multi_label=common_pb2.MultiLabelAnswer(labels=["round", "red"]))


def test_spans_stay_within_the_text_and_apart(tasking_db: Built) -> None:
    session, lease_id, handed = lease_of(tasking_db, job_of("ner", ner_spans=common_pb2.SpansConfig(labels=["PER"])))
    assert worker_task(handed).content.text == TEXT

    def spans(*triples: tuple[int, int, str]) -> common_pb2.SpansAnswer:
        return common_pb2.SpansAnswer(spans=[common_pb2.Span(start=s, end=e, label=t) for s, e, t in triples])

    assert refused(tasking_db, session, lease_id, spans=spans((0, 12, "PER"), (25, 40, "PER"))).field == (
        "answer.spans.spans[1].end"
    )
    assert refused(tasking_db, session, lease_id, spans=spans((5, 5, "PER"))).field == "answer.spans.spans[0].end"
    assert refused(tasking_db, session, lease_id, spans=spans((0, 12, "ORG"))).field == "answer.spans.spans[0].label"
    assert refused(tasking_db, session, lease_id, spans=spans((0, 12, "PER"), (4, 20, "PER"))).field == (
        "answer.spans.spans[1]"
    )
    submit(tasking_db, session, lease_id, spans=spans((18, len(TEXT) - 1, "PER"), (0, 12, "PER")))


def test_keypoints_polygons_transcriptions_and_pairs_are_checked(tasking_db: Built) -> None:
    points = job_of("kp", keypoints=common_pb2.KeypointsConfig(labels=["nose", "left_eye"]))
    session, lease_id, _ = lease_of(tasking_db, points, "image/png")
    twice = common_pb2.KeypointsAnswer(
        points=[common_pb2.Keypoint(label="nose", x=0.5, y=0.5), common_pb2.Keypoint(label="nose", x=0.4, y=0.5)]
    )
    assert refused(tasking_db, session, lease_id, keypoints=twice).field == "answer.keypoints.points[1].label"
    outside = common_pb2.KeypointsAnswer(points=[common_pb2.Keypoint(label="nose", x=1.5, y=0.5)])
    assert refused(tasking_db, session, lease_id, keypoints=outside).field == "answer.keypoints.points[0].x"

    regions = job_of("seg", segmentation=common_pb2.SegmentationConfig(labels=["road"]))
    session, lease_id, _ = lease_of(tasking_db, regions, "image/png")
    line = common_pb2.Polygon(label="road", points=[common_pb2.Point(x=0, y=0), common_pb2.Point(x=1, y=1)])
    polygons = common_pb2.PolygonsAnswer(polygons=[line])
    assert refused(tasking_db, session, lease_id, polygons=polygons).field == "answer.polygons.polygons[0].points"

    typed = job_of("tr", transcription=common_pb2.TranscriptionConfig(max_chars=5))
    session, lease_id, handed = lease_of(tasking_db, typed)
    assert worker_task(handed).transcription.max_chars == 5
    long = common_pb2.TranscriptionAnswer(text="too long")
    assert refused(tasking_db, session, lease_id, transcription=long).field == "answer.transcription.text"
    submit(tasking_db, session, lease_id, transcription=common_pb2.TranscriptionAnswer(text="ok"))

    pair = job_of("pw", pairwise_comparison=common_pb2.PairwiseConfig(question="Which is clearer?"))
    session, lease_id, handed = lease_of(tasking_db, pair)
    assert worker_task(handed).pairwise_comparison.question == "Which is clearer?"
    tie = common_pb2.PairwiseAnswer(winner="tie")
    assert refused(tasking_db, session, lease_id, pairwise=tie).field == "answer.pairwise.winner"
    submit(tasking_db, session, lease_id, pairwise=common_pb2.PairwiseAnswer(winner="b"))
