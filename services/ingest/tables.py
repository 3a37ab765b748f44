"""Ingest's tables: jobs, their accepted items and the tasks cut from them, the
media of deleted jobs waiting to be purged, plus the shared inbox and outbox."""

from __future__ import annotations

import sqlalchemy as sa

from quorum.db import UtcDateTime, add_messaging_tables

metadata = sa.MetaData()

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("job_id", sa.String(40), primary_key=True),
    sa.Column("client_id", sa.String(128), nullable=False),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("task_type", sa.String(40), nullable=False),
    # The normalised spec as a serialized quorum.v1.JobSpec: exactly what JobCreated carried.
    sa.Column("spec", sa.LargeBinary, nullable=False),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("objects", sa.Integer, nullable=False, default=0),
    sa.Column("gold_objects", sa.Integer, nullable=False, default=0),
    sa.Column("rejected", sa.Integer, nullable=False, default=0),
    # NULL for CreateJob calls without a key; NULLs never collide in a unique key.
    sa.Column("idempotency_key", sa.String(200), nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("sealed_at", UtcDateTime, nullable=True),
    sa.Column("deleted_at", UtcDateTime, nullable=True),
    # Set by SetJobSla: from then on the job's SLA deadline is sla_deadline (NULL: none),
    # while ``spec`` keeps the one it was created with, so a retried CreateJob still matches.
    sa.Column("sla_changed_at", UtcDateTime, nullable=True),
    sa.Column("sla_deadline", UtcDateTime, nullable=True),
    sa.UniqueConstraint("client_id", "idempotency_key", name="uq_jobs_client_idempotency_key"),
    sa.Index("ix_jobs_created", "created_at", "job_id"),
    sa.Index("ix_jobs_client_created", "client_id", "created_at"),
)

items = sa.Table(
    "items",
    metadata,
    sa.Column("item_id", sa.String(40), primary_key=True),
    sa.Column("job_id", sa.String(40), sa.ForeignKey("jobs.job_id"), nullable=False),
    # The job's organisation (its client_id); "" only on rows older than the column.
    sa.Column("org_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
    sa.Column("object_key", sa.String(100), nullable=False),
    sa.Column("content_type", sa.String(100), nullable=False),
    sa.Column("size_bytes", sa.BigInteger, nullable=False),
    sa.Column("gold_label", sa.String(100), nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    # Deduplication: the same content joins a job once.
    sa.UniqueConstraint("job_id", "sha256", name="uq_items_job_sha256"),
    # Content is shared between jobs: a deletion keeps the media another item still uses.
    sa.Index("ix_items_object_key", "object_key"),
)

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("task_id", sa.String(40), primary_key=True),
    sa.Column("job_id", sa.String(40), nullable=False),
    sa.Column("org_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("item_id", sa.String(40), sa.ForeignKey("items.item_id"), nullable=False),
    sa.Column("segment", sa.String(200), nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Index("ix_tasks_item", "item_id"),
    sa.Index("ix_tasks_job", "job_id"),
)

# Media of deleted jobs on their way out of the object store, one row per content key.
# The row is written in the deleting transaction, so a crash before the objects are gone
# leaves work for the next purge pass. Once purged (purged_at set) the row stays a while:
# an upload that stored the same content just before the purge sees it and stores the
# content again.
media_purges = sa.Table(
    "media_purges",
    metadata,
    sa.Column("object_key", sa.String(100), primary_key=True),
    sa.Column("job_id", sa.String(40), nullable=False),
    sa.Column("queued_at", UtcDateTime, nullable=False),
    sa.Column("purged_at", UtcDateTime, nullable=True),
    sa.Index("ix_media_purges_pending", "purged_at", "object_key"),
)

messaging = add_messaging_tables(metadata)
outbox = messaging.outbox
