"""Signing in to the dashboard with an API key and, when required, a TOTP code.

:func:`sign_in` asks the access service who a key belongs to and decides whether
that is enough to see the dashboard. A sign-in with a TOTP code starts a session in
the access service, and the dashboard reads with its token rather than the key, as
the services require of the roles in QUORUM_REQUIRE_MFA_ROLES. Nothing here imports
Streamlit; the app keeps the credential in the session and never shows it. Messages
in :class:`SignInRefused` never contain the key.
"""

from __future__ import annotations

import functools
from collections.abc import Collection
from dataclasses import dataclass, field

import grpc

from quorum.errors import Unauthenticated
from quorum.rpc import channel, second_factor_required
from quorum.security.keys import parse_key
from quorum.security.principal import Role
from quorum.settings import Settings
from quorum.tls import ClientTls, client_tls
from quorum.v1 import access_pb2, access_pb2_grpc


@functools.cache
def transport() -> ClientTls | None:
    """How the dashboard reaches the services (QUORUM_TLS_*), read once per process."""
    return client_tls(Settings())


DEFAULT_TIMEOUT_S = 5.0
# Workers and reviewers have their own tools; nothing on the dashboard is open to them.
DASHBOARD_ROLES = frozenset({Role.CLIENT, Role.OPERATOR, Role.ADMIN})
STAFF_ROLES = frozenset({Role.OPERATOR, Role.ADMIN})
CREATE_TOTP_KEY_HINT = "quorum keys create --role operator --totp"

_ROLES = {
    access_pb2.ROLE_CLIENT: Role.CLIENT,
    access_pb2.ROLE_WORKER: Role.WORKER,
    access_pb2.ROLE_REVIEWER: Role.REVIEWER,
    access_pb2.ROLE_OPERATOR: Role.OPERATOR,
    access_pb2.ROLE_ADMIN: Role.ADMIN,
}
_UNREACHABLE = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED}


class SignInRefused(Exception):
    """The key (or its code) does not open the dashboard; the message says why and is safe to show."""


def totp_roles(settings: Settings) -> frozenset[Role]:
    """The roles whose keys must give a TOTP code to open the dashboard: those every
    service requires it of (QUORUM_REQUIRE_MFA_ROLES), and operators and admins with
    QUORUM_DASHBOARD_REQUIRE_TOTP, which asks for it on the dashboard alone."""
    return settings.require_mfa_roles | (STAFF_ROLES if settings.dashboard_require_totp else frozenset())


@dataclass(frozen=True)
class Viewer:
    """Who is signed in: the key's public identity, and the token of the session a TOTP
    sign-in started (empty otherwise), which the dashboard reads with instead of the key.
    Neither secret is in the repr."""

    key_id: str
    role: Role
    org_id: str
    subject: str
    totp_verified: bool
    session_token: str = field(default="", repr=False)

    @property
    def staff(self) -> bool:
        """Operators and admins read across organisations; everyone else sees their own."""
        return self.role in STAFF_ROLES

    def describe(self) -> str:
        """E.g. ``"client of acme (client-3f2a)"`` or ``"operator (ops-ann)"``."""
        who = f"{self.role.value} of {self.org_id}" if self.org_id else self.role.value
        return f"{who} ({self.subject})" if self.subject else who


@dataclass(frozen=True)
class CodeNeeded:
    """The key is valid and has TOTP enrolled: sign in again with its current code."""


def _code_problem(code: str) -> str | None:
    if len(code) != 6 or not code.isdigit():
        return "Enter the 6-digit code your authenticator app shows for this key."
    return None


def _refusal(error: grpc.RpcError, access_addr: str, code_given: bool) -> SignInRefused:
    status = error.code() if isinstance(error, grpc.Call) else grpc.StatusCode.UNKNOWN
    detail = (error.details() if isinstance(error, grpc.Call) else "") or status.name
    if status in _UNREACHABLE:
        return SignInRefused(
            f"The access service at {access_addr} is unreachable ({status.name}); sign in again once it is up."
        )
    if status == grpc.StatusCode.UNAUTHENTICATED:
        hint = "Enter the current code from your authenticator app." if code_given else "Check the key."
        return SignInRefused(f"Sign-in refused: {detail}. {hint}")
    return SignInRefused(f"Sign-in failed ({status.name}): {detail}")


def sign_in(
    access_addr: str,
    api_key: str,
    totp_code: str = "",
    *,
    totp_roles: Collection[Role] = (),
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Viewer | CodeNeeded:
    """Signs ``api_key`` in through ``AccessService.SignIn``.

    Returns the :class:`Viewer`, or :class:`CodeNeeded` when the key has TOTP enrolled
    and no ``totp_code`` was given. Keys of ``totp_roles`` (see :func:`totp_roles`)
    must have TOTP enrolled, so their sign-in always takes a code. Raises
    :class:`SignInRefused` for a malformed, unknown or revoked key, a wrong or reused
    code, a role the dashboard has nothing for, or an unreachable access service. One RPC.
    """
    api_key = api_key.strip()
    totp_code = totp_code.strip()
    if not api_key:
        raise SignInRefused("Enter an API key.")
    try:
        # Metadata must be printable ASCII; anything else cannot be a key we issued.
        if not (api_key.isascii() and api_key.isprintable()):
            raise Unauthenticated("malformed API key: expected 'qk_<id>_<secret>'")
        parse_key(api_key)
    except Unauthenticated as exc:
        raise SignInRefused(f"Sign-in refused: {exc}.") from None
    if totp_code and (problem := _code_problem(totp_code)):
        raise SignInRefused(problem)
    try:
        with channel(access_addr, api_key=api_key, tls=transport()) as ch:
            reply = access_pb2_grpc.AccessServiceStub(ch).SignIn(
                access_pb2.SignInRequest(totp_code=totp_code), timeout=timeout
            )
    except grpc.RpcError as error:
        if not totp_code and second_factor_required(error) == "totp":
            return CodeNeeded()
        raise _refusal(error, access_addr, bool(totp_code)) from None

    key = reply.key
    role = _ROLES.get(key.role)
    if role is None or role not in DASHBOARD_ROLES:
        shown = role.value if role else "unknown"
        raise SignInRefused(f"A {shown} key cannot open the dashboard: sign in with a client, operator or admin key.")
    if role in totp_roles and not key.totp_enrolled:
        raise SignInRefused(
            f"This dashboard requires {role.value} keys to use a second factor, and this key has no TOTP "
            f"enrolled. Ask an admin for a key with TOTP: `{CREATE_TOTP_KEY_HINT}`."
        )
    return Viewer(
        key_id=key.key_id,
        role=role,
        org_id=key.org_id,
        subject=key.subject,
        totp_verified=reply.totp_verified,
        session_token=reply.session_token,
    )


def sign_out(access_addr: str, session_token: str, *, timeout: float = DEFAULT_TIMEOUT_S) -> None:
    """Ends the session in the access service, so its token is refused everywhere even if
    it was copied. Best effort: a session the service no longer accepts, or a service out
    of reach, leaves nothing to do here (the session still expires)."""
    try:
        with channel(access_addr, api_key=session_token, tls=transport()) as ch:
            access_pb2_grpc.AccessServiceStub(ch).SignOut(access_pb2.SignOutRequest(), timeout=timeout)
    except grpc.RpcError:
        pass
