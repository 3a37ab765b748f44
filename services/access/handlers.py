"""Key management and sign-in. Every change to a key is written to the audit trail in
the same database."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import pyotp

from quorum.db import utcnow
from quorum.errors import InvalidArgument, ResourceExhausted, SecondFactorRequired, Unauthenticated
from quorum.security.keys import KeyRecord, KeyStore
from quorum.security.principal import Principal, Role

from .audit import AuditTrail

TOTP_ISSUER = "Quorum"
# Wrong codes allowed per key in a sliding window before sign-in is refused outright.
TOTP_MAX_FAILURES = 5
TOTP_LOCKOUT = dt.timedelta(minutes=5)


@dataclass(frozen=True)
class CreatedKey:
    record: KeyRecord
    secret: str
    totp_uri: str


class AccessHandlers:
    def __init__(self, keys: KeyStore, audit: AuditTrail) -> None:
        self._keys = keys
        self._audit = audit

    def create_key(
        self, actor: Principal, role: Role, org_id: str, subject: str, name: str, enroll_totp: bool
    ) -> CreatedKey:
        totp_secret = pyotp.random_base32() if enroll_totp else None
        record, secret = self._keys.create(
            role,
            org_id=org_id,
            subject=subject,
            name=name,
            created_by=actor.label,
            totp_secret=totp_secret,
            recorded=lambda conn, key: self._audit.record(
                actor,
                "key.created",
                f"key/{key.key_id}",
                org_id=key.org_id,
                details={"role": key.role.value, "subject": key.subject, "totp": enroll_totp},
                conn=conn,
            ),
        )
        uri = ""
        if totp_secret is not None:
            uri = pyotp.TOTP(totp_secret).provisioning_uri(name=record.subject, issuer_name=TOTP_ISSUER)
        return CreatedKey(record, secret, uri)

    def list_keys(self, org_id: str, include_revoked: bool) -> list[KeyRecord]:
        return self._keys.list(org_id=org_id or None, include_revoked=include_revoked)

    def revoke_key(self, actor: Principal, key_id: str) -> KeyRecord:
        return self._keys.revoke(
            key_id,
            recorded=lambda conn, key: self._audit.record(
                actor, "key.revoked", f"key/{key_id}", org_id=key.org_id, details={}, conn=conn
            ),
        )

    def set_role(self, actor: Principal, key_id: str, role: Role, org_id: str) -> KeyRecord:
        before = self._keys.get(key_id)
        return self._keys.set_role(
            key_id,
            role,
            org_id,
            recorded=lambda conn, key: self._audit.record(
                actor,
                "role.changed",
                f"key/{key_id}",
                org_id=key.org_id,
                details={"from": before.role.value, "to": key.role.value, "org_from": before.org_id},
                conn=conn,
            ),
        )

    def sign_in(self, caller: Principal, totp_code: str) -> tuple[KeyRecord, bool]:
        """The caller's key; when it has TOTP enrolled, the code must match (one step of
        clock drift either way is accepted)."""
        record = self._keys.get(caller.key_id)
        secret = self._keys.totp_secret(caller.key_id)
        if secret is None:
            return record, False
        if not totp_code:
            raise SecondFactorRequired("this key needs a TOTP code from its authenticator app")
        if not (totp_code.isdigit() and len(totp_code) == 6):
            raise InvalidArgument("totp_code", "six digits")
        # Three codes are valid at any moment; without this a key could guess through a
        # million codes at the rate limit in about half an hour.
        recent = self._audit.count_since("signin.failed", f"key/{caller.key_id}", utcnow() - TOTP_LOCKOUT)
        if recent >= TOTP_MAX_FAILURES:
            raise ResourceExhausted(
                f"{TOTP_MAX_FAILURES} wrong TOTP codes in {TOTP_LOCKOUT.seconds // 60} minutes: try again later",
                retry_after_ms=int(TOTP_LOCKOUT.total_seconds() * 1000),
            )
        if not pyotp.TOTP(secret).verify(totp_code, valid_window=1):
            self._audit.record(caller, "signin.failed", f"key/{caller.key_id}", org_id=caller.org_id, details={})
            raise Unauthenticated("wrong TOTP code")
        return record, True
