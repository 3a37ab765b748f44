"""A bounded memo of who owns what, behind each service's ``owner_of``.

An owner, once written, never changes (a job keeps its organisation, a session its
worker), so an answer can be kept for the life of the process. A miss is never
kept: the row may be written a moment later.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable

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
