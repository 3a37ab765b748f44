from __future__ import annotations

import asyncio
import math
import random
import signal
import threading
import time
from collections import defaultdict

import grpc
import pytest
from demo_fake_tasking import FakeTasking

from quorum.demo import crowd as crowd_module
from quorum.demo.crowd import SimulatedCrowd, WorkerProfile, choose_label, make_profiles
from quorum.demo.dataset import generate


def _crowd_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(("quorum-demo-crowd", "asyncio_"))]


def _fake_for(n_objects: int, seed: int, overlap: int, **kwargs) -> tuple[FakeTasking, dict[str, str]]:
    ds = generate(n_objects, seed=seed, min_gold=0, gold_share=0.0)
    fake = FakeTasking(
        ds.images + ds.texts,
        image_labels=ds.image_labels,
        text_labels=ds.text_labels,
        overlap=overlap,
        **kwargs,
    )
    return fake, ds.truth_by_key()


# ----------------------------------------------------------------------------- profiles


def test_profiles_are_deterministic_for_a_seed() -> None:
    assert make_profiles(100, seed=4) == make_profiles(100, seed=4)
    assert make_profiles(100, seed=4) != make_profiles(100, seed=5)


def test_profiles_have_the_requested_spammer_share_and_accuracy_range() -> None:
    profiles = make_profiles(200, seed=1)
    spammers = [p for p in profiles if p.spammer]
    honest = [p for p in profiles if not p.spammer]
    assert len(spammers) == 30
    assert {p.spam_strategy for p in spammers} == {"uniform", "constant"}
    assert all(0.55 <= p.accuracy <= 0.98 for p in honest)
    assert 0.8 < sum(p.accuracy for p in honest) / len(honest) < 0.92
    assert len({p.worker_id for p in profiles}) == 200


def test_profiles_reject_bad_arguments() -> None:
    with pytest.raises(ValueError):
        make_profiles(10, seed=0, spammer_share=1.5)
    with pytest.raises(ValueError):
        make_profiles(10, seed=0, accuracy_range=(0.9, 0.5))
    with pytest.raises(ValueError):
        SimulatedCrowd("127.0.0.1:1", {}, 3, seed=0, think_time_ms=(10, 5))


# ----------------------------------------------------------------------------- choose_label

LABELS = ["circle", "square", "triangle", "star"]


def test_honest_worker_answers_with_its_accuracy_and_confuses_neighbours() -> None:
    profile = WorkerProfile("w", accuracy=0.7, spammer=False, confusion_bias=0.5)
    rng = random.Random(0)
    answers = [choose_label(profile, LABELS, "square", rng) for _ in range(20_000)]
    assert answers.count("square") / 20_000 == pytest.approx(0.7, abs=0.02)
    # Half of the mistakes go to the neighbour, the other half spread over the two others.
    assert answers.count("triangle") / 20_000 == pytest.approx(0.3 * (0.5 + 0.5 / 3), abs=0.02)
    assert answers.count("circle") / 20_000 == pytest.approx(0.3 * 0.5 / 3, abs=0.02)


def test_spammers_ignore_the_truth() -> None:
    rng = random.Random(0)
    constant = WorkerProfile("c", accuracy=0.0, spammer=True, spam_strategy="constant", constant_choice=6)
    assert {choose_label(constant, LABELS, "star", rng) for _ in range(100)} == {"triangle"}
    uniform = WorkerProfile("u", accuracy=0.0, spammer=True, spam_strategy="uniform")
    answers = [choose_label(uniform, LABELS, "star", rng) for _ in range(20_000)]
    assert answers.count("star") / 20_000 == pytest.approx(0.25, abs=0.02)


def test_unknown_truth_is_answered_at_random() -> None:
    profile = WorkerProfile("w", accuracy=1.0, spammer=False)
    rng = random.Random(0)
    assert {choose_label(profile, LABELS, None, rng) for _ in range(200)} == set(LABELS)
    with pytest.raises(ValueError):
        choose_label(profile, [], "x", rng)


# ----------------------------------------------------------------------------- against gRPC


def test_crowd_answers_every_task_and_stops_when_told(serve) -> None:
    fake, truth = _fake_for(40, seed=1, overlap=3)
    crowd = SimulatedCrowd(serve(fake), truth, n_workers=8, seed=2, skip_rate=0.0)
    report = crowd.run(fake.all_done, deadline_s=10)

    assert report.stopped_by == "stop"
    assert report.answers == len(fake.answers) == 40 * 3
    assert sum(s.answers for s in report.per_worker.values()) == report.answers
    assert report.errors == {} and report.unknown_content == 0
    assert report.sessions == 8
    assert crowd.answers_submitted == report.answers
    assert _crowd_threads() == []


def test_answers_turned_away_by_a_restarting_server_are_sent_again(serve) -> None:
    # UNAVAILABLE: the port is closed; CANCELLED: the call reached a server that was closing.
    refusals = [grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED] * 3
    fake, truth = _fake_for(10, seed=3, overlap=2, failed_submits=refusals)
    crowd = SimulatedCrowd(serve(fake), truth, n_workers=4, seed=2, skip_rate=0.0)
    report = crowd.run(fake.all_done, deadline_s=10)

    assert report.stopped_by == "stop"
    assert report.answers == len(fake.answers) == 10 * 2
    assert report.errors_by_call == {"SubmitAnswer:UNAVAILABLE": 3, "SubmitAnswer:CANCELLED": 3}
    assert fake.calls["SubmitAnswer"] == 20 + 6


def test_spammers_score_chance_and_honest_workers_their_accuracy(serve) -> None:
    fake, truth = _fake_for(200, seed=3, overlap=10)
    crowd = SimulatedCrowd(serve(fake), truth, n_workers=10, seed=8, spammer_share=0.3)
    strategies = sorted(p.spam_strategy or "" for p in crowd.profiles if p.spammer)
    assert strategies == ["constant", "uniform", "uniform"]  # the seed covers both kinds

    report = crowd.run(fake.all_done, deadline_s=12)
    assert report.stopped_by == "stop"

    by_worker = defaultdict(list)
    for answer in fake.answers:
        by_worker[answer.worker_id].append(answer)
    honest_correct = honest_expected = honest_var = 0.0
    for profile in crowd.profiles:
        answers = by_worker[profile.worker_id]
        n = len(answers)
        assert n > 180  # about 2% are skipped
        correct = sum(a.label == a.truth for a in answers)
        assert report.per_worker[profile.worker_id].correct == correct
        if profile.spammer and profile.spam_strategy == "constant":
            # Always the same label at the same position, so it scores that label's share.
            assert all(a.label == a.labels[profile.constant_choice % len(a.labels)] for a in answers)
            continue
        if profile.spammer:
            expected = sum(1 / len(a.labels) for a in answers)
            p = expected / n
        else:
            p = profile.accuracy
            expected = p * n
            honest_correct += correct
            honest_expected += expected
            honest_var += n * p * (1 - p)
        sigma = math.sqrt(n * p * (1 - p))
        assert abs(correct - expected) < 4 * sigma, (profile, correct / n)
    assert abs(honest_correct - honest_expected) < 4 * math.sqrt(honest_var)


def test_deadline_ends_an_endless_run(serve) -> None:
    fake = FakeTasking(endless=True)
    crowd = SimulatedCrowd(serve(fake), {}, n_workers=20, seed=1)
    started = time.monotonic()
    report = crowd.run(lambda: False, deadline_s=0.5)
    assert report.stopped_by == "deadline"
    assert 0.5 <= time.monotonic() - started < 2.0
    assert report.answers > 0 and report.unknown_content == report.answers
    assert _crowd_threads() == []


def test_stop_is_honoured_promptly_and_the_crowd_can_run_again(serve) -> None:
    fake = FakeTasking(endless=True)
    crowd = SimulatedCrowd(serve(fake), {}, n_workers=20, seed=1)
    for _ in range(2):
        target = fake.answer_count() + 100
        started = time.monotonic()
        report = crowd.run(lambda: fake.answer_count() >= target, deadline_s=10)  # noqa: B023
        assert report.stopped_by == "stop"
        assert time.monotonic() - started < 3.0
        assert report.answers >= 100
    assert _crowd_threads() == []


def test_run_works_inside_a_running_event_loop(serve) -> None:
    fake = FakeTasking(endless=True)
    crowd = SimulatedCrowd(serve(fake), {}, n_workers=5, seed=1)

    async def main() -> int:
        return crowd.run(lambda: fake.answer_count() >= 20, deadline_s=5).answers

    assert asyncio.run(main()) >= 20


def test_expired_leases_are_counted_not_fatal(serve) -> None:
    fake, truth = _fake_for(20, seed=4, overlap=1, lease_s=0.02)
    crowd = SimulatedCrowd(serve(fake), truth, n_workers=4, seed=1, think_time_ms=(60, 80), skip_rate=0.0)
    report = crowd.run(lambda: False, deadline_s=0.6)
    assert report.answers == 0
    assert set(report.errors) == {"FAILED_PRECONDITION"}
    assert report.errors_by_call["SubmitAnswer:FAILED_PRECONDITION"] > 0


def test_workers_wait_as_told_when_there_is_nothing_to_do(serve) -> None:
    fake = FakeTasking(retry_after_ms=100)
    crowd = SimulatedCrowd(serve(fake), {}, n_workers=5, seed=1)
    report = crowd.run(lambda: False, deadline_s=0.5)
    assert report.answers == 0 and report.errors == {}
    # One poll per worker every 100 ms: about 25, never a busy loop.
    assert 5 <= fake.calls["GetNextTask"] <= 5 * 8


def test_lost_sessions_are_restarted(serve) -> None:
    fake = FakeTasking(endless=True)
    crowd = SimulatedCrowd(serve(fake), {}, n_workers=4, seed=1)
    forgot: list[int] = []

    def stop() -> bool:
        if not forgot and fake.answer_count() >= 20:
            fake.forget_sessions()
            forgot.append(fake.answer_count())
        return bool(forgot) and fake.answer_count() >= forgot[0] + 20

    report = crowd.run(stop, deadline_s=5)
    assert report.stopped_by == "stop"
    assert report.sessions > 4
    assert report.errors.get("NOT_FOUND", 0) > 0


def test_skips_are_counted_and_given_back(serve) -> None:
    fake, truth = _fake_for(10, seed=5, overlap=1)
    crowd = SimulatedCrowd(serve(fake), truth, n_workers=3, seed=1, skip_rate=1.0)
    report = crowd.run(fake.all_done, deadline_s=5)
    assert report.answers == 0
    assert report.skips == fake.skips == 30


def test_unreachable_server_is_retried_with_backoff() -> None:
    crowd = SimulatedCrowd("127.0.0.1:1", {}, n_workers=5, seed=1, rpc_timeout_s=0.2)
    report = crowd.run(lambda: False, deadline_s=0.6)
    assert report.stopped_by == "deadline" and report.answers == 0
    assert set(report.errors) <= {"UNAVAILABLE", "DEADLINE_EXCEEDED"}
    assert 5 <= sum(report.errors.values()) <= 5 * 10
    assert _crowd_threads() == []


def test_an_error_in_stop_is_raised_after_shutdown(serve) -> None:
    fake = FakeTasking(endless=True)
    crowd = SimulatedCrowd(serve(fake), {}, n_workers=3, seed=1)

    def stop() -> bool:
        raise RuntimeError("stats unavailable")

    with pytest.raises(RuntimeError, match="stats unavailable"):
        crowd.run(stop, deadline_s=5)
    assert _crowd_threads() == []


def test_ctrl_c_stops_the_crowd_cleanly(serve) -> None:
    fake = FakeTasking(endless=True)
    crowd = SimulatedCrowd(serve(fake), {}, n_workers=5, seed=1)
    main = threading.main_thread().ident
    assert main is not None and threading.get_ident() == main
    # A process started in the background by a script inherits SIGINT ignored, and Python
    # then leaves it so: give this test the handler an interactive Ctrl-C meets.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.3, signal.pthread_kill, args=(main, signal.SIGINT))
    timer.start()
    started = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            crowd.run(lambda: False, deadline_s=30)
    finally:
        signal.signal(signal.SIGINT, previous)
    timer.join()
    assert time.monotonic() - started < 3.0
    assert crowd.answers_submitted > 0
    assert _crowd_threads() == []


def test_a_bug_in_a_worker_is_raised_not_swallowed(serve, monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(*args: object) -> str:
        raise ZeroDivisionError("bug")

    monkeypatch.setattr(crowd_module, "choose_label", broken)
    fake, truth = _fake_for(10, seed=6, overlap=1)
    crowd = SimulatedCrowd(serve(fake), truth, n_workers=2, seed=1, skip_rate=0.0)
    with pytest.raises(ZeroDivisionError):
        crowd.run(lambda: False, deadline_s=0.3)
    assert _crowd_threads() == []
