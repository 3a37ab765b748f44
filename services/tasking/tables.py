"""Tasking's tables (SQLAlchemy Core on its own MetaData), plus the inbox and outbox.

The database holds everything durable: job specs, tasks with their answer
counters, sessions, one assignment row per (task, worker) handout and the
answers. Live leases are in Redis (see :mod:`services.tasking.leases`).
"""

from __future__ import annotations

import sqlalchemy as sa

from quorum.db import UtcDateTime, add_messaging_tables

metadata = sa.MetaData()
messaging = add_messaging_tables(metadata)
inbox = messaging.inbox
outbox = messaging.outbox

ID = sa.String(200)

# A job's spec as tasking needs it. A row may exist before its JobCreated (when a
# JobSealed came first): ``known`` says whether the spec has arrived.
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("job_id", ID, primary_key=True),
    sa.Column("known", sa.Boolean, nullable=False, default=False),
    # The job's organisation (JobSpec.client_id); "" until its JobCreated arrives.
    sa.Column("org_id", sa.String(128), nullable=False, server_default=""),
    # JobDeleted arrived: the job's tasks, answers and assignments are gone and stay gone.
    sa.Column("deleted", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("task_type", sa.String(64), nullable=False, default=""),
    sa.Column("labels", sa.JSON, nullable=False, default=list),
    # The task config's fields other than labels (quorum.taskmessages.config_options).
    sa.Column("task_options", sa.JSON, nullable=True),
    sa.Column("instructions", sa.Text, nullable=False, default=""),
    sa.Column("overlap_min", sa.Integer, nullable=False, default=1),
    sa.Column("overlap_max", sa.Integer, nullable=False, default=1),
    sa.Column("gold_share", sa.Float, nullable=False, default=0.0),
    sa.Column("lease_seconds", sa.Integer, nullable=False, default=120),
    sa.Column("created_at", UtcDateTime, nullable=True),
    sa.Column("sealed", sa.Boolean, nullable=False, default=False),
    sa.Column("objects", sa.Integer, nullable=False, default=0),
    sa.Column("gold_objects", sa.Integer, nullable=False, default=0),
    # Payments paused the job (budget cap reached): its tasks are not job_ready meanwhile.
    sa.Column("paused", sa.Boolean, nullable=False, default=False),
)

# One micro-task. ``job_ready``: its job's spec has arrived and tasking supports its
# task type, so it may be handed out. ``available`` is maintained by every writer: a
# non-gold task of a ready job, not resolved, with fewer answers received than wanted.
# Live leases are not in the database, so the claim checks them in Redis.
tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("task_id", ID, primary_key=True),
    sa.Column("job_id", ID, nullable=False),
    # The job's organisation; "" while the task waits for its JobCreated.
    sa.Column("org_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("item_id", ID, nullable=False, default=""),
    sa.Column("object_name", sa.Text, nullable=False, default=""),
    sa.Column("object_key", sa.String(300), nullable=False, default=""),
    sa.Column("content_type", sa.String(200), nullable=False, default=""),
    sa.Column("text", sa.Text, nullable=True),
    sa.Column("gold", sa.Boolean, nullable=False),
    # The known label of a gold task, to grade its answers; NULL for regular tasks and for
    # gold tasks stored before the column existed (their answers go ungraded).
    sa.Column("gold_label", sa.String(500), nullable=True),
    sa.Column("created_at", UtcDateTime, nullable=False),
    sa.Column("job_ready", sa.Boolean, nullable=False),
    # The job's creation time, copied here so that the candidate index orders jobs FIFO.
    sa.Column("job_created_at", UtcDateTime, nullable=True),
    sa.Column("answers_wanted", sa.Integer, nullable=False),
    sa.Column("answers_received", sa.Integer, nullable=False, default=0),
    sa.Column("resolved", sa.Boolean, nullable=False, default=False),
    sa.Column("available", sa.Boolean, nullable=False),
    # A hint, not the truth (Redis is): the task's leases filled it up until then. The
    # candidate query skips such tasks so that a busy queue top, where every lease sits,
    # does not make each claim wade through full tasks. Cleared when a lease of the task
    # ends early (skip, expiry) or it wants more answers.
    sa.Column("full_until", UtcDateTime, nullable=True),
    sa.Index("ix_tasks_job_gold", "job_id", "gold"),
    sa.Index("ix_tasks_created", "created_at"),
)

# The candidate query walks these in priority order: most answers first, then FIFO
# by job and by task. Without a job filter it uses the first, with one the second.
sa.Index(
    "ix_tasks_candidates",
    tasks.c.available,
    tasks.c.answers_received.desc(),
    tasks.c.job_created_at,
    tasks.c.created_at,
    tasks.c.task_id,
    tasks.c.full_until,
)
sa.Index(
    "ix_tasks_job_candidates",
    tasks.c.job_id,
    tasks.c.available,
    tasks.c.answers_received.desc(),
    tasks.c.job_created_at,
    tasks.c.created_at,
    tasks.c.task_id,
    tasks.c.full_until,
)

# Updates for tasks whose TaskCreated has not arrived yet, applied when it does.
task_updates = sa.Table(
    "task_updates",
    metadata,
    sa.Column("task_id", ID, primary_key=True),
    sa.Column("answers_wanted", sa.Integer, nullable=False, default=0),
    sa.Column("resolved", sa.Boolean, nullable=False, default=False),
)

# The workers handed no tasks, with the reason they are shown: what the handout checks.
# Kept in step with worker_standing by every writer. Rows written before worker_standing
# existed are consensus's spam flags.
suspended_workers = sa.Table(
    "suspended_workers",
    metadata,
    sa.Column("worker_id", sa.String(128), primary_key=True),
    sa.Column("reason", sa.String(500), nullable=False),
    sa.Column("suspended_at", UtcDateTime, nullable=False),
)

# Why a worker is or is not handed tasks (services.tasking.domain.WorkerStanding): an
# operator's suspension, consensus's spam flag, an operator's override of that flag.
worker_standing = sa.Table(
    "worker_standing",
    metadata,
    sa.Column("worker_id", sa.String(128), primary_key=True),
    sa.Column("suspended_by_operator", sa.Boolean, nullable=False),
    sa.Column("suspension_reason", sa.String(500), nullable=False),
    sa.Column("spam_flagged", sa.Boolean, nullable=False),
    sa.Column("spam_reason", sa.String(500), nullable=False),
    sa.Column("flag_overridden", sa.Boolean, nullable=False),
    # "role:subject@org" of the operator, or "consensus".
    sa.Column("changed_by", sa.String(300), nullable=False),
    sa.Column("changed_at", UtcDateTime, nullable=False),
)

sessions = sa.Table(
    "sessions",
    metadata,
    sa.Column("session_id", sa.String(64), primary_key=True),
    sa.Column("worker_id", sa.String(128), nullable=False),
    sa.Column("started_at", UtcDateTime, nullable=False),
    sa.Index("ix_sessions_started", "started_at"),
)

# The durable record of every handout, written when the lease is granted: one row per
# (task, worker). A worker is never handed again a task it answered, skipped or holds;
# one whose lease expired unanswered may be, and the handout then reuses the row (new
# lease_id and leased_at). That no worker answers a task twice is the answers table's
# unique key.
assignments = sa.Table(
    "assignments",
    metadata,
    sa.Column("lease_id", sa.String(64), primary_key=True),
    sa.Column("task_id", ID, nullable=False),
    sa.Column("worker_id", sa.String(128), nullable=False),
    sa.Column("job_id", ID, nullable=False),
    sa.Column("gold", sa.Boolean, nullable=False),
    sa.Column("leased_at", UtcDateTime, nullable=False),
    # leased, answered, skipped or expired.
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("skip_reason", sa.String(500), nullable=True),
    sa.UniqueConstraint("task_id", "worker_id", name="uq_assignments_task_worker"),
    sa.Index("ix_assignments_leased", "leased_at"),
    sa.Index("ix_assignments_job_leased", "job_id", "leased_at"),
    # The sweeper walks the leased rows in this order, looking for leases the lease store lost.
    sa.Index("ix_assignments_state_leased", "state", "leased_at", "lease_id"),
)

answers = sa.Table(
    "answers",
    metadata,
    sa.Column("answer_id", sa.String(64), primary_key=True),
    sa.Column("lease_id", sa.String(64), nullable=False, unique=True),
    sa.Column("task_id", ID, nullable=False),
    sa.Column("job_id", ID, nullable=False),
    sa.Column("worker_id", sa.String(128), nullable=False),
    sa.Column("gold", sa.Boolean, nullable=False),
    sa.Column("label", sa.Text, nullable=False),
    # The serialized quorum.v1.Answer, as the worker sent it.
    sa.Column("answer", sa.LargeBinary, nullable=False),
    sa.Column("leased_at", UtcDateTime, nullable=False),
    sa.Column("submitted_at", UtcDateTime, nullable=False),
    sa.UniqueConstraint("task_id", "worker_id", name="uq_answers_task_worker"),
    sa.Index("ix_answers_submitted", "submitted_at"),
    sa.Index("ix_answers_job_submitted", "job_id", "submitted_at"),
)
