"""A quote refuses exactly the specs CreateJob refuses, naming the same field: both run the one
spec validation (quorum.jobspecs), through the ingest and payments servicers on SQLite."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from google.protobuf.timestamp_pb2 import Timestamp

from quorum.db import make_engine
from quorum.errors import InvalidArgument
from quorum.messaging import Topics
from quorum.objectstore import LocalDiskStore
from quorum.v1 import common_pb2, ingest_pb2, payments_pb2
from services.ingest import domain as ingest_domain
from services.ingest import tables as ingest_tables
from services.ingest.handlers import IngestHandlers
from services.ingest.servicer import IngestServicer
from services.payments import tables as payments_tables
from services.payments.handlers import Ledger
from services.payments.servicer import PaymentsServicer

LIMITS = ingest_domain.Limits(max_file_bytes=10_000, max_text_bytes=1_000, max_image_pixels=1_000_000)


def spec(**changes: Any) -> common_pb2.JobSpec:
    """A text classification spec both accept, with ``changes``."""
    values: dict[str, Any] = {
        "name": "reviews",
        "client_id": "acme",
        "text_classification": common_pb2.ClassificationConfig(labels=["pos", "neg"]),
        "price_per_object_cents": 50,
        "pay_per_answer_cents": 10,
        **changes,
    }
    return common_pb2.JobSpec(**values)


def boxes(**changes: Any) -> common_pb2.JobSpec:
    return spec(text_classification=None, bounding_boxes=common_pb2.BoundingBoxConfig(labels=["car"]), **changes)


BAD_SPECS = [
    (spec(currency="dollars"), "spec.currency"),
    (spec(currency="eur"), "spec.currency"),
    (spec(gold_share=5), "spec.gold_share"),
    (spec(gold_share=float("nan")), "spec.gold_share"),
    (spec(client_id="two words"), "spec.client_id"),
    (spec(client_id="c" * 129), "spec.client_id"),
    (spec(name="n" * 201), "spec.name"),
    (spec(instructions="i" * (64 * 1024 + 1)), "spec.instructions"),
    (spec(text_classification=None), "spec.task"),
    (spec(text_classification=common_pb2.ClassificationConfig()), "spec.text_classification.labels"),
    (spec(text_classification=common_pb2.ClassificationConfig(labels=["a", "a"])), "spec.text_classification.labels"),
    (
        spec(text_classification=None, transcription=common_pb2.TranscriptionConfig(max_chars=100_001)),
        "spec.transcription.max_chars",
    ),
    (spec(overlap=common_pb2.Overlap(min=0, max=4)), "spec.overlap.min"),
    (spec(overlap=common_pb2.Overlap(min=4, max=3)), "spec.overlap.max"),
    (spec(overlap=common_pb2.Overlap(min=3, max=51)), "spec.overlap.max"),
    (spec(target_confidence=1.5), "spec.target_confidence"),
    (spec(price_per_object_cents=-1), "spec.price_per_object_cents"),
    (spec(pay_per_answer_cents=-1), "spec.pay_per_answer_cents"),
    (spec(price_per_annotation_cents=-1), "spec.price_per_annotation_cents"),
    (spec(price_per_annotation_cents=5), "spec.price_per_annotation_cents"),
    (spec(pilot=True, pilot_allowance=-1), "spec.pilot_allowance"),
    (spec(lease_seconds=86_401), "spec.lease_seconds"),
    (spec(price_mode=common_pb2.PRICE_MODE_PER_HOUR), "spec.price_per_hour_cents"),
    (spec(price_mode=7), "spec.price_mode"),
    (spec(pay_mode=common_pb2.PAY_MODE_PER_HOUR), "spec.pay_per_hour_cents"),
    (spec(budget_cap_cents=-1), "spec.budget_cap_cents"),
    (spec(gold_bonus_cents=5), "spec.gold_bonus_cents"),
    (spec(gold_bonus_threshold=2), "spec.gold_bonus_threshold"),
    (spec(gold_bonus_min_answers=10_001), "spec.gold_bonus_min_answers"),
    (spec(sla_deadline=Timestamp(seconds=2**62)), "spec.sla_deadline"),
    (boxes(price_per_hour_cents=-5), "spec.price_per_hour_cents"),
]


@pytest.fixture(scope="module")
def servicers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[IngestServicer, PaymentsServicer]]:
    home: Path = tmp_path_factory.mktemp("specs")
    ingest_engine = make_engine(f"sqlite:///{home / 'ingest.db'}")
    ingest_tables.metadata.create_all(ingest_engine)
    payments_engine = make_engine(f"sqlite:///{home / 'payments.db'}")
    payments_tables.metadata.create_all(payments_engine)
    handlers = IngestHandlers(ingest_engine, LocalDiskStore(home / "objects"), Topics("specs"), LIMITS)
    try:
        yield IngestServicer(handlers), PaymentsServicer(Ledger(payments_engine))
    finally:
        handlers.close()
        ingest_engine.dispose()
        payments_engine.dispose()


def refused_field(call: Any) -> str:
    with pytest.raises(InvalidArgument) as caught:
        call()
    return caught.value.field


@pytest.mark.parametrize(("bad", "field"), BAD_SPECS, ids=[field for _, field in BAD_SPECS])
def test_create_job_and_quote_refuse_the_same_specs_by_the_same_field(
    servicers: tuple[IngestServicer, PaymentsServicer], bad: common_pb2.JobSpec, field: str
) -> None:
    ingest, payments = servicers
    create = ingest_pb2.CreateJobRequest(spec=bad)
    quote = payments_pb2.QuoteRequest(spec=bad, objects=100, expected_annotations_per_object=2)
    assert refused_field(lambda: ingest.CreateJob(create, None)) == field
    assert refused_field(lambda: payments.Quote(quote, None)) == field


@pytest.mark.parametrize("good", [spec(), boxes(price_per_annotation_cents=3, currency="EUR", pilot=True)])
def test_a_spec_create_job_accepts_gets_a_quote_in_its_currency(
    servicers: tuple[IngestServicer, PaymentsServicer], good: common_pb2.JobSpec
) -> None:
    ingest, payments = servicers
    job = ingest.CreateJob(ingest_pb2.CreateJobRequest(spec=good), None)
    quote = payments.Quote(payments_pb2.QuoteRequest(spec=good, objects=100, expected_annotations_per_object=2), None)
    assert quote.currency == job.spec.currency
    assert quote.objects - quote.billable_objects == (job.spec.pilot_allowance if job.spec.pilot else 0)
