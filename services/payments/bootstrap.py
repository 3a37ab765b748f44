"""Composition root of the payments service: the only place that opens its database."""

from __future__ import annotations

from quorum.db import make_engine
from quorum.service import ConsumerSpec, ServiceContext, ServiceParts
from quorum.v1 import payments_pb2_grpc

from . import tables
from .handlers import CONSUMER, Ledger
from .servicer import SERVICE_NAME, PaymentsServicer


def build(context: ServiceContext) -> ServiceParts:
    """Opens the payments database (creating its tables), and wires the servicer and the
    ``ledger`` consumer of the jobs, answers and results topics. Produces no events, so
    no outbox relay. Raises sqlalchemy errors when the database is unreachable."""
    engine = make_engine(context.settings.database_url_for("payments"))
    tables.metadata.create_all(engine)
    ledger = Ledger(engine)
    topics = context.topics
    return ServiceParts(
        name="payments",
        registrations=[
            (payments_pb2_grpc.add_PaymentsServiceServicer_to_server, PaymentsServicer(ledger), SERVICE_NAME)
        ],
        engine=engine,
        outbox=None,
        consumers=[ConsumerSpec(CONSUMER, [topics.jobs, topics.answers, topics.results], ledger.handle_events)],
    )
