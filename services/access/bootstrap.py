"""Composition root of the access service: the only place that opens its database."""

from __future__ import annotations

from quorum.crypto import load_master_keyring
from quorum.db import make_engine
from quorum.security import keys
from quorum.service import ConsumerSpec, ServiceContext, ServiceParts
from quorum.v1 import access_pb2_grpc

from . import audit
from .handlers import AccessHandlers
from .policy import POLICY
from .servicer import SERVICE_NAME, AccessServicer


def build(context: ServiceContext) -> ServiceParts:
    """Opens the access database (keys and the audit trail), creating its tables, and
    consumes the audit topic that every other service writes to."""
    settings = context.settings
    engine = make_engine(settings.access_database())
    keys.metadata.create_all(engine)
    audit.metadata.create_all(engine)
    trail = audit.AuditTrail(engine)
    # TOTP secrets are sealed under the master key; replicas sharing a database must share it.
    shared = settings.access_database_is_shared()
    keyring = load_master_keyring(
        settings, required_because="the access database is shared and holds sealed TOTP secrets" if shared else None
    )
    handlers = AccessHandlers(keys.KeyStore(engine, context.key_hasher, box=keyring), trail)
    return ServiceParts(
        name="access",
        registrations=[
            (access_pb2_grpc.add_AccessServiceServicer_to_server, AccessServicer(handlers, trail), SERVICE_NAME)
        ],
        engine=engine,
        consumers=[ConsumerSpec("audit", [context.topics.audit], trail.handle_events)],
        policies=[POLICY],
    )
