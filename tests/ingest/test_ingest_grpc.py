"""The ingest service started for real (gRPC server, outbox relay, Tansu broker) and
driven through the generated stub, the way a client drives it."""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeAlias

import grpc
import ingest_samples as samples
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from quorum_testing import admin_key

from quorum.messaging import Topics
from quorum.objectstore import LocalDiskStore, S3Store, content_key, open_object_store
from quorum.rpc import channel
from quorum.service import RunningService, start_service
from quorum.settings import Settings
from quorum.v1 import common_pb2, events_pb2, ingest_pb2, ingest_pb2_grpc
from services.ingest.bootstrap import build

Stub: TypeAlias = ingest_pb2_grpc.IngestServiceStub


@dataclass
class Running:
    settings: Settings
    service: RunningService
    stub: Stub


@contextlib.contextmanager
def running(settings: Settings) -> Iterator[Running]:
    """The real service on a free port and a stub on a real channel; stopped on exit."""
    service = start_service(build, settings, address="127.0.0.1:0")
    try:
        with channel(f"127.0.0.1:{service.port}", api_key=admin_key(settings)) as ch:
            yield Running(settings, service, ingest_pb2_grpc.IngestServiceStub(ch))
    finally:
        service.stop()


@pytest.fixture(scope="module")
def shared(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    """One service for the tests that only look at replies and the store."""
    settings = Settings(
        home=tmp_path_factory.mktemp("ingest"),
        kafka_bootstrap=kafka_bootstrap,
        topic_prefix=f"t{uuid.uuid4().hex[:12]}",
        kafka_partitions=3,
        grpc_workers=8,
        # Every test's tmp_path is under it, and so is the service's home with its secrets.
        import_roots=(tmp_path_factory.getbasetemp(),),
    )
    with running(settings) as service:
        yield service


@pytest.fixture
def stub(shared: Running) -> Stub:
    return shared.stub


def create(stub: Stub, task: str = "image_classification", **fields: Any) -> ingest_pb2.Job:
    return stub.CreateJob(ingest_pb2.CreateJobRequest(spec=samples.spec_proto(task, **fields)), timeout=10)


def chunks(
    job_id: str, named: list[tuple[str, bytes]], piece: int = 700, gold: dict[str, str] | None = None
) -> Iterator:
    """The files cut into ``piece``-byte chunks; job_id on the first chunk only."""
    first = True
    for name, data in named:
        starts = range(0, max(len(data), 1), piece)
        for n, start in enumerate(starts):
            yield ingest_pb2.UploadChunk(
                job_id=job_id if first else "",
                filename=name if n == 0 else "",
                data=data[start : start + piece],
                end_of_file=n == len(starts) - 1,
                gold_label=(gold or {}).get(name, "") if n == 0 else "",
            )
            first = False


def rpc_error(call: Callable[[], Any]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        call()
    return caught.value


# ----------------------------------------------------------------------------- CreateJob validation

BAD_SPECS: list[tuple[str, dict[str, Any]]] = [
    ("spec.client_id", {"client_id": ""}),
    ("spec.client_id", {"client_id": "has space"}),
    ("spec.name", {"name": "n" * 201}),
    ("spec.task", {"task": ""}),
    ("spec.image_classification.labels", {"labels": []}),
    ("spec.image_classification.labels", {"labels": ["a", " "]}),
    ("spec.image_classification.labels", {"labels": ["a", "a"]}),
    ("spec.image_classification.labels", {"labels": [f"l{i}" for i in range(201)]}),
    ("spec.image_classification.labels", {"labels": ["x" * 101]}),
    ("spec.text_classification.labels", {"task": "text_classification", "labels": []}),
    ("spec.overlap.min", {"overlap": common_pb2.Overlap(min=0, max=4)}),
    ("spec.overlap.max", {"overlap": common_pb2.Overlap(min=4, max=3)}),
    ("spec.overlap.max", {"overlap": common_pb2.Overlap(min=3, max=51)}),
    ("spec.target_confidence", {"target_confidence": 1.5}),
    ("spec.target_confidence", {"target_confidence": -0.1}),
    ("spec.gold_share", {"gold_share": 1.0}),
    ("spec.gold_share", {"gold_share": -0.01}),
    ("spec.price_per_object_cents", {"price_per_object_cents": -5}),
    ("spec.pay_per_answer_cents", {"pay_per_answer_cents": -1}),
    ("spec.currency", {"currency": "us"}),
    ("spec.currency", {"currency": "Usd"}),
    ("spec.pilot_allowance", {"pilot": True, "pilot_allowance": -1}),
    ("spec.lease_seconds", {"lease_seconds": -1}),
    ("spec.lease_seconds", {"lease_seconds": 86_401}),
]


@pytest.mark.parametrize(("field", "fields"), BAD_SPECS, ids=[f"{f}-{i}" for i, (f, _) in enumerate(BAD_SPECS)])
def test_create_job_names_the_bad_field(stub: Stub, field: str, fields: dict[str, Any]) -> None:
    task = fields.pop("task", "image_classification")
    error = rpc_error(lambda: create(stub, task, **fields))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(f"{field}: ")


def test_create_job_needs_a_spec(stub: Stub) -> None:
    error = rpc_error(lambda: stub.CreateJob(ingest_pb2.CreateJobRequest(), timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error.details().startswith("spec: ")


def test_an_admin_key_names_the_organisation_a_job_is_for(stub: Stub) -> None:
    error = rpc_error(lambda: create(stub, client_id=""))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (
        "spec.client_id: required: admin keys act for any organisation, so name the one the job is for"
    )


def test_create_job_limits_the_idempotency_key(stub: Stub) -> None:
    request = ingest_pb2.CreateJobRequest(spec=samples.spec_proto(), idempotency_key="k" * 201)
    error = rpc_error(lambda: stub.CreateJob(request, timeout=10))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error.details().startswith("idempotency_key: ")


def test_create_job_returns_the_normalised_spec_and_get_and_list_agree(stub: Stub) -> None:
    client = f"c{uuid.uuid4().hex[:8]}"
    deadline = Timestamp(seconds=1_900_000_000, nanos=250_000)
    job = create(stub, client_id=client, pilot=True, sla_deadline=deadline, instructions="Pick the animal.")
    assert job.spec.sla_deadline == deadline and job.spec.instructions == "Pick the animal."
    assert job.job_id.startswith("job_") and job.state == ingest_pb2.JOB_STATE_OPEN
    assert (job.spec.overlap.min, job.spec.overlap.max, job.spec.target_confidence) == (3, 5, 0.9)
    assert (job.spec.currency, job.spec.pilot_allowance, job.spec.lease_seconds) == ("USD", 100, 120)
    assert list(job.spec.image_classification.labels) == list(samples.LABELS)
    assert stub.GetJob(ingest_pb2.GetJobRequest(job_id=job.job_id), timeout=10) == job
    again = stub.CreateJob(
        ingest_pb2.CreateJobRequest(spec=samples.spec_proto(client_id=client), idempotency_key="k1"), timeout=10
    )
    retry = stub.CreateJob(
        ingest_pb2.CreateJobRequest(spec=samples.spec_proto(client_id=client), idempotency_key="k1"), timeout=10
    )
    assert retry == again and again.job_id != job.job_id
    listed = stub.ListJobs(ingest_pb2.ListJobsRequest(client_id=client), timeout=10).jobs
    assert [j.job_id for j in listed] == [again.job_id, job.job_id]


def days_from_now(days: int) -> Timestamp:
    """SetJobSla takes only deadlines in the future: fixed ones would fail once past."""
    return Timestamp(seconds=int(time.time()) + days * 86_400)


def test_staff_move_and_clear_an_sla_deadline(stub: Stub) -> None:
    job = create(stub, sla_deadline=days_from_now(1))
    later = days_from_now(2)
    moved = stub.SetJobSla(ingest_pb2.SetJobSlaRequest(job_id=job.job_id, sla_deadline=later), timeout=10)
    assert moved.spec.sla_deadline == later
    assert stub.GetJob(ingest_pb2.GetJobRequest(job_id=job.job_id), timeout=10).spec.sla_deadline == later
    cleared = stub.SetJobSla(ingest_pb2.SetJobSlaRequest(job_id=job.job_id, clear_deadline=True), timeout=10)
    assert not cleared.spec.HasField("sla_deadline")
    for request in (
        ingest_pb2.SetJobSlaRequest(job_id=job.job_id),
        ingest_pb2.SetJobSlaRequest(job_id=job.job_id, sla_deadline=later, clear_deadline=True),
        ingest_pb2.SetJobSlaRequest(job_id=job.job_id, sla_deadline=Timestamp(seconds=1_000_000_000)),
    ):
        error = rpc_error(lambda request=request: stub.SetJobSla(request, timeout=10))  # type: ignore[misc]
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and error.details().startswith("sla_deadline: ")


def test_unknown_jobs_are_not_found(stub: Stub) -> None:
    unknown = "job_000000000000000000000000"
    for call in (
        lambda: stub.GetJob(ingest_pb2.GetJobRequest(job_id=unknown), timeout=10),
        lambda: stub.SealJob(ingest_pb2.SealJobRequest(job_id=unknown), timeout=10),
        lambda: stub.UploadFiles(chunks(unknown, [("a.png", samples.image(1))]), timeout=10),
        lambda: stub.ImportManifest(
            ingest_pb2.ImportManifestRequest(job_id=unknown, format=ingest_pb2.MANIFEST_FORMAT_JSONL), timeout=10
        ),
    ):
        error = rpc_error(call)
        assert error.code() == grpc.StatusCode.NOT_FOUND and unknown in error.details()


def test_upload_argument_errors(stub: Stub) -> None:
    job = create(stub)
    no_job = rpc_error(lambda: stub.UploadFiles(iter([ingest_pb2.UploadChunk(filename="a", data=b"x")]), timeout=10))
    assert no_job.code() == grpc.StatusCode.INVALID_ARGUMENT and no_job.details().startswith("job_id: ")
    no_name = rpc_error(
        lambda: stub.UploadFiles(iter([ingest_pb2.UploadChunk(job_id=job.job_id, data=b"x")]), timeout=10)
    )
    assert no_name.code() == grpc.StatusCode.INVALID_ARGUMENT and no_name.details().startswith("filename: ")


def test_import_manifest_argument_errors(stub: Stub) -> None:
    job = create(stub)
    bad_format = rpc_error(
        lambda: stub.ImportManifest(ingest_pb2.ImportManifestRequest(job_id=job.job_id, content=b"{}"), timeout=10)
    )
    assert bad_format.code() == grpc.StatusCode.INVALID_ARGUMENT and bad_format.details().startswith("format: ")
    bad_header = rpc_error(
        lambda: stub.ImportManifest(
            ingest_pb2.ImportManifestRequest(job_id=job.job_id, format=ingest_pb2.MANIFEST_FORMAT_CSV, content=b"x\n"),
            timeout=10,
        )
    )
    assert bad_header.code() == grpc.StatusCode.INVALID_ARGUMENT and bad_header.details().startswith("content: ")
    no_job = rpc_error(
        lambda: stub.ImportManifest(
            ingest_pb2.ImportManifestRequest(format=ingest_pb2.MANIFEST_FORMAT_JSONL), timeout=10
        )
    )
    assert no_job.code() == grpc.StatusCode.INVALID_ARGUMENT and no_job.details().startswith("job_id: ")


# ----------------------------------------------------------------------------- uploads


def test_one_stream_of_good_and_bad_files(stub: Stub, shared: Running) -> None:
    job = create(stub)
    good = [samples.image(10 + i, size=(40, 40)) for i in range(3)]
    named = [
        ("a.png", good[0]),
        ("corrupt.png", samples.corrupt()),
        ("b.jpg", samples.image(20, fmt="JPEG")),
        ("cut.png", samples.truncated(good[1])),
        ("empty.png", b""),
        ("oversized.png", samples.bomb(9000, 9000)),
        ("copy.png", good[0]),
        ("gold.png", good[2]),
    ]
    summary = stub.UploadFiles(chunks(job.job_id, named, gold={"gold.png": "bird"}), timeout=30)
    results = {item.name: item for item in summary.items}
    assert [item.name for item in summary.items] == [name for name, _ in named]
    assert (summary.job_id, summary.accepted, summary.duplicates, summary.rejected) == (job.job_id, 3, 1, 4)
    assert results["corrupt.png"].reason == "not a decodable image: cannot identify the image format"
    assert results["cut.png"].reason == "truncated image"
    assert results["empty.png"].reason == "empty file"
    assert results["oversized.png"].reason == "image too large: 81000000 pixels > limit 50000000 (9000x9000)"
    assert results["copy.png"].status == ingest_pb2.ITEM_STATUS_DUPLICATE
    assert results["copy.png"].reason == f"duplicate of 'a.png' ({results['a.png'].item_id})"
    for name in ("a.png", "b.jpg", "gold.png"):
        assert results[name].status == ingest_pb2.ITEM_STATUS_ACCEPTED and results[name].item_id.startswith("item_")
    stored = stub.GetJob(ingest_pb2.GetJobRequest(job_id=job.job_id), timeout=10)
    assert (stored.objects, stored.gold_objects, stored.rejected) == (2, 1, 4)
    store = open_object_store(shared.settings)
    assert store.get(content_key(good[0])) == good[0]
    assert store.get(content_key(good[2])) == good[2]
    # At rest the files hold ciphertext.
    assert LocalDiskStore(shared.settings.home / "objects").get(content_key(good[0])) != good[0]


def test_a_file_over_max_file_bytes_is_rejected(make_settings: Callable[..., Settings]) -> None:
    with running(make_settings(max_file_bytes=3000)) as svc:
        stub = svc.stub
        job = create(stub)
        summary = stub.UploadFiles(
            chunks(job.job_id, [("big.png", bytes(5000)), ("ok.png", samples.image(1))]), timeout=30
        )
        assert [i.reason for i in summary.items] == ["file too large: 5000 bytes > limit 3000 (max_file_bytes)", ""]


def test_uploads_to_a_sealed_job_fail(stub: Stub) -> None:
    job = create(stub)
    sealed = stub.SealJob(ingest_pb2.SealJobRequest(job_id=job.job_id), timeout=10)
    assert sealed.state == ingest_pb2.JOB_STATE_SEALED
    error = rpc_error(lambda: stub.UploadFiles(chunks(job.job_id, [("a.png", samples.image(1))]), timeout=10))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert stub.SealJob(ingest_pb2.SealJobRequest(job_id=job.job_id), timeout=10) == sealed


def test_a_broken_stream_keeps_the_files_accepted_before_the_break(stub: Stub) -> None:
    job = create(stub, "text_classification", labels=["pos", "neg"])

    def stream() -> Iterator[ingest_pb2.UploadChunk]:
        yield from chunks(job.job_id, [(f"{i}.txt", f"review number {i}".encode()) for i in range(5)])
        time.sleep(0.3)
        raise RuntimeError("the client crashed")

    # Five small files wait for their batch (50 objects or 1 s) when the stream breaks.
    error = rpc_error(lambda: stub.UploadFiles(stream(), timeout=10))
    assert error.code() in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.CANCELLED)
    deadline = time.monotonic() + 10
    while stub.GetJob(ingest_pb2.GetJobRequest(job_id=job.job_id), timeout=10).objects < 5:
        assert time.monotonic() < deadline, "the accepted files were lost"
        time.sleep(0.05)


def test_manifest_over_grpc(stub: Stub, tmp_path: Path) -> None:
    job = create(stub, "text_classification", labels=["pos", "neg"])
    (tmp_path / "t.txt").write_text("from a file")
    content = "\n".join(
        [
            json.dumps({"id": "inline", "text": "inline text", "gold_label": "neg"}),
            json.dumps({"id": "file", "path": "t.txt"}),
            json.dumps({"id": "gone", "path": "gone.txt"}),
            "not json",
        ]
    ).encode()
    summary = stub.ImportManifest(
        ingest_pb2.ImportManifestRequest(
            job_id=job.job_id, format=ingest_pb2.MANIFEST_FORMAT_JSONL, content=content, base_dir=str(tmp_path)
        ),
        timeout=30,
    )
    assert (summary.accepted, summary.duplicates, summary.rejected) == (2, 0, 2)
    assert summary.items[2].reason == f"line 3: path {str(tmp_path / 'gone.txt')!r} does not exist"
    assert summary.items[3].name == "line 4" and summary.items[3].reason.startswith("line 4: not valid JSON")
    csv_summary = stub.ImportManifest(
        ingest_pb2.ImportManifestRequest(
            job_id=job.job_id, format=ingest_pb2.MANIFEST_FORMAT_CSV, content=b"id,text\nc1,csv text\nc2,\n"
        ),
        timeout=30,
    )
    assert [(i.name, i.status) for i in csv_summary.items] == [
        ("c1", ingest_pb2.ITEM_STATUS_ACCEPTED),
        ("c2", ingest_pb2.ITEM_STATUS_REJECTED),
    ]
    assert csv_summary.items[1].reason == "line 3: needs 'text' or 'path'"
    stored = stub.GetJob(ingest_pb2.GetJobRequest(job_id=job.job_id), timeout=10)
    assert (stored.objects, stored.gold_objects, stored.rejected) == (2, 1, 3)


def test_an_admin_manifest_cannot_read_the_services_secrets(stub: Stub, shared: Running) -> None:
    """The import root covers the service's home: its keys and the local credentials stay closed."""
    home = shared.settings.home
    secrets = [home / "secrets" / "master.key", home / "secrets" / "api-key-hash.key", home / "credentials"]
    assert all(path.is_file() for path in secrets)
    job = create(stub, "text_classification", labels=["pos", "neg"])
    for path in [*secrets, Path("/etc/passwd")]:
        denied = rpc_error(
            lambda path=path: stub.ImportManifest(
                ingest_pb2.ImportManifestRequest(
                    job_id=job.job_id,
                    format=ingest_pb2.MANIFEST_FORMAT_JSONL,
                    content=json.dumps({"path": str(path)}).encode(),
                ),
                timeout=10,
            )
        )
        assert denied.code() == grpc.StatusCode.PERMISSION_DENIED, path
        assert denied.details().startswith("content: line 1: path ") and "QUORUM_IMPORT_ROOTS" in denied.details()
        assert path.read_text().strip() not in denied.details()
    assert stub.GetJob(ingest_pb2.GetJobRequest(job_id=job.job_id), timeout=10).objects == 0


# ----------------------------------------------------------------------------- events on Kafka


def test_events_reach_the_topics(make_settings: Callable[..., Settings], kafka_bootstrap: str) -> None:
    settings = make_settings()
    topics = Topics(settings.topic_prefix)
    with running(settings) as svc:
        stub = svc.stub
        job = create(stub, "text_classification", labels=["pos", "neg"], overlap=common_pb2.Overlap(min=2, max=4))
        texts = {f"{i}.txt": f"text number {i}".encode() for i in range(4)}
        summary = stub.UploadFiles(chunks(job.job_id, list(texts.items()), gold={"3.txt": "neg"}), timeout=30)
        item_ids = {item.name: item.item_id for item in summary.items}
        stub.SealJob(ingest_pb2.SealJobRequest(job_id=job.job_id), timeout=10)

        records = samples.read_events(
            kafka_bootstrap,
            [topics.tasks, topics.jobs],
            lambda events: len(events) == 6 and any(e.HasField("job_sealed") for e in events),
        )
        task_records = [(key, event) for topic, key, event in records if topic == topics.tasks]
        job_records = [(key, event) for topic, key, event in records if topic == topics.jobs]
        assert len(task_records) == 4 and len({event.event_id for _, event in task_records}) == 4
        by_name = {}
        for key, event in task_records:
            task = event.task_created
            assert key == task.task_id.encode() and task.task_id.startswith("task_")
            assert event.occurred_at.seconds > 0 and task.created_at.seconds > 0
            by_name[task.object_name] = task
        assert set(by_name) == set(texts)
        for name, task in by_name.items():
            assert task.job_id == job.job_id and task.item_id == item_ids[name]
            assert task.text == texts[name].decode() and task.content_type == "text/plain; charset=utf-8"
            assert task.object_key == content_key(texts[name])
        assert by_name["3.txt"].gold and by_name["3.txt"].gold_answer.classification.label == "neg"
        assert not by_name["0.txt"].gold

        # Both job events share the job's key, hence its partition and order.
        assert [key for key, _ in job_records] == [job.job_id.encode()] * 2
        created, sealed = (event for _, event in job_records)
        assert created.job_created.job_id == job.job_id
        assert created.job_created.spec == job.spec  # the normalised spec
        assert (created.job_created.spec.overlap.min, created.job_created.spec.overlap.max) == (2, 4)
        assert created.job_created.created_at == job.created_at
        assert (sealed.job_sealed.job_id, sealed.job_sealed.objects, sealed.job_sealed.gold_objects) == (
            job.job_id,
            3,
            1,
        )


def read_tasks(bootstrap: str, topic: str, count: int) -> list[tuple[bytes, events_pb2.Event]]:
    records = samples.read_events(bootstrap, [topic], lambda events: len(events) >= count)
    return [(key, event) for _, key, event in records]


# ----------------------------------------------------------------------------- other backends


def test_objects_go_to_s3(make_settings: Callable[..., Settings], s3_settings: dict[str, Any]) -> None:
    with running(make_settings(**s3_settings)) as svc:
        stub = svc.stub
        job = create(stub)
        data = [samples.image(40 + i) for i in range(3)]
        summary = stub.UploadFiles(chunks(job.job_id, [(f"{i}.png", d) for i, d in enumerate(data)]), timeout=30)
        assert summary.accepted == 3
    bucket = s3_settings["object_store_url"].removeprefix("s3://")
    s3 = S3Store(bucket, s3_settings["s3_endpoint"], "testing", "testing", secure=False, region="us-east-1")
    store = open_object_store(make_settings(**s3_settings))
    for d in data:
        assert store.get(content_key(d)) == d
        assert d not in s3.get(content_key(d)), "stored in the clear"


def test_the_service_on_postgresql(
    make_settings: Callable[..., Settings], postgres_settings: dict[str, Any], kafka_bootstrap: str
) -> None:
    settings = make_settings(**postgres_settings)
    with running(settings) as svc:
        stub = svc.stub
        job = create(stub)
        summary = stub.UploadFiles(
            chunks(job.job_id, [("a.png", samples.image(1)), ("b.png", samples.image(1)), ("c.png", b"junk")]),
            timeout=30,
        )
        assert (summary.accepted, summary.duplicates, summary.rejected) == (1, 1, 1)
        sealed = stub.SealJob(ingest_pb2.SealJobRequest(job_id=job.job_id), timeout=10)
        assert (sealed.objects, sealed.rejected) == (1, 1)
        [(_, task)] = read_tasks(kafka_bootstrap, Topics(settings.topic_prefix).tasks, 1)
        assert task.task_created.object_name == "a.png"


# ----------------------------------------------------------------------------- throughput


@pytest.mark.slow
def test_two_thousand_small_pngs_over_one_stream(make_settings: Callable[..., Settings], kafka_bootstrap: str) -> None:
    settings = make_settings()
    images = [samples.image(1000 + i, size=(24 + i % 16, 24)) for i in range(2000)]
    assert 1000 < sum(map(len, images)) / len(images) < 3500
    with running(settings) as svc:
        stub, service = svc.stub, svc.service
        job = create(stub)
        started = time.perf_counter()
        summary = stub.UploadFiles(
            chunks(job.job_id, [(f"{i:04d}.png", d) for i, d in enumerate(images)], piece=64 * 1024), timeout=120
        )
        elapsed = time.perf_counter() - started
        assert summary.accepted == 2000
        print(f"\nUploadFiles: 2000 PNGs ({sum(map(len, images)) // 1000} KB) in {elapsed:.2f} s")
        assert elapsed < 10
        assert service.relay is not None
        while service.relay.pending():
            assert time.perf_counter() - started < 60, "the outbox does not drain"
            time.sleep(0.05)
        print(f"UploadFiles: outbox published {time.perf_counter() - started:.2f} s after the start")
        tasks = read_tasks(kafka_bootstrap, Topics(settings.topic_prefix).tasks, 2000)
        assert len({event.task_created.item_id for _, event in tasks}) == 2000
