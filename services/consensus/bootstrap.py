"""Composition root of the consensus service: the only place that opens its database."""

from __future__ import annotations

from quorum.db import add_missing_columns, fill_blank_from, make_engine, widen_text_columns
from quorum.security.audit import AuditRecorder
from quorum.service import ConsumerSpec, ServiceContext, ServiceParts, run_periodically
from quorum.v1 import consensus_pb2_grpc
from services.consensus import tables
from services.consensus.handlers import ConsensusEvents, ConsensusQueries
from services.consensus.policy import POLICY
from services.consensus.refit import Refit
from services.consensus.review import ExpertReview
from services.consensus.servicer import SERVICE_NAME, ConsensusServicer
from services.consensus.spam_watch import SpamWatch

CONSUMER_NAME = "events"
"""The consumer group is ``<prefix>.consensus.events``: topics jobs, tasks and answers."""


def build(context: ServiceContext) -> ServiceParts:
    """Opens the database (creating missing tables), rebuilds the in-memory caches from it and
    wires the gRPC servicer and the event consumer. Raises what SQLAlchemy raises when the
    database is unreachable."""
    engine = make_engine(context.settings.database_url_for("consensus"))
    tables.metadata.create_all(engine)
    add_missing_columns(engine, tables.metadata)
    # Tasks and results from before they carried their organisation learn it from their job, where known.
    for table in (tables.tasks, tables.results):
        fill_blank_from(engine, table, "org_id", tables.jobs, "org_id")
    widen_text_columns(engine, tables.metadata)
    events = ConsensusEvents(engine, context.topics, context.outbox_written)
    events.load()
    topics = context.topics
    queries = ConsensusQueries(engine)
    refit = Refit(engine, topics, context.outbox_written, evidence_changed=events.evidence_changed)
    spam_watch = SpamWatch(engine, topics, context.outbox_written, queries)
    interval = context.settings.consensus_refit_seconds
    return ServiceParts(
        name="consensus",
        registrations=[
            (
                consensus_pb2_grpc.add_ConsensusServiceServicer_to_server,
                ConsensusServicer(
                    queries,
                    ExpertReview(engine, topics, context.outbox_written),
                    AuditRecorder(engine, tables.outbox, topics.audit, "consensus", context.outbox_written),
                ),
                SERVICE_NAME,
            )
        ],
        engine=engine,
        outbox=tables.outbox,
        consumers=[ConsumerSpec(CONSUMER_NAME, [topics.jobs, topics.tasks, topics.answers], events.handle)],
        background=[
            lambda stop: run_periodically(stop, interval, "consensus refit", refit.run_once, spam_watch.run_once)
        ]
        if interval > 0
        else [],
        policies=[POLICY],
        owner_of=queries.owner_of,
        job_owners_from_ingest=True,
    )
