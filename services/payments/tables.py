"""The payments database: job terms and counters, the facts waiting to be
settled, the append-only postings and per-worker totals.

``postings`` refuses UPDATE and DELETE with a trigger on SQLite and PostgreSQL,
and ``amount_cents > 0`` with a CHECK constraint.
"""

from __future__ import annotations

import sqlalchemy as sa

from quorum.db import UtcDateTime, add_messaging_tables, make_append_only

metadata = sa.MetaData()
messaging = add_messaging_tables(metadata)

ID = sa.String(200)
Cents = sa.BigInteger

# One row per job seen in any event. ``has_terms`` turns true when its JobCreated
# arrives; until then the term columns are NULL and its facts wait. The row is
# also the job's lock: every transaction that settles a job's facts holds it.
jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("job_id", ID, primary_key=True),
    sa.Column("has_terms", sa.Boolean, nullable=False),
    sa.Column("client_id", ID),
    sa.Column("task_type", sa.String(100)),
    sa.Column("price_per_object_cents", Cents),
    sa.Column("pay_per_answer_cents", Cents),
    sa.Column("currency", sa.String(8)),
    sa.Column("pilot", sa.Boolean),
    sa.Column("pilot_allowance", sa.Integer),
    sa.Column("price_mode", sa.String(16)),
    sa.Column("price_per_hour_cents", Cents),
    sa.Column("pay_mode", sa.String(16)),
    sa.Column("pay_per_hour_cents", Cents),
    sa.Column("created_at", UtcDateTime),
    # Quality bonus terms (JobSpec.gold_bonus_*); NULL for jobs stored before them: no bonus.
    sa.Column("gold_bonus_cents", Cents, nullable=True),
    sa.Column("gold_bonus_threshold", sa.Float, nullable=True),
    sa.Column("gold_bonus_min_answers", sa.Integer, nullable=True),
    # JobSpec.price_per_annotation_cents; 0 for jobs stored before it (NULL while no terms).
    sa.Column("price_per_annotation_cents", Cents, nullable=True, server_default="0"),
    # Objects the client wants labeled, from JobSealed; NULL until the job is sealed.
    sa.Column("objects_expected", sa.BigInteger, nullable=True),
    # When the quality bonuses of the finished job were decided: they are decided once.
    sa.Column("bonuses_decided_at", UtcDateTime, nullable=True),
    # The budget cap (0: none) comes with the terms and changes by SetBudgetCap; the job is
    # paused while what its client was charged reaches it.
    sa.Column("budget_cap_cents", Cents, nullable=False, default=0),
    sa.Column("paused", sa.Boolean, nullable=False, default=False),
    sa.Column("pause_reason", sa.String(300), nullable=False, default=""),
    # Set by JobDeleted: the job bills nothing more; facts still unsettled are settled unpaid.
    sa.Column("deleted_at", UtcDateTime, nullable=True),
    sa.Column("first_seen_at", UtcDateTime, nullable=False),
    sa.Column("objects_billed", sa.BigInteger, nullable=False),
    sa.Column("pilot_objects", sa.BigInteger, nullable=False),
    sa.Column("answers_paid", sa.BigInteger, nullable=False),
    sa.Column("billed_cents", Cents, nullable=False),
    sa.Column("pilot_subsidy_cents", Cents, nullable=False),
    sa.Column("paid_cents", Cents, nullable=False),
    sa.Column("answers_unpaid", sa.BigInteger, nullable=False),
    sa.Column("billed_ms", sa.BigInteger, nullable=False),
    sa.Column("time_bills", sa.BigInteger, nullable=False),
    sa.Column("bonus_cents", Cents, nullable=False, server_default="0"),
    sa.Column("bonuses_paid", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("annotations_billed", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("pilot_annotations", sa.BigInteger, nullable=False, server_default="0"),
    sa.Index("ix_jobs_currency", "has_terms", "currency"),
)

# One row per resolved task (the first resolution wins); billed_at NULL = waiting for its job's terms.
resolved_tasks = sa.Table(
    "resolved_tasks",
    metadata,
    sa.Column("task_id", ID, primary_key=True),
    sa.Column("job_id", ID, nullable=False),
    sa.Column("event_id", sa.String(64), nullable=False),
    sa.Column("resolved_at", UtcDateTime, nullable=False),
    # The consensus label and, per worker, [label, weight]: the verdict on each answer.
    sa.Column("label", sa.String(500), nullable=False, default=""),
    sa.Column("low_confidence", sa.Boolean, nullable=False, default=False),
    sa.Column("verdicts", sa.JSON, nullable=False, default=dict),
    # Annotations in the resolved label (boxes, spans, ...; 0 for single-answer tasks).
    sa.Column("annotations", sa.Integer, nullable=False, server_default="0"),
    sa.Column("billed_at", UtcDateTime),
    sa.Index("ix_resolved_tasks_pending", "job_id", "billed_at"),
)

# One row per accepted answer; paid_at NULL = waiting for its job's terms and its task's
# resolution (a gold answer: for the first later answer of its worker on the job to settle, or
# else for its job's end). Settled unpaid: paid_at set and unpaid_reason given.
accepted_answers = sa.Table(
    "accepted_answers",
    metadata,
    sa.Column("answer_id", ID, primary_key=True),
    sa.Column("job_id", ID, nullable=False),
    sa.Column("task_id", ID, nullable=False),
    sa.Column("worker_id", ID, nullable=False),
    sa.Column("event_id", sa.String(64), nullable=False),
    sa.Column("accepted_at", UtcDateTime, nullable=False),
    sa.Column("gold", sa.Boolean, nullable=False, default=False),
    sa.Column("label", sa.String(500), nullable=False, default=""),
    # Server-side active time from tasking (AnswerAccepted.active_ms).
    sa.Column("active_ms", sa.BigInteger, nullable=False, default=0),
    # A gold answer's grade from tasking (AnswerAccepted.gold_grade); NULL when ungraded.
    sa.Column("gold_correct", sa.Boolean, nullable=True),
    sa.Column("paid_at", UtcDateTime),
    sa.Column("amount_cents", Cents),
    sa.Column("unpaid_reason", sa.String(500)),
    sa.Index("ix_accepted_answers_pending", "job_id", "paid_at"),
    sa.Index("ix_accepted_answers_worker", "worker_id", "accepted_at", "answer_id"),
)

postings = sa.Table(
    "postings",
    metadata,
    sa.Column("entry_id", sa.BigInteger().with_variant(sa.Integer, "sqlite"), primary_key=True, autoincrement=True),
    sa.Column("posting_key", sa.String(210), nullable=False, unique=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("ref_id", ID, nullable=False),
    sa.Column("event_id", sa.String(64), nullable=False),
    sa.Column("job_id", ID, nullable=False),
    # The organisation (the job's client_id) the entry belongs to; "" for payouts, which
    # belong to workers, and for entries older than the column.
    sa.Column("org_id", sa.String(128), nullable=False, server_default=""),
    sa.Column("debit_account", sa.String(250), nullable=False),
    sa.Column("credit_account", sa.String(250), nullable=False),
    sa.Column("amount_cents", Cents, nullable=False),
    sa.Column("currency", sa.String(8), nullable=False),
    sa.Column("memo", sa.String(500), nullable=False),
    sa.Column("posted_at", UtcDateTime, nullable=False),
    sa.CheckConstraint("amount_cents > 0", name="ck_postings_amount_positive"),
    sa.Index("ix_postings_job", "job_id", "entry_id"),
    sa.Index("ix_postings_org", "org_id", "entry_id"),
)

# Running totals per worker and currency, kept in the transaction that writes the pay postings.
worker_totals = sa.Table(
    "worker_totals",
    metadata,
    sa.Column("worker_id", ID, primary_key=True),
    sa.Column("currency", sa.String(8), primary_key=True),
    sa.Column("earned_cents", Cents, nullable=False),
    sa.Column("answers_paid", sa.BigInteger, nullable=False),
    sa.Column("answers_unpaid", sa.BigInteger, nullable=False, default=0),
    sa.Column("paid_out_cents", Cents, nullable=False, default=0),
)

# One row per worker who answered gold tasks of a finished job with a quality bonus: the
# decision, paid or not, with the totals it rests on. Written with the bonus posting.
quality_bonuses = sa.Table(
    "quality_bonuses",
    metadata,
    sa.Column("job_id", ID, primary_key=True),
    sa.Column("worker_id", ID, primary_key=True),
    sa.Column("currency", sa.String(8), nullable=False),
    sa.Column("amount_cents", Cents, nullable=False),
    sa.Column("gold_answers", sa.Integer, nullable=False),
    sa.Column("gold_correct", sa.Integer, nullable=False),
    sa.Column("paid_answers", sa.Integer, nullable=False),
    sa.Column("reason", sa.String(300), nullable=False),
    sa.Column("decided_at", UtcDateTime, nullable=False),
    sa.Index("ix_quality_bonuses_worker", "worker_id", "decided_at", "job_id"),
)

# One row per correcting entry staff posted (AdjustLedger), next to its posting: who asked
# and the client or worker account it corrects, so a statement or a client's invoice finds
# its adjustments without scanning the postings.
adjustments = sa.Table(
    "adjustments",
    metadata,
    sa.Column("request_id", ID, primary_key=True),
    sa.Column("entry_id", sa.BigInteger, nullable=False, unique=True),
    sa.Column("account", sa.String(250), nullable=False),
    sa.Column("job_id", ID, nullable=False),
    sa.Column("requested_by", sa.String(200), nullable=False),
    sa.Column("posted_at", UtcDateTime, nullable=False),
    sa.Index("ix_adjustments_account", "account", "posted_at"),
)

# The latest verdict on each worker ever flagged (WorkerFlagged: consensus's, or an operator's
# override from tasking): the answers of a worker settled while ``spammer`` holds are unpaid,
# with ``reason``. ``verdict_at`` is the event's time: an older verdict delivered late does
# not overwrite a newer one.
worker_flags = sa.Table(
    "worker_flags",
    metadata,
    sa.Column("worker_id", ID, primary_key=True),
    sa.Column("spammer", sa.Boolean, nullable=False),
    sa.Column("reason", sa.String(500), nullable=False),
    sa.Column("verdict_at", UtcDateTime, nullable=False),
    sa.Column("event_id", sa.String(64), nullable=False),
)

make_append_only(postings)
make_append_only(adjustments)
