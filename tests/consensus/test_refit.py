"""The periodic refit of structured jobs through the real handler, on SQLite and PostgreSQL:
worker reliabilities re-estimated over the whole job re-resolve the tasks whose fused label
changes (version 2, a TaskResolved in the outbox) and grade their answers again (the task's
agree, its workers' agreed counts, which the running handler then weighs them with); a job
whose labels stand writes nothing; a reviewed task stays as the reviewer left it; gold answers
pin reliability."""

from __future__ import annotations

import threading
from typing import Any

import pytest
import sqlalchemy as sa
from consensus_helpers import (
    CAR,
    NOW,
    STRAY,
    TOPICS,
    answer_accepted,
    answered,
    boxes,
    job_created,
    outbox_events,
    structured_job_created,
    task_created,
)
from consensus_helpers import emitted_payloads as emitted

from quorum.db import add_missing_columns
from quorum.taskmessages import answer_text
from quorum.v1 import common_pb2, events_pb2
from services.consensus import handlers, structured
from services.consensus import tables as t
from services.consensus.domain import JobSpec, Vote, WorkerEvidence, refit_structured
from services.consensus.handlers import ConsensusEvents
from services.consensus.refit import Refit
from services.consensus.review import ExpertReview

BOXES: dict[str, Any] = {"bounding_boxes": common_pb2.BoundingBoxConfig(labels=["car"])}


@pytest.fixture
def refit(engine: sa.Engine, handler: ConsensusEvents) -> Refit:
    """The refit, wired to the handler as the service wires them."""
    return Refit(engine, TOPICS, lambda: None, clock=lambda: NOW, evidence_changed=handler.evidence_changed)


def drew(task: str, job: str, worker: str, *coords: tuple[float, float, float, float]) -> events_pb2.Event:
    return answered(task, job, worker, boxes=boxes(*coords))


def all_draw_the_car(handler: ConsensusEvents, prefix: str, n: int, workers: tuple[str, ...]) -> None:
    """``n`` tasks of job "j" (``prefix`` 0, 1, ...) on which ``workers`` all draw CAR."""
    for k in range(n):
        handler.handle([task_created(f"{prefix}{k}", "j"), *(drew(f"{prefix}{k}", "j", w, CAR) for w in workers)])


def results(engine: sa.Engine) -> dict[str, Any]:
    with engine.connect() as conn:
        return {row.task_id: row for row in conn.execute(sa.select(t.results))}


def weights(resolved: Any) -> dict[str, float]:
    return {a.worker_id: a.weight for a in resolved.answers}


def agree_of(engine: sa.Engine, task: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(sa.select(t.tasks.c.agree).where(t.tasks.c.task_id == task)).scalar_one())


def compared_and_agreed(engine: sa.Engine, job: str) -> dict[str, tuple[int, int]]:
    """Each worker's (compared, agreed) counts in ``job``."""
    ws = t.worker_stats
    with engine.connect() as conn:
        rows = conn.execute(sa.select(ws.c.worker_id, ws.c.compared, ws.c.agreed).where(ws.c.job_id == job))
        return {row.worker_id: (row.compared, row.agreed) for row in rows}


def shifted(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> dict[str, int]:
    """Per worker whose counts changed, how its agreed count moved; fails if compared moved."""
    assert {w: c for w, (c, _) in after.items()} == {w: c for w, (c, _) in before.items()}
    return {w: after[w][1] - before[w][1] for w in after if after[w] != before[w]}


def test_a_worker_who_turns_out_to_disagree_loses_the_task_it_swung(
    handler: ConsensusEvents, engine: sa.Engine, refit: Refit
) -> None:
    handler.handle([structured_job_created("j", overlap=(3, 3), **BOXES)])
    # Early on, "swing" agrees with two colleagues on every task: it looks reliable.
    all_draw_the_car(handler, "e", 20, ("swing", "w3", "w4"))
    # Then it outweighs two newcomers and keeps a box only it drew.
    handler.handle(
        [
            task_created("x", "j"),
            drew("x", "j", "swing", CAR, STRAY),
            drew("x", "j", "n1", CAR),
            drew("x", "j", "n2", CAR),
        ]
    )
    (first,) = [e for e in emitted(engine, "task_resolved") if e.task_id == "x"]
    assert len(first.label.boxes.boxes) == 2 and first.version == 1
    # Over the rest of the job it draws that box where nobody else does.
    for k in range(30):
        handler.handle([task_created(f"d{k}", "j"), *(drew(f"d{k}", "j", w, CAR) for w in ("w3", "w4"))])
        handler.handle([drew(f"d{k}", "j", "swing", CAR, STRAY)])
    published = len(emitted(engine, "task_resolved"))
    assert published == 51
    # A late answer is compared with the label of its time, two boxes: it disagreed.
    handler.handle([drew("x", "j", "late", CAR)])
    assert agree_of(engine, "x") == 1  # "swing" only
    counts = compared_and_agreed(engine, "j")

    assert refit.run_once() == 1
    (again,) = emitted(engine, "task_resolved")[published:]
    assert again.task_id == "x" and again.version == 2
    (kept,) = again.label.boxes.boxes
    assert (kept.x, kept.y, kept.w, kept.h) == pytest.approx(CAR)
    assert weights(again)["swing"] < weights(first)["swing"]
    assert weights(again)["n1"] > weights(again)["swing"]
    # Each answer is judged against the new label, as the regrade below counts it.
    assert {a.worker_id: a.agreed for a in first.answers} == {"swing": True, "n1": False, "n2": False}
    assert {a.worker_id: a.agreed for a in again.answers} == {"swing": False, "n1": True, "n2": True, "late": True}
    stored = results(engine)
    assert stored["x"].version == 2 and stored["x"].label == answer_text(again.label)
    assert {task for task, row in stored.items() if row.version != 1} == {"x"}
    with engine.connect() as conn:
        assert conn.execute(sa.select(t.tasks.c.label).where(t.tasks.c.task_id == "x")).scalar() == stored["x"].label
    # Graded again against the one box: the three who drew only the car now agree, "swing" not.
    assert agree_of(engine, "x") == 3
    assert shifted(counts, compared_and_agreed(engine, "j")) == {"swing": -1, "n1": 1, "n2": 1, "late": 1}
    # Nothing new since: the next round refits nothing.
    assert refit.run_once() == 0
    assert len(emitted(engine, "task_resolved")) == published + 1


def test_a_job_whose_labels_stand_writes_nothing(handler: ConsensusEvents, engine: sa.Engine, refit: Refit) -> None:
    handler.handle([structured_job_created("j", overlap=(3, 3), **BOXES)])
    near = [(0.10, 0.20, 0.30, 0.20), (0.11, 0.20, 0.30, 0.21), (0.10, 0.21, 0.29, 0.20)]
    for k in range(6):
        handler.handle([task_created(f"t{k}", "j"), *(drew(f"t{k}", "j", f"w{i}", c) for i, c in enumerate(near))])
    before_rows, before_outbox = results(engine), outbox_events(engine)
    assert len(before_rows) == 6

    assert refit.run_once() == 0
    assert results(engine) == before_rows
    assert outbox_events(engine) == before_outbox
    # The refit did find other confidences (the workers proved reliable): those alone are not
    # republished.
    votes = {"t0": [Vote(f"w{i}", answer_text(common_pb2.Answer(boxes=boxes(c)))) for i, c in enumerate(near)]}
    spec = JobSpec.normalised("j", ["car"], 3, 3, 0.9, answer_kind="boxes")
    fitted = refit_structured(spec, votes, {}, {"t0": before_rows["t0"].label})
    assert fitted.labels["t0"] != before_rows["t0"].label
    assert structured.same_label(fitted.labels["t0"], before_rows["t0"].label)


def test_a_reviewed_structured_task_keeps_the_reviewers_label(
    handler: ConsensusEvents, engine: sa.Engine, refit: Refit
) -> None:
    handler.handle([structured_job_created("j", overlap=(3, 3), expert_review=True, **BOXES), task_created("r", "j")])
    handler.handle([drew("r", "j", "w1", CAR), drew("r", "j", "w2", CAR), drew("r", "j", "w3", STRAY)])
    assert not emitted(engine, "task_resolved")
    # The reviewer keeps the box only one worker drew, against what any fusion would say.
    final = answer_text(common_pb2.Answer(boxes=boxes(STRAY)))
    ExpertReview(engine, TOPICS, lambda: None, clock=lambda: NOW).submit("r", "expert", final)
    published = len(outbox_events(engine))

    assert refit.run_once() == 0
    row = results(engine)["r"]
    assert (row.label, row.version, row.reviewed) == (final, 1, True)
    assert len(outbox_events(engine)) == published


def test_a_reviewed_classification_task_keeps_the_reviewers_label(
    handler: ConsensusEvents, engine: sa.Engine, refit: Refit
) -> None:
    handler.handle([job_created("j", overlap=(3, 3), target=0.95, expert_review=True), task_created("r", "j")])
    handler.handle([answer_accepted("r", "j", w, label) for w, label in (("w1", "cat"), ("w2", "dog"), ("w3", "dog"))])
    for k in range(5):
        handler.handle(
            [task_created(f"c{k}", "j"), *(answer_accepted(f"c{k}", "j", w, "cat") for w in ("w1", "w2", "w3"))]
        )
    # Nobody answered "bird": every fit of the answers prefers another label.
    ExpertReview(engine, TOPICS, lambda: None, clock=lambda: NOW).submit("r", "expert", "bird")
    published = len(outbox_events(engine))

    refit.run_once()
    row = results(engine)["r"]
    assert (row.label, row.version) == ("bird", 1)
    assert not [e for _, _, e in outbox_events(engine)[published:] if e.task_resolved.task_id == "r"]


def test_gold_answers_pin_reliability_against_the_majority(
    handler: ConsensusEvents, engine: sa.Engine, refit: Refit
) -> None:
    handler.handle([structured_job_created("j", overlap=(3, 3), **BOXES), task_created("y", "j")])
    # Two newcomers keep a stray box against a third.
    handler.handle([drew("y", "j", "m1", CAR, STRAY), drew("y", "j", "m2", CAR, STRAY), drew("y", "j", "good", CAR)])
    (first,) = emitted(engine, "task_resolved")
    assert len(first.label.boxes.boxes) == 2
    # Gold shows the stray box is their habit, not an object: they are the majority on every
    # gold task too, but gold is not voted on.
    for k in range(3):
        task = task_created(f"g{k}", "j")
        task.task_created.gold = True
        task.task_created.gold_answer.CopyFrom(common_pb2.Answer(boxes=boxes(CAR)))
        handler.handle(
            [task, *(drew(f"g{k}", "j", w, CAR, STRAY) for w in ("m1", "m2")), drew(f"g{k}", "j", "good", CAR)]
        )

    assert refit.run_once() == 1
    (again,) = emitted(engine, "task_resolved")[1:]
    assert again.task_id == "y" and again.version == 2 and len(again.label.boxes.boxes) == 1
    assert weights(again)["good"] > 0.75 and weights(again)["m1"] < 0.5


def test_evidence_from_other_jobs_counts() -> None:
    spec = JobSpec.normalised("j", ["car"], 3, 3, 0.9, answer_kind="boxes")

    def text(*coords: tuple[float, float, float, float]) -> str:
        return answer_text(common_pb2.Answer(boxes=boxes(*coords)))

    votes = {"y": [Vote("a", text(CAR, STRAY)), Vote("b", text(CAR))]}
    resolved = {"y": text(CAR)}
    alone = refit_structured(spec, votes, {}, resolved)
    # "a" was right on 20 gold answers elsewhere, "b" on none of 20.
    known = {"a": WorkerEvidence(20, 20, 0, 0), "b": WorkerEvidence(20, 0, 0, 0)}
    informed = refit_structured(spec, votes, {}, resolved, elsewhere=known)
    assert structured.same_label(alone.labels["y"], resolved["y"])
    assert not structured.same_label(informed.labels["y"], resolved["y"])
    assert informed.reliability["a"] > alone.reliability["a"]
    assert informed.reliability["b"] < alone.reliability["b"]
    # A final (reviewed) task is a reference, never re-fused.
    assert refit_structured(spec, votes, {}, resolved, final={"y"}, elsewhere=known).labels == {}


def test_a_structured_job_still_being_answered_waits_for_a_quarter_more_answers_or_a_pause(
    handler: ConsensusEvents, engine: sa.Engine, refit: Refit
) -> None:
    handler.handle([structured_job_created("j", overlap=(3, 3), **BOXES)])
    all_draw_the_car(handler, "c", 5, ("w1", "w2", "w3"))
    handler.handle([task_created("x", "j"), drew("x", "j", "w1", CAR, STRAY), drew("x", "j", "w2", CAR, STRAY)])
    handler.handle([drew("x", "j", "w3", CAR)])
    assert len(emitted(engine, "task_resolved")[-1].label.boxes.boxes) == 2
    assert refit.run_once() == 0  # the first round refits every job; nothing to change yet
    # Three late answers without the stray box (21 answers, not a quarter more than 18).
    handler.handle([drew("x", "j", w, CAR) for w in ("w4", "w5", "w6")])

    assert refit.run_once() == 0  # answers came since the previous round: later
    assert results(engine)["x"].version == 1
    assert refit.run_once() == 1  # none since: the job is refitted
    (again,) = [e for e in emitted(engine, "task_resolved") if e.version == 2]
    assert again.task_id == "x" and len(again.label.boxes.boxes) == 1


# The crowd's car, drawn three ways, and a box drawn apart from it: its mean overlap with the
# three (IoU 0.51, 0.46, 0.46) keeps it out of their cluster, so the fusion of the task's
# answers says it disagrees; yet it overlaps the fused car (MID) by IoU 0.51, so compared with
# that label alone it agrees.
LEFT, MID, RIGHT = (0.08, 0.16, 0.30, 0.20), (0.10, 0.16, 0.30, 0.20), (0.12, 0.16, 0.30, 0.20)
APART = (0.10, 0.225, 0.30, 0.20)


def each_draws(handler: ConsensusEvents, task: str) -> None:
    """On ``task``: "swing" draws the car and STRAY, "n1" and "n2" the car, "apart" the box apart."""
    handler.handle(
        [
            drew(task, "j", "swing", MID, STRAY),
            drew(task, "j", "n1", LEFT),
            drew(task, "j", "n2", RIGHT),
            drew(task, "j", "apart", APART),
        ]
    )


def gold_of(tasks: range, *coords: tuple[float, float, float, float]) -> list[events_pb2.Event]:
    created = [task_created(f"g{k}", "j") for k in tasks]
    for event in created:
        event.task_created.gold = True
        event.task_created.gold_answer.CopyFrom(common_pb2.Answer(boxes=boxes(*coords)))
    return created


def graded_by_gold(handler: ConsensusEvents, tasks: range, *coords: tuple[float, float, float, float]) -> None:
    """Gold tasks whose answer is ``coords``, each answered by the four as on task "x"."""
    handler.handle(gold_of(tasks, *coords))
    for k in tasks:
        each_draws(handler, f"g{k}")


def the_box_apart_disagrees_at_resolution(handler: ConsensusEvents, engine: sa.Engine) -> None:
    """Task "x" of job "j" resolves to the car alone: the fusion counts "swing" (STRAY too)
    and "apart" as disagreeing, though "apart" agrees with the label compared alone."""
    handler.handle([structured_job_created("j", overlap=(4, 4), **BOXES), task_created("x", "j")])
    each_draws(handler, "x")
    (resolved,) = emitted(engine, "task_resolved")
    (car,) = resolved.label.boxes.boxes
    assert (car.x, car.y, car.w, car.h) == pytest.approx(MID)
    assert compared_and_agreed(engine, "j") == {"swing": (1, 0), "n1": (1, 1), "n2": (1, 1), "apart": (1, 0)}
    assert recounted(engine, "j")["apart"] == (1, 1)


def recounted(engine: sa.Engine, job: str) -> dict[str, tuple[int, int]]:
    """Each worker's (compared, agreed) counts in ``job`` from scratch: every answer to a
    resolved task compared with the task's current label."""
    tk, a = t.tasks, t.answers
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(a.c.worker_id, a.c.label, tk.c.label.label("reference"))
            .join(tk, tk.c.task_id == a.c.task_id)
            .where(tk.c.job_id == job, tk.c.state == "resolved")
        ).all()
    counts: dict[str, tuple[int, int]] = {}
    for row in rows:
        compared, agreed = counts.get(row.worker_id, (0, 0))
        counts[row.worker_id] = (compared + 1, agreed + structured.agrees("boxes", ["car"], row.label, row.reference))
    return counts


def answer_grades(engine: sa.Engine, task: str) -> dict[str, bool | None]:
    a = t.answers
    with engine.connect() as conn:
        return dict(conn.execute(sa.select(a.c.worker_id, a.c.agreed).where(a.c.task_id == task)).all())


def test_a_relabel_shifts_counts_from_the_outcomes_recorded_at_resolution(
    handler: ConsensusEvents, engine: sa.Engine, refit: Refit
) -> None:
    the_box_apart_disagrees_at_resolution(handler, engine)
    assert answer_grades(engine, "x") == {"swing": False, "n1": True, "n2": True, "apart": False}
    # Gold shows STRAY is there and only "swing" sees it.
    graded_by_gold(handler, range(3), MID, STRAY)

    assert refit.run_once() == 1
    assert len(emitted(engine, "task_resolved")[-1].label.boxes.boxes) == 2
    # "apart" lacks STRAY: it disagrees with the new label as it did with the old one, and
    # its count stays where the resolution left it (a shift from its comparison with the old
    # label alone would take it to -1).
    assert compared_and_agreed(engine, "j") == {"swing": (1, 1), "n1": (1, 0), "n2": (1, 0), "apart": (1, 0)}
    assert compared_and_agreed(engine, "j") == recounted(engine, "j")
    assert answer_grades(engine, "x") == {"swing": True, "n1": False, "n2": False, "apart": False}
    assert agree_of(engine, "x") == 1


def test_relabelling_a_task_back_restores_its_counts(handler: ConsensusEvents, engine: sa.Engine, refit: Refit) -> None:
    the_box_apart_disagrees_at_resolution(handler, engine)
    original, grades, first = compared_and_agreed(engine, "j"), answer_grades(engine, "x"), results(engine)["x"].label
    graded_by_gold(handler, range(3), MID, STRAY)
    assert refit.run_once() == 1
    assert compared_and_agreed(engine, "j") == recounted(engine, "j")
    # More gold shows STRAY was "swing"'s habit after all.
    graded_by_gold(handler, range(3, 12), MID)

    assert refit.run_once() == 1
    assert results(engine)["x"].version == 3
    assert structured.same_label(results(engine)["x"].label, first)
    # Graded as the fusion behind the label grades them, as at resolution: "apart" disagrees
    # again, though compared with the car alone it would agree.
    assert compared_and_agreed(engine, "j") == original
    assert answer_grades(engine, "x") == grades
    assert agree_of(engine, "x") == 2


def test_answers_without_a_recorded_outcome_are_compared_with_the_old_label(
    handler: ConsensusEvents, engine: sa.Engine, refit: Refit
) -> None:
    the_box_apart_disagrees_at_resolution(handler, engine)
    # As if stored before outcomes were recorded: the re-grade compares them with the old label.
    with engine.begin() as conn:
        conn.execute(sa.update(t.answers).where(t.answers.c.worker_id.in_(["swing", "n1"])).values(agreed=None))
    graded_by_gold(handler, range(3), MID, STRAY)

    assert refit.run_once() == 1
    assert compared_and_agreed(engine, "j") == {"swing": (1, 1), "n1": (1, 0), "n2": (1, 0), "apart": (1, 0)}
    assert answer_grades(engine, "x") == {"swing": True, "n1": False, "n2": False, "apart": False}


def test_an_older_database_gains_the_column_of_answer_outcomes(
    handler: ConsensusEvents, engine: sa.Engine, refit: Refit
) -> None:
    the_box_apart_disagrees_at_resolution(handler, engine)
    with engine.begin() as conn:
        conn.exec_driver_sql("ALTER TABLE consensus_answers DROP COLUMN agreed")
    assert add_missing_columns(engine, t.metadata) == ["consensus_answers.agreed"]
    assert set(answer_grades(engine, "x").values()) == {None}
    graded_by_gold(handler, range(3), MID, STRAY)

    assert refit.run_once() == 1
    assert answer_grades(engine, "x") == {"swing": True, "n1": False, "n2": False, "apart": False}


def swing_labels_x_cat(handler: ConsensusEvents) -> None:
    """Job "j": "swing" is right on 20 gold tasks, so it outweighs two newcomers on task "x"."""
    handler.handle([job_created("j", overlap=(3, 3), target=0.5)])
    handler.handle([task_created(f"g{k}", "j", gold_label="cat") for k in range(60)])
    handler.handle([answer_accepted(f"g{k}", "j", "swing", "cat") for k in range(20)])
    handler.handle(
        [
            task_created("x", "j"),
            answer_accepted("x", "j", "swing", "cat"),
            answer_accepted("x", "j", "n1", "dog"),
            answer_accepted("x", "j", "n2", "dog"),
        ]
    )


def gold_shows_swing_wrong(handler: ConsensusEvents) -> None:
    """40 more gold tasks on which "swing" is wrong and the newcomers right."""
    handler.handle(
        [
            answer_accepted(f"g{k}", "j", w, "bird" if w == "swing" else "cat")
            for k in range(20, 60)
            for w in ("swing", "n1", "n2")
        ]
    )


def test_a_classification_relabel_grades_the_answers_again_and_the_handler_weighs_with_that(
    handler: ConsensusEvents, engine: sa.Engine, refit: Refit
) -> None:
    swing_labels_x_cat(handler)
    assert [(e.task_id, e.label.classification.label) for e in emitted(engine, "task_resolved")] == [("x", "cat")]
    # Late answers, each compared with "cat" alone.
    handler.handle([answer_accepted("x", "j", "late_dog", "dog"), answer_accepted("x", "j", "late_cat", "cat")])
    gold_shows_swing_wrong(handler)
    assert agree_of(engine, "x") == 2
    counts = compared_and_agreed(engine, "j")

    assert refit.run_once() == 1
    assert results(engine)["x"].label == "dog"
    assert agree_of(engine, "x") == 3
    assert shifted(counts, compared_and_agreed(engine, "j")) == {
        "swing": -1,
        "late_cat": -1,
        "n1": 1,
        "n2": 1,
        "late_dog": 1,
    }
    # The running handler weighs these workers with the evidence as graded again, as a
    # restarted one would, from its next batch on.
    handler.handle([task_created("after", "j")])
    restarted = ConsensusEvents(engine, TOPICS, lambda: None, clock=lambda: NOW)
    restarted.load()
    for worker in ("swing", "late_cat", "n1", "n2", "late_dog"):
        assert handler.reliability(worker) == restarted.reliability(worker)


# SQLite's writers take turns, so a batch and a refit never overlap there.
@pytest.mark.parametrize("engine", ["postgres"], indirect=True)
def test_a_batch_and_a_refit_on_the_same_task_leave_it_as_one_of_them_after_the_other(
    handler: ConsensusEvents, engine: sa.Engine, refit: Refit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On PostgreSQL a handler batch and the refit run at once. A batch that read a task just
    before the refit relabelled it must not write the old label back, nor grade its late
    answer against it: here the batch is held right after reading its tasks while the refit
    runs, and the task must end as if one had run after the other."""
    swing_labels_x_cat(handler)
    gold_shows_swing_wrong(handler)
    assert results(engine)["x"].label == "cat"

    batch_read = threading.Event()
    go_on = threading.Event()
    load_tasks = handlers._Batch._load_tasks

    def held_after_reading(batch: Any, task_ids: list[str]) -> Any:
        loaded = load_tasks(batch, task_ids)
        if "x" in task_ids:
            batch_read.set()
            go_on.wait(60)
        return loaded

    monkeypatch.setattr(handlers._Batch, "_load_tasks", held_after_reading)
    late = threading.Thread(target=handler.handle, args=([answer_accepted("x", "j", "late", "dog")],))
    late.start()
    assert batch_read.wait(60)
    relabelled: list[int] = []
    refitting = threading.Thread(target=lambda: relabelled.append(refit.run_once()))
    refitting.start()
    # Let the batch go once the refit has finished, or is waiting for the batch's row lock.
    with engine.connect() as conn:
        for _ in range(600):
            waiting = conn.execute(
                # Another test's lock wait only lets the batch go early, which it may.
                sa.text("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
            ).scalar_one()
            if waiting or not refitting.is_alive():
                break
            refitting.join(0.1)
    go_on.set()
    late.join(60)
    refitting.join(60)

    assert relabelled == [1]
    assert results(engine)["x"].label == "dog"
    with engine.connect() as conn:
        task = conn.execute(sa.select(t.tasks).where(t.tasks.c.task_id == "x")).one()
    assert task.label == "dog"
    # n1, n2 and "late" said dog: graded against the new label whichever way they met.
    assert (task.answers, task.agree) == (4, 3)
    assert compared_and_agreed(engine, "j")["late"] == (1, 1)
