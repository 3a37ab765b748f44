"""Handing out, leases and answers through the service layer, on every database and
Redis pairing: never answered twice by a worker, exactly the wanted redundancy, expiry,
gold. Handing a task out again after an unanswered expiry: test_tasking_reoffer.py."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest
import redis
from tasking_helpers import Built, job_created, label, load, more_answers, resolved, task_created

from quorum.errors import FailedPrecondition, InvalidArgument, NotFound
from quorum.v1 import events_pb2
from services.tasking import tables
from services.tasking.domain import HandedOutTask


def drain(built: Built, session: str, answer: str = "cat") -> list[str]:
    """Takes and answers tasks until none is left for this session's worker."""
    taken = []
    while (task := built.service.next_task(session)) is not None:
        taken.append(task.task_id)
        built.service.submit_answer(session, task.lease_id, label(answer))
    return taken


def test_round_robin_workers_never_repeat_and_get_exact_redundancy(tasking: Built) -> None:
    load(tasking, "j1", 24, overlap=(3, 5))
    sessions = {f"w{i}": tasking.session(f"w{i}") for i in range(7)}
    handed: Counter[tuple[str, str]] = Counter()
    progress = True
    while progress:
        progress = False
        for worker, session in sessions.items():
            task = tasking.service.next_task(session)
            if task is None:
                continue
            progress = True
            handed[(task.task_id, worker)] += 1
            tasking.service.submit_answer(session, task.lease_id, label("dog"))
    assert max(handed.values()) == 1
    per_task = Counter(task_id for task_id, _ in handed)
    assert set(per_task.values()) == {3} and len(per_task) == 24
    answers = tasking.rows(tables.answers)
    assert len(answers) == 72 == len({(a.task_id, a.worker_id) for a in answers})
    assert all(tasking.task_row(t).answers_received == 3 for t in per_task)
    assert tasking.service.stats().answers == 72


def test_live_leases_count_against_wanted(tasking: Built) -> None:
    load(tasking, "j1", 1, overlap=(2, 3))
    got = [tasking.service.next_task(tasking.session(f"w{i}")) for i in range(5)]
    assert [g is not None for g in got] == [True, True, False, False, False]
    assert tasking.service.stats().active_leases == 2


def test_skip_gives_the_task_to_someone_else_only(tasking: Built) -> None:
    load(tasking, "j1", 1, overlap=(1, 1))
    a, b = tasking.session("alice"), tasking.session("bob")
    task = tasking.service.next_task(a)
    assert task is not None
    assert tasking.service.next_task(b) is None
    tasking.service.skip_task(a, task.lease_id, "blurry")
    assert tasking.service.next_task(a) is None
    again = tasking.service.next_task(b)
    assert again is not None and again.task_id == task.task_id
    (skipped,) = tasking.rows(tables.assignments, tables.assignments.c.worker_id == "alice")
    assert (skipped.state, skipped.skip_reason) == ("skipped", "blurry")
    with pytest.raises(FailedPrecondition, match="no live lease"):
        tasking.service.skip_task(a, task.lease_id)


def test_a_skip_during_the_handout_that_fills_a_task_leaves_it_open(
    tasking: Built, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Alice skips while Bob's lease, the task's last free slot, is being handed out: after
    # the lease store counted it full, before the database marked it so. The task must be
    # open to Carol at once, not after Bob's lease ends (the demo's slow last object).
    load(tasking, "j1", 1, overlap=(2, 2))
    a, b, c = tasking.session("alice"), tasking.session("bob"), tasking.session("carol")
    first = tasking.service.next_task(a)
    assert first is not None
    hand_out = tasking.service._hand_out

    def skip_meanwhile(lease, row):
        if lease.worker_id == "bob":
            tasking.service.skip_task(a, first.lease_id, "blurry")
        return hand_out(lease, row)

    monkeypatch.setattr(tasking.service, "_hand_out", skip_meanwhile)
    second = tasking.service.next_task(b)
    assert second is not None and second.task_id == first.task_id
    third = tasking.service.next_task(c)
    assert third is not None and third.task_id == first.task_id
    # Full again with Bob and Carol holding it, and marked so: Carol's mark was right.
    assert tasking.task_row(first.task_id).full_until is not None
    assert tasking.service.next_task(tasking.session("dave")) is None


def test_expired_lease_goes_to_another_worker_and_the_late_submit_fails(tasking_paired: Built) -> None:
    (task_id,) = load(tasking_paired, "j1", 1, overlap=(1, 1), lease_seconds=1)
    a, b = tasking_paired.session("alice"), tasking_paired.session("bob")
    first = tasking_paired.service.next_task(a)
    assert first is not None
    assert tasking_paired.service.next_task(b) is None
    time.sleep(1.15)
    second = tasking_paired.service.next_task(b)
    assert second is not None and second.task_id == first.task_id
    with pytest.raises(FailedPrecondition, match="expired or was never granted"):
        tasking_paired.service.submit_answer(a, first.lease_id, label("cat"))
    with pytest.raises(FailedPrecondition):
        tasking_paired.service.heartbeat(a, first.lease_id)
    assert tasking_paired.service.next_task(a) is None  # bob holds the task's only slot
    tasking_paired.service.submit_answer(b, second.lease_id, label("cat"))
    assert tasking_paired.task_row(first.task_id).answers_received == 1
    # Once swept, alice's unanswered expiry makes her eligible again; bob, who answered, is not.
    tasking_paired.service.sweep_expired()
    tasking_paired.service.handle_events([more_answers(task_id, "j1", 2)])
    assert tasking_paired.service.next_task(b) is None
    third = tasking_paired.service.next_task(a)
    assert third is not None and third.task_id == task_id and third.lease_id != first.lease_id


def test_sweeper_clears_expired_leases(tasking_paired: Built) -> None:
    load(tasking_paired, "j1", 3, overlap=(1, 1), lease_seconds=1)
    for i in range(3):
        assert tasking_paired.service.next_task(tasking_paired.session(f"w{i}")) is not None
    assert tasking_paired.service.stats().active_leases == 3
    time.sleep(1.1)
    assert tasking_paired.service.stats().active_leases == 0
    assert tasking_paired.service.sweep_expired() == 3
    assert tasking_paired.service.sweep_expired() == 0
    states = Counter(row.state for row in tasking_paired.rows(tables.assignments))
    assert states == {"expired": 3}


def test_heartbeat_extends_a_lease(tasking_paired: Built) -> None:
    load(tasking_paired, "j1", 1, overlap=(1, 1), lease_seconds=1)
    a = tasking_paired.session("alice")
    task = tasking_paired.service.next_task(a)
    assert task is not None
    time.sleep(0.6)
    extended = tasking_paired.service.heartbeat(a, task.lease_id)
    assert extended > task.lease_expires_at
    time.sleep(0.6)  # past the first expiry, within the extended one
    assert tasking_paired.service.next_task(tasking_paired.session("bob")) is None
    tasking_paired.service.submit_answer(a, task.lease_id, label("bird"))
    with pytest.raises(FailedPrecondition, match="already answered"):
        tasking_paired.service.heartbeat(a, task.lease_id)
    # Grant -> heartbeat -> submit: about 1.2 s of activity, each gap within the 1 s term.
    ((_, _, accepted),) = tasking_paired.outbox_events()
    assert 1000 <= accepted.answer_accepted.active_ms <= 2500


def test_more_answers_puts_a_full_task_back_in_play(tasking: Built) -> None:
    (task_id,) = load(tasking, "j1", 1, overlap=(1, 3))
    drain(tasking, tasking.session("w0"))
    assert tasking.service.next_task(tasking.session("w1")) is None
    tasking.service.handle_events([more_answers(task_id, "j1", 3)])
    assert len(drain(tasking, tasking.session("w1"))) == 1
    assert len(drain(tasking, tasking.session("w2"))) == 1
    assert tasking.service.next_task(tasking.session("w3")) is None
    assert tasking.task_row(task_id).answers_received == 3


def test_resolved_task_stops_handouts_but_a_live_lease_is_still_accepted(tasking: Built) -> None:
    (task_id,) = load(tasking, "j1", 1, overlap=(3, 5))
    a = tasking.session("alice")
    held = tasking.service.next_task(a)
    assert held is not None
    tasking.service.handle_events([resolved(task_id, "j1")])
    assert tasking.service.next_task(tasking.session("bob")) is None
    tasking.service.submit_answer(a, held.lease_id, label("cat"))
    assert tasking.task_row(task_id).answers_received == 1


def test_answer_errors(tasking: Built) -> None:
    load(tasking, "j1", 2, overlap=(2, 2))
    a, b = tasking.session("alice"), tasking.session("bob")
    task = tasking.service.next_task(a)
    assert task is not None
    with pytest.raises(InvalidArgument) as bad_label:
        tasking.service.submit_answer(a, task.lease_id, label("horse"))
    assert bad_label.value.field == "answer.classification.label"
    with pytest.raises(InvalidArgument) as no_answer:
        tasking.service.submit_answer(a, task.lease_id, label("cat").__class__(kind=None))
    assert no_answer.value.field == "answer"
    with pytest.raises(FailedPrecondition, match="another worker"):
        tasking.service.submit_answer(b, task.lease_id, label("cat"))
    with pytest.raises(FailedPrecondition, match="never granted"):
        tasking.service.submit_answer(a, "no-such-lease", label("cat"))
    with pytest.raises(InvalidArgument) as blank_lease:
        tasking.service.submit_answer(a, "", label("cat"))
    assert blank_lease.value.field == "lease_id"
    with pytest.raises(InvalidArgument) as blank_session:
        tasking.service.submit_answer("", task.lease_id, label("cat"))
    assert blank_session.value.field == "session_id"
    with pytest.raises(NotFound):
        tasking.service.submit_answer("no-such-session", task.lease_id, label("cat"))

    # The failed attempts left the lease alone.
    answer_id = tasking.service.submit_answer(a, task.lease_id, label("cat"))
    with pytest.raises(FailedPrecondition, match="already answered"):
        tasking.service.submit_answer(a, task.lease_id, label("dog"))
    (stored,) = tasking.rows(tables.answers)
    assert (stored.answer_id, stored.label, stored.worker_id) == (answer_id, "cat", "alice")
    assert tasking.task_row(task.task_id).answers_received == 1


def test_answer_lands_in_the_outbox_with_the_task_as_key(tasking: Built) -> None:
    load(tasking, "j1", 1, overlap=(1, 1))
    session = tasking.session("alice")
    task = tasking.service.next_task(session)
    assert task is not None
    answer_id = tasking.service.submit_answer(session, task.lease_id, label("dog"))
    assert tasking.wakeups == 1
    ((topic, key, event),) = tasking.outbox_events()
    assert (topic, key) == (tasking.topics.answers, task.task_id)
    accepted = event.answer_accepted
    assert (accepted.answer_id, accepted.task_id, accepted.job_id, accepted.worker_id) == (
        answer_id,
        task.task_id,
        "j1",
        "alice",
    )
    assert accepted.answer.classification.label == "dog" and not accepted.gold
    assert accepted.leased_at.ToDatetime() <= accepted.submitted_at.ToDatetime()
    assert 0 <= accepted.active_ms < 120_000
    assert event.event_id and event.HasField("occurred_at")


def test_concurrent_claims_never_exceed_wanted(tasking: Built) -> None:
    tasks = load(tasking, "j1", 10, overlap=(2, 3))
    sessions = [tasking.session(f"w{i:02d}") for i in range(32)]
    barrier = threading.Barrier(len(sessions))
    got: list[HandedOutTask | None] = [None] * len(sessions)
    errors: list[BaseException] = []

    def claim(i: int) -> None:
        try:
            barrier.wait()
            got[i] = tasking.service.next_task(sessions[i])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(sessions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    per_task = Counter(g.task_id for g in got if g is not None)
    assert per_task == dict.fromkeys(tasks, 2)
    assert tasking.service.stats().active_leases == 20

    def submit(i: int) -> None:
        task = got[i]
        if task is not None:
            tasking.service.submit_answer(sessions[i], task.lease_id, label("cat"))

    threads = [threading.Thread(target=submit, args=(i,)) for i in range(len(sessions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert all(tasking.task_row(t).answers_received == 2 for t in tasks)
    assert tasking.service.next_task(tasking.session("late")) is None


def test_one_worker_asking_twice_at_once_gets_different_tasks(tasking: Built) -> None:
    load(tasking, "j1", 3, overlap=(3, 3))
    session = tasking.session("greedy")
    got: list[str] = []
    barrier = threading.Barrier(6)

    def claim() -> None:
        barrier.wait()
        task = tasking.service.next_task(session)
        if task is not None:
            got.append(task.task_id)

    threads = [threading.Thread(target=claim) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(got) == sorted(set(got)) and len(got) == 3


def test_replicas_sharing_database_and_redis_never_exceed_wanted(
    build: Callable[..., Built], database_url: str, redis_client: redis.Redis
) -> None:
    replicas = [build(database_url, redis_client, seed=i) for i in range(3)]
    tasks = load(replicas[0], "j1", 6, overlap=(2, 2))
    sessions = [replicas[i % 3].session(f"w{i:02d}") for i in range(30)]
    barrier = threading.Barrier(len(sessions))
    got: list[str] = []

    def work(i: int) -> None:
        replica = replicas[i % 3].service
        barrier.wait()
        while (task := replica.next_task(sessions[i])) is not None:
            got.append(task.task_id)
            replica.submit_answer(sessions[i], task.lease_id, label("cat"))

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(sessions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert Counter(got) == dict.fromkeys(tasks, 2)
    assert len(replicas[1].rows(tables.answers)) == 12


def test_prefers_tasks_with_answers_then_older_jobs(tasking: Built) -> None:
    tasking.service.handle_events(
        [
            job_created("new", overlap=(3, 3), created_at_s=2_000_000_000),
            job_created("old", overlap=(3, 3), created_at_s=1_900_000_000),
            *(task_created(f"new-{i}", "new") for i in range(3)),
            *(task_created(f"old-{i}", "old") for i in range(3)),
        ]
    )
    # One answer on new-1 (reached through the job filter) puts it ahead of the older job.
    early = tasking.session("early")
    skipped = tasking.service.next_task(early, job_id="new")
    assert skipped is not None and skipped.task_id == "new-0"
    tasking.service.skip_task(early, skipped.lease_id)
    answered = tasking.service.next_task(early, job_id="new")
    assert answered is not None and answered.task_id == "new-1"
    tasking.service.submit_answer(early, answered.lease_id, label("cat"))

    later = tasking.session("later")
    order = []
    while (task := tasking.service.next_task(later)) is not None:
        order.append(task.task_id)
        tasking.service.skip_task(later, task.lease_id)
    assert order == ["new-1", "old-0", "old-1", "old-2", "new-0", "new-2"]


def test_job_filter(tasking: Built) -> None:
    load(tasking, "a", 2)
    load(tasking, "b", 2)
    session = tasking.session("w")
    task = tasking.service.next_task(session, job_id="b")
    assert task is not None and task.job.job_id == "b"
    assert tasking.service.next_task(session, job_id="nope") is None
    with pytest.raises(InvalidArgument, match="job_id"):
        tasking.service.next_task(session, job_id="x" * 300)


def test_gold_is_mixed_in_at_the_share_and_once_per_worker(tasking: Built) -> None:
    load(tasking, "j1", 200, gold=60, overlap=(1, 1), gold_share=0.3)
    workers = [tasking.session(f"w{i}") for i in range(4)]
    golds = total = 0
    seen: set[tuple[str, str]] = set()
    for _round in range(30):
        for i, session in enumerate(workers):
            task = tasking.service.next_task(session)
            assert task is not None
            assert (task.task_id, f"w{i}") not in seen
            seen.add((task.task_id, f"w{i}"))
            total += 1
            golds += "-g" in task.task_id
            tasking.service.submit_answer(session, task.lease_id, label("cat"))
    assert 0.18 < golds / total < 0.42
    gold_answers = [row for row in tasking.rows(tables.answers) if row.gold]
    assert len(gold_answers) == golds
    accepted = [e.answer_accepted for _, _, e in tasking.outbox_events()]
    assert sum(a.gold for a in accepted) == golds


def test_gold_answers_are_graded_against_the_known_label(tasking: Built) -> None:
    load(tasking, "j1", 40, gold=20, overlap=(1, 1), gold_share=0.5)
    tasking.service.handle_events([task_created("j1-nolabel", "j1", gold=True)])
    session = tasking.session("alice")
    for turn in range(40):
        task = tasking.service.next_task(session)
        assert task is not None
        tasking.service.submit_answer(session, task.lease_id, label("cat" if turn % 2 else "dog"))
    accepted = [e.answer_accepted for _, _, e in tasking.outbox_events()]
    gold = [a for a in accepted if a.gold]
    assert gold, "the share should have mixed in gold tasks"
    for a in accepted:
        if not a.gold or a.task_id == "j1-nolabel":
            assert a.gold_grade == events_pb2.GOLD_GRADE_UNSPECIFIED
        else:
            right = a.answer.classification.label == "cat"
            assert a.gold_grade == (events_pb2.GOLD_GRADE_CORRECT if right else events_pb2.GOLD_GRADE_WRONG)
    assert {a.gold_grade for a in gold} >= {events_pb2.GOLD_GRADE_CORRECT, events_pb2.GOLD_GRADE_WRONG}


def test_gold_alone_is_not_handed_out(tasking: Built) -> None:
    load(tasking, "j1", 0, gold=5, gold_share=0.5)
    assert tasking.service.next_task(tasking.session("w")) is None


def test_sessions_survive_a_redis_flush(
    build: Callable[..., Built], sqlite_url: str, redis_client: redis.Redis
) -> None:
    first = build(sqlite_url, redis_client)
    session = first.session("alice")
    redis_client.flushdb()
    fresh = build(sqlite_url, redis_client)  # a restarted replica: nothing cached
    assert fresh.service.worker_for(session) == "alice"


def test_stats(tasking: Built) -> None:
    load(tasking, "j1", 4, gold=1, overlap=(1, 1))
    load(tasking, "j2", 2, overlap=(1, 1))
    session = tasking.session("alice")
    tasking.session("bob")
    task = tasking.service.next_task(session, job_id="j1")
    assert task is not None
    tasking.service.submit_answer(session, task.lease_id, label("cat"))
    held = tasking.service.next_task(session, job_id="j2")
    assert held is not None
    tasking.service.handle_events([resolved(task.task_id, "j1")])

    everything = tasking.service.stats()
    assert (everything.tasks, everything.gold_tasks, everything.backlog) == (7, 1, 5)
    assert (everything.answers, everything.active_leases, everything.workers) == (1, 1, 2)
    assert sum(c for _, c in everything.created_per_minute) == 7
    assert sum(c for _, c in everything.answered_per_minute) == 1
    assert len(everything.created_per_minute) == 60

    j1 = tasking.service.stats("j1")
    assert (j1.tasks, j1.gold_tasks, j1.backlog, j1.answers, j1.active_leases, j1.workers) == (5, 1, 3, 1, 0, 1)
    j2 = tasking.service.stats("j2")
    assert (j2.tasks, j2.backlog, j2.answers, j2.active_leases) == (2, 2, 0, 1)


def test_start_session_checks_the_worker_id(tasking: Built) -> None:
    with pytest.raises(InvalidArgument) as caught:
        tasking.service.start_session("bad worker")
    assert caught.value.field == "worker_id"
    session = tasking.service.start_session("good.worker@example")
    assert tasking.service.worker_for(session.session_id) == "good.worker@example"


def test_image_content_comes_from_the_object_store(tasking_db: Built) -> None:
    from quorum.objectstore import content_key

    image = b"\x89PNG\r\n\x1a\n-an-image"
    tasking_db.objects.put(content_key(image), image, "image/png")
    tasking_db.service.handle_events(
        [
            job_created("img", kind="image", overlap=(2, 2)),
            task_created("gone", "img", text="", object_key=content_key(b"never stored"), content_type="image/png"),
            task_created("here", "img", text="", object_key=content_key(image), content_type="image/png"),
        ]
    )
    session = tasking_db.session("w")
    task = tasking_db.service.next_task(session)
    assert task is not None and task.task_id == "here"
    assert (task.data, task.text, task.content_type) == (image, None, "image/png")
    # The task whose bytes are missing was passed over, and is not offered to this worker again.
    (passed,) = tasking_db.rows(tables.assignments, tables.assignments.c.task_id == "gone")
    assert passed.state == "skipped" and "missing" in passed.skip_reason
    assert tasking_db.service.stats().active_leases == 1


def test_a_failed_answer_transaction_gives_the_lease_back(tasking: Built, monkeypatch: pytest.MonkeyPatch) -> None:
    import services.tasking.handlers as handlers

    (task_id,) = load(tasking, "j1", 1, overlap=(2, 2))
    session = tasking.session("alice")
    task = tasking.service.next_task(session)
    assert task is not None

    def broken(*_args: object, **_kwargs: object) -> None:
        raise RuntimeError("outbox unavailable")

    monkeypatch.setattr(handlers, "enqueue", broken)
    with pytest.raises(RuntimeError, match="outbox unavailable"):
        tasking.service.submit_answer(session, task.lease_id, label("cat"))
    assert tasking.rows(tables.answers) == []
    assert tasking.service.stats().active_leases == 1
    monkeypatch.undo()
    tasking.service.submit_answer(session, task.lease_id, label("cat"))
    assert tasking.task_row(task_id).answers_received == 1
    # Giving the lease back also took back the answer it had counted in flight, so the
    # second slot is still free.
    second = tasking.service.next_task(tasking.session("bob"))
    assert second is not None and second.task_id == task_id


def test_only_the_holder_may_touch_a_lease(tasking: Built) -> None:
    load(tasking, "j1", 1, overlap=(1, 1))
    alice, bob = tasking.session("alice"), tasking.session("bob")
    task = tasking.service.next_task(alice)
    assert task is not None
    for attempt in (
        lambda: tasking.service.heartbeat(bob, task.lease_id),
        lambda: tasking.service.skip_task(bob, task.lease_id),
        lambda: tasking.service.submit_answer(bob, task.lease_id, label("cat")),
    ):
        with pytest.raises(FailedPrecondition, match="another worker"):
            attempt()
    tasking.service.skip_task(alice, task.lease_id)
    assert tasking.service.stats().active_leases == 0
