"""The event batch handler on SQLite and PostgreSQL: order independence, idempotency,
and what each event does to the tasks."""

from __future__ import annotations

import pytest
from tasking_helpers import (
    Built,
    event,
    job_created,
    label,
    more_answers,
    resolved,
    sealed,
    task_created,
)

from quorum.v1 import common_pb2, events_pb2
from services.tasking import tables


def test_a_task_waits_for_its_job(tasking_db: Built) -> None:
    tasking_db.service.handle_events([task_created("t1", "j1"), task_created("t2", "j1")])
    session = tasking_db.session("w1")
    assert tasking_db.service.next_task(session) is None
    assert not tasking_db.task_row("t1").job_ready

    tasking_db.service.handle_events([job_created("j1", overlap=(2, 4))])
    row = tasking_db.task_row("t1")
    assert row.job_ready and row.available and row.answers_wanted == 2
    handed = tasking_db.service.next_task(session)
    assert handed is not None and handed.task_id in {"t1", "t2"}
    assert handed.job.labels == ("cat", "dog", "bird")


def test_job_and_tasks_in_one_batch_in_any_order(tasking_db: Built) -> None:
    tasking_db.service.handle_events([task_created("t1", "j1"), job_created("j1", overlap=(3, 5)), sealed("j1", 1)])
    row = tasking_db.task_row("t1")
    assert row.job_ready and row.answers_wanted == 3
    (job,) = tasking_db.rows(tables.jobs)
    assert job.known and job.sealed and job.objects == 1


def test_seal_before_create_keeps_both(tasking_db: Built) -> None:
    tasking_db.service.handle_events([sealed("j1", 5, 1)])
    tasking_db.service.handle_events([job_created("j1")])
    (job,) = tasking_db.rows(tables.jobs)
    assert job.known and job.sealed and (job.objects, job.gold_objects) == (5, 1)
    assert job.labels == ["cat", "dog", "bird"]


def test_updates_before_their_task_apply_when_it_arrives(tasking_db: Built) -> None:
    tasking_db.service.handle_events(
        [more_answers("t1", "j1", 4), more_answers("t1", "j1", 3), resolved("t2", "j1"), more_answers("t2", "j1", 5)]
    )
    tasking_db.service.handle_events([job_created("j1", overlap=(2, 5))])
    tasking_db.service.handle_events([task_created("t1", "j1"), task_created("t2", "j1")])
    t1, t2 = tasking_db.task_row("t1"), tasking_db.task_row("t2")
    assert (t1.answers_wanted, t1.resolved, t1.available) == (4, False, True)
    assert (t2.answers_wanted, t2.resolved, t2.available) == (5, True, False)
    assert tasking_db.rows(tables.task_updates) == []
    session = tasking_db.session("w1")
    handed = tasking_db.service.next_task(session)
    assert handed is not None and handed.task_id == "t1"
    assert tasking_db.service.next_task(tasking_db.session("w1")) is None


def test_more_answers_never_lowers_wanted(tasking_db: Built) -> None:
    tasking_db.service.handle_events([job_created("j1", overlap=(3, 5)), task_created("t1", "j1")])
    tasking_db.service.handle_events([more_answers("t1", "j1", 2)])
    assert tasking_db.task_row("t1").answers_wanted == 3
    tasking_db.service.handle_events([more_answers("t1", "j1", 5), more_answers("t1", "j1", 4)])
    assert tasking_db.task_row("t1").answers_wanted == 5


def test_redelivered_events_change_nothing(tasking_db: Built) -> None:
    first = [job_created("j1", overlap=(1, 3)), task_created("t1", "j1")]
    tasking_db.service.handle_events(first)
    bump = more_answers("t1", "j1", 2)
    tasking_db.service.handle_events([bump])
    session = tasking_db.session("w1")
    handed = tasking_db.service.next_task(session)
    assert handed is not None
    tasking_db.service.submit_answer(session, handed.lease_id, label("cat"))

    # The same events again (same ids), as after a consumer crash, and a duplicate in one batch.
    tasking_db.service.handle_events([*first, bump, bump])
    row = tasking_db.task_row("t1")
    assert (row.answers_received, row.answers_wanted) == (1, 2)
    assert len(tasking_db.rows(tables.tasks)) == 1
    assert tasking_db.service.stats().tasks == 1


def test_a_new_task_event_for_a_known_task_is_ignored(tasking_db: Built) -> None:
    tasking_db.service.handle_events([job_created("j1"), task_created("t1", "j1", text="first")])
    tasking_db.service.handle_events([task_created("t1", "j1", text="second")])
    assert tasking_db.task_row("t1").text == "first"


def test_other_event_types_are_ignored(tasking_db: Built) -> None:
    accepted = event(
        answer_accepted=events_pb2.AnswerAccepted(
            answer_id="a1",
            task_id="t1",
            job_id="j1",
            worker_id="w",
            answer=common_pb2.Answer(classification=common_pb2.ClassificationAnswer(label="cat")),
        )
    )
    tasking_db.service.handle_events([accepted])
    assert tasking_db.rows(tables.tasks) == []
    assert len(tasking_db.rows(tables.inbox)) == 1


def test_resolved_stops_handouts(tasking_db: Built) -> None:
    tasking_db.service.handle_events([job_created("j1", overlap=(3, 3)), task_created("t1", "j1")])
    tasking_db.service.handle_events([resolved("t1", "j1")])
    assert tasking_db.service.next_task(tasking_db.session("w1")) is None
    stats = tasking_db.service.stats()
    assert (stats.tasks, stats.backlog) == (1, 0)


def test_unsupported_task_type_is_not_handed_out(tasking_db: Built) -> None:
    bare = event(job_created=events_pb2.JobCreated(job_id="j1", spec=common_pb2.JobSpec(name="no task type")))
    tasking_db.service.handle_events([bare, task_created("t1", "j1")])
    assert not tasking_db.task_row("t1").job_ready
    assert tasking_db.service.next_task(tasking_db.session("w1")) is None


@pytest.mark.parametrize("size", [600])
def test_big_batches_apply_in_one_go(tasking_db: Built, size: int) -> None:
    events = [task_created(f"t{i:04d}", "j1") for i in range(size)]
    events += [more_answers(f"t{i:04d}", "j1", 3) for i in range(0, size, 2)]
    events.append(job_created("j1", overlap=(2, 3)))
    tasking_db.service.handle_events(events)
    stats = tasking_db.service.stats("j1")
    assert (stats.tasks, stats.backlog) == (size, size)
    assert tasking_db.task_row("t0000").answers_wanted == 3
    assert tasking_db.task_row("t0001").answers_wanted == 2


def test_a_paused_job_is_not_handed_out_until_resumed(tasking_db: Built) -> None:
    tasking_db.service.handle_events([job_created("j1", overlap=(1, 1)), task_created("t1", "j1")])
    tasking_db.service.handle_events([event(job_paused=events_pb2.JobPaused(job_id="j1", reason="budget cap"))])
    # A task arriving while paused waits too.
    tasking_db.service.handle_events([task_created("t2", "j1")])
    session = tasking_db.session("w1")
    assert tasking_db.service.next_task(session) is None
    (job,) = tasking_db.rows(tables.jobs)
    assert job.paused
    tasking_db.service.handle_events([event(job_resumed=events_pb2.JobResumed(job_id="j1"))])
    handed = {tasking_db.service.next_task(tasking_db.session(w)) for w in ("w2", "w3")}
    assert {h.task_id for h in handed if h is not None} == {"t1", "t2"}


def test_a_worker_flagged_as_spammer_gets_no_tasks_until_cleared(tasking_db: Built) -> None:
    from quorum.errors import PermissionDenied

    def verdict(spammer: bool) -> events_pb2.Event:
        return event(
            worker_flagged=events_pb2.WorkerFlagged(
                worker_id="w-spam", spammer=spammer, spam_score=0.97, reason="answers at chance level"
            )
        )

    tasking_db.service.handle_events([job_created("j1", overlap=(3, 5)), task_created("t1", "j1"), verdict(True)])
    spammer, honest = tasking_db.session("w-spam"), tasking_db.session("w-ok")
    with pytest.raises(PermissionDenied, match="w-spam is suspended: answers at chance level"):
        tasking_db.service.next_task(spammer)
    assert tasking_db.service.next_task(honest) is not None
    tasking_db.service.handle_events([verdict(False)])
    assert tasking_db.service.next_task(spammer) is not None
