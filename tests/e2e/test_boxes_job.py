"""A bounding-box job on the embedded stack (each service its own process): generated images
with known objects, labeled by the simulated crowd, fused by consensus, billed per object and
per fused box, and exported with the fused boxes."""

from __future__ import annotations

from pathlib import Path

import pytest
from quorum_testing import crowd_until, wait_until

from quorum.client import QuorumClient, UploadFile
from quorum.demo.boxes import TrueBox, generate_boxes, match_boxes
from quorum.demo.crowd import SimulatedCrowd
from quorum.demo.run import BOX_ANNOTATION_CENTS as PER_BOX
from quorum.demo.run import BOX_PAY_CENTS as PAY
from quorum.demo.run import BOX_PRICE_CENTS as PRICE
from quorum.demo.run import box_job_spec
from quorum.stack import LocalStack
from quorum.v1 import common_pb2, ingest_pb2

pytestmark = pytest.mark.slow

IMAGES, WORKERS = 15, 8
# What the crowd's noise model (quorum.demo.crowd.draw_boxes) gives once fused, measured
# offline by fusing its answers with consensus's own box fusion the way the service asks for
# them (3 answers, up to 5 while the confidence is below 0.9; 400 images, 7,060 objects, ten
# crowds of 8): every object kept had IoU >= 0.7 with the truth (median 0.95: a worker misplaces
# each edge by about 4% of the side, and consensus takes each edge's weighted median), and 2% to
# 8% of the objects were dropped, depending on the crowd (3.8% for this one's seed), when too
# many of an object's workers missed it or were spammers. So: every object found fits at IoU
# 0.7, and at least 80% are found, which a 4% miss rate fails about once in a thousand runs.
MIN_IOU, MIN_FOUND = 0.7, 0.8


def fused(label: common_pb2.Answer) -> list[TrueBox]:
    return [TrueBox(b.label, b.x, b.y, b.w, b.h) for b in label.boxes.boxes]


def test_a_boxes_job_is_fused_close_to_the_truth_billed_per_box_and_exported(tmp_path: Path) -> None:
    dataset = generate_boxes(IMAGES, seed=3)
    truth = {image.name: image.boxes for image in dataset.images}
    stack = LocalStack(home=tmp_path / "stack")
    stack.start()
    client = QuorumClient(stack.addresses, api_key=stack.api_key)
    try:
        spec = box_job_spec(dataset.labels)
        spec.pilot = False  # billed from the first object
        spec.lease_seconds = 30
        job = client.ingest.CreateJob(ingest_pb2.CreateJobRequest(spec=spec)).job_id
        upload = client.upload(job, [UploadFile(image.name, image.data) for image in dataset.images])
        assert upload.accepted == IMAGES, [item.reason for item in upload.items]
        client.ingest.SealJob(ingest_pb2.SealJobRequest(job_id=job))

        crowd = SimulatedCrowd(
            stack.address("tasking"), dataset.truth_by_key(), WORKERS, seed=2, think_time_ms=(5, 30), max_retry_ms=200
        )
        crowd.authorize(client.issue_worker_keys(p.worker_id for p in crowd.profiles))
        report = crowd_until(crowd, lambda: client.quality(job).resolved >= IMAGES, 240, "every image to resolve")
        assert report.unknown_content == 0
        assert not report.errors_by_call.get("SubmitAnswer:INVALID_ARGUMENT"), report.errors_by_call
        wait_until(lambda: client.money(job).objects_billed >= IMAGES, 60, "billing")
        wait_until(
            lambda: client.money(job).answers_paid + client.money(job).answers_unpaid >= report.answers,
            60,
            "worker pay",
        )

        results = list(client.results(job))
        assert sorted(r.object_name for r in results) == sorted(truth)
        ious: list[float] = []
        spurious = 0
        fused_boxes = 0
        for result in results:
            assert result.label.WhichOneof("value") == "boxes"
            assert 0.0 <= result.confidence <= 1.0
            assert 3 <= len(result.answers) <= 5
            found = fused(result.label)
            fused_boxes += len(found)
            assert all(0.0 <= b.confidence <= 1.0 for b in result.label.boxes.boxes)
            matched = match_boxes(found, truth[result.object_name])
            ious += matched
            spurious += len(found) - sum(iou > 0 for iou in matched)
        found_ious = [iou for iou in ious if iou > 0]
        assert len(ious) >= IMAGES  # the generated images hold objects to find
        assert min(found_ious) >= MIN_IOU, sorted(found_ious)
        assert len(found_ious) / len(ious) >= MIN_FOUND, sorted(ious)
        assert spurious <= 1, spurious

        invoice = client.invoice(job)
        assert invoice.objects_labeled == IMAGES
        per_box = [
            (line.quantity, line.unit_price_cents) for line in invoice.lines if line.description == "Annotations"
        ]
        assert per_box == [(fused_boxes, PER_BOX)]
        assert invoice.total_cents == IMAGES * PRICE + fused_boxes * PER_BOX
        money = client.money(job)
        assert money.billed_cents == invoice.total_cents
        assert money.answers_paid + money.answers_unpaid == report.answers
        assert money.paid_cents == money.answers_paid * PAY
        verification = client.verify_ledger()
        assert verification.balanced, list(verification.problems)
        assert not verification.problems
    finally:
        client.close()
        stack.stop()
