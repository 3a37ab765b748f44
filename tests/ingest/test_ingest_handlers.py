"""The ingest service layer against real databases: SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import ingest_samples as samples
import pytest
import sqlalchemy as sa

from quorum.db import make_engine
from quorum.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from quorum.messaging import Topics
from quorum.objectstore import LocalDiskStore, content_key
from quorum.settings import Settings
from quorum.v1 import events_pb2
from services.ingest import codec, domain, tables
from services.ingest.domain import Chunk, ItemStatus, JobState, ManifestFormat
from services.ingest.handlers import IngestHandlers, ticking
from services.ingest.server_files import ServerFiles, open_without_links

TOPICS = Topics("test")
LIMITS = domain.Limits(max_file_bytes=50_000, max_text_bytes=1_000, max_image_pixels=1_000_000)


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ingest.db'}"
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(tmp_path: Path) -> LocalDiskStore:
    return LocalDiskStore(tmp_path / "objects")


@pytest.fixture
def wakeups() -> list[int]:
    return []


@pytest.fixture
def handlers(database_url: str, store: LocalDiskStore, wakeups: list[int], tmp_path: Path) -> Iterator[IngestHandlers]:
    engine = make_engine(database_url)
    tables.metadata.create_all(engine)
    service = IngestHandlers(
        engine,
        store,
        TOPICS,
        LIMITS,
        outbox_written=lambda: wakeups.append(1),
        batch_items=3,
        batch_seconds=60,
        # Manifests of these tests name files in the test's own folder.
        server_files=ServerFiles.under([tmp_path]),
    )
    try:
        yield service
    finally:
        service.close()
        engine.dispose()


def image_spec(**fields: object) -> domain.JobSpec:
    return codec.spec_from_proto(samples.spec_proto("image_classification", **fields))


def text_spec(**fields: object) -> domain.JobSpec:
    return codec.spec_from_proto(samples.spec_proto("text_classification", labels=("pos", "neg"), **fields))


def outbox(handlers: IngestHandlers) -> list[tuple[str, str, events_pb2.Event]]:
    with handlers.engine.connect() as conn:
        rows = conn.execute(sa.select(tables.outbox).order_by(tables.outbox.c.id)).all()
    return [(row.topic, row.key, events_pb2.Event.FromString(row.payload)) for row in rows]


def files(job_id: str, *named: tuple[str, bytes], gold: dict[str, str] | None = None) -> list[Chunk]:
    gold = gold or {}
    return [
        Chunk(job_id=job_id, filename=name, data=data, end_of_file=True, gold_label=gold.get(name, ""))
        for name, data in named
    ]


# ----------------------------------------------------------------------------- jobs


def test_create_job_stores_the_normalised_spec_and_announces_it(handlers: IngestHandlers, wakeups: list[int]) -> None:
    job = handlers.create_job(image_spec(pilot=True))
    assert job.job_id.startswith("job_") and len(job.job_id) == 28
    assert job.state is JobState.OPEN
    assert handlers.get_job(job.job_id) == job
    assert job.spec.overlap_min == 3 and job.spec.pilot_allowance == 100 and job.spec.currency == "USD"

    [(topic, key, event), (audit_topic, _, audited)] = outbox(handlers)
    assert (topic, key) == (TOPICS.jobs, job.job_id)
    assert event.event_id and event.WhichOneof("payload") == "job_created"
    # The audit trail learns of the job in the same transaction.
    assert audit_topic == TOPICS.audit and audited.audit_recorded.action == "job.created"
    assert audited.audit_recorded.resource == f"job/{job.job_id}"
    assert event.job_created.spec == codec.spec_to_proto(job.spec)
    assert event.job_created.created_at.ToDatetime(job.created_at.tzinfo) == job.created_at
    assert wakeups == [1]


def test_an_invalid_spec_stores_nothing(handlers: IngestHandlers) -> None:
    with pytest.raises(InvalidArgument) as caught:
        handlers.create_job(image_spec(currency="dollars"))
    assert caught.value.field == "spec.currency"
    assert handlers.list_jobs() == [] and outbox(handlers) == []


def test_a_retry_with_the_idempotency_key_returns_the_same_job(handlers: IngestHandlers) -> None:
    first = handlers.create_job(image_spec(), idempotency_key="order-1")
    assert handlers.create_job(image_spec(), idempotency_key="order-1") == first
    # Keys are per client: another client's key is another job.
    other = handlers.create_job(image_spec(client_id="globex"), idempotency_key="order-1")
    assert other.job_id != first.job_id
    with pytest.raises(FailedPrecondition, match="different spec"):
        handlers.create_job(image_spec(name="renamed"), idempotency_key="order-1")
    assert len(handlers.list_jobs()) == 2
    assert len([e for _, _, e in outbox(handlers) if e.HasField("job_created")]) == 2


def test_concurrent_retries_create_one_job(handlers: IngestHandlers) -> None:
    results: list[str] = []
    errors: list[BaseException] = []

    def create() -> None:
        try:
            results.append(handlers.create_job(text_spec(), idempotency_key="same").job_id)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(set(results)) == 1 and len(results) == 6
    assert len(handlers.list_jobs()) == 1


def test_list_jobs_newest_first_and_by_client(handlers: IngestHandlers) -> None:
    a = handlers.create_job(image_spec(client_id="acme"))
    b = handlers.create_job(image_spec(client_id="globex"))
    c = handlers.create_job(text_spec(client_id="acme"))
    assert [j.job_id for j in handlers.list_jobs()] == [c.job_id, b.job_id, a.job_id]
    assert [j.job_id for j in handlers.list_jobs("acme")] == [c.job_id, a.job_id]
    assert handlers.list_jobs("nobody") == []


def test_unknown_and_missing_job_ids(handlers: IngestHandlers) -> None:
    with pytest.raises(NotFound):
        handlers.get_job("job_000000000000000000000000")
    with pytest.raises(NotFound):
        handlers.seal_job("job_000000000000000000000000")
    with pytest.raises(InvalidArgument, match="job_id"):
        handlers.get_job("")


# ----------------------------------------------------------------------------- uploads


def test_upload_accepts_good_files_and_rejects_each_bad_one_with_its_reason(
    handlers: IngestHandlers, store: LocalDiskStore
) -> None:
    job = handlers.create_job(image_spec())
    good = [samples.image(i) for i in range(4)]
    summary = handlers.upload(
        files(
            job.job_id,
            ("a.png", good[0]),
            ("broken.png", samples.corrupt()),
            ("b.png", good[1]),
            ("cut.png", samples.truncated(good[2])),
            ("empty.png", b""),
            ("again.png", good[0]),
            ("gold.png", good[3]),
            ("huge.png", b"\x89PNG" + bytes(60_000)),
            ("badgold.png", good[2]),
            gold={"gold.png": "dog", "badgold.png": "cow"},
        )
    )
    by_name = {item.name: item for item in summary.items}
    assert [item.name for item in summary.items] == [
        "a.png",
        "broken.png",
        "b.png",
        "cut.png",
        "empty.png",
        "again.png",
        "gold.png",
        "huge.png",
        "badgold.png",
    ]
    assert {n for n, i in by_name.items() if i.status is ItemStatus.ACCEPTED} == {"a.png", "b.png", "gold.png"}
    assert by_name["broken.png"].reason == "not a decodable image: cannot identify the image format"
    assert by_name["cut.png"].reason == "truncated image"
    assert by_name["empty.png"].reason == "empty file"
    assert by_name["huge.png"].reason == "file too large: 60004 bytes > limit 50000 (max_file_bytes)"
    assert by_name["badgold.png"].reason == "gold_label 'cow' is not in the job's labels"
    dup = by_name["again.png"]
    assert dup.status is ItemStatus.DUPLICATE
    assert dup.item_id == by_name["a.png"].item_id
    assert dup.reason == f"duplicate of 'a.png' ({by_name['a.png'].item_id})"
    assert (summary.count(ItemStatus.ACCEPTED), summary.count(ItemStatus.DUPLICATE)) == (3, 1)
    assert summary.count(ItemStatus.REJECTED) == 5

    stored = handlers.get_job(job.job_id)
    assert (stored.objects, stored.gold_objects, stored.rejected) == (2, 1, 5)
    for data in good[:2] + good[3:]:
        assert store.get(content_key(data)) == data

    tasks = [(t, k, e.task_created) for t, k, e in outbox(handlers) if e.HasField("task_created")]
    assert len(tasks) == 3
    for topic, key, task in tasks:
        assert topic == TOPICS.tasks and key == task.task_id and task.task_id.startswith("task_")
        assert task.job_id == job.job_id and task.content_type == "image/png" and task.text == ""
        assert task.created_at.seconds > 0
    by_object = {task.object_name: task for _, _, task in tasks}
    assert by_object["a.png"].item_id == by_name["a.png"].item_id
    assert by_object["a.png"].object_key == content_key(good[0])
    assert not by_object["a.png"].gold and not by_object["a.png"].HasField("gold_answer")
    assert by_object["gold.png"].gold and by_object["gold.png"].gold_answer.classification.label == "dog"


def test_text_tasks_carry_their_text_inline(handlers: IngestHandlers, store: LocalDiskStore) -> None:
    job = handlers.create_job(text_spec())
    summary = handlers.upload(
        files(job.job_id, ("a.txt", b"  great product\n"), ("b.txt", b"\xff\xfe"), ("c.txt", b"great product"))
    )
    assert [i.status for i in summary.items] == [ItemStatus.ACCEPTED, ItemStatus.REJECTED, ItemStatus.DUPLICATE]
    [task] = [e.task_created for _, _, e in outbox(handlers) if e.HasField("task_created")]
    assert task.text == "great product" and task.content_type == domain.TEXT_CONTENT_TYPE
    assert store.get(task.object_key) == b"great product"


def test_duplicates_across_uploads_name_the_earlier_object(handlers: IngestHandlers) -> None:
    job = handlers.create_job(image_spec())
    data = samples.image(7)
    [first] = handlers.upload(files(job.job_id, ("first.png", data))).items
    summary = handlers.upload(files(job.job_id, ("second.png", data), ("third.png", data)))
    assert [(i.status, i.item_id) for i in summary.items] == [(ItemStatus.DUPLICATE, first.item_id)] * 2
    assert all(i.reason == f"duplicate of 'first.png' ({first.item_id})" for i in summary.items)
    assert handlers.get_job(job.job_id).objects == 1
    # The same content may join another job.
    other = handlers.create_job(image_spec())
    assert handlers.upload(files(other.job_id, ("x.png", data))).items[0].status is ItemStatus.ACCEPTED


def test_concurrent_uploads_of_the_same_content_accept_it_once(handlers: IngestHandlers) -> None:
    job = handlers.create_job(image_spec())
    shared = [samples.image(100 + i) for i in range(6)]
    outcomes: list[domain.UploadSummary] = []

    def upload(worker: int) -> None:
        outcomes.append(handlers.upload(files(job.job_id, *[(f"w{worker}-{i}.png", d) for i, d in enumerate(shared)])))

    threads = [threading.Thread(target=upload, args=(w,)) for w in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sum(s.count(ItemStatus.ACCEPTED) for s in outcomes) == 6
    assert sum(s.count(ItemStatus.DUPLICATE) for s in outcomes) == 12
    assert handlers.get_job(job.job_id).objects == 6
    with handlers.engine.connect() as conn:
        assert conn.execute(sa.select(sa.func.count()).select_from(tables.tasks)).scalar_one() == 6


def test_a_stream_that_breaks_keeps_what_was_accepted(handlers: IngestHandlers, wakeups: list[int]) -> None:
    job = handlers.create_job(image_spec())

    def stream() -> Iterator[Chunk]:
        yield from files(job.job_id, *[(f"{i}.png", samples.image(200 + i)) for i in range(7)])
        yield Chunk(filename="partial.png", data=samples.image(300)[:100])
        raise ConnectionError("client went away")

    with pytest.raises(ConnectionError):
        handlers.upload(stream())
    stored = handlers.get_job(job.job_id)
    assert stored.objects == 7  # batches of 3, 3, then the last one on the way out; the cut file dropped
    tasks = [e for _, _, e in outbox(handlers) if e.HasField("task_created")]
    assert sorted(e.task_created.object_name for e in tasks) == [f"{i}.png" for i in range(7)]
    assert len(wakeups) == 1 + 3


def test_one_stream_one_job(handlers: IngestHandlers) -> None:
    job = handlers.create_job(image_spec())
    other = handlers.create_job(image_spec())
    chunks = files(job.job_id, ("a.png", samples.image(1))) + files(other.job_id, ("b.png", samples.image(2)))
    with pytest.raises(InvalidArgument) as caught:
        handlers.upload(chunks)
    assert caught.value.field == "job_id"
    assert handlers.get_job(job.job_id).objects == 1  # committed before the error
    assert handlers.get_job(other.job_id).objects == 0


@pytest.mark.parametrize(
    ("chunks", "error", "field"),
    [
        ([], InvalidArgument, "job_id"),
        ([Chunk(filename="a.png", data=b"x")], InvalidArgument, "job_id"),
        ([Chunk(job_id="job_000000000000000000000000", filename="a", data=b"x")], NotFound, None),
    ],
)
def test_upload_needs_a_known_job_on_the_first_chunk(
    handlers: IngestHandlers, chunks: list[Chunk], error: type[Exception], field: str | None
) -> None:
    with pytest.raises(error) as caught:
        handlers.upload(chunks)
    assert getattr(caught.value, "field", None) == field


def test_the_first_chunk_must_name_its_file(handlers: IngestHandlers) -> None:
    job = handlers.create_job(image_spec())
    with pytest.raises(InvalidArgument) as caught:
        handlers.upload([Chunk(job_id=job.job_id, data=samples.image(1))])
    assert caught.value.field == "filename"


# ----------------------------------------------------------------------------- sealing


def test_seal_announces_the_final_counts_once(handlers: IngestHandlers) -> None:
    job = handlers.create_job(image_spec())
    handlers.upload(
        files(
            job.job_id,
            ("a.png", samples.image(1)),
            ("b.png", samples.image(2)),
            ("g.png", samples.image(3)),
            gold={"g.png": "cat"},
        )
    )
    sealed = handlers.seal_job(job.job_id)
    assert sealed.state is JobState.SEALED and (sealed.objects, sealed.gold_objects) == (2, 1)
    assert handlers.seal_job(job.job_id) == sealed
    seals = [(k, e.job_sealed) for t, k, e in outbox(handlers) if e.HasField("job_sealed")]
    assert len(seals) == 1
    key, event = seals[0]
    assert key == job.job_id and (event.job_id, event.objects, event.gold_objects) == (job.job_id, 2, 1)
    kinds = [e.WhichOneof("payload") for _, _, e in outbox(handlers)]
    assert kinds[0] == "job_created" and kinds[-1] == "job_sealed"


def test_a_sealed_job_takes_no_more_objects(handlers: IngestHandlers) -> None:
    job = handlers.create_job(text_spec())
    handlers.seal_job(job.job_id)
    with pytest.raises(FailedPrecondition, match="sealed"):
        handlers.upload(files(job.job_id, ("a.txt", b"hello")))
    with pytest.raises(FailedPrecondition, match="sealed"):
        handlers.import_manifest(job.job_id, ManifestFormat.JSONL, b'{"text": "hi"}', "")


def test_sealing_during_an_upload_stops_it(handlers: IngestHandlers) -> None:
    job = handlers.create_job(text_spec())

    def stream() -> Iterator[Chunk]:
        yield from files(job.job_id, *[(f"{i}.txt", f"text {i}".encode()) for i in range(3)])
        while handlers.get_job(job.job_id).objects < 3:  # the first batch commits
            time.sleep(0.01)
        handlers.seal_job(job.job_id)
        yield from files(job.job_id, ("late.txt", b"too late"))

    with pytest.raises(FailedPrecondition, match="sealed during the upload"):
        handlers.upload(stream())
    [seal] = [e.job_sealed for _, _, e in outbox(handlers) if e.HasField("job_sealed")]
    assert seal.objects == 3 == handlers.get_job(job.job_id).objects


# ----------------------------------------------------------------------------- manifests


def test_jsonl_manifest_with_texts_and_paths(handlers: IngestHandlers, tmp_path: Path) -> None:
    job = handlers.create_job(text_spec())
    data_dir = tmp_path / "data"
    (data_dir / "sub").mkdir(parents=True)
    (data_dir / "sub" / "review.txt").write_text("Loved it.\n")
    (tmp_path / "absolute.txt").write_text("Hated it.")
    (data_dir / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    lines = [
        {"id": "r1", "text": "Fine.", "gold_label": "pos"},
        {"path": "sub/review.txt"},
        {"id": "abs", "path": str(tmp_path / "absolute.txt")},
        {"id": "missing", "path": "nope.txt"},
        {"id": "dir", "path": "sub"},
        {"id": "latin", "path": "latin1.txt"},
        {"id": "both", "text": "x", "path": "y"},
        {"id": "dup", "text": "Fine."},
        {"id": "badgold", "text": "Meh.", "gold_label": "meh"},
    ]
    content = "\n".join(json.dumps(line) for line in lines).encode() + b"\n{broken\n"
    summary = handlers.import_manifest(job.job_id, ManifestFormat.JSONL, content, str(data_dir))
    got = [(i.name, i.status, i.reason) for i in summary.items]
    assert got == [
        ("r1", ItemStatus.ACCEPTED, ""),
        ("line 2", ItemStatus.ACCEPTED, ""),
        ("abs", ItemStatus.ACCEPTED, ""),
        ("missing", ItemStatus.REJECTED, f"line 4: path {str(data_dir / 'nope.txt')!r} does not exist"),
        ("dir", ItemStatus.REJECTED, f"line 5: path {str(data_dir / 'sub')!r} is not a file"),
        ("latin", ItemStatus.REJECTED, "line 6: not UTF-8 text: invalid byte at offset 3"),
        ("both", ItemStatus.REJECTED, "line 7: has both 'text' and 'path'; give one"),
        ("dup", ItemStatus.DUPLICATE, f"duplicate of 'r1' ({summary.items[0].item_id})"),
        ("badgold", ItemStatus.REJECTED, "line 9: gold_label 'meh' is not in the job's labels"),
        ("line 10", ItemStatus.REJECTED, summary.items[-1].reason),
    ]
    assert summary.items[-1].reason.startswith("line 10: not valid JSON")
    stored = handlers.get_job(job.job_id)
    assert (stored.objects, stored.gold_objects, stored.rejected) == (2, 1, 6)
    texts = {e.task_created.object_name: e.task_created for _, _, e in outbox(handlers) if e.HasField("task_created")}
    assert texts["line 2"].text == "Loved it."
    assert texts["r1"].gold and texts["r1"].gold_answer.classification.label == "pos"


def test_csv_manifest_of_image_paths(handlers: IngestHandlers, tmp_path: Path, store: LocalDiskStore) -> None:
    job = handlers.create_job(image_spec())
    (tmp_path / "a.png").write_bytes(samples.image(1))
    (tmp_path / "cut.png").write_bytes(samples.truncated(samples.image(2)))
    rows = [
        "id,path,gold_label,text",
        "a,a.png,,",
        "gold,b.png,cat,",
        "cut,cut.png,,",
        "inline,,,some words",
        "short,a.png",
    ]
    content = "\n".join(rows).encode()
    (tmp_path / "b.png").write_bytes(samples.image(3))
    summary = handlers.import_manifest(job.job_id, ManifestFormat.CSV, content, str(tmp_path))
    got = [(i.name, i.status, i.reason) for i in summary.items]
    assert got == [
        ("a", ItemStatus.ACCEPTED, ""),
        ("gold", ItemStatus.ACCEPTED, ""),
        ("cut", ItemStatus.REJECTED, "line 4: truncated image"),
        ("inline", ItemStatus.REJECTED, "line 5: inline text in an image_classification job: give a 'path'"),
        ("line 6", ItemStatus.REJECTED, "line 6: expected 4 fields as in the header, got 2"),
    ]
    assert store.get(content_key(samples.image(3))) == samples.image(3)
    assert (handlers.get_job(job.job_id).objects, handlers.get_job(job.job_id).gold_objects) == (1, 1)


def test_a_relative_path_needs_a_base_dir(handlers: IngestHandlers) -> None:
    job = handlers.create_job(image_spec())
    summary = handlers.import_manifest(job.job_id, ManifestFormat.JSONL, b'{"path": "a.png"}', "")
    assert summary.items[0].reason == "line 1: relative path 'a.png' needs a base_dir"


def test_a_manifest_file_over_the_limit_is_not_read(handlers: IngestHandlers, tmp_path: Path) -> None:
    job = handlers.create_job(image_spec())
    (tmp_path / "big.png").write_bytes(bytes(60_000))
    summary = handlers.import_manifest(job.job_id, ManifestFormat.JSONL, b'{"path": "big.png"}', str(tmp_path))
    assert summary.items[0].reason == "line 1: file too large: 60000 bytes > limit 50000 (max_file_bytes)"


def refused(handlers: IngestHandlers, path: str, base_dir: str = "") -> str:
    """The PERMISSION_DENIED message for a manifest naming ``path``, after checking that
    nothing of it was stored."""
    job = handlers.create_job(text_spec())
    content = "\n".join([json.dumps({"text": "an inline text comes first"}), json.dumps({"path": path})]).encode()
    with pytest.raises(PermissionDenied) as caught:
        handlers.import_manifest(job.job_id, ManifestFormat.JSONL, content, base_dir)
    assert handlers.get_job(job.job_id).objects == 0
    assert not [e for _, _, e in outbox(handlers) if e.HasField("task_created") and e.task_created.job_id == job.job_id]
    return str(caught.value)


def test_server_paths_resolve_inside_the_import_roots_or_nothing_is_imported(
    handlers: IngestHandlers, tmp_path: Path
) -> None:
    root = tmp_path / "imports"
    root.mkdir()
    (root / "inside.txt").write_text("an honest review")
    (tmp_path / "outside.txt").write_text("TOP SECRET")
    (root / "link.txt").symlink_to(tmp_path / "outside.txt")
    (root / "folder-link").symlink_to(tmp_path)
    handlers.server_files = ServerFiles.under([root])

    escapes = [
        (str(tmp_path / "outside.txt"), ""),
        ("../outside.txt", str(root)),
        ("link.txt", str(root)),
        ("folder-link/outside.txt", str(root)),
        (str(root / ".." / "outside.txt"), ""),
        ("outside.txt", str(tmp_path)),
    ]
    for path, base_dir in escapes:
        message = refused(handlers, path, base_dir)
        assert message.startswith("content: line 2: path ") and "is outside QUORUM_IMPORT_ROOTS" in message, path
        assert "nothing was imported" in message and "TOP SECRET" not in message
    job = handlers.create_job(text_spec())
    summary = handlers.import_manifest(job.job_id, ManifestFormat.JSONL, b'{"path": "inside.txt"}', str(root))
    assert summary.count(ItemStatus.ACCEPTED) == 1


def test_the_services_own_files_stay_closed_to_manifests_even_under_a_root(
    handlers: IngestHandlers, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    settings = Settings(home=home, access_database_url=f"sqlite:///{tmp_path / 'shared' / 'access.db'}")
    own_files = [
        "secrets/master.key",
        "credentials",
        "credentials.tmp",
        # Key hashes and sealed TOTP secrets; a log with an incident's traceback.
        "access.db",
        "ingest.db-wal",
        "logs/ingest.log",
    ]
    for name in [*(f"home/{name}" for name in own_files), "shared/access.db", "shared/access.db-wal"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("SECRET")
    (tmp_path / "tls.key").write_text("PRIVATE KEY")
    (tmp_path / "key-link.txt").symlink_to(tmp_path / "tls.key")
    (tmp_path / "db-link.txt").symlink_to(home / "access.db")
    handlers.server_files = ServerFiles.under([tmp_path], [*settings.closed_paths(), tmp_path / "tls.key"])

    for path in [
        str(home / "secrets" / "master.key"),
        *(f"home/{name}" for name in own_files),
        "shared/access.db",
        "shared/access.db-wal",
        "tls.key",
        "key-link.txt",
        "db-link.txt",
    ]:
        message = refused(handlers, path, str(tmp_path))
        assert "among the service's own files" in message, path
        assert "SECRET" not in message and "PRIVATE KEY" not in message


def test_proc_sys_and_dev_stay_closed_to_manifests_even_under_a_root(handlers: IngestHandlers) -> None:
    handlers.server_files = ServerFiles.under([Path("/")])
    # The service's environment, which may hold QUORUM_MASTER_KEY.
    for path in ("/proc/self/environ", "/sys/kernel/hostname", "/dev/zero", "/tmp/../proc/self/environ"):
        message = refused(handlers, path)
        assert "is under /proc, /sys, /dev, which no manifest may name" in message, path


def test_a_folder_swapped_for_a_link_after_the_check_is_not_followed(tmp_path: Path) -> None:
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "a.txt").write_text("inside")
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "a.txt").write_text("TOP SECRET")
    checked = tmp_path / "folder" / "a.txt"
    fd = open_without_links(checked)
    os.close(fd)
    # What a racing writer does between the check and the open: the folder becomes a link.
    (tmp_path / "folder").rename(tmp_path / "moved")
    (tmp_path / "folder").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(OSError) as caught:
        open_without_links(checked)
    assert caught.value.errno in (errno.ELOOP, errno.ENOTDIR)


def test_without_import_roots_no_manifest_names_a_server_file(handlers: IngestHandlers, tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("a file")
    handlers.server_files = ServerFiles()
    message = refused(handlers, "a.txt", str(tmp_path))
    assert message.startswith("content: line 2: no manifest may name files on the server: QUORUM_IMPORT_ROOTS")
    job = handlers.create_job(text_spec())
    summary = handlers.import_manifest(job.job_id, ManifestFormat.JSONL, b'{"text": "inline only"}', "")
    assert summary.count(ItemStatus.ACCEPTED) == 1


def test_a_fifo_under_a_root_is_refused_without_waiting_for_a_writer(handlers: IngestHandlers, tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "pipe")
    job = handlers.create_job(text_spec())
    summary = handlers.import_manifest(job.job_id, ManifestFormat.JSONL, b'{"path": "pipe"}', str(tmp_path))
    assert summary.items[0].reason == f"line 1: path {str(tmp_path / 'pipe')!r} is not a file"


def test_objects_commit_while_the_client_is_idle(handlers: IngestHandlers) -> None:
    handlers.batch_seconds = 0.2
    job = handlers.create_job(image_spec())
    seen_mid_stream: list[int] = []

    def stream() -> Iterator[Chunk]:
        yield from files(job.job_id, ("a.png", samples.image(1)), ("b.png", samples.image(2)))
        deadline = time.monotonic() + 5
        while handlers.get_job(job.job_id).objects < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        seen_mid_stream.append(handlers.get_job(job.job_id).objects)
        yield from files(job.job_id, ("c.png", samples.image(3)))

    summary = handlers.upload(stream())
    assert seen_mid_stream == [2]
    assert summary.count(ItemStatus.ACCEPTED) == 3 and handlers.get_job(job.job_id).objects == 3


def test_ticking_yields_items_ticks_and_errors() -> None:
    def slow() -> Iterator[int]:
        yield 1
        time.sleep(0.35)
        yield 2
        raise ValueError("broken")

    got: list[int | None] = []
    with pytest.raises(ValueError, match="broken"):
        for item in ticking(slow(), 0.1):
            got.append(item)
    assert got[0] == 1 and got[-1] == 2
    assert got.count(None) >= 2
    assert list(ticking(iter([]), 0.1)) == []


class FailingStore(LocalDiskStore):
    """A local store whose disk refuses one key."""

    def __init__(self, root: Path, refused: str) -> None:
        super().__init__(root)
        self.refused = refused

    def put(self, key: str, data: bytes, content_type: str) -> None:
        if key == self.refused:
            raise OSError("disk full")
        super().put(key, data, content_type)


def test_an_object_the_store_refuses_is_rejected_and_nothing_points_to_it(
    handlers: IngestHandlers, tmp_path: Path
) -> None:
    bad = samples.image(2)
    handlers.store = FailingStore(tmp_path / "failing", refused=content_key(bad))
    job = handlers.create_job(image_spec())
    summary = handlers.upload(files(job.job_id, ("a.png", samples.image(1)), ("b.png", bad)))
    assert [(i.status, i.reason) for i in summary.items] == [
        (ItemStatus.ACCEPTED, ""),
        (ItemStatus.REJECTED, "not stored: object store error: disk full"),
    ]
    with handlers.engine.connect() as conn:
        keys = set(conn.execute(sa.select(tables.items.c.object_key)).scalars())
    assert keys == {content_key(samples.image(1))}


def _in_days(days: float) -> dt.datetime:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(days=days)).replace(microsecond=0)


def test_an_sla_deadline_is_moved_and_cleared_and_each_change_is_audited(handlers: IngestHandlers) -> None:
    from google.protobuf.timestamp_pb2 import Timestamp

    created_with = Timestamp()
    created_with.FromDatetime(_in_days(1))
    job = handlers.create_job(image_spec(sla_deadline=created_with), idempotency_key="order-7")
    later = _in_days(3)

    moved = handlers.set_job_sla(job.job_id, later)
    assert moved.spec.sla_deadline == later
    assert handlers.get_job(job.job_id).spec.sla_deadline == later
    assert handlers.list_jobs("acme")[0].spec.sla_deadline == later
    # What the job was created with is unchanged: a retry of that CreateJob still matches.
    retried = handlers.create_job(image_spec(sla_deadline=created_with), idempotency_key="order-7")
    assert retried.job_id == job.job_id and retried.spec.sla_deadline == later

    assert handlers.set_job_sla(job.job_id, None).spec.sla_deadline is None
    assert handlers.get_job(job.job_id).spec.sla_deadline is None
    changes = [e.audit_recorded for _, _, e in outbox(handlers) if e.audit_recorded.action == "job.sla_changed"]
    assert [(c.resource, c.org_id) for c in changes] == [(f"job/{job.job_id}", "acme")] * 2
    assert [json.loads(c.details_json) for c in changes] == [
        {"from": created_with.ToDatetime(dt.UTC).isoformat(), "to": later.isoformat()},
        {"from": later.isoformat(), "to": None},
    ]
    # Nothing else reads the deadline, so nothing is announced.
    assert not [e for _, _, e in outbox(handlers) if e.WhichOneof("payload") not in ("job_created", "audit_recorded")]


def test_an_sla_deadline_must_be_ahead_and_the_job_alive(handlers: IngestHandlers) -> None:
    job = handlers.create_job(image_spec())
    with pytest.raises(InvalidArgument) as caught:
        handlers.set_job_sla(job.job_id, _in_days(-1))
    assert caught.value.field == "sla_deadline"
    with pytest.raises(NotFound):
        handlers.set_job_sla("job_00000000000000000000000000", _in_days(1))
    handlers.delete_job(job.job_id)
    with pytest.raises(FailedPrecondition, match="deleted"):
        handlers.set_job_sla(job.job_id, _in_days(1))
    assert handlers.get_job(job.job_id).spec.sla_deadline is None
