"""Key management and sign-in. Every change to a key is written to the audit trail in
the same database."""

from __future__ import annotations

import datetime as dt
import hmac
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, field

import pyotp

from quorum.db import utcnow
from quorum.errors import InvalidArgument, ResourceExhausted, SecondFactorRequired, Unauthenticated
from quorum.security.keys import CodeAlreadyUsed, KeyRecord, KeyStore, SessionRecord
from quorum.security.policy import second_factor_missing
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


@dataclass(frozen=True)
class SignedIn:
    record: KeyRecord
    totp_verified: bool
    # The session the sign-in started, or the one the call carried.
    session: SessionRecord | None = None
    # A new session's token, shown once; empty otherwise.
    session_token: str = field(default="", repr=False)


def totp_uri(secret: str, subject: str) -> str:
    """The otpauth:// URI an authenticator app takes the TOTP secret from."""
    return pyotp.TOTP(secret).provisioning_uri(name=subject, issuer_name=TOTP_ISSUER)


def matching_step(secret: str, code: str, now: float) -> int | None:
    """The TOTP time step whose code ``code`` is, among the step of ``now`` and one either
    way (clock drift), the latest first; None when it is none of them. Constant-time."""
    totp = pyotp.TOTP(secret)
    current = int(now // totp.interval)
    for step in (current + 1, current, current - 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            return step
    return None


class AccessHandlers:
    """``second_factor_roles``: the roles whose keys must sign in with a TOTP code
    (QUORUM_REQUIRE_MFA_ROLES); ``session_ttl``: how long a TOTP sign-in's session lasts
    (QUORUM_SESSION_TTL_S, whose default is the one the deployment gets)."""

    def __init__(
        self,
        keys: KeyStore,
        audit: AuditTrail,
        *,
        session_ttl: dt.timedelta,
        second_factor_roles: Collection[Role] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keys = keys
        self._audit = audit
        self._session_ttl = session_ttl
        self._second_factor_roles = frozenset(second_factor_roles)
        self._clock = clock

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
        uri = totp_uri(totp_secret, record.subject) if totp_secret is not None else ""
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

    def sign_in(self, caller: Principal, totp_code: str) -> SignedIn:
        """The caller's key; when it has TOTP enrolled, the code must match (one step of
        clock drift either way is accepted) and must not have signed in before, and a
        session starts. Called with a session, confirms it without a code. A key whose
        role must use a second factor and that has none enrolled is refused."""
        record = self._keys.get(caller.key_id)
        if caller.session_id:
            return SignedIn(record, totp_verified=True, session=self._keys.session(caller.session_id))
        secret = self._keys.totp_secret(caller.key_id)
        if secret is None:
            if record.role in self._second_factor_roles:
                raise second_factor_missing(record.principal())
            return SignedIn(record, totp_verified=False)
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
        step = matching_step(secret, totp_code, self._clock())
        if step is None:
            self._sign_in_failed(caller, "wrong code")
            raise Unauthenticated("wrong TOTP code")
        try:
            session, token = self._keys.start_session(
                caller.key_id,
                self._session_ttl,
                totp_step=step,
                recorded=lambda conn, key: self._audit.record(
                    caller, "session.started", f"key/{key.key_id}", org_id=key.org_id, details={}, conn=conn
                ),
            )
        except CodeAlreadyUsed:
            # Someone who saw the code (over a shoulder, from a log) is trying it again.
            self._sign_in_failed(caller, "code used already")
            raise
        return SignedIn(record, totp_verified=True, session=session, session_token=token)

    def _sign_in_failed(self, caller: Principal, reason: str) -> None:
        self._audit.record(
            caller, "signin.failed", f"key/{caller.key_id}", org_id=caller.org_id, details={"reason": reason}
        )

    def sign_out(self, caller: Principal) -> int:
        """Ends the caller's session, or every session of its key when it called with the
        key. Returns how many sessions were live."""
        every = not caller.session_id
        return self._keys.end_sessions(
            caller.key_id,
            None if every else caller.session_id,
            recorded=lambda conn, key: self._audit.record(
                caller, "session.ended", f"key/{key.key_id}", org_id=key.org_id, details={"every": every}, conn=conn
            ),
        )
