"""The files on the ingest server's machine that a manifest may name.

Reading a file the service can read and turning it into a task that any worker may lease
is as good as handing the file out, so only the folders a deployment names
(``QUORUM_IMPORT_ROOTS``) are open, and never the service's own secrets. A path is judged by
what it really names: ``..`` and symbolic links are resolved before it is compared with the
roots, and the file opened is the resolved one, without following a link put there since.
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


def _real(path: Path) -> Path:
    return Path(os.path.realpath(path))


@dataclass(frozen=True)
class ServerFiles:
    """Reads manifest ``path`` lines under ``roots`` only, never under ``secrets``.

    Both are resolved once, here; a root that does not exist yet opens nothing until it
    does, as the paths under it resolve to themselves.
    """

    roots: tuple[Path, ...] = ()
    secrets: tuple[Path, ...] = ()

    @classmethod
    def under(cls, roots: Iterable[Path], secrets: Iterable[Path] = ()) -> ServerFiles:
        return cls(tuple(_real(root) for root in roots), tuple(_real(secret) for secret in secrets))

    def locate(self, path: str, base_dir: str) -> Path | domain.Rejection:
        """The file ``path`` names (relative to ``base_dir`` unless absolute), as given, or why
        it names nothing readable: a relative path without ``base_dir``. Raises
        PermissionDenied naming the rule when the path resolves outside every root or into
        a secret. Touches the file system only to resolve links."""
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
        if any(real.is_relative_to(secret) for secret in self.secrets):
            raise PermissionDenied(
                f"path {str(named)!r} is among the service's secrets (its keys, credentials and TLS keys), "
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
            # The resolved name, so that a link swapped in after the check is not followed;
            # O_NONBLOCK so that a FIFO is refused below instead of blocking the open.
            fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            return domain.Rejection(f"path {shown} does not exist")
        except OSError as exc:
            if exc.errno == errno.ELOOP:
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
