"""The consensus domain: the decision table, task progress and evaluation."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys

import pytest

from services.consensus.domain import (
    Decision,
    Graded,
    JobSpec,
    TaskProgress,
    TaskState,
    Vote,
    WorkerEvidence,
    decide,
    evaluate,
    minute_of,
    percentiles,
    regrade,
)

JOB = JobSpec.normalised("job", ["cat", "dog", "bird"], 3, 5, 0.9)


def prior(_: str) -> float:
    return 0.7


@pytest.mark.parametrize(
    ("answers", "confidence", "expected"),
    [
        (1, 0.99, Decision.WAIT),  # confident, but fewer than overlap.min answers
        (2, 0.50, Decision.WAIT),
        (3, 0.90, Decision.RESOLVE),  # the target is inclusive
        (3, 0.89, Decision.ASK_MORE),
        (4, 0.95, Decision.RESOLVE),
        (4, 0.50, Decision.ASK_MORE),
        (5, 0.95, Decision.RESOLVE),
        (5, 0.50, Decision.RESOLVE_LOW_CONFIDENCE),  # at overlap.max: resolve anyway
        (6, 0.50, Decision.RESOLVE_LOW_CONFIDENCE),
    ],
)
def test_decision_table(answers: int, confidence: float, expected: Decision) -> None:
    assert decide(answers, confidence, target=0.9, overlap_min=3, overlap_max=5) is expected


def test_min_equal_to_max_never_asks() -> None:
    assert decide(3, 0.4, 0.9, 3, 3) is Decision.RESOLVE_LOW_CONFIDENCE
    assert decide(2, 0.4, 0.9, 3, 3) is Decision.WAIT


def test_job_spec_is_normalised() -> None:
    spec = JobSpec.normalised("j", ["a", "b", "a"], 0, 0, 1.7)
    assert (spec.labels, spec.overlap_min, spec.overlap_max, spec.target_confidence) == (("a", "b"), 1, 1, 1.0)
    assert JobSpec.normalised("j", ["a"], 4, 2, -1).overlap_max == 4
    assert spec.index_of("b") == 1 and spec.index_of("zebra") == -1


def test_evaluate_gives_posterior_majority_and_weights() -> None:
    votes = [Vote("expert", "cat"), Vote("s1", "dog"), Vote("s2", "dog")]
    reliability = {"expert": 0.95, "s1": 0.4, "s2": 0.4}
    result = evaluate(JOB.labels, votes, reliability.__getitem__)
    assert result.label == "cat"
    assert result.majority_label == "dog"
    assert result.weights == (0.95, 0.4, 0.4)
    assert sum(result.distribution) == pytest.approx(1.0)
    assert result.confidence == pytest.approx(max(result.distribution))


def test_evaluate_breaks_ties_by_the_job_label_order() -> None:
    votes = [Vote("a", "dog"), Vote("b", "cat")]
    result = evaluate(JOB.labels, votes, prior)
    assert (result.label, result.majority_label) == ("cat", "cat")
    result = evaluate(("dog", "cat"), votes, prior)
    assert (result.label, result.majority_label) == ("dog", "dog")


def test_evaluate_without_job_labels_uses_the_labels_voted_for() -> None:
    result = evaluate((), [Vote("a", "y"), Vote("b", "x"), Vote("c", "y")], prior)
    assert result.labels == ("x", "y") and result.label == "y"
    with pytest.raises(ValueError, match="at least one label"):
        evaluate((), [], prior)


def test_evaluate_clips_reliabilities_into_the_weights() -> None:
    result = evaluate(JOB.labels, [Vote("a", "cat")], lambda _: 1.0)
    assert result.weights == (0.99,)


def open_task() -> TaskProgress:
    return TaskProgress("t", "job", gold=False, gold_label="", state=TaskState.OPEN)


def test_three_agreeing_answers_resolve_at_overlap_min() -> None:
    task = open_task()
    steps = [task.add_answer(Vote(w, "dog"), JOB, prior) for w in ("a", "b", "c")]
    assert [s.decision for s in steps] == [Decision.WAIT, Decision.WAIT, Decision.RESOLVE]
    assert task.state is TaskState.RESOLVED and task.label == "dog" and task.agree == 3
    assert steps[-1].compared == (("a", True), ("b", True), ("c", True))
    assert steps[-1].evaluation is not None and steps[-1].evaluation.confidence >= 0.9


def test_a_split_asks_for_exactly_one_more_answer_once() -> None:
    task = open_task()
    for worker, label in (("a", "dog"), ("b", "dog"), ("c", "cat")):
        step = task.add_answer(Vote(worker, label), JOB, prior)
    assert step.decision is Decision.ASK_MORE
    assert task.take_request() == 4
    assert task.take_request() is None  # the same count is never asked twice
    step = task.add_answer(Vote("d", "bird"), JOB, prior)
    assert step.decision is Decision.ASK_MORE
    assert task.take_request() == 5


def test_a_burst_asks_only_for_what_the_last_answer_needs() -> None:
    task = open_task()
    for worker, label in (("a", "dog"), ("b", "cat"), ("c", "dog"), ("d", "cat")):
        task.add_answer(Vote(worker, label), JOB, prior)
    assert task.take_request() == 5


def test_a_split_resolves_with_low_confidence_at_overlap_max() -> None:
    task = open_task()
    labels = ["dog", "cat", "bird", "dog", "cat"]
    steps = [task.add_answer(Vote(f"w{i}", label), JOB, prior) for i, label in enumerate(labels)]
    assert steps[-1].decision is Decision.RESOLVE_LOW_CONFIDENCE
    assert task.label == "cat"  # 2-2-1 tie: cat comes first in the job's labels
    assert task.take_request() is None


def test_an_answer_after_resolution_is_counted_but_changes_nothing() -> None:
    task = open_task()
    for worker in ("a", "b", "c"):
        task.add_answer(Vote(worker, "dog"), JOB, prior)
    step = task.add_answer(Vote("late", "cat"), JOB, prior)
    assert step.decision is None and step.compared == (("late", False),)
    assert (task.label, task.answers, task.agree) == ("dog", 4, 3)


def test_gold_answers_grade_workers_and_never_resolve() -> None:
    task = TaskProgress("g", "job", gold=True, gold_label="cat", state=TaskState.GOLD)
    right = task.add_answer(Vote("a", "cat"), None, prior)
    wrong = task.add_answer(Vote("b", "dog"), None, prior)
    assert (right.gold_correct, wrong.gold_correct) == (True, False)
    assert task.state is TaskState.GOLD and (task.answers, task.agree) == (2, 1)
    assert not right.resolved and task.take_request() is None


def test_a_waiting_task_refuses_answers() -> None:
    task = TaskProgress("t", "job", gold=False, gold_label="", state=TaskState.WAITING)
    with pytest.raises(ValueError, match="waits for job"):
        task.add_answer(Vote("a", "cat"), None, prior)


def test_a_regrade_starts_from_the_recorded_outcomes() -> None:
    answers = [
        Graded(Vote("a", "cat"), True),
        Graded(Vote("b", "dog"), False),
        Graded(Vote("c", "cat")),  # recorded before outcomes were: compared with the old label
        Graded(Vote("d", "dog"), True),  # recorded as agreeing with "cat", as a fusion may
    ]
    graded = regrade(JOB, {"t": ("cat", "dog")}, {"t": answers})
    assert graded.agreed == {"a": -1, "b": 1, "c": -1}
    assert graded.agree == {"t": 2} and graded.flags == {"t": (False, True, False, True)}
    # What the fusion behind the new label says of an answer stands over the comparison.
    fused = regrade(JOB, {"t": ("cat", "dog")}, {"t": answers}, {"t": {"a": True, "b": False}})
    assert fused.agreed == {"c": -1}
    assert fused.agree == {"t": 2} and fused.flags == {"t": (True, False, False, True)}


def test_worker_evidence_reliability() -> None:
    assert WorkerEvidence().reliability() == pytest.approx(0.7)
    assert WorkerEvidence(gold_answers=6, gold_correct=0).reliability() == pytest.approx(0.28)
    assert WorkerEvidence(compared=8, agreed=8).reliability() == pytest.approx(4.8 / 6)


def test_percentiles_and_minutes() -> None:
    assert percentiles([]) == (0.0, 0.0, 0.0)
    assert percentiles([1.0, 2.0, 3.0, 4.0, 5.0]) == pytest.approx((3.0, 4.6, 4.96))
    assert minute_of(dt.datetime(2024, 1, 1, 0, 1, 59, tzinfo=dt.UTC)) == 1704067260


def test_the_domain_and_aggregation_import_no_infrastructure() -> None:
    code = (
        "import sys, services.consensus.domain, services.consensus.aggregation\n"
        "bad = [m for m in ('grpc', 'google.protobuf', 'kafka', 'sqlalchemy', 'quorum.v1') if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == ""


def test_streaming_posteriors_agree_with_a_batch_fit_on_the_same_parameters() -> None:
    """The service updates each task's posterior answer by answer; fitting every answer at
    once with the same worker reliabilities must give the same distribution."""
    import random

    from services.consensus.aggregation import OneCoinVote
    from services.consensus.domain import Vote, evaluate

    rng = random.Random(5)
    labels = ("cat", "dog", "bird")
    skills = {f"w{i}": rng.uniform(0.3, 0.97) for i in range(12)}
    answers = [
        (f"t{t}", worker, rng.choice(labels))
        for t in range(60)
        for worker in rng.sample(sorted(skills), rng.randint(1, 6))
    ]
    batch = OneCoinVote(skills, labels=labels).fit_predict_proba(answers)
    for task, distribution in batch.items():
        votes: list[Vote] = []
        for answer_task, worker, label in answers:
            if answer_task == task:
                votes.append(Vote(worker, label))
                streamed = evaluate(labels, votes, skills.__getitem__)
        assert streamed.distribution == pytest.approx([distribution[label] for label in labels], abs=1e-9)
