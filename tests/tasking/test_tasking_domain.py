"""Unit tests of tasking's pure rules."""

from __future__ import annotations

import datetime as dt
import random

import pytest

from quorum.errors import InvalidArgument
from services.tasking.domain import (
    JobRules,
    SubmittedAnswer,
    clamp_gold_share,
    initial_answers_wanted,
    lease_seconds_or_default,
    minute_series,
    optional_id,
    require_id,
    validate_answer,
    validate_worker_id,
    wants_gold,
)

JOB = JobRules(
    job_id="j1",
    task_type="image_classification",
    labels=("cat", "dog"),
    instructions="",
    overlap_min=3,
    overlap_max=5,
    gold_share=0.1,
    lease_seconds=60,
)


@pytest.mark.parametrize("worker_id", ["w", "worker-1", "a.b_c@d-e", "x" * 128, "0"])
def test_valid_worker_ids_pass(worker_id: str) -> None:
    assert validate_worker_id(worker_id) == worker_id


@pytest.mark.parametrize("worker_id", ["", "x" * 129, "has space", "slash/y", "ünï", "semi;colon", "new\nline"])
def test_bad_worker_ids_name_the_field(worker_id: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_worker_id(worker_id)
    assert caught.value.field == "worker_id"


def test_ids_are_required_and_bounded() -> None:
    assert require_id("session_id", "abc") == "abc"
    for bad in ("", "   ", "x" * 201):
        with pytest.raises(InvalidArgument) as caught:
            require_id("session_id", bad)
        assert caught.value.field == "session_id"
    assert optional_id("job_id", "") is None
    assert optional_id("job_id", "j") == "j"
    with pytest.raises(InvalidArgument, match="job_id"):
        optional_id("job_id", "j" * 201)


def test_answer_with_a_known_label_passes() -> None:
    validate_answer(JOB, SubmittedAnswer("classification", "dog"))


@pytest.mark.parametrize(
    ("answer", "field"),
    [
        (SubmittedAnswer(None), "answer"),
        (SubmittedAnswer("boxes", "cat"), "answer"),
        (SubmittedAnswer("classification", "horse"), "answer.classification.label"),
        (SubmittedAnswer("classification", ""), "answer.classification.label"),
        (SubmittedAnswer("classification", "Cat"), "answer.classification.label"),
    ],
)
def test_bad_answers_name_the_field(answer: SubmittedAnswer, field: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        validate_answer(JOB, answer)
    assert caught.value.field == field


def test_answer_to_an_unsupported_task_type_is_refused() -> None:
    odd = JobRules("j2", "", ("a",), "", 1, 1, 0.0, 60)
    assert not odd.supported
    with pytest.raises(InvalidArgument, match="does not support"):
        validate_answer(odd, SubmittedAnswer("classification", "a"))


def test_spec_defaults() -> None:
    assert lease_seconds_or_default(0) == 120
    assert lease_seconds_or_default(-5) == 120
    assert lease_seconds_or_default(7) == 7
    assert initial_answers_wanted(0) == 1
    assert initial_answers_wanted(3) == 3
    assert JOB.answers_wanted == 3
    assert clamp_gold_share(float("nan")) == 0.0
    assert clamp_gold_share(-1.0) == 0.0
    assert clamp_gold_share(0.2) == 0.2
    assert clamp_gold_share(1.0) < 1.0


def test_gold_draws_follow_the_share() -> None:
    rng = random.Random(1)
    draws = [wants_gold(0.25, rng.random()) for _ in range(20_000)]
    assert abs(sum(draws) / len(draws) - 0.25) < 0.01
    assert not any(wants_gold(0.0, rng.random()) for _ in range(1000))


def test_minute_series_fills_the_last_hour() -> None:
    now = dt.datetime(2026, 1, 1, 12, 30, 45, tzinfo=dt.UTC)
    this_minute = int(dt.datetime(2026, 1, 1, 12, 30, tzinfo=dt.UTC).timestamp())
    counts = {this_minute: 4, this_minute - 60: 2, this_minute - 3600: 99, this_minute + 60: 5}
    series = minute_series(counts, now)
    assert len(series) == 60
    assert series[-1] == (this_minute, 4)
    assert series[-2] == (this_minute - 60, 2)
    assert series[0] == (this_minute - 59 * 60, 0)
    assert sum(c for _, c in series) == 6


def test_active_time_counts_gaps_up_to_the_term_and_the_idle_cap() -> None:
    from services.tasking.domain import IDLE_CAP_MS, active_time_ms

    # No heartbeat: grant to submit, capped by the term.
    assert active_time_ms(0, 1_000, 31_000, 120_000) == 30_000
    assert active_time_ms(0, 1_000, 500_000, 120_000) == 120_000
    # Time counted up to the last heartbeat, then the last gap.
    assert active_time_ms(50_000, 60_000, 70_000, 120_000) == 60_000
    # A long lease: a gap beyond the idle cap counts only the cap.
    assert active_time_ms(0, 0, 3_600_000, 7_200_000) == IDLE_CAP_MS
    # Clock skew never goes negative.
    assert active_time_ms(0, 10_000, 5_000, 120_000) == 0
