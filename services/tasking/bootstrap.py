"""Tasking's composition root: the only place that opens its database, Redis and
object store."""

from __future__ import annotations

from quorum.cache import connect_redis
from quorum.db import add_missing_columns, fill_blank_from, make_engine
from quorum.lag import Downstream
from quorum.objectstore import open_object_store
from quorum.service import ConsumerSpec, ServiceContext, ServiceParts
from quorum.v1 import tasking_pb2_grpc
from services.tasking import tables
from services.tasking.handlers import TaskingService
from services.tasking.leases import Leases, LeaseStore, MemoryLeaseStore
from services.tasking.policy import POLICY
from services.tasking.servicer import SERVICE_NAME, TaskingServicer

# Consumer group <prefix>.tasking.events: jobs, tasks, task-requests and results.
EVENTS_CONSUMER = "events"


def build(context: ServiceContext) -> ServiceParts:
    """Opens tasking's database (creating its tables), Redis and object store and wires
    the gRPC servicer, the event consumer and the lease sweeper. Leases live in Redis
    when QUORUM_REDIS_URL is set (required for more than one replica), else in this
    process's memory. Raises redis.ConnectionError when QUORUM_REDIS_URL names a server
    that is down."""
    settings = context.settings
    engine = make_engine(settings.database_url_for("tasking"))
    tables.metadata.create_all(engine)
    add_missing_columns(engine, tables.metadata)
    # Tasks from before they carried their organisation learn it from their job, where known.
    fill_blank_from(engine, tables.tasks, "org_id", tables.jobs, "org_id")
    closers = []
    leases: Leases
    if settings.redis_url:
        redis_client = connect_redis(settings.redis_url)
        leases = LeaseStore(redis_client, prefix=f"{settings.topic_prefix}:tasking")
        closers.append(redis_client.close)
    else:
        leases = MemoryLeaseStore()
    service = TaskingService(
        engine=engine,
        leases=leases,
        objects=open_object_store(settings),
        topics=context.topics,
        outbox_written=context.outbox_written,
    )
    topics = context.topics
    return ServiceParts(
        name="tasking",
        registrations=[(tasking_pb2_grpc.add_TaskingServiceServicer_to_server, TaskingServicer(service), SERVICE_NAME)],
        engine=engine,
        outbox=tables.outbox,
        consumers=[
            ConsumerSpec(
                name=EVENTS_CONSUMER,
                topics=[topics.jobs, topics.tasks, topics.task_requests, topics.results],
                handler=service.handle_events,
            )
        ],
        background=[service.sweep_loop],
        closers=closers,
        policies=[POLICY],
        owner_of=service.owner_of,
        job_owners_from_ingest=True,
        # Consensus and payments read every accepted answer: while either is too far behind,
        # no new task is handed out. Answers to tasks already handed out are still taken:
        # the work is done, it is bounded by the live leases, and a refusal could outlast
        # the lease and lose it.
        downstream=[
            Downstream("consensus.events", (topics.answers,)),
            Downstream("payments.ledger", (topics.answers,)),
        ],
        intake_methods=frozenset({"GetNextTask"}),
    )
