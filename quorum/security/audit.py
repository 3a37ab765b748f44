"""Recording audited actions from any service: an ``AuditRecorded`` event for the
service's outbox, written in the same transaction as the action it records, so the
access service appends it to the hash-chained trail even if this process dies next."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from quorum.db import OutgoingEvent, enqueue
from quorum.messaging import outgoing
from quorum.security.principal import current_principal
from quorum.v1 import events_pb2


def audit_event(
    topic: str,
    service: str,
    action: str,
    resource: str,
    *,
    org_id: str = "",
    details: Mapping[str, Any] | None = None,
) -> OutgoingEvent:
    """The caller is the principal of the RPC being served, or the service itself when
    it acts on its own (a consumer, a background loop). ``details`` must hold no
    secrets or personal data: it is kept for good."""
    principal = current_principal()
    recorded = events_pb2.AuditRecorded(
        actor=principal.label if principal else f"service:{service}",
        actor_key_id=principal.key_id if principal else "",
        action=action,
        resource=resource,
        org_id=org_id,
        details_json=json.dumps(dict(details or {}), sort_keys=True, separators=(",", ":")),
    )
    return outgoing(topic, org_id or "-", events_pb2.Event(audit_recorded=recorded))


class AuditRecorder:
    """Records an audited action that writes nothing else (an export, say) through the
    service's outbox, in a transaction of its own."""

    def __init__(
        self, engine: Engine, outbox: sa.Table, topic: str, service: str, outbox_written: Callable[[], None]
    ) -> None:
        self._engine = engine
        self._outbox = outbox
        self._topic = topic
        self._service = service
        self._outbox_written = outbox_written

    def record(self, action: str, resource: str, *, org_id: str = "", details: Mapping[str, Any] | None = None) -> None:
        event = audit_event(self._topic, self._service, action, resource, org_id=org_id, details=details)
        with self._engine.begin() as conn:
            enqueue(conn, self._outbox, [event])
        self._outbox_written()
