"""The local user's credentials file, ``<home>/credentials`` (mode 0600).

It holds the API key the embedded stack made for the local user on its first line, and
a line per session that ``quorum sign-in`` started::

    qk_<key id>_<secret>
    session <key id> <expiry, Unix seconds> qs_<session id>_<secret>

The CLI sends a stored session's token instead of its key while the session lasts
(:func:`client_credential`), so a key whose role must sign in with a second factor
works from the command line after one ``quorum sign-in``. A file of the older format
(the key alone) reads the same. Writers take a lock and replace the file whole, so
processes never see half of it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from quorum.settings import Settings

_SESSION = "session"


@dataclass(frozen=True)
class StoredSession:
    """A session token of ``key_id`` and when the access service stops accepting it."""

    key_id: str
    token: str = field(repr=False)
    expires_at: dt.datetime

    def expired(self, now: dt.datetime | None = None) -> bool:
        return (now or dt.datetime.now(dt.UTC)) >= self.expires_at

    def line(self) -> str:
        return f"{_SESSION} {self.key_id} {int(self.expires_at.timestamp())} {self.token}"


@dataclass(frozen=True)
class ClientCredential:
    """What a client of this process sends: the session token while one of its key's
    sessions lasts, else the key. ``expired`` is the key's stored session that is over."""

    token: str = field(repr=False)
    key_id: str
    session: StoredSession | None = None
    expired: StoredSession | None = None


def credentials_path(home: Path) -> Path:
    return home / "credentials"


def _parse(text: str) -> tuple[str | None, list[StoredSession]]:
    key: str | None = None
    sessions: list[StoredSession] = []
    for line in text.splitlines():
        words = line.split()
        if not words:
            continue
        if words[0] != _SESSION:
            key = key or words[0]
            continue
        # A line this version cannot read is skipped: the key still works without it.
        if len(words) == 4 and words[2].isdigit():
            expires_at = dt.datetime.fromtimestamp(int(words[2]), dt.UTC)
            sessions.append(StoredSession(key_id=words[1], token=words[3], expires_at=expires_at))
    return key, sessions


def read_credentials(home: Path) -> tuple[str | None, list[StoredSession]]:
    """The local key (None without one) and the stored sessions."""
    try:
        return _parse(credentials_path(home).read_text())
    except FileNotFoundError:
        return None, []


def read_local_key(home: Path) -> str | None:
    """The local user's key that the embedded stack stored, if any."""
    return read_credentials(home)[0]


def stored_session(home: Path, key_id: str) -> StoredSession | None:
    """The session ``quorum sign-in`` stored for ``key_id``, expired or not."""
    return next((s for s in read_credentials(home)[1] if s.key_id == key_id), None)


@contextlib.contextmanager
def locked(home: Path) -> Iterator[None]:
    """Holds the lock that every writer of the credentials file takes."""
    import fcntl

    home.mkdir(parents=True, exist_ok=True)
    with open(home / ".credentials.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def write_credentials(home: Path, key: str | None, sessions: list[StoredSession]) -> None:
    """Replaces the file with ``key`` and ``sessions``, mode 0600. Call under :func:`locked`."""
    path = credentials_path(home)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.writelines(f"{line}\n" for line in ([key] if key else []) + [s.line() for s in sessions])
    os.replace(tmp, path)


def store_session(home: Path, session: StoredSession) -> None:
    """Keeps ``session`` in place of any other session of its key."""
    with locked(home):
        key, sessions = read_credentials(home)
        write_credentials(home, key, [s for s in sessions if s.key_id != session.key_id] + [session])


def forget_session(home: Path, key_id: str) -> StoredSession | None:
    """Removes the stored session of ``key_id``; returns it, if there was one."""
    with locked(home):
        key, sessions = read_credentials(home)
        kept = [s for s in sessions if s.key_id != key_id]
        if len(kept) == len(sessions):
            return None
        write_credentials(home, key, kept)
    return next(s for s in sessions if s.key_id == key_id)


def client_credential(settings: Settings) -> ClientCredential | None:
    """The credential clients of this process send (None without a key): the key from
    QUORUM_API_KEY or the credentials file, or, while it lasts, the session that ``quorum
    sign-in`` stored for that key. A key that is not well formed is sent as it is, for the
    service to refuse."""
    from quorum.errors import Unauthenticated
    from quorum.security.keys import parse_key

    key = settings.client_api_key()
    if key is None:
        return None
    try:
        key_id, _ = parse_key(key)
    except Unauthenticated:
        return ClientCredential(token=key, key_id="")
    session = stored_session(settings.home, key_id)
    if session is None:
        return ClientCredential(token=key, key_id=key_id)
    if session.expired():
        return ClientCredential(token=key, key_id=key_id, expired=session)
    return ClientCredential(token=session.token, key_id=key_id, session=session)
