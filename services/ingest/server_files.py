"""The files on the ingest server's machine that a manifest may name.

Reading a file the service can read and turning it into a task that any worker may lease
is as good as handing the file out, so only the folders a deployment names
(``QUORUM_IMPORT_ROOTS``) are open, never the service's own files (its home, databases and
TLS keys), and never the kernel's pseudo-files (``/proc``, ``/sys``, ``/dev``: the
service's environment, which may hold QUORUM_MASTER_KEY, is ``/proc/self/environ``). A path
is judged by what it really names: ``..`` and symbolic links are resolved before it is
compared with the roots, and the file opened is the resolved one, walked one component at
a time without following any link, so a link put anywhere on the path since is refused.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from quorum.errors import PermissionDenied
from services.ingest import domain

ROOTS_SETTING = "QUORUM_IMPORT_ROOTS"
# Closed whatever the roots: their files are the kernel's view of this machine and process.
SYSTEM_FOLDERS = (Path("/proc"), Path("/sys"), Path("/dev"))
# Opens a folder on the way to a file without following a link (nor needing read permission).
_FOLDER_FLAGS = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK so that a FIFO is refused after the open instead of blocking it.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


def open_without_links(real: Path) -> int:
    """Opens the file at the resolved, absolute path ``real`` for reading, one component at
    a time from ``/`` and following no symbolic link on the way: O_NOFOLLOW alone guards
    the last component only, and a folder above it swapped for a link since the path was
    resolved would lead anywhere. Raises OSError (ELOOP or ENOTDIR for a link); costs one
    open per component."""
    if not real.parts[1:]:
        return os.open("/", _FILE_FLAGS)
    folder = os.open("/", _FOLDER_FLAGS)
    try:
        *parents, name = real.parts[1:]
        for part in parents:
            inner = os.open(part, _FOLDER_FLAGS, dir_fd=folder)
            os.close(folder)
            folder = inner
        return os.open(name, _FILE_FLAGS, dir_fd=folder)
    finally:
        os.close(folder)


@dataclass(frozen=True)
class ServerFiles:
    """Reads manifest ``path`` lines under ``roots`` only, never under ``closed`` (the
    service's own files, Settings.closed_paths) nor SYSTEM_FOLDERS.

    Both are resolved once, here; a root that does not exist yet opens nothing until it
    does, as the paths under it resolve to themselves.
    """

    roots: tuple[Path, ...] = ()
    closed: tuple[Path, ...] = ()

    @classmethod
    def under(cls, roots: Iterable[Path], closed: Iterable[Path] = ()) -> ServerFiles:
        return cls(tuple(_real(root) for root in roots), tuple(_real(path) for path in closed))

    def locate(self, path: str, base_dir: str) -> Path | domain.Rejection:
        """The file ``path`` names (relative to ``base_dir`` unless absolute), as given, or why
        it names nothing readable: a relative path without ``base_dir``. Raises
        PermissionDenied naming the rule when the path resolves outside every root, into
        the service's own files or into /proc, /sys or /dev. Touches the file system only to
        resolve links."""
        judged = self._judge(path, base_dir)
        return judged if isinstance(judged, domain.Rejection) else judged[0]

    def _judge(self, path: str, base_dir: str) -> tuple[Path, Path] | domain.Rejection:
        """:meth:`locate`'s answer with the resolved path beside the one given."""
        named = Path(path)
        if not named.is_absolute():
            if not base_dir:
                return domain.Rejection(f"relative path {path!r} needs a base_dir")
            named = Path(base_dir) / named
        if not self.roots:
            raise PermissionDenied(
                f"no manifest may name files on the server: {ROOTS_SETTING} is empty. "
                f"Upload the files, or set {ROOTS_SETTING} on the ingest service to the folders they may come from"
            )
        try:
            real = _real(named)
        except (OSError, ValueError):
            # A NUL byte, or a name too long: nothing a root holds.
            raise PermissionDenied(f"path {str(named)!r} cannot be resolved under {ROOTS_SETTING}") from None
        if not any(real.is_relative_to(root) for root in self.roots):
            raise PermissionDenied(
                f"path {str(named)!r} is outside {ROOTS_SETTING} ({', '.join(str(r) for r in self.roots)}), "
                "once links and '..' are resolved"
            )
        if any(real.is_relative_to(closed) for closed in self.closed):
            raise PermissionDenied(
                f"path {str(named)!r} is among the service's own files (QUORUM_HOME, which holds its keys, "
                f"credentials, databases and logs; its SQLite databases elsewhere; its TLS private keys), "
                f"which no manifest may name, even under {ROOTS_SETTING}"
            )
        if any(real.is_relative_to(system) for system in SYSTEM_FOLDERS):
            raise PermissionDenied(
                f"path {str(named)!r} is under {', '.join(str(f) for f in SYSTEM_FOLDERS)}, "
                f"which no manifest may name, even under {ROOTS_SETTING}"
            )
        return named, real

    def read(self, path: str, base_dir: str, max_bytes: int) -> tuple[bytes, int] | domain.Rejection:
        """Reads the file ``path`` names: ``(data, size)``, with no data when ``size`` exceeds
        ``max_bytes``, or why it cannot be read. A path that is not open to manifests is
        rejected like a missing one. Costs one open and one read."""
        try:
            judged = self._judge(path, base_dir)
        except PermissionDenied as denied:
            return domain.Rejection(str(denied))
        if isinstance(judged, domain.Rejection):
            return judged
        named, real = judged
        shown = repr(str(named))
        try:
            fd = open_without_links(real)
        except FileNotFoundError:
            return domain.Rejection(f"path {shown} does not exist")
        except OSError as exc:
            # A link where the check saw a file or folder: the path changed since.
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                return domain.Rejection(f"path {shown} changed while it was read")
            return domain.Rejection(f"cannot read path {shown}: {exc.strerror or exc}")
        try:
            info = os.fstat(fd)
            if not stat.S_ISREG(info.st_mode):
                return domain.Rejection(f"path {shown} is not a file")
            if info.st_size > max_bytes:
                return b"", info.st_size
            with os.fdopen(os.dup(fd), "rb") as handle:
                data = handle.read(max_bytes + 1)
        except OSError as exc:
            return domain.Rejection(f"cannot read path {shown}: {exc.strerror or exc}")
        finally:
            os.close(fd)
        # The file may have grown since fstat.
        if len(data) > max_bytes:
            return b"", len(data)
        return data, len(data)
