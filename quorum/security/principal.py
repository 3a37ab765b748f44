"""Who is calling: the principal an API key (or a session of it) stands for, and the call it is making."""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator
from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    # A client organisation: its own jobs, items, results and invoices.
    CLIENT = "client"
    # A remote worker: only tasks leased to it.
    WORKER = "worker"
    # An expert whose answer on a review task is final.
    REVIEWER = "reviewer"
    # Vendor staff: reads across organisations, manages workers, SLAs and payouts.
    OPERATOR = "operator"
    # Keys and roles, and everything an operator may do.
    ADMIN = "admin"


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. ``subject`` is the worker or reviewer id for those roles.
    ``session_id`` is set when the call carried a session token from a sign-in that
    checked the key's second factor, and empty when it carried the key itself."""

    key_id: str
    role: Role
    org_id: str
    subject: str
    session_id: str = ""
    totp_enrolled: bool = False

    @property
    def label(self) -> str:
        """How logs and the audit trail name the caller (never the secret)."""
        return f"{self.role.value}:{self.subject}@{self.org_id}" if self.org_id else f"{self.role.value}:{self.subject}"


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar("quorum_principal", default=None)


def current_principal() -> Principal | None:
    """The principal of the RPC this thread is serving; None outside an RPC (consumers, loops)."""
    return _current.get()


@contextlib.contextmanager
def acting_as(principal: Principal) -> Iterator[None]:
    token = _current.set(principal)
    try:
        yield
    finally:
        _current.reset(token)
