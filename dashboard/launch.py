"""Starting the dashboard: ``python -m streamlit run dashboard/app.py`` with production flags."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

APP_PATH = Path(__file__).resolve().with_name("app.py")


def streamlit_command(host: str = "127.0.0.1", port: int = 8501, extra: Sequence[str] = ()) -> list[str]:
    """The argv that serves the dashboard on ``host:port`` with this interpreter's Streamlit."""
    return [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP_PATH),
        f"--server.address={host}",
        f"--server.port={port}",
        # Headless: no first-run e-mail prompt blocking on stdin, no browser tab opened.
        "--server.headless=true",
        "--browser.gatherUsageStats=false",
        # Operators view the page; they do not deploy or edit it.
        "--client.toolbarMode=viewer",
        # Nothing to hot-reload in production, and watching costs inotify handles.
        "--server.fileWatcherType=none",
        *extra,
    ]


def launch(host: str = "127.0.0.1", port: int = 8501, extra: Sequence[str] = ()) -> int:
    """Serves the dashboard until interrupted and returns Streamlit's exit code.

    Service addresses come from ``QUORUM_{INGEST,TASKING,CONSENSUS,PAYMENTS,ACCESS}_ADDR``
    in the environment, which the child process inherits. Served on a loopback
    ``host``, the dashboard signs the local user in by itself; on any other, everyone
    signs in with a key.
    """
    return subprocess.call(streamlit_command(host, port, extra))  # noqa: S603 - this Python running streamlit
