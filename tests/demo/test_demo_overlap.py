"""The demo fits its jobs' overlap to the size of its simulated crowd."""

from __future__ import annotations

import pytest

from quorum.demo.kinds import KINDS, job_spec
from quorum.demo.run import MIN_WORKERS, _job_spec, fit_overlap


@pytest.mark.parametrize(
    ("workers", "expected_max"),
    # 5 workers: 1 spammer, 4 honest, one to spare; 8: 1 spammer, so 6 could answer; 60: 9.
    [(MIN_WORKERS, 3), (6, 4), (8, 6), (10, 7), (60, 7)],
)
def test_the_overlap_maximum_leaves_an_honest_worker_to_spare(workers: int, expected_max: int) -> None:
    spec = fit_overlap(_job_spec("shapes", ("circle", "square"), images=True), workers)
    assert (spec.overlap.min, spec.overlap.max) == (3, expected_max)


def test_a_maximum_the_crowd_can_meet_is_kept() -> None:
    spec = fit_overlap(job_spec(KINDS["boxes"], ("car",)), 8)
    assert (spec.overlap.min, spec.overlap.max) == (3, 5)


def test_the_overlap_minimum_is_kept_however_small_the_crowd() -> None:
    spec = fit_overlap(job_spec(KINDS["boxes"], ("car",)), 2)
    assert (spec.overlap.min, spec.overlap.max) == (3, 3)
