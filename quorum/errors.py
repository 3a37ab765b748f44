"""Domain errors. Services raise these; the gRPC layer maps each to one status code.

Nothing here imports grpc, so domain code can raise them freely.
"""

from __future__ import annotations


class QuorumError(Exception):
    """Base class of the errors a caller can act on."""


class InvalidArgument(QuorumError):
    """A request field is malformed or out of range."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class NotFound(QuorumError):
    """An id names nothing this service knows."""

    def __init__(self, kind: str, ident: str) -> None:
        super().__init__(f"{kind} {ident!r} not found")
        self.kind = kind
        self.ident = ident


class FailedPrecondition(QuorumError):
    """The request is well formed but the state does not allow it (e.g. no live lease)."""


class Unauthenticated(QuorumError):
    """The call carries no credentials, or credentials nobody issued or that were revoked."""


class SecondFactorRequired(Unauthenticated):
    """The key is valid but has a second factor enrolled, and the call did not carry its code."""

    def __init__(self, message: str, factor: str = "totp") -> None:
        super().__init__(message)
        self.factor = factor


class PermissionDenied(QuorumError):
    """The caller may not do this."""


class Unavailable(QuorumError):
    """Something this call depends on cannot be reached now; the same call may succeed later."""


class ResourceExhausted(QuorumError):
    """Too much load or a quota is used up; retry after ``retry_after_ms``."""

    def __init__(self, message: str, retry_after_ms: int = 1000) -> None:
        super().__init__(message)
        self.retry_after_ms = retry_after_ms
