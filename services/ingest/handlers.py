"""Ingest's service layer: each command owns its database transaction and writes
its events to the outbox in that same transaction.

Uploads and manifest imports commit accepted objects in small batches while
the stream goes on, so a stream that breaks midway keeps everything accepted
before the break. Content is in the object store before its row commits.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Generator, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from itertools import chain
from queue import Empty, Full, Queue
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError

from quorum.db import OutgoingEvent, drop_outbox_events, enqueue, reading, utcnow
from quorum.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from quorum.messaging import Topics, outgoing
from quorum.objectstore import ObjectStore, content_key
from quorum.owners import OwnerCache
from quorum.security.audit import audit_event
from quorum.v1 import common_pb2, events_pb2
from services.ingest import codec, domain
from services.ingest import tables as t
from services.ingest.domain import ItemOutcome, ItemStatus, JobState
from services.ingest.server_files import ServerFiles

log = logging.getLogger(__name__)

T = TypeVar("T")

# Media purged per transaction: the transaction holds the write lock while the store deletes.
PURGE_BATCH = 50
# How long a purged key is remembered, for uploads that stored the same content just before
# the purge and commit after it; far longer than any upload batch takes.
PURGE_TRACE_KEPT = dt.timedelta(days=1)
PURGE_INTERVAL_S = 10.0


class IngestHandlers:
    """The commands of the ingest service.

    ``store`` receives every accepted object before its row commits;
    ``outbox_written`` is called after each commit that wrote events, to wake
    the relay. Uploads commit every ``batch_items`` objects, ``batch_bytes`` of
    content or ``batch_seconds``, whichever comes first. Object-store writes run
    on a small pool of threads so that disk or network latency overlaps decoding;
    call :meth:`close` to stop it. Manifests name files on this machine only where
    ``server_files`` allows (by default nowhere).
    """

    def __init__(
        self,
        engine: Engine,
        store: ObjectStore,
        topics: Topics,
        limits: domain.Limits,
        outbox_written: Callable[[], None] = lambda: None,
        batch_items: int = 50,
        batch_bytes: int = 32 * 1024 * 1024,
        batch_seconds: float = 1.0,
        store_threads: int = 4,
        server_files: ServerFiles | None = None,
    ) -> None:
        self.engine = engine
        self.store = store
        self.topics = topics
        self.limits = limits
        self.outbox_written = outbox_written
        self.batch_items = batch_items
        self.batch_bytes = batch_bytes
        self.batch_seconds = batch_seconds
        self._pool = ThreadPoolExecutor(max_workers=store_threads, thread_name_prefix="ingest-store")
        self._owners = OwnerCache()
        self.server_files = server_files or ServerFiles()

    def close(self) -> None:
        """Waits for object-store writes in flight and stops their threads."""
        self._pool.shutdown(wait=True)

    def store_later(self, key: str, data: bytes, content_type: str) -> Future[None]:
        """Starts writing one object to the store; the future raises what the store raised."""
        return self._pool.submit(self.store.put, key, data, content_type)

    # ------------------------------------------------------------------ jobs

    def create_job(self, spec: domain.JobSpec, idempotency_key: str = "") -> domain.Job:
        """Validates and normalises ``spec``, stores the job OPEN and puts JobCreated
        in the outbox, in one transaction.

        With an ``idempotency_key``, a retry by the same client returns the job the
        first call created. Raises InvalidArgument naming the bad field, or
        FailedPrecondition when the key was used for a different spec. Costs one
        write transaction.
        """
        spec = domain.normalise_spec(spec)
        key = domain.check_idempotency_key(idempotency_key) or None
        if key is not None:
            existing = self._job_by_key(spec.client_id, key)
            if existing is not None:
                return _same_spec(*existing, spec, key)
        job = domain.Job(
            job_id=domain.new_id("job"),
            spec=spec,
            state=JobState.OPEN,
            objects=0,
            gold_objects=0,
            rejected=0,
            created_at=utcnow(),
        )
        event = outgoing(self.topics.jobs, job.job_id, codec.job_created(job.job_id, spec, job.created_at))
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    sa.insert(t.jobs).values(
                        job_id=job.job_id,
                        client_id=spec.client_id,
                        name=spec.name,
                        task_type=str(spec.task_type),
                        spec=codec.spec_to_proto(spec).SerializeToString(),
                        state=job.state.value,
                        objects=0,
                        gold_objects=0,
                        rejected=0,
                        idempotency_key=key,
                        created_at=job.created_at,
                    )
                )
                audited = audit_event(
                    self.topics.audit,
                    "ingest",
                    "job.created",
                    f"job/{job.job_id}",
                    org_id=spec.client_id,
                    details={"name": spec.name, "task_type": str(spec.task_type), "pilot": spec.pilot},
                )
                enqueue(conn, t.outbox, [event, audited])
        except IntegrityError:
            # A concurrent retry with the same key committed first.
            winner = self._job_by_key(spec.client_id, key) if key is not None else None
            if winner is None:
                raise
            return _same_spec(*winner, spec, key or "")
        self.outbox_written()
        return job

    def get_job(self, job_id: str) -> domain.Job:
        """Raises InvalidArgument("job_id") when empty, NotFound when unknown. One read."""
        _require_job_id(job_id)
        with reading(self.engine) as conn:
            row = conn.execute(sa.select(t.jobs).where(t.jobs.c.job_id == job_id)).one_or_none()
        if row is None:
            raise NotFound("job", job_id)
        return _job_from_row(row)

    def list_jobs(self, client_id: str = "") -> list[domain.Job]:
        """Every job, or one client's, newest first. One read."""
        query = sa.select(t.jobs).order_by(t.jobs.c.created_at.desc(), t.jobs.c.job_id.desc())
        if client_id:
            query = query.where(t.jobs.c.client_id == client_id)
        with reading(self.engine) as conn:
            return [_job_from_row(row) for row in conn.execute(query)]

    def owner_of(self, kind: str, ident: str) -> str | None:
        """The organisation (the spec's client_id) of job ``ident`` when ``kind`` is "job";
        None for another kind or an unknown id. Deleted jobs keep their owner. Cached: one
        primary-key read per job, then none."""
        if kind != "job":
            return None

        def load() -> str | None:
            with reading(self.engine) as conn:
                return conn.execute(sa.select(t.jobs.c.client_id).where(t.jobs.c.job_id == ident)).scalar()

        return self._owners.lookup(kind, ident, load)

    def seal_job(self, job_id: str) -> domain.Job:
        """Marks the job SEALED and puts JobSealed (with its final counts) in the outbox.

        Sealing a sealed job returns it unchanged and sends nothing. Waits for an
        upload batch of the job that is committing. Raises InvalidArgument, NotFound,
        FailedPrecondition for a deleted job.
        """
        _require_job_id(job_id)
        sealed = False
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(t.jobs).where(t.jobs.c.job_id == job_id).with_for_update()).one_or_none()
            if row is None:
                raise NotFound("job", job_id)
            if row.state == JobState.DELETED.value:
                raise FailedPrecondition(f"job {job_id} was deleted: it cannot be sealed")
            if row.state != JobState.SEALED.value:
                conn.execute(
                    sa.update(t.jobs)
                    .where(t.jobs.c.job_id == job_id)
                    .values(state=JobState.SEALED.value, sealed_at=utcnow())
                )
                event = codec.job_sealed(job_id, row.objects, row.gold_objects)
                enqueue(conn, t.outbox, [outgoing(self.topics.jobs, job_id, event)])
                sealed = True
            row = conn.execute(sa.select(t.jobs).where(t.jobs.c.job_id == job_id)).one()
        if sealed:
            self.outbox_written()
        return _job_from_row(row)

    def set_job_sla(self, job_id: str, deadline: dt.datetime | None) -> domain.Job:
        """Moves the job's SLA deadline to ``deadline`` (None: removes it) and records who
        did it in the audit trail, in one transaction. The stored spec keeps the deadline
        the job was created with (what JobCreated carried); GetJob and ListJobs show the
        new one. Raises InvalidArgument("job_id" / "sla_deadline"), NotFound,
        FailedPrecondition for a deleted job. Costs one write transaction."""
        _require_job_id(job_id)
        j = t.jobs
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(j).where(j.c.job_id == job_id).with_for_update()).one_or_none()
            if row is None:
                raise NotFound("job", job_id)
            if row.state == JobState.DELETED.value:
                raise FailedPrecondition(f"job {job_id} was deleted: it has no SLA to change")
            job = _job_from_row(row)
            now = utcnow()
            spec = domain.with_sla_deadline(job.spec, deadline, now)
            conn.execute(sa.update(j).where(j.c.job_id == job_id).values(sla_changed_at=now, sla_deadline=deadline))
            audited = audit_event(
                self.topics.audit,
                "ingest",
                "job.sla_changed",
                f"job/{job_id}",
                org_id=row.client_id,
                details={"from": _iso(job.spec.sla_deadline), "to": _iso(deadline)},
            )
            enqueue(conn, t.outbox, [audited])
        self.outbox_written()
        return replace(job, spec=spec)

    # ------------------------------------------------------------------ deletion

    def delete_job(self, job_id: str) -> domain.DeleteSummary:
        """Deletes the job's dataset: its items and tasks go, the job stays DELETED with
        its name and instructions cleared, and JobDeleted goes in the outbox, all in one
        transaction that also queues the job's media for purging. Then purges that media
        from the object store, except content another job still holds.

        Idempotent: deleting a deleted job deletes nothing more and sends nothing (it
        finishes a purge a crash interrupted). Media a crash left behind is purged by the
        next :meth:`purge_media` pass. Raises InvalidArgument("job_id"), NotFound. Costs
        one write transaction plus one store delete per unshared object.
        """
        _require_job_id(job_id)
        j = t.jobs
        items_deleted = 0
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(j).where(j.c.job_id == job_id).with_for_update()).one_or_none()
            if row is None:
                raise NotFound("job", job_id)
            if row.state != JobState.DELETED.value:
                keys = list(
                    conn.execute(sa.select(t.items.c.object_key).where(t.items.c.job_id == job_id).distinct()).scalars()
                )
                task_ids = list(conn.execute(sa.select(t.tasks.c.task_id).where(t.tasks.c.job_id == job_id)).scalars())
                # Rows first: on PostgreSQL this takes the items lock before the purge rows,
                # in the same order as the purge pass (see purge_media).
                conn.execute(sa.delete(t.tasks).where(t.tasks.c.job_id == job_id))
                items_deleted = conn.execute(sa.delete(t.items).where(t.items.c.job_id == job_id)).rowcount or 0
                _queue_purges(conn, job_id, keys)
                spec = domain.scrubbed_spec(_job_from_row(row).spec)
                _forget_announcements(conn, self.topics, job_id, task_ids, spec)
                conn.execute(
                    sa.update(j)
                    .where(j.c.job_id == job_id)
                    .values(
                        state=JobState.DELETED.value,
                        name="",
                        spec=codec.spec_to_proto(spec).SerializeToString(),
                        deleted_at=utcnow(),
                    )
                )
                event = codec.job_deleted(job_id, row.client_id)
                audited = audit_event(
                    self.topics.audit,
                    "ingest",
                    "dataset.deleted",
                    f"job/{job_id}",
                    org_id=row.client_id,
                    details={"items": items_deleted, "objects": len(keys)},
                )
                enqueue(conn, t.outbox, [outgoing(self.topics.jobs, job_id, event), audited])
        if row.state != JobState.DELETED.value:
            self.outbox_written()
        objects_deleted = self.purge_media(job_id)
        return domain.DeleteSummary(job_id, items_deleted, objects_deleted)

    def purge_media(self, job_id: str | None = None) -> int:
        """Deletes queued media (of one job, or of all) from the object store unless an
        item still refers to it, and forgets purges older than a day. Returns how many
        objects it deleted. Safe in several processes at once, and against uploads of
        the same content (see :func:`_restore_purged`). Raises what the store raises;
        what is left is retried by the next pass. Costs one transaction per
        ``PURGE_BATCH`` keys, which holds the write lock while the store deletes."""
        p = t.media_purges
        pending = sa.select(p.c.object_key).where(p.c.purged_at.is_(None)).limit(1)
        if job_id is not None:
            pending = pending.where(p.c.job_id == job_id)
        with reading(self.engine) as conn:
            # Most passes find nothing to do: they take no lock then.
            more = conn.execute(pending).first() is not None
        deleted = 0
        while more:
            purged, more = self._purge_batch(job_id)
            deleted += purged
        with self.engine.begin() as conn:
            conn.execute(sa.delete(p).where(p.c.purged_at < utcnow() - PURGE_TRACE_KEPT))
        return deleted

    def _purge_batch(self, job_id: str | None) -> tuple[int, bool]:
        p = t.media_purges
        with self.engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                # Waits for uploads that are inserting items and holds new ones back until
                # this commits, so the reference check below sees every committed item.
                conn.exec_driver_sql(
                    f"LOCK TABLE {conn.dialect.identifier_preparer.format_table(t.items)} IN SHARE MODE"
                )
            query = sa.select(p.c.object_key).where(p.c.purged_at.is_(None))
            if job_id is not None:
                query = query.where(p.c.job_id == job_id)
            keys = list(
                conn.execute(
                    query.order_by(p.c.object_key).limit(PURGE_BATCH).with_for_update(skip_locked=True)
                ).scalars()
            )
            if not keys:
                return 0, False
            used = set(
                conn.execute(sa.select(t.items.c.object_key).where(t.items.c.object_key.in_(keys)).distinct()).scalars()
            )
            unused = [key for key in keys if key not in used]
            for key in unused:
                self.store.delete(key)
            conn.execute(sa.update(p).where(p.c.object_key.in_(keys)).values(purged_at=utcnow()))
        if unused:
            log.info("ingest: purged %d objects of deleted jobs", len(unused))
        return len(unused), len(keys) == PURGE_BATCH

    def purge_loop(self, stop: threading.Event, interval_s: float = PURGE_INTERVAL_S) -> None:
        """Purges queued media at once and then every ``interval_s`` until ``stop`` is set,
        so that media a crash left behind goes at the next start at the latest."""
        while not stop.is_set():
            try:
                self.purge_media()
            except Exception:
                log.exception("ingest: purging media of deleted jobs failed; retrying")
            if stop.wait(interval_s):
                return

    # ------------------------------------------------------------------ objects

    def upload(self, chunks: Iterable[domain.Chunk]) -> domain.UploadSummary:
        """Takes in a stream of file chunks (see :class:`domain.FileAssembler`).

        Each file is checked on its own: a bad one is REJECTED with its reason, a
        known content is a DUPLICATE, and the stream goes on. Accepted objects are
        stored, then committed with their tasks and TaskCreated events in batches.
        If the stream fails midway, what was accepted before stays.

        Raises InvalidArgument("job_id") when the first chunk names no job or a
        later one another job, InvalidArgument("filename") for data outside a
        named file, NotFound for an unknown job, FailedPrecondition for a sealed
        one. Costs one Pillow decode per image and one write transaction per batch.
        """
        stream = iter(chunks)
        first = next(stream, None)
        if first is None or not first.job_id:
            raise InvalidArgument("job_id", "required on the first chunk")
        batch = _Batch(self, self._open_job(first.job_id))
        assembler = domain.FileAssembler(self.limits.max_file_bytes)
        # Ticks while the client is idle, so accepted objects commit (and their tasks
        # go out) within batch_seconds even when the next chunk is slow to come.
        ticks = ticking(chain([first], stream), self.batch_seconds)
        try:
            for chunk in ticks:
                if chunk is not None:
                    if chunk.job_id and chunk.job_id != first.job_id:
                        raise InvalidArgument(
                            "job_id", f"one stream uploads to one job: {first.job_id}, then {chunk.job_id}"
                        )
                    for incoming in assembler.feed(chunk):
                        batch.add_file(incoming)
                batch.flush_if_due()
            last = assembler.finish()
            if last is not None:
                batch.add_file(last)
        finally:
            ticks.close()
            # A file cut off by a broken stream is dropped; every complete one is kept.
            batch.flush()
        return batch.summary()

    def import_manifest(
        self,
        job_id: str,
        fmt: domain.ManifestFormat,
        content: bytes,
        base_dir: str = "",
        server_paths: bool = True,
    ) -> domain.UploadSummary:
        """Imports a JSONL or CSV manifest of inline texts and server-side paths.

        A line that is malformed, names a missing path or fails the object checks
        is REJECTED with "line N: <reason>"; the other lines go on. With
        ``server_paths`` False, path lines are rejected: reading this machine's
        files is for the deployment's admins, never for a client. With it, every
        path line must resolve under ``server_files``' roots and outside the
        service's own files and /proc, /sys and /dev, or nothing is imported:
        PermissionDenied names the first line that does not. Batching, deduplication and tasks are as for
        :meth:`upload`. Raises InvalidArgument("job_id" / "content"), NotFound,
        FailedPrecondition, PermissionDenied. Costs one file read per path line.
        """
        _require_job_id(job_id)
        job = self._open_job(job_id)
        entries = list(domain.parse_manifest(content, fmt))
        if server_paths:
            self._check_server_paths(entries, base_dir)
        batch = _Batch(self, job)
        try:
            for entry in entries:
                batch.add_entry(entry, base_dir, server_paths)
                batch.flush_if_due()
        finally:
            batch.flush()
        return batch.summary()

    # ------------------------------------------------------------------ helpers

    def _check_server_paths(self, entries: Iterable[domain.ManifestEntry], base_dir: str) -> None:
        """Refuses the whole manifest when one of its paths is not open to manifests, before
        anything is read or stored: such a line is a request to overstep, not bad data."""
        for entry in entries:
            if entry.error is None and entry.text is None and entry.path:
                try:
                    self.server_files.locate(entry.path, base_dir)
                except PermissionDenied as denied:
                    raise PermissionDenied(f"content: line {entry.line}: {denied}; nothing was imported") from None

    def _open_job(self, job_id: str) -> domain.Job:
        job = self.get_job(job_id)
        if job.state is not JobState.OPEN:
            raise FailedPrecondition(f"job {job_id} is {job.state.value}: it takes no more objects")
        return job

    def _job_by_key(self, client_id: str, key: str) -> tuple[domain.Job, domain.JobSpec] | None:
        """The job the key created, and the spec it was created with."""
        with reading(self.engine) as conn:
            row = conn.execute(
                sa.select(t.jobs).where(t.jobs.c.client_id == client_id, t.jobs.c.idempotency_key == key)
            ).one_or_none()
        return (_job_from_row(row), _created_spec(row)) if row is not None else None


def ticking(stream: Iterable[T], interval_s: float) -> Generator[T | None, None, None]:
    """Yields the items of ``stream``, and None whenever ``interval_s`` passes without
    one, so that the consumer can act on time while the producer is idle.

    A helper thread reads the stream through a small queue; an exception raised by
    the stream is re-raised here. If the consumer stops early, the reader stops at
    its next item (or when the stream ends). Costs a thread per call and a queue
    hand-off per item.
    """
    queue: Queue[tuple[str, Any]] = Queue(maxsize=16)
    stopped = threading.Event()

    def offer(entry: tuple[str, Any]) -> bool:
        while not stopped.is_set():
            try:
                queue.put(entry, timeout=0.1)
                return True
            except Full:
                continue
        return False

    def pump() -> None:
        try:
            for item in stream:
                if not offer(("item", item)):
                    return
        except BaseException as exc:
            offer(("error", exc))
            return
        offer(("end", None))

    threading.Thread(target=pump, name="ingest-stream-reader", daemon=True).start()
    try:
        while True:
            try:
                kind, value = queue.get(timeout=interval_s)
            except Empty:
                yield None
                continue
            if kind == "item":
                yield value
            elif kind == "end":
                return
            else:
                raise value
    finally:
        stopped.set()


def _require_job_id(job_id: str) -> None:
    if not job_id:
        raise InvalidArgument("job_id", "required")


def _queue_purges(conn: Connection, job_id: str, keys: Sequence[str]) -> None:
    """Queues media keys for the purge pass; a key purged before is queued again."""
    if not keys:
        return
    p = t.media_purges
    rows = [{"object_key": key, "job_id": job_id, "queued_at": utcnow(), "purged_at": None} for key in keys]
    insert: Any = sqlite.insert(p) if conn.dialect.name == "sqlite" else postgresql.insert(p)
    upsert = insert.on_conflict_do_update(
        index_elements=[p.c.object_key],
        set_={"job_id": insert.excluded.job_id, "queued_at": insert.excluded.queued_at, "purged_at": None},
    )
    for start in range(0, len(rows), 500):
        conn.execute(upsert, rows[start : start + 500])


def _forget_announcements(
    conn: Connection, topics: Topics, job_id: str, task_ids: Sequence[str], spec: domain.JobSpec
) -> None:
    """Removes a deleted job's content from the outbox, where events wait to be sent or
    are kept for replay: its TaskCreated (names, inline texts) go, and its JobCreated
    keeps its event id (consumers still need the terms) with the scrubbed spec."""
    drop_outbox_events(conn, t.outbox, topics.tasks, task_ids)
    o = t.outbox
    for row in conn.execute(sa.select(o.c.id, o.c.payload).where(o.c.topic == topics.jobs, o.c.key == job_id)):
        event = events_pb2.Event.FromString(row.payload)
        if event.WhichOneof("payload") == "job_created":
            event.job_created.spec.CopyFrom(codec.spec_to_proto(spec))
            conn.execute(sa.update(o).where(o.c.id == row.id).values(payload=event.SerializeToString()))


def _same_spec(job: domain.Job, created: domain.JobSpec, spec: domain.JobSpec, key: str) -> domain.Job:
    # Against the spec as created: an operator's later SLA change does not make a retry differ.
    if created != spec:
        raise FailedPrecondition(
            f"idempotency_key {key!r} already created job {job.job_id} with a different spec; use a new key"
        )
    return job


def _iso(moment: dt.datetime | None) -> str | None:
    return moment.isoformat() if moment is not None else None


def _created_spec(row: Any) -> domain.JobSpec:
    return codec.spec_from_proto(common_pb2.JobSpec.FromString(row.spec))


def _job_from_row(row: Any) -> domain.Job:
    spec = _created_spec(row)
    if row.sla_changed_at is not None:
        spec = replace(spec, sla_deadline=row.sla_deadline)
    return domain.Job(
        job_id=row.job_id,
        spec=spec,
        state=JobState(row.state),
        objects=row.objects,
        gold_objects=row.gold_objects,
        rejected=row.rejected,
        created_at=row.created_at,
    )


@dataclass
class _Pending:
    """An accepted object whose content is being stored and whose row is not committed yet."""

    index: int
    obj: domain.AcceptedObject
    sha256: str
    size: int
    stored: Future[None]
    # Kept until the commit, to store the content again if a purge removed it meanwhile.
    data: bytes


@dataclass
class _Batch:
    """The objects of one upload or import on their way to the database."""

    handlers: IngestHandlers
    job: domain.Job
    outcomes: list[ItemOutcome | None] = field(default_factory=list)
    pending: list[_Pending] = field(default_factory=list)
    pending_bytes: int = 0
    pending_since: float = 0.0
    rejected_unsaved: int = 0
    # Content seen in this stream: sha256 -> (name, item_id) of the object that holds it.
    seen: dict[str, tuple[str, str]] = field(default_factory=dict)
    # Duplicates of objects still pending: (index, name, sha256), named once the batch commits.
    duplicates_of_pending: list[tuple[int, str, str]] = field(default_factory=list)

    def add_file(self, incoming: domain.IncomingFile) -> None:
        checked = domain.check_content(
            incoming.name, incoming.data, incoming.size, incoming.gold_label, self.job.spec, self.handlers.limits
        )
        self._add(incoming.name, checked, incoming.gold_label)

    def add_entry(self, entry: domain.ManifestEntry, base_dir: str, server_paths: bool = True) -> None:
        if entry.error is not None:
            self._reject(entry.name, entry.error)
            return
        prefix = f"line {entry.line}: "
        if entry.text is None and not server_paths:
            self._reject(
                entry.name, f"{prefix}server-side paths are open to operator and admin keys only: upload the file"
            )
            return
        if entry.text is not None:
            task_type = self.job.spec.task_type
            if task_type is not None and task_type.media == "image":
                self._reject(entry.name, f"{prefix}inline text in {domain.article(task_type)} job: give a 'path'")
                return
            data = entry.text.encode()
            read: tuple[bytes, int] | domain.Rejection = (data, len(data))
        else:
            read = self.handlers.server_files.read(entry.path or "", base_dir, self.handlers.limits.max_file_bytes)
        if isinstance(read, domain.Rejection):
            self._reject(entry.name, prefix + read.reason)
            return
        data, size = read
        checked = domain.check_content(entry.name, data, size, entry.gold_label, self.job.spec, self.handlers.limits)
        if isinstance(checked, domain.Rejection):
            checked = domain.Rejection(prefix + checked.reason)
        self._add(entry.name, checked, entry.gold_label)

    def _add(self, name: str, checked: domain.Content | domain.Rejection, gold_label: str) -> None:
        if isinstance(checked, domain.Rejection):
            self._reject(name, checked.reason)
            return
        key = content_key(checked.data)
        sha256 = key.rsplit("/", 1)[1]
        index = len(self.outcomes)
        earlier = self.seen.get(sha256)
        if earlier is not None:
            self.outcomes.append(None)
            self.duplicates_of_pending.append((index, name, sha256))
            return
        obj = domain.AcceptedObject(
            item_id=domain.new_id("item"),
            name=name,
            object_key=key,
            content_type=checked.content_type,
            text=checked.text,
            gold_label=gold_label,
        )
        self.seen[sha256] = (name, obj.item_id)
        stored = self.handlers.store_later(key, checked.data, checked.content_type)
        if not self.pending:
            self.pending_since = time.monotonic()
        self.pending.append(_Pending(index, obj, sha256, len(checked.data), stored, checked.data))
        self.pending_bytes += len(checked.data)
        self.outcomes.append(None)

    def _reject(self, name: str, reason: str) -> None:
        self.outcomes.append(ItemOutcome(name, ItemStatus.REJECTED, reason=reason))
        if not self.pending and not self.rejected_unsaved:
            self.pending_since = time.monotonic()
        self.rejected_unsaved += 1

    def flush_if_due(self) -> None:
        waiting = len(self.pending) + self.rejected_unsaved
        if not waiting:
            return
        h = self.handlers
        if (
            waiting >= h.batch_items
            or self.pending_bytes >= h.batch_bytes
            or time.monotonic() - self.pending_since >= h.batch_seconds
        ):
            self.flush()

    def flush(self) -> None:
        """Commits the pending objects, their tasks and events, and the job's counts.

        Raises FailedPrecondition when the job was sealed meanwhile (nothing of
        this batch is added).
        """
        if not self.pending and not self.rejected_unsaved and not self.duplicates_of_pending:
            return
        # Taken out first, so that a failed commit is not retried by the caller's final flush.
        pending, self.pending, self.pending_bytes = self.pending, [], 0
        duplicates, self.duplicates_of_pending = self.duplicates_of_pending, []
        stored: list[_Pending] = []
        for item in pending:
            try:
                item.stored.result()
                stored.append(item)
            except Exception as exc:
                log.exception("ingest: storing %s failed", item.obj.object_key)
                self.outcomes[item.index] = ItemOutcome(
                    item.obj.name, ItemStatus.REJECTED, reason=f"not stored: object store error: {exc}"
                )
                self.rejected_unsaved += 1
        rejected, self.rejected_unsaved = self.rejected_unsaved, 0
        wrote_events = self._commit(stored, rejected) if stored or rejected else False
        for index, name, sha256 in duplicates:
            earlier_name, earlier_id = self.seen[sha256]
            self.outcomes[index] = ItemOutcome(
                name, ItemStatus.DUPLICATE, item_id=earlier_id, reason=f"duplicate of {earlier_name!r} ({earlier_id})"
            )
        if wrote_events:
            self.handlers.outbox_written()

    def _commit(self, stored: list[_Pending], rejected: int) -> bool:
        h = self.handlers
        job_id = self.job.job_id
        deleted = False
        events: list[OutgoingEvent] = []
        with h.engine.begin() as conn:
            # The row lock orders this batch against SealJob, DeleteJob and other uploads to the job.
            state = conn.execute(
                sa.select(t.jobs.c.state).where(t.jobs.c.job_id == job_id).with_for_update()
            ).scalar_one()
            if state == JobState.DELETED.value:
                # This batch's content is in the store already: have it purged with the job's.
                _queue_purges(conn, job_id, sorted({p.obj.object_key for p in stored}))
                deleted = True
            elif state != JobState.OPEN.value:
                raise FailedPrecondition(
                    f"job {job_id} was sealed during the upload; the last {len(stored)} objects were not added"
                )
            else:
                events = self._write(conn, stored, rejected)
        if deleted:
            h.purge_media(job_id)
            raise FailedPrecondition(
                f"job {job_id} was deleted during the upload; the last {len(stored)} objects were not added"
            )
        return bool(events)

    def _write(self, conn: Connection, stored: list[_Pending], rejected: int) -> list[OutgoingEvent]:
        """Inserts the batch's new items and tasks, enqueues their events and bumps the job's
        counts, in the caller's transaction. Returns the events."""
        h = self.handlers
        job_id = self.job.job_id
        org_id = self.job.spec.client_id
        task_type = self.job.spec.task_type
        if task_type is None:
            raise RuntimeError(f"job {job_id} has no task type: its stored spec was not normalised")
        now = utcnow()
        item_rows: list[dict[str, Any]] = []
        task_rows: list[dict[str, Any]] = []
        events: list[OutgoingEvent] = []
        inserted: list[_Pending] = []
        objects = gold_objects = 0
        existing = _existing_content(conn, job_id, [p.sha256 for p in stored])
        for pending in stored:
            obj = pending.obj
            if pending.sha256 in existing:
                earlier_name, earlier_id = existing[pending.sha256]
                self.seen[pending.sha256] = existing[pending.sha256]
                self.outcomes[pending.index] = ItemOutcome(
                    obj.name,
                    ItemStatus.DUPLICATE,
                    item_id=earlier_id,
                    reason=f"duplicate of {earlier_name!r} ({earlier_id})",
                )
                continue
            inserted.append(pending)
            item_rows.append(
                {
                    "item_id": obj.item_id,
                    "job_id": job_id,
                    "org_id": org_id,
                    "name": obj.name,
                    "sha256": pending.sha256,
                    "object_key": obj.object_key,
                    "content_type": obj.content_type,
                    "size_bytes": pending.size,
                    "gold_label": obj.gold_label or None,
                    "created_at": now,
                }
            )
            for task in domain.shard(obj, task_type):
                task_rows.append(
                    {
                        "task_id": task.task_id,
                        "job_id": job_id,
                        "org_id": org_id,
                        "item_id": obj.item_id,
                        "segment": task.segment,
                        "created_at": now,
                    }
                )
                event = codec.task_created(job_id, obj, task, now)
                events.append(outgoing(h.topics.tasks, task.task_id, event))
            if obj.gold_label:
                gold_objects += 1
            else:
                objects += 1
            self.outcomes[pending.index] = ItemOutcome(obj.name, ItemStatus.ACCEPTED, item_id=obj.item_id)
        if item_rows:
            conn.execute(sa.insert(t.items), item_rows)
            conn.execute(sa.insert(t.tasks), task_rows)
            _restore_purged(conn, h.store, inserted)
            enqueue(conn, t.outbox, events)
        conn.execute(
            sa.update(t.jobs)
            .where(t.jobs.c.job_id == job_id)
            .values(
                objects=t.jobs.c.objects + objects,
                gold_objects=t.jobs.c.gold_objects + gold_objects,
                rejected=t.jobs.c.rejected + rejected,
            )
        )
        return events

    def summary(self) -> domain.UploadSummary:
        items = tuple(outcome for outcome in self.outcomes if outcome is not None)
        return domain.UploadSummary(self.job.job_id, items)


def _restore_purged(conn: Connection, store: ObjectStore, inserted: list[_Pending]) -> None:
    """Stores again the content of new items that a purge may have deleted after this
    upload stored it (storing is a no-op when the key exists, so the upload's own write
    may have changed nothing). Runs after the items insert: on PostgreSQL that insert
    waits for a purge in progress (it locks the items table), and a later purge sees
    the new items; SQLite runs one writer at a time. Costs one indexed read, and a store
    round trip only for content purged in the last day."""
    keys = sorted({p.obj.object_key for p in inserted})
    p = t.media_purges
    purged: set[str] = set()
    for start in range(0, len(keys), 500):
        purged.update(
            conn.execute(
                sa.select(p.c.object_key).where(
                    p.c.object_key.in_(keys[start : start + 500]), p.c.purged_at.is_not(None)
                )
            ).scalars()
        )
    for pending in inserted:
        key = pending.obj.object_key
        if key in purged and not store.exists(key):
            store.put(key, pending.data, pending.obj.content_type)
            purged.discard(key)


def _existing_content(conn: Connection, job_id: str, sha256s: list[str]) -> dict[str, tuple[str, str]]:
    if not sha256s:
        return {}
    rows = conn.execute(
        sa.select(t.items.c.sha256, t.items.c.name, t.items.c.item_id).where(
            t.items.c.job_id == job_id, t.items.c.sha256.in_(sha256s)
        )
    )
    return {row.sha256: (row.name, row.item_id) for row in rows}
