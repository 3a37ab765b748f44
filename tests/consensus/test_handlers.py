"""The event handler and queries against real databases: SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
import sqlalchemy as sa
from consensus_helpers import answer_accepted, job_created, outbox_events, task_created

from quorum.errors import NotFound
from quorum.messaging import Topics
from quorum.v1 import events_pb2
from services.consensus import tables
from services.consensus.handlers import ConsensusEvents, ConsensusQueries

TOPICS = Topics("test")
NOW = dt.datetime(2030, 5, 1, 12, 0, 30, tzinfo=dt.UTC)


class Signal:
    def __init__(self) -> None:
        self.calls = 0

    def __call__(self) -> None:
        self.calls += 1


@pytest.fixture
def signal() -> Signal:
    return Signal()


@pytest.fixture
def handler(engine: sa.Engine, signal: Signal) -> ConsensusEvents:
    events = ConsensusEvents(engine, TOPICS, signal, clock=lambda: NOW)
    events.load()
    return events


@pytest.fixture
def queries(engine: sa.Engine) -> ConsensusQueries:
    return ConsensusQueries(engine, clock=lambda: NOW)


def emitted(engine: sa.Engine, kind: str) -> list[events_pb2.Event]:
    return [event for _, _, event in outbox_events(engine) if event.WhichOneof("payload") == kind]


def answers(task: str, job: str, *pairs: tuple[str, str]) -> list[events_pb2.Event]:
    return [answer_accepted(task, job, worker, label) for worker, label in pairs]


def graded_and_recounted(engine: sa.Engine) -> tuple[dict[str, Any], dict[str, Any]]:
    """The stored agreement counts of a classification job's resolved tasks and workers (each
    task's agree, each worker's compared and agreed) and those that comparing every answer
    with its task's current label gives."""
    tk, a, ws = tables.tasks, tables.answers, tables.worker_stats
    with engine.connect() as conn:
        resolved = {
            row.task_id: row for row in conn.execute(sa.select(tk).where(tk.c.state == "resolved", sa.not_(tk.c.gold)))
        }
        answered = conn.execute(sa.select(a.c.task_id, a.c.worker_id, a.c.label)).all()
        stats = conn.execute(sa.select(ws.c.worker_id, ws.c.compared, ws.c.agreed)).all()
    stored = {
        "agree": {task: row.agree for task, row in resolved.items()},
        "workers": {row.worker_id: (row.compared, row.agreed) for row in stats if row.compared},
    }
    agree = dict.fromkeys(resolved, 0)
    workers: dict[str, tuple[int, int]] = {}
    for task, worker, label in answered:
        if task in resolved:
            right = label == resolved[task].label
            agree[task] += right
            compared, agreed = workers.get(worker, (0, 0))
            workers[worker] = (compared + 1, agreed + right)
    return stored, {"agree": agree, "workers": workers}


def table_counts(engine: sa.Engine) -> dict[str, int]:
    with engine.connect() as conn:
        return {
            table.name: conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one()
            for table in tables.metadata.sorted_tables
        }


def test_unanimous_answers_resolve_at_overlap_min(
    handler: ConsensusEvents, queries: ConsensusQueries, engine: sa.Engine, signal: Signal
) -> None:
    created = NOW - dt.timedelta(seconds=30)
    handler.handle([job_created("j1"), task_created("t1", "j1", created_at=created)])
    handler.handle(answers("t1", "j1", ("a", "dog"), ("b", "dog")))
    assert emitted(engine, "task_resolved") == [] and signal.calls == 0
    handler.handle(answers("t1", "j1", ("c", "dog")))

    [event] = emitted(engine, "task_resolved")
    resolved = event.task_resolved
    assert (resolved.task_id, resolved.job_id, resolved.item_id, resolved.object_name) == (
        "t1",
        "j1",
        "item-t1",
        "t1.jpg",
    )
    assert resolved.label.classification.label == "dog" and not resolved.low_confidence
    assert resolved.confidence >= 0.9 and resolved.version == 1
    assert [(a.worker_id, a.weight) for a in resolved.answers] == [("a", 0.7), ("b", 0.7), ("c", 0.7)]
    assert signal.calls == 1
    assert emitted(engine, "more_answers_requested") == []

    result = queries.get_result("t1")
    assert (result.label, result.majority_label, result.version, result.resolved_at) == ("dog", "dog", 1, NOW)
    quality = queries.job_quality("j1")
    assert (quality.tasks, quality.resolved, quality.low_confidence, quality.answers) == (1, 1, 0, 3)
    assert quality.agreement == 1.0 and quality.ttr_p50_seconds == pytest.approx(30.0)
    assert quality.mean_confidence == pytest.approx(resolved.confidence)
    assert [(m.minute, m.count) for m in quality.resolved_per_minute] == [(int(NOW.replace(second=0).timestamp()), 1)]


def test_a_split_asks_for_one_more_answer_exactly_once(handler: ConsensusEvents, engine: sa.Engine) -> None:
    handler.handle([job_created("j1"), task_created("t1", "j1")])
    batch = answers("t1", "j1", ("a", "dog"), ("b", "dog"), ("c", "cat"))
    handler.handle(batch)
    handler.handle(batch)  # redelivered
    handler.handle([batch[0]] * 3)

    [request] = emitted(engine, "more_answers_requested")
    assert request.more_answers_requested.task_id == "t1"
    assert request.more_answers_requested.job_id == "j1"
    assert request.more_answers_requested.answers_wanted == 4
    assert [key for topic, key, _ in outbox_events(engine)] == ["t1"]
    assert [topic for topic, _, _ in outbox_events(engine)] == [TOPICS.task_requests]

    handler.handle(answers("t1", "j1", ("d", "cat")))
    wanted = [e.more_answers_requested.answers_wanted for e in emitted(engine, "more_answers_requested")]
    assert wanted == [4, 5]
    handler.handle(answers("t1", "j1", ("e", "bird")))
    [resolved] = emitted(engine, "task_resolved")
    assert resolved.task_resolved.low_confidence
    assert resolved.task_resolved.label.classification.label == "cat"  # 2-2-1: cat first in the job's labels


def test_a_burst_of_answers_asks_once_for_what_is_still_missing(handler: ConsensusEvents, engine: sa.Engine) -> None:
    handler.handle([job_created("j1"), task_created("t1", "j1")])
    handler.handle(answers("t1", "j1", ("a", "dog"), ("b", "cat"), ("c", "dog"), ("d", "cat")))
    wanted = [e.more_answers_requested.answers_wanted for e in emitted(engine, "more_answers_requested")]
    assert wanted == [5]


def test_the_same_batch_twice_changes_nothing(handler: ConsensusEvents, engine: sa.Engine, signal: Signal) -> None:
    batch = [
        job_created("j1"),
        task_created("t1", "j1"),
        task_created("g1", "j1", gold_label="cat"),
        *answers("t1", "j1", ("a", "dog"), ("b", "dog"), ("c", "dog")),
        *answers("g1", "j1", ("a", "cat"), ("b", "dog")),
    ]
    handler.handle(batch)
    before = table_counts(engine)
    outbox_before = outbox_events(engine)
    reliability = handler.reliability("b")
    calls = signal.calls

    handler.handle(batch)
    handler.handle(list(reversed(batch)))

    assert table_counts(engine) == before
    assert [e.event_id for _, _, e in outbox_events(engine)] == [e.event_id for _, _, e in outbox_before]
    assert handler.reliability("b") == reliability
    assert signal.calls == calls


def test_the_same_answer_under_another_event_id_counts_once(
    handler: ConsensusEvents, queries: ConsensusQueries
) -> None:
    handler.handle([job_created("j1"), task_created("t1", "j1")])
    first = answer_accepted("t1", "j1", "a", "dog")
    again = events_pb2.Event()
    again.CopyFrom(first)
    again.event_id = "another-id"
    handler.handle([first])
    handler.handle([again])
    second_vote = answer_accepted("t1", "j1", "a", "cat")  # the same worker again: ignored
    handler.handle([second_vote])
    assert queries.job_quality("j1").answers == 1


def test_answers_before_their_task_and_job_are_kept_and_applied(
    handler: ConsensusEvents, queries: ConsensusQueries, engine: sa.Engine
) -> None:
    handler.handle(answers("t1", "j1", ("a", "bird"), ("b", "bird")))
    handler.handle(answers("t1", "j1", ("c", "bird")))
    handler.handle([task_created("t1", "j1")])
    assert outbox_events(engine) == []
    with pytest.raises(NotFound):
        queries.get_result("t1")
    quality = queries.job_quality("j1")
    assert (quality.tasks, quality.answers, quality.resolved) == (1, 0, 0)  # waiting for the job

    handler.handle([job_created("j1")])
    [resolved] = emitted(engine, "task_resolved")
    assert resolved.task_resolved.label.classification.label == "bird"
    assert [a.worker_id for a in resolved.task_resolved.answers] == ["a", "b", "c"]
    assert queries.job_quality("j1").answers == 3


def test_everything_in_one_batch_in_reverse_order(handler: ConsensusEvents, engine: sa.Engine) -> None:
    batch = [
        *answers("t1", "j1", ("a", "cat"), ("b", "cat"), ("c", "cat")),
        task_created("t1", "j1"),
        job_created("j1"),
    ]
    handler.handle(batch)
    [resolved] = emitted(engine, "task_resolved")
    assert resolved.task_resolved.label.classification.label == "cat"


def test_a_task_before_its_job_waits_then_asks(handler: ConsensusEvents, engine: sa.Engine) -> None:
    handler.handle([task_created("t1", "j1"), *answers("t1", "j1", ("a", "cat"), ("b", "dog"), ("c", "cat"))])
    assert outbox_events(engine) == []
    handler.handle([job_created("j1", overlap=(3, 4))])
    [request] = emitted(engine, "more_answers_requested")
    assert request.more_answers_requested.answers_wanted == 4


def test_gold_answers_grade_workers_and_are_never_published(
    handler: ConsensusEvents, queries: ConsensusQueries, engine: sa.Engine
) -> None:
    # Answers to a gold task may come before the task itself.
    handler.handle(answers("g1", "j1", ("good", "cat"), ("bad", "dog")))
    handler.handle([job_created("j1"), task_created("g1", "j1", gold_label="cat")])
    handler.handle([task_created("g2", "j1", gold_label="dog"), *answers("g2", "j1", ("good", "dog"), ("bad", "cat"))])
    handler.handle(answers("g1", "j1", ("third", "cat"), ("fourth", "cat")))

    assert outbox_events(engine) == []
    with pytest.raises(NotFound):
        queries.get_result("g1")
    assert handler.reliability("good") == pytest.approx(4.8 / 6)
    assert handler.reliability("bad") == pytest.approx(2.8 / 6)

    quality = queries.job_quality("j1")
    assert (quality.tasks, quality.gold_answers, quality.resolved) == (0, 6, 0)
    assert quality.gold_accuracy == pytest.approx(4 / 6)
    workers = {w.worker_id: w for w in queries.list_workers("j1")}
    assert (workers["good"].gold_answers, workers["good"].gold_correct, workers["good"].answers) == (2, 2, 2)
    assert (workers["bad"].gold_answers, workers["bad"].gold_correct) == (2, 0)
    assert workers["good"].reliability == pytest.approx(4.8 / 6)
    assert queries.list_workers("j1")[0].worker_id == "good"


def test_reliable_workers_outvote_a_majority_of_unreliable_ones(handler: ConsensusEvents, engine: sa.Engine) -> None:
    handler.handle([job_created("j1", overlap=(3, 3), target=0.5)])
    gold = [task_created(f"g{i}", "j1", gold_label="cat") for i in range(6)]
    graded = [answer_accepted(f"g{i}", "j1", "expert", "cat") for i in range(6)]
    graded += [answer_accepted(f"g{i}", "j1", spammer, "dog") for i in range(6) for spammer in ("s1", "s2")]
    handler.handle(gold + graded)
    handler.handle([task_created("t1", "j1"), *answers("t1", "j1", ("expert", "bird"), ("s1", "dog"), ("s2", "dog"))])
    [resolved] = emitted(engine, "task_resolved")
    assert resolved.task_resolved.label.classification.label == "bird"
    # Each answer says whether it agrees with the label: payments pays by it.
    verdicts = {a.worker_id: a.agreed for a in resolved.task_resolved.answers}
    assert verdicts == {"expert": True, "s1": False, "s2": False}
    assert all(a.HasField("agreed") for a in resolved.task_resolved.answers)
    with engine.connect() as conn:
        majority = conn.execute(sa.select(tables.results.c.majority_label)).scalar_one()
    assert majority == "dog"


def test_an_answer_after_resolution_is_counted_and_the_label_stays(
    handler: ConsensusEvents, queries: ConsensusQueries, engine: sa.Engine
) -> None:
    handler.handle([job_created("j1"), task_created("t1", "j1")])
    handler.handle(answers("t1", "j1", ("a", "dog"), ("b", "dog"), ("c", "dog"), ("late", "cat")))
    handler.handle(answers("t1", "j1", ("later", "dog")))
    assert len(emitted(engine, "task_resolved")) == 1
    result = queries.get_result("t1")
    assert result.label == "dog" and [a.worker_id for a in result.answers] == ["a", "b", "c"]
    quality = queries.job_quality("j1")
    assert quality.answers == 5 and quality.agreement == pytest.approx(4 / 5)
    workers = {w.worker_id: w for w in queries.list_workers()}
    assert (workers["late"].answers, workers["late"].agreement) == (1, 0.0)
    assert workers["later"].agreement == 1.0
    assert workers["late"].reliability < 0.7 < workers["later"].reliability


def test_each_answer_compared_with_the_label_keeps_the_outcome(handler: ConsensusEvents, engine: sa.Engine) -> None:
    handler.handle([job_created("j1"), task_created("t1", "j1"), task_created("g1", "j1", gold_label="cat")])
    # Stored in one batch, compared in a later one when the task resolves.
    handler.handle(answers("t1", "j1", ("a", "dog"), ("b", "cat")))
    handler.handle([*answers("t1", "j1", ("c", "dog"), ("d", "dog")), *answers("g1", "j1", ("a", "cat"))])
    handler.handle(answers("t1", "j1", ("late", "cat")))
    a = tables.answers
    with engine.connect() as conn:
        outcomes = {(row.task_id, row.worker_id): row.agreed for row in conn.execute(sa.select(a))}
    # Gold answers are graded against gold, not compared with a consensus label.
    assert outcomes == {
        ("t1", "a"): True,
        ("t1", "b"): False,
        ("t1", "c"): True,
        ("t1", "d"): True,
        ("t1", "late"): False,
        ("g1", "a"): None,
    }


def test_consensus_agreement_moves_reliability_a_quarter_as_much_as_gold(handler: ConsensusEvents) -> None:
    handler.handle([job_created("j1"), task_created("t1", "j1")])
    handler.handle(answers("t1", "j1", ("a", "dog"), ("b", "dog"), ("c", "dog")))
    assert handler.reliability("a") == pytest.approx(3.05 / 4.25)


def test_the_cache_is_rebuilt_from_the_database(handler: ConsensusEvents, engine: sa.Engine) -> None:
    handler.handle(
        [
            job_created("j1", overlap=(2, 3), target=0.8),
            task_created("g1", "j1", gold_label="cat"),
            *answers("g1", "j1", ("a", "cat"), ("b", "dog")),
            task_created("t1", "j1"),
            *answers("t1", "j1", ("a", "dog"), ("b", "dog")),
        ]
    )
    restarted = ConsensusEvents(engine, TOPICS, clock=lambda: NOW)
    restarted.load()
    for worker in ("a", "b", "nobody"):
        assert restarted.reliability(worker) == pytest.approx(handler.reliability(worker))
    # The restarted handler knows the job: a new task resolves without a new JobCreated.
    restarted.handle([task_created("t2", "j1"), *answers("t2", "j1", ("a", "bird"), ("b", "bird"))])
    assert len(emitted(engine, "task_resolved")) == 2


def test_events_of_other_kinds_are_ignored(handler: ConsensusEvents, engine: sa.Engine) -> None:
    sealed = events_pb2.Event(event_id="sealed", job_sealed=events_pb2.JobSealed(job_id="j1", objects=3))
    # On the answers topic too: tasking's word to payments that an operator overrode a flag.
    override = events_pb2.Event(
        event_id="override",
        worker_flagged=events_pb2.WorkerFlagged(worker_id="a", spammer=False, reason="reinstated by an operator"),
    )
    handler.handle([sealed, override])
    assert table_counts(engine)["processed_events"] == 0


def test_queries_for_unknown_ids(queries: ConsensusQueries, handler: ConsensusEvents) -> None:
    with pytest.raises(NotFound, match="nope"):
        queries.get_result("nope")
    with pytest.raises(NotFound, match="job 'nope'"):
        queries.export_results("nope")
    assert queries.job_quality("nope").tasks == 0
    assert queries.list_workers("nope") == []
    handler.handle([task_created("t1", "early-job")])
    assert list(queries.export_results("early-job")) == []


def test_export_streams_every_resolved_task_of_the_job(handler: ConsensusEvents, queries: ConsensusQueries) -> None:
    handler.handle([job_created("j1", overlap=(1, 1)), job_created("j2", overlap=(1, 1))])
    batch = [task_created(f"t{i:02d}", "j1") for i in range(7)] + [task_created("other", "j2")]
    batch += [answer_accepted(f"t{i:02d}", "j1", "w", "cat") for i in range(7)]
    batch += [answer_accepted("other", "j2", "w", "dog"), task_created("open", "j1")]
    handler.handle(batch)
    exported = list(queries.export_results("j1", page_size=3))
    assert [r.task_id for r in exported] == [f"t{i:02d}" for i in range(7)]
    assert all(r.job_id == "j1" and r.label == "cat" for r in exported)
    everything = queries.job_quality(None)
    assert (everything.tasks, everything.resolved) == (9, 8)


def test_quality_figures_over_several_tasks(handler: ConsensusEvents, queries: ConsensusQueries) -> None:
    handler.handle([job_created("j1", overlap=(2, 2), target=0.99)])
    tasks = [task_created(f"t{i}", "j1", created_at=NOW - dt.timedelta(seconds=10 * (i + 1))) for i in range(4)]
    handler.handle(tasks)
    handler.handle(answers("t0", "j1", ("a", "cat"), ("b", "cat")))
    handler.handle(answers("t1", "j1", ("a", "cat"), ("b", "dog")))
    handler.handle(answers("t2", "j1", ("a", "dog"), ("b", "dog")))
    quality = queries.job_quality("j1")
    assert (quality.tasks, quality.resolved, quality.low_confidence, quality.answers) == (4, 3, 3, 6)
    assert quality.agreement == pytest.approx((1 + 0.5 + 1) / 3)
    assert (quality.ttr_p50_seconds, quality.ttr_p99_seconds) == pytest.approx((20.0, 29.8))
    assert 0.5 < quality.estimated_accuracy == quality.mean_confidence < 0.99
    assert sum(m.count for m in quality.resolved_per_minute) == 3


def test_spammers_are_flagged_and_agreement_is_chance_corrected(
    handler: ConsensusEvents, queries: ConsensusQueries
) -> None:
    from consensus_helpers import simulate_crowd

    crowd = simulate_crowd(seed=3, n_tasks=300, n_workers=30, answers_per_task=5)
    events: list[events_pb2.Event] = [job_created("job", labels=crowd.labels, overlap=(5, 5), target=0.99)]
    events += [task_created(task, "job", gold_label=crowd.gold.get(task)) for task in crowd.truth]
    events += [
        answer_accepted(task, "job", worker, label, gold=task in crowd.gold) for task, worker, label in crowd.answers
    ]
    for start in range(0, len(events), 500):
        handler.handle(events[start : start + 500])

    workers = {w.worker_id: w for w in queries.list_workers("job")}
    # With about 15 answers per confusion row the scores are noisy, but the spammers still
    # score highest, and only spammers cross the threshold.
    by_score = sorted(workers, key=lambda w: workers[w].spam_score, reverse=True)
    assert set(by_score[: len(crowd.spammers)]) == crowd.spammers
    flagged = {w for w, q in workers.items() if q.spammer}
    assert flagged <= crowd.spammers
    assert len(flagged) >= len(crowd.spammers) // 2
    some = workers[next(iter(crowd.spammers))]
    assert some.labels == crowd.labels
    assert len(some.confusion) == len(crowd.labels) ** 2
    assert sum(some.confusion[: len(crowd.labels)]) == pytest.approx(1.0)

    quality = queries.job_quality("job")
    assert 0.0 < quality.fleiss_kappa < 1.0
    assert 0.0 < quality.krippendorff_alpha < 1.0
    assert quality.krippendorff_alpha == pytest.approx(quality.fleiss_kappa, abs=0.02)
    assert queries.job_quality(None).fleiss_kappa == pytest.approx(quality.fleiss_kappa)


def test_a_good_worker_with_few_answers_on_rare_labels_is_not_called_a_spammer(
    handler: ConsensusEvents, queries: ConsensusQueries
) -> None:
    # Right 8 times in 10, the two misses on the rare labels: each rare row holds two answers
    # that disagree. Comparing raw rows, those two rows cancelled the evidence of the other
    # eight answers and the worker scored 1.0, a certain spammer, and lost their pay.
    truth = ["cat"] * 6 + ["dog", "dog", "bird", "bird"]
    given = ["cat"] * 6 + ["dog", "cat", "bird", "cat"]
    events: list[events_pb2.Event] = [job_created("j", labels=("cat", "dog", "bird"), overlap=(1, 1), target=0.5)]
    events += [task_created(f"g{i}", "j", gold_label=label) for i, label in enumerate(truth)]
    events += [answer_accepted(f"g{i}", "j", "careful", label, gold=True) for i, label in enumerate(given)]
    handler.handle(events)

    careful = next(w for w in queries.list_workers("j") if w.worker_id == "careful")
    assert careful.gold_answers == 10
    assert not careful.spammer
    assert careful.spam_score < 0.5


def test_a_refit_relabels_with_a_new_version_and_never_hurts(
    handler: ConsensusEvents, queries: ConsensusQueries, engine: sa.Engine, signal: Signal
) -> None:
    from consensus_helpers import simulate_crowd

    from services.consensus.refit import Refit

    # Three answers per task and a lenient target: streaming resolves early with the worker
    # estimates of the moment, which a fit over every answer can improve on.
    crowd = simulate_crowd(seed=11, n_tasks=300, n_workers=30, answers_per_task=3, spammer_share=0.3)
    events: list[events_pb2.Event] = [job_created("job", labels=crowd.labels, overlap=(3, 3), target=0.5)]
    events += [task_created(task, "job", gold_label=crowd.gold.get(task)) for task in crowd.truth]
    events += [
        answer_accepted(task, "job", worker, label, gold=task in crowd.gold) for task, worker, label in crowd.answers
    ]
    for start in range(0, len(events), 500):
        handler.handle(events[start : start + 500])

    def accuracy() -> float:
        results = list(queries.export_results("job"))
        return sum(r.label == crowd.truth[r.task_id] for r in results) / len(results)

    before = accuracy()
    resolved_events = len(emitted(engine, "task_resolved"))
    stored, recounted = graded_and_recounted(engine)
    assert stored == recounted
    refit = Refit(engine, TOPICS, signal, clock=lambda: NOW)
    changed = refit.run_once()
    assert changed > 0
    assert accuracy() >= before
    relabeled = [r for r in queries.export_results("job") if r.version == 2]
    assert len(relabeled) == changed
    republished = emitted(engine, "task_resolved")
    assert len(republished) == resolved_events + changed
    assert {e.task_resolved.version for e in republished[resolved_events:]} == {2}
    # The relabelled tasks' answers are graded again against their new labels.
    stored, recounted = graded_and_recounted(engine)
    assert stored == recounted
    # Nothing new since: the next round refits nothing and publishes nothing.
    assert refit.run_once() == 0
    assert len(emitted(engine, "task_resolved")) == resolved_events + changed


def test_expert_review_holds_a_split_task_until_a_reviewer_decides(
    handler: ConsensusEvents, queries: ConsensusQueries, engine: sa.Engine, signal: Signal
) -> None:
    from quorum.errors import FailedPrecondition, InvalidArgument
    from services.consensus.review import ExpertReview

    labels = ("cat", "dog", "bird")
    handler.handle(
        [
            job_created("job", labels=labels, overlap=(3, 3), target=0.95, expert_review=True),
            task_created("split", "job"),
            task_created("clear", "job"),
            *answers("split", "job", ("w1", "cat"), ("w2", "dog"), ("w3", "bird")),
            *answers("clear", "job", ("w1", "dog"), ("w2", "dog"), ("w3", "dog")),
        ]
    )
    # The split task reached overlap max below target: no result, nothing published for it.
    resolved = {e.task_resolved.task_id for e in emitted(engine, "task_resolved")}
    assert "split" not in resolved
    with pytest.raises(NotFound):
        queries.get_result("split")

    review = ExpertReview(engine, TOPICS, signal, clock=lambda: NOW)
    [pending] = review.pending("job")
    assert (pending.task_id, pending.labels) == ("split", labels)
    assert [a.worker_id for a in pending.answers] == ["w1", "w2", "w3"]
    assert pending.confidence < 0.95

    with pytest.raises(InvalidArgument, match="label"):
        review.submit("split", "expert-1", "fish")
    with pytest.raises(FailedPrecondition):
        review.submit("clear", "expert-1", "dog")
    with pytest.raises(NotFound):
        review.submit("nope", "expert-1", "dog")

    result = review.submit("split", "expert-1", "bird")
    assert (result.label, result.confidence, result.low_confidence) == ("bird", 1.0, False)
    assert queries.get_result("split").label == "bird"
    assert review.pending("job") == []
    [published] = [e.task_resolved for e in emitted(engine, "task_resolved") if e.task_resolved.task_id == "split"]
    assert published.label.classification.label == "bird"
    # The crowd's answers are judged against the reviewer's label.
    verdicts = {a.worker_id: a.agreed for a in published.answers}
    assert verdicts == {"w1": False, "w2": False, "w3": True, "expert-1": True}
    with pytest.raises(FailedPrecondition):
        review.submit("split", "expert-2", "cat")
    # A late answer to the reviewed task is counted; the reviewer's label stays.
    handler.handle(answers("split", "job", ("w4", "cat")))
    assert queries.get_result("split").label == "bird"


def test_without_expert_review_the_split_task_resolves_low_confidence(
    handler: ConsensusEvents, queries: ConsensusQueries
) -> None:
    handler.handle(
        [
            job_created("job", labels=("cat", "dog", "bird"), overlap=(3, 3), target=0.95),
            task_created("split", "job"),
            *answers("split", "job", ("w1", "cat"), ("w2", "dog"), ("w3", "bird")),
        ]
    )
    assert queries.get_result("split").low_confidence


def test_spam_watch_publishes_each_verdict_change_once(
    handler: ConsensusEvents, queries: ConsensusQueries, engine: sa.Engine, signal: Signal
) -> None:
    from consensus_helpers import simulate_crowd

    from services.consensus.spam_watch import SpamWatch

    crowd = simulate_crowd(seed=3, n_tasks=300, n_workers=30, answers_per_task=5)
    events: list[events_pb2.Event] = [job_created("job", labels=crowd.labels, overlap=(5, 5), target=0.99)]
    events += [task_created(task, "job", gold_label=crowd.gold.get(task)) for task in crowd.truth]
    events += [
        answer_accepted(task, "job", worker, label, gold=task in crowd.gold) for task, worker, label in crowd.answers
    ]
    for start in range(0, len(events), 500):
        handler.handle(events[start : start + 500])

    watch = SpamWatch(engine, TOPICS, signal, queries, clock=lambda: NOW)
    published = watch.run_once()
    flagged = [e.worker_flagged for e in emitted(engine, "worker_flagged")]
    assert published == len(flagged) > 0
    assert {f.worker_id for f in flagged} <= crowd.spammers
    assert all(f.spammer and f.spam_score > 0.9 and "chance" in f.reason for f in flagged)
    # Nothing changed: nothing more is published.
    assert watch.run_once() == 0
    assert len(emitted(engine, "worker_flagged")) == published
