"""The Quorum operator dashboard: a Streamlit app over the services' gRPC APIs.

:mod:`dashboard.data` reads a :class:`~dashboard.data.Snapshot` from the four
services, :mod:`dashboard.formatting` turns figures into text and
:mod:`dashboard.app` renders them. :func:`launch` starts the app; it is what a
command line should call.
"""

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
        "--server.fileWatcherType=none",
        *extra,
    ]


def launch(host: str = "127.0.0.1", port: int = 8501, extra: Sequence[str] = ()) -> int:
    """Serves the dashboard until interrupted and returns Streamlit's exit code.

    Service addresses come from ``QUORUM_{INGEST,TASKING,CONSENSUS,PAYMENTS}_ADDR``
    in the environment, which the child process inherits.
    """
    return subprocess.call(streamlit_command(host, port, extra))
