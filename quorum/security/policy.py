"""Who may call what, in one table per service, enforced by one interceptor.

Each RPC of a service has a :data:`Rule`: the roles allowed to call it, and for each
role the scopes that tie the request to the caller. A client's requests are scoped
to its organisation (a resource of another organisation is NOT_FOUND, exactly as
if it did not exist, so ids cannot be probed); a worker's or reviewer's requests to
itself. Operators and admins act across organisations. An RPC with no rule is
refused, so a new RPC cannot ship open by accident.

Scopes fail closed: a resource whose owner the service cannot tell (it has not heard
of it yet, or its row predates owners) is NOT_FOUND to a scoped caller. A service
that hears of jobs one Kafka hop after ingest asks ingest on a miss
(:class:`RemoteOwnerLookup`), so a client reading its new job at once is answered.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import grpc
from google.protobuf.message import Message

from quorum import errors
from quorum.security.keys import Authenticator
from quorum.security.principal import Principal, Role, acting_as


class OwnerLookup(Protocol):
    """A service's answer to "who owns this?": the organisation of a job or task, the
    worker of a session. None when the service knows no such resource."""

    def __call__(self, kind: str, ident: str) -> str | None: ...


class RemoteOwnerLookup(Protocol):
    """Asked when the service's own :class:`OwnerLookup` has no answer: who owns
    ``ident``, found out elsewhere with the caller's own ``credentials`` (so the other
    service applies its policy to the caller, and reveals nothing the caller may not
    see). None when that is not known there either; raises quorum.errors.Unavailable
    when it cannot be asked now."""

    def __call__(self, kind: str, ident: str, credentials: str) -> str | None: ...


def no_owner(kind: str, ident: str) -> str | None:
    """For services that own nothing a scope asks about."""
    return None


def _get(message: Message, path: str) -> Any:
    value: Any = message
    for name in path.split("."):
        value = getattr(value, name)
    return value


def _set(message: Message, path: str, value: str) -> None:
    *parents, leaf = path.split(".")
    target: Any = message
    for name in parents:
        target = getattr(target, name)
    setattr(target, leaf, value)


class Scope(Protocol):
    def apply(self, request: Message, principal: Principal, owner_of: OwnerLookup) -> None:
        """Raises a domain error when ``request`` reaches beyond ``principal``; may fill
        in a field the caller left empty."""


@dataclass(frozen=True)
class OwnOrg:
    """The field names an organisation: the caller's own. Empty means the caller's."""

    path: str

    def apply(self, request: Message, principal: Principal, owner_of: OwnerLookup) -> None:
        value = _get(request, self.path)
        if not value:
            _set(request, self.path, principal.org_id)
        elif value != principal.org_id:
            raise errors.NotFound("organisation", value)


@dataclass(frozen=True)
class Owned:
    """The field holds the id of a ``kind`` (job, task) that must belong to the caller's
    organisation. A foreign one is reported exactly like a missing one, and so is one
    whose owner is unknown or blank: a row from before owners were kept, or a job this
    service has not heard of yet, is not the caller's until shown to be. With
    ``required=False`` an empty field passes (the later messages of an upload stream)."""

    kind: str
    path: str
    required: bool = True
    # What the service calls a missing one in its NOT_FOUND ("result of task"), so the
    # two answers read the same; defaults to ``kind``.
    missing_as: str = ""

    def apply(self, request: Message, principal: Principal, owner_of: OwnerLookup) -> None:
        ident = _get(request, self.path)
        if not ident:
            if not self.required:
                return
            raise errors.InvalidArgument(self.path, f"required: name one {self.kind} of your organisation")
        owner = owner_of(self.kind, ident)
        if not owner or owner != principal.org_id:
            raise errors.NotFound(self.missing_as or self.kind, ident)


@dataclass(frozen=True)
class Self:
    """The field names a worker or reviewer: the caller itself. Empty means the caller."""

    path: str

    def apply(self, request: Message, principal: Principal, owner_of: OwnerLookup) -> None:
        value = _get(request, self.path)
        if not value:
            _set(request, self.path, principal.subject)
        elif value != principal.subject:
            raise errors.PermissionDenied(
                f"{self.path}: a {principal.role.value} key acts only as {principal.subject!r}"
            )


@dataclass(frozen=True)
class OwnSession:
    """The field holds a session id opened by the calling worker."""

    path: str

    def apply(self, request: Message, principal: Principal, owner_of: OwnerLookup) -> None:
        ident = _get(request, self.path)
        owner = owner_of("session", ident) if ident else None
        if owner is not None and owner != principal.subject:
            raise errors.NotFound("session", ident)


# Role -> the scopes applied to that role's requests; a role not listed is refused.
Rule = Mapping[Role, Sequence[Scope]]

ACROSS_ORGS: Sequence[Scope] = ()
STAFF: Rule = {Role.OPERATOR: ACROSS_ORGS, Role.ADMIN: ACROSS_ORGS}


def rule(*rules: Rule) -> Rule:
    """Merges partial rules, e.g. ``rule(STAFF, {Role.CLIENT: [Owned("job", "job_id")]})``."""
    merged: dict[Role, Sequence[Scope]] = {}
    for part in rules:
        merged.update(part)
    return merged


@dataclass(frozen=True)
class ServicePolicy:
    """The rules of one gRPC service, by method name."""

    service: str
    rules: Mapping[str, Rule]
    # Methods an API key may call by itself even when its role must use a session from a
    # sign-in with a second factor: signing in and out.
    open_before_sign_in: frozenset[str] = frozenset()

    def rule_for(self, method: str) -> Rule | None:
        return self.rules.get(method)


def _bearer(metadata: Sequence[tuple[str, str | bytes]] | None) -> str:
    for name, value in metadata or ():
        if name == "authorization":
            text = value.decode() if isinstance(value, bytes) else value
            scheme, _, token = text.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise errors.Unauthenticated("the authorization metadata must read 'Bearer <API key>'")
            return token.strip()
    raise errors.Unauthenticated("no credentials: send 'authorization: Bearer <API key>' metadata")


class RateLimiter(Protocol):
    def check(self, principal: Principal) -> None:
        """Raises ResourceExhausted with a retry hint when the principal is over its limit."""


def second_factor_missing(principal: Principal) -> errors.Unauthenticated:
    """The refusal of an API key whose role must sign in with a second factor: with TOTP
    enrolled, it asks for the sign-in (the client may then ask for the code); without, it
    says that no code can help until an admin issues a key with TOTP."""
    role = principal.role.value
    if principal.totp_enrolled:
        return errors.SecondFactorRequired(
            f"{role} keys must sign in with their TOTP code first (`quorum sign-in`, or the dashboard) "
            "and send the session token instead of the key"
        )
    return errors.Unauthenticated(
        f"{role} keys must sign in with a TOTP code, and this key has no TOTP enrolled: "
        f"ask an admin for a key made with `quorum keys create --role {role} --totp`"
    )


class AuthInterceptor(grpc.ServerInterceptor):
    """Authenticates every call to the service's own methods, checks the policy table,
    applies the caller's scopes to the request and makes the principal available to
    handlers (:func:`quorum.security.principal.current_principal`). Health checks and
    reflection stay open. Install it inside :class:`quorum.rpc.DomainErrorInterceptor`.

    An API key of a role in ``second_factor_roles`` is refused (UNAUTHENTICATED, see
    :func:`second_factor_missing`) except on its policy's ``open_before_sign_in`` methods:
    those roles call with the session token of a TOTP sign-in instead."""

    def __init__(
        self,
        policies: Sequence[ServicePolicy],
        authenticator: Authenticator,
        owner_of: OwnerLookup,
        limiter: RateLimiter | None = None,
        second_factor_roles: Collection[Role] = (),
        remote_owner_of: RemoteOwnerLookup | None = None,
    ) -> None:
        self._policies = {policy.service: policy for policy in policies}
        self._authenticator = authenticator
        self._owner_of = owner_of
        self._limiter = limiter
        self._second_factor_roles = frozenset(second_factor_roles)
        self._remote_owner_of = remote_owner_of

    def _owners_for(self, credentials: str) -> OwnerLookup:
        """The service's own owner lookup, asking ``remote_owner_of`` with the caller's
        credentials where it has no answer."""
        remote = self._remote_owner_of
        if remote is None:
            return self._owner_of

        def lookup(kind: str, ident: str) -> str | None:
            return self._owner_of(kind, ident) or remote(kind, ident, credentials)

        return lookup

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = continuation(handler_call_details)
        full = str(handler_call_details.method)
        if handler is None or full.startswith("/grpc."):
            return handler
        service, _, method = full.lstrip("/").rpartition("/")
        policy = self._policies.get(service)
        method_rule = policy.rule_for(method) if policy else None
        metadata = handler_call_details.invocation_metadata

        key_alone_allowed = policy is not None and method in policy.open_before_sign_in

        def admit() -> tuple[Principal, Sequence[Scope], OwnerLookup]:
            credentials = _bearer(metadata)
            principal = self._authenticator.authenticate(credentials)
            if principal.role in self._second_factor_roles and not principal.session_id and not key_alone_allowed:
                raise second_factor_missing(principal)
            if method_rule is None:
                raise errors.PermissionDenied(f"{full} has no access policy")
            scopes = method_rule.get(principal.role)
            if scopes is None:
                allowed = ", ".join(sorted(role.value for role in method_rule))
                raise errors.PermissionDenied(f"{method} is open to {allowed}, not to {principal.role.value} keys")
            if self._limiter is not None:
                self._limiter.check(principal)
            return principal, scopes, self._owners_for(credentials)

        def scoped(request: Message, principal: Principal, scopes: Sequence[Scope], owners: OwnerLookup) -> Message:
            for scope in scopes:
                scope.apply(request, principal, owners)
            return request

        if handler.unary_unary or handler.unary_stream:
            inner = handler.unary_unary or handler.unary_stream

            def unary(request: Message, context: grpc.ServicerContext) -> Any:
                principal, scopes, owners = admit()
                with acting_as(principal):
                    return inner(scoped(request, principal, scopes, owners), context)

            def unary_streaming(request: Message, context: grpc.ServicerContext) -> Iterator[Any]:
                principal, scopes, owners = admit()
                with acting_as(principal):
                    yield from inner(scoped(request, principal, scopes, owners), context)

            if handler.unary_unary:
                return handler._replace(unary_unary=unary)
            return handler._replace(unary_stream=unary_streaming)

        if handler.stream_unary:
            inner_stream = handler.stream_unary

            def client_streaming(requests: Iterator[Message], context: grpc.ServicerContext) -> Any:
                principal, scopes, owners = admit()
                # Every message is scoped: a stream may not switch to another organisation's job.
                checked = (scoped(request, principal, scopes, owners) for request in requests)
                with acting_as(principal):
                    return inner_stream(checked, context)

            return handler._replace(stream_unary=client_streaming)
        return handler
