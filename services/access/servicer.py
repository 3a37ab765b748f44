"""AccessService over gRPC: request -> handler -> response. The policy table decides
who may call what before a request gets here."""

from __future__ import annotations

import datetime as dt
from typing import Any

from google.protobuf.timestamp_pb2 import Timestamp

from quorum.errors import InvalidArgument, Unauthenticated
from quorum.security.keys import KeyRecord
from quorum.security.principal import Principal, Role, current_principal
from quorum.v1 import access_pb2, access_pb2_grpc

from .audit import AuditTrail, StoredEntry
from .handlers import AccessHandlers

SERVICE_NAME: str = access_pb2.DESCRIPTOR.services_by_name["AccessService"].full_name

ROLE_FROM_PROTO: dict[access_pb2.Role, Role] = {
    access_pb2.ROLE_CLIENT: Role.CLIENT,
    access_pb2.ROLE_WORKER: Role.WORKER,
    access_pb2.ROLE_REVIEWER: Role.REVIEWER,
    access_pb2.ROLE_OPERATOR: Role.OPERATOR,
    access_pb2.ROLE_ADMIN: Role.ADMIN,
}
ROLE_TO_PROTO: dict[Role, access_pb2.Role] = {role: number for number, role in ROLE_FROM_PROTO.items()}


def _timestamp(moment: dt.datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(moment)
    return ts


def key_to_proto(record: KeyRecord) -> access_pb2.ApiKey:
    key = access_pb2.ApiKey(
        key_id=record.key_id,
        role=ROLE_TO_PROTO[record.role],
        org_id=record.org_id,
        subject=record.subject,
        name=record.name,
        created_by=record.created_by,
        created_at=_timestamp(record.created_at),
        totp_enrolled=record.totp_enrolled,
    )
    if record.revoked_at is not None:
        key.revoked_at.CopyFrom(_timestamp(record.revoked_at))
    return key


def _entry_to_proto(stored: StoredEntry) -> access_pb2.AuditEvent:
    e = stored.entry
    return access_pb2.AuditEvent(
        seq=stored.seq,
        at=_timestamp(e.at),
        actor=e.actor,
        actor_key_id=e.actor_key_id,
        action=e.action,
        resource=e.resource,
        org_id=e.org_id,
        details_json=e.details_json,
        prev_hash=stored.prev_hash,
        hash=stored.hash,
        event_id=e.event_id,
    )


def _role(value: access_pb2.Role) -> Role:
    try:
        return ROLE_FROM_PROTO[value]
    except KeyError:
        raise InvalidArgument(
            "role", "one of ROLE_CLIENT, ROLE_WORKER, ROLE_REVIEWER, ROLE_OPERATOR, ROLE_ADMIN"
        ) from None


def _caller() -> Principal:
    principal = current_principal()
    if principal is None:  # only reachable if the service were started without its interceptor
        raise Unauthenticated("no authenticated caller")
    return principal


def _moment(field: str, stamp: Timestamp) -> dt.datetime:
    try:
        return stamp.ToDatetime(dt.UTC)
    except (ValueError, OverflowError) as exc:
        raise InvalidArgument(field, "is not a valid timestamp") from exc


def _page_token(token: str) -> int:
    if not token:
        return 0
    if not token.isdigit():
        raise InvalidArgument("page_token", "not a token this service issued")
    return int(token)


class AccessServicer(access_pb2_grpc.AccessServiceServicer):
    def __init__(self, handlers: AccessHandlers, audit: AuditTrail) -> None:
        self._handlers = handlers
        self._audit = audit

    def CreateKey(self, request: access_pb2.CreateKeyRequest, context: Any) -> access_pb2.CreatedKey:
        created = self._handlers.create_key(
            _caller(), _role(request.role), request.org_id, request.subject, request.name, request.enroll_totp
        )
        return access_pb2.CreatedKey(key=key_to_proto(created.record), secret=created.secret, totp_uri=created.totp_uri)

    def ListKeys(self, request: access_pb2.ListKeysRequest, context: Any) -> access_pb2.ListKeysResponse:
        records = self._handlers.list_keys(request.org_id, request.include_revoked)
        return access_pb2.ListKeysResponse(keys=[key_to_proto(r) for r in records])

    def RevokeKey(self, request: access_pb2.RevokeKeyRequest, context: Any) -> access_pb2.ApiKey:
        if not request.key_id:
            raise InvalidArgument("key_id", "required")
        return key_to_proto(self._handlers.revoke_key(_caller(), request.key_id))

    def SetRole(self, request: access_pb2.SetRoleRequest, context: Any) -> access_pb2.ApiKey:
        if not request.key_id:
            raise InvalidArgument("key_id", "required")
        record = self._handlers.set_role(_caller(), request.key_id, _role(request.role), request.org_id)
        return key_to_proto(record)

    def SignIn(self, request: access_pb2.SignInRequest, context: Any) -> access_pb2.SignInResponse:
        signed_in = self._handlers.sign_in(_caller(), request.totp_code)
        reply = access_pb2.SignInResponse(
            key=key_to_proto(signed_in.record),
            totp_verified=signed_in.totp_verified,
            session_token=signed_in.session_token,
        )
        if signed_in.session is not None:
            reply.session_expires_at.CopyFrom(_timestamp(signed_in.session.expires_at))
        return reply

    def SignOut(self, request: access_pb2.SignOutRequest, context: Any) -> access_pb2.SignOutResponse:
        return access_pb2.SignOutResponse(sessions_ended=self._handlers.sign_out(_caller()))

    def ListAuditEvents(
        self, request: access_pb2.ListAuditEventsRequest, context: Any
    ) -> access_pb2.ListAuditEventsResponse:
        page_size = request.page_size or 100
        rows = self._audit.list(
            org_id=request.org_id,
            action=request.action,
            resource=request.resource,
            before_seq=_page_token(request.page_token),
            limit=page_size,
            since=_moment("since", request.since) if request.HasField("since") else None,
            until=_moment("until", request.until) if request.HasField("until") else None,
        )
        next_token = str(rows[-1].seq) if len(rows) == page_size and rows[-1].seq > 1 else ""
        return access_pb2.ListAuditEventsResponse(events=[_entry_to_proto(r) for r in rows], next_page_token=next_token)

    def VerifyAuditLog(self, request: access_pb2.VerifyAuditLogRequest, context: Any) -> access_pb2.AuditVerification:
        result = self._audit.verify()
        return access_pb2.AuditVerification(
            ok=result.ok,
            entries=result.entries,
            first_bad_seq=result.first_bad_seq,
            problem=result.problem,
            head_hash=result.head_hash,
        )
