"""Signing in to the dashboard with an API key and, when required, a TOTP code.

:func:`sign_in` asks the access service who a key belongs to and decides whether
that is enough to see the dashboard. Nothing here imports Streamlit; the app keeps
the key in the session and never shows it. Messages in :class:`SignInRefused` never
contain the key.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Viewer:
    """Who is signed in: the key's public identity, never its secret."""

    key_id: str
    role: Role
    org_id: str
    subject: str
    totp_verified: bool

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
    require_totp: bool = False,
    timeout: float = DEFAULT_TIMEOUT_S,
) -> Viewer | CodeNeeded:
    """Signs ``api_key`` in through ``AccessService.SignIn``.

    Returns the :class:`Viewer`, or :class:`CodeNeeded` when the key has TOTP enrolled
    and no ``totp_code`` was given. With ``require_totp``, operator and admin keys
    must have TOTP enrolled, so their sign-in always takes a code. Raises
    :class:`SignInRefused` for a malformed, unknown or revoked key, a wrong code, a
    role the dashboard has nothing for, or an unreachable access service. One RPC.
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
    if require_totp and role in STAFF_ROLES and not key.totp_enrolled:
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
    )
