"""Composition root of the access service: the only place that opens its database."""

from __future__ import annotations

import datetime as dt

from quorum.crypto import MasterKeyring, load_master_keyring
from quorum.db import make_engine
from quorum.security import keys
from quorum.service import ConsumerSpec, ServiceContext, ServiceParts
from quorum.settings import Settings
from quorum.v1 import access_pb2_grpc

from . import audit
from .handlers import AccessHandlers
from .policy import POLICY
from .servicer import SERVICE_NAME, AccessServicer


def totp_keyring(settings: Settings, *, offline: bool = False) -> MasterKeyring:
    """The master keyring that seals the TOTP secrets in the access database. Replicas (and
    `quorum keys create --database-url`) sharing a database must share it, so a shared
    database needs QUORUM_MASTER_KEY. So does an ``offline`` tool's SQLite database outside
    its QUORUM_HOME: that database's access service opens the secrets with its own home's
    embedded master key, not this one. Raises quorum.crypto.MasterKeyError naming the variable."""
    because = None
    if settings.access_database_is_shared():
        because = "the access database is shared and holds sealed TOTP secrets"
    elif offline and not settings.access_database_in_home():
        because = (
            f"the access database is outside QUORUM_HOME ({settings.home}), so its access service opens "
            "TOTP secrets with a master key other than this home's embedded one (an embedded stack's is "
            "the text of its <home>/secrets/master.key)"
        )
    return load_master_keyring(settings, required_because=because)


def build(context: ServiceContext) -> ServiceParts:
    """Opens the access database (keys and the audit trail), creating its tables, and
    consumes the audit topic that every other service writes to."""
    settings = context.settings
    engine = make_engine(settings.access_database())
    keys.create_tables(engine)
    audit.metadata.create_all(engine)
    trail = audit.AuditTrail(engine)
    keyring = totp_keyring(settings)
    handlers = AccessHandlers(
        keys.KeyStore(engine, context.key_hasher, box=keyring),
        trail,
        session_ttl=dt.timedelta(seconds=settings.session_ttl_s),
        second_factor_roles=settings.require_mfa_roles,
    )
    return ServiceParts(
        name="access",
        registrations=[
            (access_pb2_grpc.add_AccessServiceServicer_to_server, AccessServicer(handlers, trail), SERVICE_NAME)
        ],
        engine=engine,
        consumers=[ConsumerSpec("audit", [context.topics.audit], trail.handle_events)],
        policies=[POLICY],
    )
