"""Consensus domain: job specs, the decision taken after every answer, a task's progress
towards a label, and the read models the queries return.

Pure: no grpc, protobuf, Kafka or SQLAlchemy; numpy for the arithmetic.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from services.consensus import structured
from services.consensus.aggregation import MAX_RELIABILITY, MIN_RELIABILITY, BetaReliability, one_coin_posterior

RELIABILITY = BetaReliability()
"""The reliability prior and evidence weights the service uses (mean 0.7, strength 4,
consensus agreement worth 0.25 of a gold answer); see
:mod:`services.consensus.aggregation.reliability`."""

ReliabilityOf = Callable[[str], float]


@dataclass(frozen=True)
class JobSpec:
    """What consensus needs of a job: its labels (the order breaks ties), overlap and target.

    Build it with :meth:`normalised`, which keeps the service sane if a malformed spec slips
    past ingest's validation.
    """

    job_id: str
    labels: tuple[str, ...]
    overlap_min: int
    overlap_max: int
    target_confidence: float
    # Below target at overlap_max: wait for an expert instead of resolving low-confidence.
    expert_review: bool = False
    # The organisation the job belongs to (JobSpec.client_id).
    org_id: str = ""
    # The Answer member its workers set: "classification", "boxes", "spans", ...
    answer_kind: str = "classification"
    _index: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_index", {label: k for k, label in enumerate(self.labels)})

    @classmethod
    def normalised(
        cls,
        job_id: str,
        labels: Sequence[str],
        overlap_min: int,
        overlap_max: int,
        target_confidence: float,
        expert_review: bool = False,
        org_id: str = "",
        answer_kind: str = "classification",
    ) -> JobSpec:
        """Labels deduplicated in order, min at least 1, max at least min, target in [0, 1]."""
        lo = max(1, int(overlap_min))
        return cls(
            job_id=job_id,
            labels=tuple(dict.fromkeys(labels)),
            overlap_min=lo,
            overlap_max=max(lo, int(overlap_max)),
            target_confidence=min(1.0, max(0.0, float(target_confidence))),
            expert_review=bool(expert_review),
            org_id=org_id,
            answer_kind=answer_kind or "classification",
        )

    def index_of(self, label: str) -> int:
        """Position of ``label`` among the job's labels; -1 when it is not one of them."""
        return self._index.get(label, -1)


class Decision(enum.Enum):
    """What to do with an unresolved task after a new answer."""

    WAIT = "wait"
    ASK_MORE = "ask_more"
    RESOLVE = "resolve"
    RESOLVE_LOW_CONFIDENCE = "resolve_low_confidence"
    REVIEW = "review"


def decide(
    answers: int, confidence: float, target: float, overlap_min: int, overlap_max: int, expert_review: bool = False
) -> Decision:
    """The decision for a non-gold task with ``answers`` answers and a winning posterior of
    ``confidence``: resolve once ``overlap_min`` answers reach ``target``; at ``overlap_max``
    resolve anyway, flagged low-confidence (or hand it to an expert when the job asks for
    review); between the two ask for one more answer; below
    ``overlap_min`` wait for the answers tasking already hands out. O(1)."""
    if answers >= overlap_min and confidence >= target:
        return Decision.RESOLVE
    if answers >= overlap_max:
        return Decision.REVIEW if expert_review else Decision.RESOLVE_LOW_CONFIDENCE
    if answers >= overlap_min:
        return Decision.ASK_MORE
    return Decision.WAIT


@dataclass
class WorkerEvidence:
    """What is known about one worker's answers: gold answers (and how many were right) and
    answers compared with a resolved consensus label (and how many agreed)."""

    gold_answers: int = 0
    gold_correct: int = 0
    compared: int = 0
    agreed: int = 0

    def reliability(self, prior: BetaReliability = RELIABILITY) -> float:
        """Posterior mean probability that this worker's answer is right. O(1)."""
        return float(prior.estimate(self.gold_answers, self.gold_correct, self.compared, self.agreed))

    def copy(self) -> WorkerEvidence:
        return WorkerEvidence(self.gold_answers, self.gold_correct, self.compared, self.agreed)


@dataclass(frozen=True)
class Vote:
    """One worker's label for a task."""

    worker_id: str
    label: str


@dataclass(frozen=True)
class Evaluation:
    """A task's one-coin posterior over its job's labels and the plain majority label.

    ``weights[i]`` is the (clipped) reliability used for vote ``i``."""

    labels: tuple[str, ...]
    distribution: tuple[float, ...]
    label: str
    confidence: float
    majority_label: str
    weights: tuple[float, ...]
    # Per vote, whether it agrees with ``label``; None: it agrees when it equals ``label``.
    agreed: tuple[bool, ...] | None = None

    def agrees(self, index: int, vote: Vote) -> bool:
        """Whether vote ``index`` (``vote``) agrees with the label."""
        return self.agreed[index] if self.agreed is not None else vote.label == self.label


def evaluate(labels: Sequence[str], votes: Sequence[Vote], reliability_of: ReliabilityOf) -> Evaluation:
    """Posterior of a task under the one-coin model (see
    :mod:`services.consensus.aggregation.one_coin`), with ties and the majority vote broken by
    label order. Votes for a label outside ``labels`` carry no information. When ``labels`` is
    empty, the labels voted for (sorted) stand in. Raises ValueError with no labels at all.
    Costs O(n + K), about 20 microseconds for a handful of votes.
    """
    classes = tuple(labels) or tuple(sorted({v.label for v in votes}))
    if not classes:
        raise ValueError("a task needs at least one label to evaluate")
    index = {label: k for k, label in enumerate(classes)}
    label_idx = [index.get(v.label, -1) for v in votes]
    weights = tuple(min(MAX_RELIABILITY, max(MIN_RELIABILITY, reliability_of(v.worker_id))) for v in votes)
    posterior = one_coin_posterior(label_idx, weights, len(classes))
    winner = int(np.argmax(posterior))
    known = [k for k in label_idx if k >= 0]
    majority = int(np.argmax(np.bincount(known, minlength=len(classes)))) if known else 0
    return Evaluation(
        labels=classes,
        distribution=tuple(float(p) for p in posterior),
        label=classes[winner],
        confidence=float(posterior[winner]),
        majority_label=classes[majority],
        weights=weights,
    )


def evaluate_structured(job: JobSpec, votes: Sequence[Vote], reliability_of: ReliabilityOf) -> Evaluation:
    """The fused label of a task of a structured answer kind (see
    :mod:`services.consensus.structured`), its confidence and which votes agree with it; the
    majority label is the unweighted fusion. Raises ValueError with no votes."""
    answers = [(v.worker_id, v.label) for v in votes]
    weights = tuple(structured.clipped(reliability_of(v.worker_id)) for v in votes)
    label, confidence, agreed = structured.fuse(job.answer_kind, job.labels, answers, weights)
    majority = structured.fuse(job.answer_kind, job.labels, answers, [structured.NEUTRAL] * len(votes))[0]
    return Evaluation(
        labels=job.labels,
        distribution=(),
        label=label,
        confidence=confidence,
        majority_label=majority,
        weights=weights,
        agreed=agreed,
    )


@dataclass(frozen=True)
class StructuredRefit:
    """What :func:`refit_structured` found: per re-fused task its fused label (stored text),
    confidence and, per answer (in the order of its votes), whether the fusion found it agrees
    with that label; per worker the (clipped) reliability the last round fused with; and how
    many rounds ran."""

    labels: dict[str, str]
    confidences: dict[str, float]
    reliability: dict[str, float]
    rounds: int
    agreed: dict[str, tuple[bool, ...]] = field(default_factory=dict)


def refit_structured(
    job: JobSpec,
    votes: Mapping[str, Sequence[Vote]],
    gold: Mapping[str, str],
    resolved: Mapping[str, str],
    final: Collection[str] = frozenset(),
    elsewhere: Mapping[str, WorkerEvidence] | None = None,
    prior: BetaReliability = RELIABILITY,
    max_rounds: int = 3,
) -> StructuredRefit:
    """Re-estimates every worker of a structured job from all its answers at once and re-fuses
    its resolved tasks: an EM over the fused labels.

    ``votes`` are each task's answers (arrival order), ``gold`` the gold tasks' answers,
    ``resolved`` the resolved tasks' current labels; those in ``final`` (reviewed) keep theirs.
    ``elsewhere`` is each worker's evidence from other jobs. A round counts, per worker, its
    gold answers right (:func:`structured.agrees` with the gold answer: fixed, so gold pins
    reliability) and its answers to resolved tasks that agree with their current label,
    weighs them with ``prior`` as the streaming handler does (the same posterior mean and
    clamps), then re-fuses every resolved task but the final ones with those reliabilities.
    Rounds repeat, agreement now read off the fusion, until no label changes
    (:func:`structured.same_label`) or after ``max_rounds``.

    Raises ValueError for the classification kind (see ``offline.METHODS``). Costs one
    :func:`structured.agreements` over the answers to gold and resolved tasks, then one fusion
    per re-fused task and round (1-10 ms each, see ``benchmarks/structured_fusion_bench.py``).
    """
    kind, schema = job.answer_kind, job.labels
    if kind == "classification":
        raise ValueError("refit_structured is for structured answer kinds; classification is fitted by offline")
    # Every answer to a gold or resolved task, with the answer it is checked against.
    checked = [
        (task, vote, gold[task] if task in gold else resolved[task])
        for task in (*gold, *resolved)
        for vote in votes.get(task, ())
    ]
    others = elsewhere or {}
    base = {vote.worker_id: others.get(vote.worker_id, WorkerEvidence()).copy() for _, vote, _ in checked}
    right = structured.agreements(kind, schema, [(vote.label, reference) for _, vote, reference in checked])
    agreed: dict[str, tuple[bool, ...]] = {}
    for (task, vote, _), ok in zip(checked, right, strict=True):
        if task in gold:
            base[vote.worker_id].gold_answers += 1
            base[vote.worker_id].gold_correct += ok
        else:
            agreed[task] = (*agreed.get(task, ()), ok)
    labels = dict(resolved)
    refitted = [task for task in resolved if task not in final and votes.get(task)]
    confidences: dict[str, float] = {}
    reliability: dict[str, float] = {}
    rounds = 0
    while rounds < max_rounds:
        rounds += 1
        evidence = {worker: e.copy() for worker, e in base.items()}
        for task, flags in agreed.items():
            for vote, agrees in zip(votes.get(task, ()), flags, strict=True):
                evidence[vote.worker_id].compared += 1
                evidence[vote.worker_id].agreed += agrees
        reliability = {worker: structured.clipped(e.reliability(prior)) for worker, e in evidence.items()}
        changed = False
        for task in refitted:
            answers = [(v.worker_id, v.label) for v in votes[task]]
            weights = [reliability[v.worker_id] for v in votes[task]]
            label, confidences[task], agreed[task] = structured.fuse(kind, schema, answers, weights)
            changed = changed or not structured.same_label(label, labels[task])
            labels[task] = label
        if not changed:
            break
    return StructuredRefit(
        {task: labels[task] for task in refitted},
        confidences,
        reliability,
        rounds,
        {task: agreed[task] for task in refitted},
    )


class TaskState(enum.StrEnum):
    WAITING = "waiting"
    """A non-gold task whose job has not arrived: its answers are stored, not counted yet."""
    OPEN = "open"
    RESOLVED = "resolved"
    GOLD = "gold"
    """A gold task: never resolved nor published; its answers grade the workers."""
    REVIEW = "review"
    """Reached overlap max below target in an expert-review job: waits for a reviewer."""


@dataclass(frozen=True)
class Step:
    """What one answer did to a task, for the caller to record.

    ``gold_correct`` is set for an answer to a gold task with a known answer. ``compared``
    lists (worker, agreed) consensus comparisons: every vote when the task resolved, or the
    late answer itself when it arrived after resolution. ``decision`` and ``evaluation`` are
    set for an answer to an open task.
    """

    gold_correct: bool | None = None
    compared: tuple[tuple[str, bool], ...] = ()
    decision: Decision | None = None
    evaluation: Evaluation | None = None

    @property
    def resolved(self) -> bool:
        return self.decision in (Decision.RESOLVE, Decision.RESOLVE_LOW_CONFIDENCE)


@dataclass
class TaskProgress:
    """One task's answers and state. Mutable: the event handler applies answers in arrival order.

    ``answers`` counts every answer applied (late ones included); ``agree`` those matching the
    resolved label (or, for a gold task, the gold answer). ``requested`` is the largest
    ``answers_wanted`` already asked of tasking, so the same request never goes out twice.
    """

    task_id: str
    job_id: str
    gold: bool
    gold_label: str
    state: TaskState
    answers: int = 0
    agree: int = 0
    requested: int = 0
    label: str = ""
    votes: list[Vote] = field(default_factory=list)
    # answers_wanted the last decision asked for; 0 when it did not ask.
    pending_request: int = 0

    def add_answer(self, vote: Vote, job: JobSpec | None, reliability_of: ReliabilityOf) -> Step:
        """Applies one answer and returns what it did. An open task needs its ``job``.

        Raises ValueError for a task still waiting for its job (store the answer instead) or
        an open task without ``job``. Costs one :func:`evaluate` for an open task, one fusion
        of two answers for a structured answer to a gold or resolved task, O(1) else.
        """
        if self.state is TaskState.WAITING:
            raise ValueError(f"task {self.task_id} waits for job {self.job_id}: store the answer instead")
        self.answers += 1
        if self.state is TaskState.GOLD:
            if not self.gold_label:
                return Step()
            correct = _matches(job, vote.label, self.gold_label)
            self.agree += correct
            return Step(gold_correct=correct)
        if self.state is TaskState.RESOLVED:
            # Counted, but the label stays: re-resolving is the job of a refit (see refit).
            agreed = _matches(job, vote.label, self.label)
            self.agree += agreed
            return Step(compared=((vote.worker_id, agreed),))
        if job is None:
            raise ValueError(f"open task {self.task_id} needs its job spec")
        self.votes.append(vote)
        if self.state is TaskState.REVIEW:
            # A lease that was out when the task went to review: the reviewer sees this answer too.
            return Step()
        if job.answer_kind == "classification":
            evaluation = evaluate(job.labels, self.votes, reliability_of)
        else:
            evaluation = evaluate_structured(job, self.votes, reliability_of)
        decision = decide(
            len(self.votes),
            evaluation.confidence,
            job.target_confidence,
            job.overlap_min,
            job.overlap_max,
            job.expert_review,
        )
        self.pending_request = len(self.votes) + 1 if decision is Decision.ASK_MORE else 0
        if decision is Decision.REVIEW:
            self.state = TaskState.REVIEW
            return Step(decision=decision, evaluation=evaluation)
        if decision not in (Decision.RESOLVE, Decision.RESOLVE_LOW_CONFIDENCE):
            return Step(decision=decision, evaluation=evaluation)
        self.state = TaskState.RESOLVED
        self.label = evaluation.label
        compared = tuple((v.worker_id, evaluation.agrees(i, v)) for i, v in enumerate(self.votes))
        self.agree = sum(agreed for _, agreed in compared)
        return Step(compared=compared, decision=decision, evaluation=evaluation)

    def take_request(self) -> int | None:
        """The ``answers_wanted`` to ask tasking for now, or None: only when the last decision
        asked for more and that many were not asked already. Marks it asked."""
        if self.state is not TaskState.OPEN or self.pending_request <= self.requested:
            return None
        self.requested = self.pending_request
        return self.requested


def judged(job: JobSpec, answers: Sequence[WeightedAnswer], label: str) -> tuple[WeightedAnswer, ...]:
    """``answers`` each with whether it agrees with ``label`` (see :func:`_matching`): for a
    label no fusion of these answers produced, such as a reviewer's. One comparison batch."""
    verdicts = _matching(job, [(a.label, label) for a in answers])
    return tuple(replace(a, agreed=ok) for a, ok in zip(answers, verdicts, strict=True))


def _matches(job: JobSpec | None, label: str, reference: str) -> bool:
    """Whether an answer agrees with a gold or resolved label (see :func:`_matching`)."""
    return _matching(job, [(label, reference)])[0]


def _matching(job: JobSpec | None, pairs: Sequence[tuple[str, str]]) -> list[bool]:
    """Whether each ``(answer, reference)`` pair agrees: equal for classification, close
    enough for a structured answer (:func:`structured.agreements`, one box-clustering fit for
    all the pairs of a boxes job)."""
    if job is None or job.answer_kind == "classification":
        return [label == reference for label, reference in pairs]
    return structured.agreements(job.answer_kind, job.labels, pairs)


@dataclass(frozen=True)
class Graded:
    """An answer that was compared with its task's label, and whether it agreed as recorded
    then; None for an answer compared before the outcome was stored with it."""

    vote: Vote
    agreed: bool | None = None


@dataclass(frozen=True)
class Regrade:
    """What relabelling tasks does to their consensus evidence: per task, how many of its
    answers agree with the new label (its ``agree``) and whether each does (in the order of
    the answers graded); per worker, how its ``agreed`` count changes (workers whose count
    stands are left out)."""

    agree: dict[str, int]
    agreed: dict[str, int]
    flags: dict[str, tuple[bool, ...]]

    def verdicts(self, task_id: str, graded: Sequence[Graded]) -> dict[str, bool]:
        """Per worker, whether its answer to ``task_id`` agrees with the new label; ``graded``
        are the answers :func:`regrade` was given for the task, in the same order."""
        return {g.vote.worker_id: ok for g, ok in zip(graded, self.flags.get(task_id, ()), strict=True)}


def regrade(
    job: JobSpec,
    relabels: Mapping[str, tuple[str, str]],
    compared: Mapping[str, Sequence[Graded]],
    fused: Mapping[str, Mapping[str, bool]] | None = None,
) -> Regrade:
    """Grades again the answers of relabelled tasks. ``relabels`` maps a task to its (old,
    new) label, ``compared`` to the answers that were compared with the old label (what
    :attr:`Step.compared` recorded: every vote when the task resolved, then each late answer),
    each with the outcome recorded then. ``fused`` maps a task to, per worker, whether its
    answer agrees with the new label, as found by the fusion that produced the label.

    An answer that agreed with the old label and not the new one takes one from its worker's
    ``agreed``, the other way round adds one; ``compared`` counts stay. "Agreed with the old
    label" is the recorded outcome: at resolution a structured answer was graded by the fusion
    of all the task's answers, which a comparison with the label alone can contradict (a box
    clustered apart from the crowd's can still overlap the fused one enough), and the counts
    hold what was recorded. Only an answer without a recorded outcome is compared with the
    old label. "Agrees with the new label" is the fusion's verdict where ``fused`` has one, so
    that relabelling back restores the outcomes of the resolution; otherwise a comparison with
    the new label. One :func:`_matching` over the comparisons needed."""
    fused = fused or {}
    graded = [(task, answer) for task in relabels for answer in compared.get(task, ())]
    pairs: list[tuple[str, str]] = []
    for task, answer in graded:
        old, new = relabels[task]
        if answer.agreed is None:
            pairs.append((answer.vote.label, old))
        if answer.vote.worker_id not in fused.get(task, {}):
            pairs.append((answer.vote.label, new))
    matched = iter(_matching(job, pairs))
    agree = dict.fromkeys(relabels, 0)
    agreed: dict[str, int] = {}
    flags: dict[str, tuple[bool, ...]] = {task: () for task in relabels}
    for task, answer in graded:
        worker = answer.vote.worker_id
        before = bool(next(matched) if answer.agreed is None else answer.agreed)
        verdict = fused.get(task, {}).get(worker)
        after = bool(next(matched) if verdict is None else verdict)
        agree[task] += after
        flags[task] += (after,)
        if after != before:
            agreed[worker] = agreed.get(worker, 0) + after - before
    return Regrade(agree, {worker: shift for worker, shift in agreed.items() if shift}, flags)


@dataclass(frozen=True)
class WeightedAnswer:
    worker_id: str
    label: str
    weight: float
    # Whether the answer agrees with its task's label; None when not judged (results read
    # back from storage keep no verdict).
    agreed: bool | None = None


@dataclass(frozen=True)
class TaskResult:
    """A resolved task. ``answers`` are the votes the label came from, each with the worker
    reliability used as its weight; ``version`` 1 is the streaming resolution."""

    task_id: str
    job_id: str
    item_id: str
    object_name: str
    label: str
    confidence: float
    low_confidence: bool
    majority_label: str
    answers: tuple[WeightedAnswer, ...]
    resolved_at: dt.datetime
    version: int = 1


@dataclass(frozen=True)
class MinuteCount:
    minute: int
    """Start of the minute, seconds since the Unix epoch."""
    count: int


@dataclass(frozen=True)
class JobQuality:
    """Quality figures of a job (or of all jobs); see ``quorum.v1.JobQuality``."""

    tasks: int = 0
    resolved: int = 0
    low_confidence: int = 0
    answers: int = 0
    agreement: float = 0.0
    gold_accuracy: float = 0.0
    gold_answers: int = 0
    estimated_accuracy: float = 0.0
    mean_confidence: float = 0.0
    ttr_p50_seconds: float = 0.0
    ttr_p90_seconds: float = 0.0
    ttr_p99_seconds: float = 0.0
    resolved_per_minute: tuple[MinuteCount, ...] = ()
    krippendorff_alpha: float = 0.0
    fleiss_kappa: float = 0.0


@dataclass(frozen=True)
class WorkerQuality:
    worker_id: str
    answers: int
    gold_answers: int
    gold_correct: int
    reliability: float
    agreement: float
    spam_score: float = 0.0
    spammer: bool = False
    # With one job: its labels and errors[true][answered], row-major.
    labels: tuple[str, ...] = ()
    confusion: tuple[float, ...] = ()


def percentiles(values: Sequence[float], qs: Sequence[float] = (50, 90, 99)) -> tuple[float, ...]:
    """Linear-interpolated percentiles; zeros for no values. O(n log n)."""
    if len(values) == 0:
        return tuple(0.0 for _ in qs)
    return tuple(float(v) for v in np.percentile(np.asarray(values, dtype=np.float64), list(qs)))


def minute_of(moment: dt.datetime) -> int:
    """Start of ``moment``'s minute in seconds since the Unix epoch."""
    return int(moment.timestamp()) // 60 * 60


def ratio(part: float, whole: float) -> float:
    """part / whole, 0 when whole is 0 (figures stay NaN-free)."""
    return float(part) / float(whole) if whole else 0.0
