"""ruff (lint and format) and mypy over the whole tree, the generated code excepted."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MYPY_RUN = pytest.StashKey["subprocess.Popen[str]"]()


def start_mypy() -> subprocess.Popen[str]:
    """mypy over the packages pyproject names, at low priority so that it takes the CPU only
    when the tests leave it idle."""
    nice = ["nice", "-n", "10"] if shutil.which("nice") else []
    return subprocess.Popen(
        [*nice, sys.executable, "-m", "mypy"], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_ruff_lint_is_clean() -> None:
    result = run("ruff", "check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff_format_is_clean() -> None:
    result = run("ruff", "format", "--check", ".")
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_mypy_is_clean(request: pytest.FixtureRequest) -> None:
    # Started beside the suite when this test was collected (conftest), since it takes a
    # minute of one core while the end-to-end tests mostly wait; in a parallel worker, here.
    mypy = request.config.stash.get(MYPY_RUN, None) or start_mypy()
    output, _ = mypy.communicate(timeout=600)
    assert mypy.returncode == 0, output
