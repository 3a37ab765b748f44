"""A bounded memo of who owns what, behind each service's ``owner_of``, and the
question to ingest when a service has not heard of a job yet.

An owner, once written, never changes (a job keeps its organisation, a session its
worker), so an answer can be kept for the life of the process. A miss is never
kept: the row may be written a moment later.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

import grpc

from quorum import errors
from quorum.rpc import channel
from quorum.tls import ClientTls
from quorum.v1 import ingest_pb2, ingest_pb2_grpc

log = logging.getLogger(__name__)

# Longest id any service stores; a longer one names nothing and costs no query.
MAX_IDENT_CHARS = 200


class OwnerCache:
    """Owners by (kind, id), the least recently used dropped beyond ``max_entries``.
    Thread-safe; a hit costs a dictionary lookup under a lock."""

    def __init__(self, max_entries: int = 100_000) -> None:
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1 (got {max_entries})")
        self._max_entries = max_entries
        self._owners: OrderedDict[tuple[str, str], str] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._owners)

    def lookup(self, kind: str, ident: str, load: Callable[[], str | None]) -> str | None:
        """The cached owner, else ``load()``'s answer, kept unless None or empty (an empty
        owner is a row that predates owners, or one whose owner is not known yet)."""
        if not ident or len(ident) > MAX_IDENT_CHARS:
            return None
        key = (kind, ident)
        with self._lock:
            owner = self._owners.get(key)
            if owner is not None:
                self._owners.move_to_end(key)
                return owner
        owner = load()
        if not owner:
            return None
        with self._lock:
            self._owners[key] = owner
            self._owners.move_to_end(key)
            while len(self._owners) > self._max_entries:
                self._owners.popitem(last=False)
        return owner


# What ingest answers for a job the caller may not see, or that does not exist.
_NOT_THE_CALLERS = frozenset(
    {grpc.StatusCode.NOT_FOUND, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.PERMISSION_DENIED}
)


class IngestJobOwners:
    """Who owns a job, asked of ingest, which knows a job the moment it is created; the
    other services hear of it one Kafka hop later (or, for rows older than owners, not
    at all). A :class:`quorum.security.policy.RemoteOwnerLookup` for "job".

    The question goes out with the caller's own credentials, so ingest applies its
    policy to the caller: a job of another organisation is NOT_FOUND there as here, and
    nothing is learnt that the caller could not read itself. Ingest unreachable, slow
    (beyond ``timeout_s``) or failing otherwise raises quorum.errors.Unavailable: the
    caller is told to retry rather than that its new job does not exist, and a warning is
    logged at most once a minute. Answers are cached like local ones.
    Costs one GetJob call per job not yet known, then nothing."""

    def __init__(self, address: str, tls: ClientTls | None, timeout_s: float = 2.0) -> None:
        self._channel = channel(address, tls=tls)
        self._stub = ingest_pb2_grpc.IngestServiceStub(self._channel)
        self._timeout_s = timeout_s
        self._owners = OwnerCache(max_entries=10_000)
        self._warned_at = 0.0

    def __call__(self, kind: str, ident: str, credentials: str) -> str | None:
        if kind != "job":
            return None

        def load() -> str | None:
            request = ingest_pb2.GetJobRequest(job_id=ident)
            metadata = (("authorization", f"Bearer {credentials}"),)
            try:
                job = self._stub.GetJob(request, metadata=metadata, timeout=self._timeout_s)
            except grpc.RpcError as error:
                code = error.code()
                if code in _NOT_THE_CALLERS:
                    return None
                self._warn(code)
                raise errors.Unavailable(f"cannot tell who owns job {ident!r} now; retry") from None
            return str(job.spec.client_id)

        return self._owners.lookup(kind, ident, load)

    def _warn(self, code: grpc.StatusCode) -> None:
        now = time.monotonic()
        if now - self._warned_at >= 60.0:
            self._warned_at = now
            log.warning("cannot ask ingest who owns a job (%s); such jobs are UNAVAILABLE to clients meanwhile", code)

    def close(self) -> None:
        self._channel.close()
