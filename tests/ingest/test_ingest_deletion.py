"""Deleting a job's dataset in ingest, and owner lookups, against SQLite and PostgreSQL
with media on local disk."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import ingest_samples as samples
import pytest
import sqlalchemy as sa

from quorum.db import make_engine
from quorum.errors import FailedPrecondition, NotFound
from quorum.messaging import Topics
from quorum.objectstore import LocalDiskStore, content_key
from quorum.v1 import events_pb2
from services.ingest import codec, domain, tables
from services.ingest.domain import Chunk, JobState, ManifestFormat
from services.ingest.handlers import IngestHandlers

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


def open_handlers(database_url: str, store: LocalDiskStore) -> IngestHandlers:
    engine = make_engine(database_url)
    tables.metadata.create_all(engine)
    return IngestHandlers(engine, store, TOPICS, LIMITS, batch_items=3, batch_seconds=60)


@pytest.fixture
def handlers(database_url: str, store: LocalDiskStore) -> Iterator[IngestHandlers]:
    service = open_handlers(database_url, store)
    try:
        yield service
    finally:
        service.close()
        service.engine.dispose()


class UndeletableStore(LocalDiskStore):
    """A disk store whose deletes fail, as when the process dies before the purge."""

    def delete(self, key: str) -> None:
        raise OSError("store unreachable")


def image_job(handlers: IngestHandlers, client_id: str = "acme") -> domain.Job:
    proto = samples.spec_proto("image_classification", client_id=client_id, instructions="Is it a cat?")
    return handlers.create_job(codec.spec_from_proto(proto))


def files(job_id: str, *named: tuple[str, bytes]) -> list[Chunk]:
    return [Chunk(job_id=job_id, filename=name, data=data, end_of_file=True) for name, data in named]


def events(handlers: IngestHandlers, kind: str) -> list[tuple[str, str, events_pb2.Event]]:
    with handlers.engine.connect() as conn:
        rows = conn.execute(sa.select(tables.outbox).order_by(tables.outbox.c.id)).all()
    found = [(row.topic, row.key, events_pb2.Event.FromString(row.payload)) for row in rows]
    return [(topic, key, event) for topic, key, event in found if event.WhichOneof("payload") == kind]


def count(handlers: IngestHandlers, table: sa.Table, job_id: str) -> int:
    with handlers.engine.connect() as conn:
        return int(conn.execute(sa.select(sa.func.count()).where(table.c.job_id == job_id)).scalar_one())


def test_delete_removes_items_tasks_and_media_and_announces_it(handlers: IngestHandlers, store: LocalDiskStore) -> None:
    job = image_job(handlers)
    images = [samples.image(i) for i in range(3)]
    handlers.upload(files(job.job_id, *[(f"{i}.png", data) for i, data in enumerate(images)]))
    handlers.seal_job(job.job_id)
    assert all(store.exists(content_key(data)) for data in images)

    summary = handlers.delete_job(job.job_id)

    assert summary == domain.DeleteSummary(job.job_id, items_deleted=3, objects_deleted=3)
    assert not any(store.exists(content_key(data)) for data in images)
    assert count(handlers, tables.items, job.job_id) == 0
    assert count(handlers, tables.tasks, job.job_id) == 0
    deleted = handlers.get_job(job.job_id)
    assert deleted.state is JobState.DELETED
    # The client's free text goes; the terms and counts stay for the ledger.
    assert (deleted.spec.name, deleted.spec.instructions) == ("", "")
    assert (deleted.spec.client_id, deleted.spec.labels, deleted.objects) == ("acme", job.spec.labels, 3)
    assert codec.job_to_proto(deleted).state == codec.ingest_pb2.JOB_STATE_DELETED
    [(topic, key, event)] = events(handlers, "job_deleted")
    assert (topic, key) == (TOPICS.jobs, job.job_id)
    assert (event.job_deleted.job_id, event.job_deleted.org_id) == (job.job_id, "acme")
    # Nothing in the outbox, sent or waiting, still carries the dataset or the client's text.
    assert events(handlers, "task_created") == []
    [(_, _, created)] = events(handlers, "job_created")
    assert (created.job_created.spec.name, created.job_created.spec.instructions) == ("", "")
    assert created.job_created.spec.client_id == "acme"


def test_deleting_twice_deletes_nothing_more_and_announces_once(handlers: IngestHandlers) -> None:
    job = image_job(handlers)
    handlers.upload(files(job.job_id, ("a.png", samples.image(1))))
    assert handlers.delete_job(job.job_id).items_deleted == 1

    assert handlers.delete_job(job.job_id) == domain.DeleteSummary(job.job_id, 0, 0)
    assert len(events(handlers, "job_deleted")) == 1
    with pytest.raises(NotFound):
        handlers.delete_job("job_000000000000000000000000")


def test_media_another_job_holds_stays_until_that_job_goes_too(handlers: IngestHandlers, store: LocalDiskStore) -> None:
    shared, own = samples.image(1), samples.image(2)
    first = image_job(handlers)
    second = image_job(handlers, client_id="globex")
    handlers.upload(files(first.job_id, ("shared.png", shared), ("own.png", own)))
    handlers.upload(files(second.job_id, ("same-bytes.png", shared)))

    assert handlers.delete_job(first.job_id).objects_deleted == 1
    assert store.exists(content_key(shared)) and not store.exists(content_key(own))
    assert store.get(content_key(shared)) == shared

    assert handlers.delete_job(second.job_id).objects_deleted == 1
    assert not store.exists(content_key(shared))


def test_a_deleted_job_takes_no_uploads_imports_or_seal(handlers: IngestHandlers) -> None:
    job = image_job(handlers)
    handlers.delete_job(job.job_id)
    with pytest.raises(FailedPrecondition, match="deleted"):
        handlers.upload(files(job.job_id, ("a.png", samples.image(1))))
    with pytest.raises(FailedPrecondition, match="deleted"):
        handlers.import_manifest(job.job_id, ManifestFormat.JSONL, b'{"path": "a.png"}', "/tmp")
    with pytest.raises(FailedPrecondition, match="deleted"):
        handlers.seal_job(job.job_id)
    assert count(handlers, tables.items, job.job_id) == 0


def test_media_left_by_a_crash_after_the_commit_is_purged_by_the_next_pass(
    database_url: str, tmp_path: Path, store: LocalDiskStore
) -> None:
    crashing = open_handlers(database_url, UndeletableStore(store.root))
    try:
        job = image_job(crashing)
        images = [samples.image(i) for i in range(2)]
        crashing.upload(files(job.job_id, *[(f"{i}.png", data) for i, data in enumerate(images)]))
        with pytest.raises(OSError, match="store unreachable"):
            crashing.delete_job(job.job_id)
        # The deletion committed; only the media is still there.
        assert crashing.get_job(job.job_id).state is JobState.DELETED
        assert all(store.exists(content_key(data)) for data in images)
    finally:
        crashing.close()
        crashing.engine.dispose()

    restarted = open_handlers(database_url, store)
    try:
        assert restarted.purge_media() == 2
        assert not any(store.exists(content_key(data)) for data in images)
        assert restarted.purge_media() == 0
    finally:
        restarted.close()
        restarted.engine.dispose()


def test_deleting_during_an_upload_stops_it_and_purges_what_it_stored(
    handlers: IngestHandlers, store: LocalDiskStore
) -> None:
    job = image_job(handlers)
    late = samples.image(9)

    def stream() -> Iterator[Chunk]:
        yield from files(job.job_id, *[(f"{i}.png", samples.image(i)) for i in range(3)])
        while handlers.get_job(job.job_id).objects < 3:  # the first batch commits
            time.sleep(0.01)
        handlers.delete_job(job.job_id)
        yield from files(job.job_id, ("late.png", late))

    with pytest.raises(FailedPrecondition, match="deleted during the upload"):
        handlers.upload(stream())
    assert not store.exists(content_key(late))
    assert not any(store.exists(content_key(samples.image(i))) for i in range(3))
    assert count(handlers, tables.items, job.job_id) == 0


def test_content_an_upload_stored_just_before_a_purge_is_stored_again(
    handlers: IngestHandlers, store: LocalDiskStore
) -> None:
    shared = samples.image(5)
    leaving = image_job(handlers)
    handlers.upload(files(leaving.job_id, ("old.png", shared)))
    staying = image_job(handlers, client_id="globex")

    def stream() -> Iterator[Chunk]:
        # The content exists, so this upload's store write usually changes nothing and the
        # purge deletes it before the upload's batch commits (the write runs on a pool
        # thread: under load it may land after the purge instead). Either way the
        # committed item must find its content.
        yield from files(staying.job_id, ("new.png", shared))
        time.sleep(0.1)
        assert handlers.delete_job(leaving.job_id).objects_deleted == 1

    summary = handlers.upload(stream())

    assert summary.items[0].status is domain.ItemStatus.ACCEPTED
    assert store.get(content_key(shared)) == shared
    assert count(handlers, tables.items, staying.job_id) == 1


def test_items_and_tasks_carry_the_organisation(handlers: IngestHandlers) -> None:
    job = image_job(handlers, client_id="globex")
    handlers.upload(files(job.job_id, ("a.png", samples.image(1)), ("b.png", samples.image(2))))
    with handlers.engine.connect() as conn:
        item_orgs = set(conn.execute(sa.select(tables.items.c.org_id)).scalars())
        task_orgs = set(conn.execute(sa.select(tables.tasks.c.org_id)).scalars())
    assert item_orgs == task_orgs == {"globex"}


def test_owner_of_names_the_jobs_organisation(handlers: IngestHandlers) -> None:
    job = image_job(handlers, client_id="globex")
    assert handlers.owner_of("job", job.job_id) == "globex"
    assert handlers.owner_of("task", job.job_id) is None
    assert handlers.owner_of("job", "job_000000000000000000000000") is None
    assert handlers.owner_of("job", "") is None
    handlers.delete_job(job.job_id)
    assert handlers.owner_of("job", job.job_id) == "globex"


def test_owner_of_keeps_answers_but_not_misses(handlers: IngestHandlers) -> None:
    job = image_job(handlers)
    assert handlers.owner_of("job", job.job_id) == "acme"
    later = "job_0123456789abcdef01234567"
    assert handlers.owner_of("job", later) is None
    with handlers.engine.begin() as conn:
        # Owners never change; the rewrite shows the first answer is served from memory.
        conn.execute(sa.update(tables.jobs).where(tables.jobs.c.job_id == job.job_id).values(client_id="other"))
        row = conn.execute(sa.select(tables.jobs).where(tables.jobs.c.job_id == job.job_id)).one()
        conn.execute(sa.insert(tables.jobs).values({**row._asdict(), "job_id": later, "idempotency_key": None}))
    assert handlers.owner_of("job", job.job_id) == "acme"
    assert handlers.owner_of("job", later) == "other"
