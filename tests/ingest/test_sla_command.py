"""`quorum sla` refuses what it cannot send before it calls ingest: both a deadline and
--clear, or a deadline beyond the calendar, with a message rather than a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from quorum.broker import free_port
from quorum.cli import main as cli_main


@pytest.fixture(autouse=True)
def nowhere(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """A home of the test's own and no ingest: a call that got as far as ingest would fail."""
    monkeypatch.setenv("QUORUM_HOME", str(tmp_path))
    monkeypatch.setenv("QUORUM_INGEST_ADDR", f"127.0.0.1:{free_port()}")


def test_a_deadline_and_clear_together_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main(["sla", "job_1", "--deadline", "48h", "--clear"])
    assert exited.value.code == 2
    assert "argument --clear: not allowed with argument --deadline" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["sla", "job_1", "--deadline", "99999999999d"], "--deadline '99999999999d': too far ahead"),
        (["sla", "job_1", "--deadline", "999999999d"], "--deadline '999999999d': too far ahead"),
        (["audit", "list", "--since", "9999999d"], "--since '9999999d': too far back"),
    ],
)
def test_a_moment_beyond_the_calendar_is_refused_with_a_message(argv: list[str], message: str) -> None:
    with pytest.raises(SystemExit) as exited:
        cli_main(argv)
    assert exited.value.code == f"quorum: {message}: dates run from year 1 to 9999"
