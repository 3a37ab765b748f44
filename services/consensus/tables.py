"""The consensus service's tables (SQLAlchemy Core, its own MetaData), with the inbox and outbox.

Names carry a ``consensus_`` prefix so the service still works when a deployment points
several services at one database.
"""

from __future__ import annotations

import sqlalchemy as sa

from quorum.db import UtcDateTime, add_messaging_tables

ID = sa.String(200)
# Structured answers (boxes, spans, transcriptions) are JSON of any length.
LABEL = sa.Text


metadata = sa.MetaData()
"""Every consensus table; ``metadata.create_all(engine)`` creates them."""

jobs = sa.Table(
    "consensus_jobs",
    metadata,
    sa.Column("job_id", ID, primary_key=True),
    # The job's organisation (JobSpec.client_id); "" only on rows older than the column.
    sa.Column("org_id", sa.String(128), nullable=False, server_default=""),
    # JSON list of the job's labels, in the job's order.
    sa.Column("labels", sa.Text, nullable=False),
    sa.Column("overlap_min", sa.Integer, nullable=False),
    sa.Column("overlap_max", sa.Integer, nullable=False),
    sa.Column("target_confidence", sa.Float, nullable=False),
    sa.Column("expert_review", sa.Boolean, nullable=False, server_default=sa.false()),
    # The Answer member its workers set (quorum.tasktypes); "" on rows older than the column.
    sa.Column("answer_kind", sa.String(32), nullable=False, server_default=""),
    sa.Column("received_at", UtcDateTime, nullable=False),
)
tasks = sa.Table(
    "consensus_tasks",
    metadata,
    sa.Column("task_id", ID, primary_key=True),
    sa.Column("job_id", ID, nullable=False),
    # The job's organisation; "" while the task waits for its JobCreated.
    sa.Column("org_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("item_id", ID, nullable=False),
    sa.Column("object_name", sa.Text, nullable=False),
    sa.Column("gold", sa.Boolean, nullable=False),
    sa.Column("gold_label", LABEL, nullable=False),
    sa.Column("created_at", UtcDateTime, nullable=False),
    # services.consensus.domain.TaskState
    sa.Column("state", sa.String(10), nullable=False),
    sa.Column("answers", sa.Integer, nullable=False),
    sa.Column("agree", sa.Integer, nullable=False),
    sa.Column("requested", sa.Integer, nullable=False),
    sa.Column("label", LABEL, nullable=False),
    sa.Index("ix_consensus_tasks_job_state", "job_id", "state"),
)
answers = sa.Table(
    "consensus_answers",
    metadata,
    # Arrival order: answers are replayed in it when their task or job arrives late.
    sa.Column("id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("answer_id", ID, nullable=False, unique=True),
    sa.Column("task_id", ID, nullable=False, index=True),
    sa.Column("job_id", ID, nullable=False),
    sa.Column("worker_id", ID, nullable=False),
    sa.Column("label", LABEL, nullable=False),
    sa.Column("submitted_at", UtcDateTime, nullable=True),
    # Whether the answer agreed with its task's label when compared with it (at resolution,
    # on arrival after it, or when a refit relabelled the task): what its worker's agreed
    # count holds. NULL before the comparison, for gold answers, and on rows older than the
    # column.
    sa.Column("agreed", sa.Boolean, nullable=True),
    sa.UniqueConstraint("task_id", "worker_id", name="uq_consensus_answers_task_worker"),
    # A job's answers: refits read them, a deletion purges them.
    sa.Index("ix_consensus_answers_job", "job_id", "id"),
)
results = sa.Table(
    "consensus_results",
    metadata,
    sa.Column("task_id", ID, primary_key=True),
    sa.Column("job_id", ID, nullable=False, index=True),
    sa.Column("org_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("item_id", ID, nullable=False),
    sa.Column("object_name", sa.Text, nullable=False),
    sa.Column("label", LABEL, nullable=False),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("low_confidence", sa.Boolean, nullable=False),
    sa.Column("majority_label", LABEL, nullable=False),
    # JSON list of [worker_id, label, weight].
    sa.Column("answers", sa.Text, nullable=False),
    sa.Column("resolved_at", UtcDateTime, nullable=False),
    # Denormalised for the quality queries: seconds from task creation, start of the minute.
    sa.Column("ttr_seconds", sa.Float, nullable=False),
    sa.Column("resolved_minute", sa.BigInteger, nullable=False, index=True),
    sa.Column("version", sa.Integer, nullable=False),
    # Resolved by an expert reviewer: final, a refit never relabels it.
    sa.Column("reviewed", sa.Boolean, nullable=False, server_default=sa.false()),
)
worker_stats = sa.Table(
    "consensus_worker_stats",
    metadata,
    sa.Column("worker_id", ID, primary_key=True),
    sa.Column("job_id", ID, primary_key=True),
    sa.Column("answers", sa.Integer, nullable=False),
    sa.Column("gold_answers", sa.Integer, nullable=False),
    sa.Column("gold_correct", sa.Integer, nullable=False),
    sa.Column("compared", sa.Integer, nullable=False),
    sa.Column("agreed", sa.Integer, nullable=False),
    sa.Index("ix_consensus_worker_stats_job", "job_id"),
)

worker_flags = sa.Table(
    "consensus_worker_flags",
    metadata,
    sa.Column("worker_id", ID, primary_key=True),
    sa.Column("spammer", sa.Boolean, nullable=False),
    sa.Column("spam_score", sa.Float, nullable=False),
    sa.Column("changed_at", UtcDateTime, nullable=False),
)

# Jobs whose client deleted them: their tasks, answers and results are purged, and events
# of them that arrive later are dropped. The organisation stays for owner lookups.
deleted_jobs = sa.Table(
    "consensus_deleted_jobs",
    metadata,
    sa.Column("job_id", ID, primary_key=True),
    sa.Column("org_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("deleted_at", UtcDateTime, nullable=False),
)

_messaging = add_messaging_tables(metadata)
inbox = _messaging.inbox
outbox = _messaging.outbox
