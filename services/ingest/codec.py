"""Translation between ingest's domain values and the quorum.v1 messages and events (job specs:
:mod:`quorum.jobspecmessages`, shared with payments)."""

from __future__ import annotations

import datetime as dt

from google.protobuf.timestamp_pb2 import Timestamp

from quorum.errors import InvalidArgument
from quorum.jobspecmessages import spec_from_proto as spec_from_proto
from quorum.jobspecmessages import spec_to_proto as spec_to_proto
from quorum.v1 import events_pb2, ingest_pb2
from services.ingest import domain

_STATE = {
    domain.JobState.OPEN: ingest_pb2.JOB_STATE_OPEN,
    domain.JobState.SEALED: ingest_pb2.JOB_STATE_SEALED,
    domain.JobState.DELETED: ingest_pb2.JOB_STATE_DELETED,
}
_STATUS = {
    domain.ItemStatus.ACCEPTED: ingest_pb2.ITEM_STATUS_ACCEPTED,
    domain.ItemStatus.DUPLICATE: ingest_pb2.ITEM_STATUS_DUPLICATE,
    domain.ItemStatus.REJECTED: ingest_pb2.ITEM_STATUS_REJECTED,
}
_FORMAT: dict[int, domain.ManifestFormat] = {
    ingest_pb2.MANIFEST_FORMAT_JSONL: domain.ManifestFormat.JSONL,
    ingest_pb2.MANIFEST_FORMAT_CSV: domain.ManifestFormat.CSV,
}


def timestamp(moment: dt.datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(moment)
    return ts


def _datetime(field: str, stamp: Timestamp) -> dt.datetime:
    """Raises InvalidArgument(field) for a timestamp outside 0001-01-01..9999-12-31 or with bad nanos."""
    try:
        return stamp.ToDatetime(dt.UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidArgument(field, "is not a valid timestamp") from exc


def deadline(stamp: Timestamp) -> dt.datetime:
    """An SLA deadline as given; raises InvalidArgument("sla_deadline") when not a valid timestamp."""
    return _datetime("sla_deadline", stamp)


def job_to_proto(job: domain.Job) -> ingest_pb2.Job:
    return ingest_pb2.Job(
        job_id=job.job_id,
        spec=spec_to_proto(job.spec),
        state=_STATE[job.state],
        objects=job.objects,
        gold_objects=job.gold_objects,
        rejected=job.rejected,
        created_at=timestamp(job.created_at),
    )


def chunk_from_proto(chunk: ingest_pb2.UploadChunk) -> domain.Chunk:
    return domain.Chunk(
        job_id=chunk.job_id,
        filename=chunk.filename,
        data=chunk.data,
        end_of_file=chunk.end_of_file,
        gold_label=chunk.gold_label,
    )


def manifest_format(value: int) -> domain.ManifestFormat:
    """Raises InvalidArgument("format") for an unset or unknown format."""
    try:
        return _FORMAT[value]
    except KeyError:
        raise InvalidArgument("format", f"unknown manifest format {value}: use JSONL or CSV") from None


def summary_to_proto(summary: domain.UploadSummary) -> ingest_pb2.UploadSummary:
    return ingest_pb2.UploadSummary(
        job_id=summary.job_id,
        accepted=summary.count(domain.ItemStatus.ACCEPTED),
        duplicates=summary.count(domain.ItemStatus.DUPLICATE),
        rejected=summary.count(domain.ItemStatus.REJECTED),
        items=[
            ingest_pb2.ItemResult(name=i.name, status=_STATUS[i.status], item_id=i.item_id, reason=i.reason)
            for i in summary.items
        ],
    )


def job_created(job_id: str, spec: domain.JobSpec, created_at: dt.datetime) -> events_pb2.Event:
    return events_pb2.Event(
        job_created=events_pb2.JobCreated(job_id=job_id, spec=spec_to_proto(spec), created_at=timestamp(created_at))
    )


def job_sealed(job_id: str, objects: int, gold_objects: int) -> events_pb2.Event:
    return events_pb2.Event(job_sealed=events_pb2.JobSealed(job_id=job_id, objects=objects, gold_objects=gold_objects))


def job_deleted(job_id: str, org_id: str) -> events_pb2.Event:
    return events_pb2.Event(job_deleted=events_pb2.JobDeleted(job_id=job_id, org_id=org_id))


def delete_summary_to_proto(summary: domain.DeleteSummary) -> ingest_pb2.DeleteJobResponse:
    return ingest_pb2.DeleteJobResponse(
        job_id=summary.job_id, items_deleted=summary.items_deleted, objects_deleted=summary.objects_deleted
    )


def task_created(
    job_id: str, obj: domain.AcceptedObject, task: domain.TaskDraft, created_at: dt.datetime
) -> events_pb2.Event:
    created = events_pb2.TaskCreated(
        task_id=task.task_id,
        job_id=job_id,
        item_id=obj.item_id,
        object_name=obj.name,
        object_key=obj.object_key,
        content_type=obj.content_type,
        text=task.text,
        gold=bool(obj.gold_label),
        created_at=timestamp(created_at),
    )
    if obj.gold_label:
        created.gold_answer.classification.label = obj.gold_label
    return events_pb2.Event(task_created=created)
