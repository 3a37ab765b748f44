"""Composition root of the payments service: the only place that opens its database."""

from __future__ import annotations

from quorum.db import add_missing_columns, make_engine
from quorum.service import ConsumerSpec, ServiceContext, ServiceParts
from quorum.v1 import payments_pb2_grpc
from services.payments.policy import POLICY

from . import tables
from .handlers import CONSUMER, Ledger
from .servicer import SERVICE_NAME, PaymentsServicer


def build(context: ServiceContext) -> ServiceParts:
    """Opens the payments database (creating its tables), and wires the servicer and the
    ``ledger`` consumer of the jobs, answers and results topics, and the outbox of the
    JobPaused / JobResumed events it produces when a budget cap is reached or raised.
    Raises sqlalchemy errors when the database is unreachable."""
    engine = make_engine(context.settings.database_url_for("payments"))
    tables.metadata.create_all(engine)
    add_missing_columns(engine, tables.metadata)
    topics = context.topics
    ledger = Ledger(engine, jobs_topic=topics.jobs, outbox_written=context.outbox_written, audit_topic=topics.audit)
    return ServiceParts(
        name="payments",
        registrations=[
            (payments_pb2_grpc.add_PaymentsServiceServicer_to_server, PaymentsServicer(ledger), SERVICE_NAME)
        ],
        engine=engine,
        outbox=tables.messaging.outbox,
        consumers=[ConsumerSpec(CONSUMER, [topics.jobs, topics.answers, topics.results], ledger.handle_events)],
        policies=[POLICY],
        owner_of=ledger.owner_of,
        job_owners_from_ingest=True,
    )
