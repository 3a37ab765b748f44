"""Composition root of the ingest service: the only place that opens its database
and object store."""

from __future__ import annotations

from quorum.db import add_missing_columns, fill_blank_from, make_engine
from quorum.lag import Downstream
from quorum.objectstore import open_object_store
from quorum.service import ServiceContext, ServiceParts
from quorum.v1 import ingest_pb2_grpc
from services.ingest import domain, tables
from services.ingest.handlers import IngestHandlers
from services.ingest.policy import POLICY
from services.ingest.server_files import ServerFiles
from services.ingest.servicer import SERVICE_NAME, IngestServicer


def build(context: ServiceContext) -> ServiceParts:
    """Opens ingest's database (creating its tables) and object store and wires
    the gRPC servicer. Ingest produces events through its outbox and consumes
    none; a background loop purges the media of deleted jobs. Raises what the database or object store raise when unreachable."""
    settings = context.settings
    engine = make_engine(settings.database_url_for("ingest"))
    tables.metadata.create_all(engine)
    add_missing_columns(engine, tables.metadata)
    # Items and tasks from before they carried their organisation learn it from their job.
    for table in (tables.items, tables.tasks):
        fill_blank_from(engine, table, "org_id", tables.jobs, "client_id")
    handlers = IngestHandlers(
        engine=engine,
        store=open_object_store(settings),
        topics=context.topics,
        limits=domain.Limits(
            max_file_bytes=settings.max_file_bytes,
            max_text_bytes=settings.max_text_bytes,
            max_image_pixels=settings.max_image_pixels,
        ),
        outbox_written=context.outbox_written,
        server_files=ServerFiles.under(settings.import_roots, settings.closed_paths()),
    )
    return ServiceParts(
        name="ingest",
        registrations=[(ingest_pb2_grpc.add_IngestServiceServicer_to_server, IngestServicer(handlers), SERVICE_NAME)],
        engine=engine,
        outbox=tables.outbox,
        consumers=[],
        # Media of deleted jobs that a crash left in the store goes at start-up, then periodically.
        background=[handlers.purge_loop],
        closers=[handlers.close],
        policies=[POLICY],
        owner_of=handlers.owner_of,
        # Tasking and consensus read every task: while either is too far behind, no new
        # objects come in.
        downstream=[
            Downstream("tasking.events", (context.topics.tasks,)),
            Downstream("consensus.events", (context.topics.tasks,)),
        ],
        intake_methods=frozenset({"UploadFiles", "ImportManifest"}),
    )
