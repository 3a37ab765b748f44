"""The demo fits its jobs' overlap to the size of its simulated crowd."""

from __future__ import annotations

import pytest

from quorum.demo.kinds import KINDS, job_spec
from quorum.demo.run import MIN_WORKERS, fit_overlap


@pytest.mark.parametrize(
    ("workers", "expected_max"),
    [(MIN_WORKERS, 3), (8, 4), (10, 5), (60, 5)],
)
def test_the_overlap_maximum_is_at_most_half_the_crowd(workers: int, expected_max: int) -> None:
    spec = fit_overlap(job_spec(KINDS["boxes"], ("car",)), workers)
    assert (spec.overlap.min, spec.overlap.max) == (3, expected_max)


def test_the_overlap_minimum_is_kept_however_small_the_crowd() -> None:
    spec = fit_overlap(job_spec(KINDS["boxes"], ("car",)), 2)
    assert (spec.overlap.min, spec.overlap.max) == (3, 3)
