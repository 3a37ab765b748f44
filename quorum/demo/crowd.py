"""A simulated crowd that labels tasks through the public TaskingService gRPC API.

Each simulated worker starts a session, leases tasks with ``GetNextTask``, answers them with
``SubmitAnswer`` and now and then gives one back with ``SkipTask``. A worker knows the truth
only by fingerprinting the content it is shown (:func:`quorum.demo.dataset.content_key`) and
looking it up in the truth map, so it sees exactly what a real worker sees: gold tasks are not
special.

Profiles are drawn from the seed (:func:`~quorum.demo.workers.make_profiles`): about
``spammer_share`` of the workers are spammers (answer at random, or always the same), the
others answer correctly with an accuracy between 0.55 and 0.98 and, when wrong, tend to confuse
a label with its neighbour in the job's label list. Profiles are deterministic for a seed;
which worker gets which task is not.

The crowd answers every task type (:mod:`quorum.tasktypes`), each kind of answer made by the
generator next to its generated dataset, driven by the same profile: an honest worker errs in
proportion to its error rate (1 - accuracy), a spammer answers without looking.

- single-label classification, pairwise comparison: :func:`~quorum.demo.workers.choose_label`
  (a wrong label, a flipped choice);
- multi-label: :func:`~quorum.demo.multilabel.pick_labels` (a label dropped or added);
- bounding boxes: :func:`~quorum.demo.boxes.draw_boxes` (an object missed or named wrongly,
  edges misplaced);
- keypoints: :func:`~quorum.demo.keypoints.place_keypoints` (a point missed, misplaced,
  swapped left for right, or placed where it is hidden);
- segmentation: :func:`~quorum.demo.polygons.draw_polygons` (a region missed or named wrongly,
  vertices misplaced);
- named-entity spans: :func:`~quorum.demo.spans.mark_spans` (an entity missed, given the wrong
  type or the wrong boundary);
- transcription: :func:`~quorum.demo.transcription.transcribe` (a word dropped or misspelt).

A task of a type the crowd does not know, or one without labels to answer with, is given back
with ``SkipTask``.

All workers are coroutines on one asyncio event loop over ``grpc.aio`` channels: a worker
waiting for an answer or for ``retry_after_ms`` costs no thread, and on a 2-core machine an aio
client reaches about 10k unary calls/s where four blocking threads reach about 5k. Against an
in-memory servicer in another process the crowd submits about 2,000 answers/s (two calls per
answer), bounded by the server.
"""

from __future__ import annotations

import asyncio
import operator
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, TypeVar, cast

import grpc

from quorum.demo.boxes import TrueBox, boxes_match, draw_boxes
from quorum.demo.dataset import content_key
from quorum.demo.keypoints import Figure, keypoints_match, place_keypoints
from quorum.demo.multilabel import pick_labels
from quorum.demo.polygons import TruePolygon, draw_polygons, polygons_match
from quorum.demo.spans import TrueSpan, mark_spans
from quorum.demo.transcription import transcribe
from quorum.demo.workers import SPAMMER_SHARE, SpamStrategy, WorkerProfile, choose_label, make_profiles
from quorum.taskmessages import schema_labels
from quorum.tasktypes import DEFAULT_TRANSCRIPTION_CHARS, PAIRWISE_WINNERS, TASK_TYPES
from quorum.tls import ClientTls
from quorum.v1 import common_pb2, tasking_pb2, tasking_pb2_grpc

__all__ = [
    "CrowdReport",
    "SimulatedCrowd",
    "SpamStrategy",
    "Truth",
    "WorkerProfile",
    "WorkerStats",
    "choose_label",
    "make_profiles",
    "task_labels",
    "task_truth_key",
]

StopReason = Literal["stop", "deadline"]
# What the crowd knows of an object, by the kind of task it is in: its label (classification),
# its winner ("a" or "b", pairwise) or its sentence (transcription); its set of labels
# (multi-label); its figure (keypoints); or its objects: boxes, spans or regions (segmentation).
Truth = str | frozenset[str] | Figure | tuple[TrueBox, ...] | tuple[TrueSpan, ...] | tuple[TruePolygon, ...]

# A GetNextTask error means the server is unhappy; waiting keeps a crowd of 200 from hammering
# it. Starts here, doubles per consecutive error, capped at max_retry_ms.
_ERROR_BACKOFF_S = 0.05
# Failures after which a submit is worth sending again: the answer may not have arrived.
# CANCELLED is what a server that is shutting down answers to a call that reaches it then.
_SUBMIT_AGAIN = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED})
# Codes after which the session is assumed gone, so the worker starts a new one.
_SESSION_LOST = frozenset({grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAUTHENTICATED})


@dataclass
class WorkerStats:
    """Counters for one worker over one run. ``correct`` counts answers equal to the truth:
    the same label, set of labels, entity spans or sentence; for geometry, close enough to it
    (boxes: every object drawn with its class at IoU >= 0.5 and nothing else, see
    :func:`~quorum.demo.boxes.boxes_match`; keypoints and regions: as consensus tells agreement,
    see :func:`~quorum.demo.keypoints.keypoints_match` and
    :func:`~quorum.demo.polygons.polygons_match`)."""

    answers: int = 0
    correct: int = 0
    skips: int = 0
    unknown_content: int = 0
    errors: int = 0


@dataclass
class CrowdReport:
    """What a :meth:`SimulatedCrowd.run` did.

    ``answers`` counts answers the server accepted. ``errors`` counts failed calls by gRPC
    status code name (``"FAILED_PRECONDITION"``), ``errors_by_call`` by ``"Method:CODE"``.
    ``unknown_content`` counts answered tasks whose content was not in the truth map (answered
    at random). ``empty_polls`` counts ``GetNextTask`` responses without a task.
    """

    answers: int
    correct: int
    skips: int
    unknown_content: int
    empty_polls: int
    sessions: int
    errors: dict[str, int]
    errors_by_call: dict[str, int]
    per_worker: dict[str, WorkerStats]
    elapsed_s: float
    stopped_by: StopReason

    @property
    def answers_per_s(self) -> float:
        """Accepted answers per second of wall time."""
        return self.answers / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def accuracy(self) -> float:
        """Share of accepted answers with a known truth that matched it; 0.0 with none."""
        known = self.answers - self.unknown_content
        return self.correct / known if known > 0 else 0.0


def task_labels(task: tasking_pb2.WorkerTask) -> list[str]:
    """The schema of a task: its labels (classes, entity types, keypoint names), or the winners
    a pairwise task allows; empty for a transcription task or an unknown task type."""
    which = task.WhichOneof("task")
    if which == "pairwise_comparison":
        return list(PAIRWISE_WINNERS if task.pairwise_comparison.allow_tie else PAIRWISE_WINNERS[:2])
    return list(schema_labels(task, which)) if which is not None else []


def task_truth_key(task: tasking_pb2.WorkerTask) -> str | None:
    """Fingerprint of the task's content (as in the truth map), or None without content."""
    body = task.content.WhichOneof("body")
    if body == "data":
        return content_key(task.content.data)
    if body == "text":
        return content_key(task.content.text)
    return None


@dataclass
class _WorkerState:
    profile: WorkerProfile
    rng: random.Random
    stats: WorkerStats = field(default_factory=WorkerStats)
    session_id: str | None = None
    error_streak: int = 0
    # authorization metadata sent with every call: the worker's own API key.
    metadata: tuple[tuple[str, str], ...] = ()


_T = TypeVar("_T")


def _tuple_of(item: type[_T]) -> Callable[[Truth | None, list[str]], tuple[_T, ...] | None]:
    """Narrows a truth to a tuple of ``item`` (objects: boxes, spans, regions)."""

    def narrow(truth: Truth | None, labels: list[str]) -> tuple[_T, ...] | None:
        if isinstance(truth, tuple) and all(isinstance(t, item) for t in truth):
            return cast(tuple[_T, ...], truth)
        return None

    return narrow


def _label_truth(truth: Truth | None, labels: list[str]) -> str | None:
    return truth if isinstance(truth, str) and truth in labels else None


@dataclass(frozen=True)
class _AnswerKind:
    """How the crowd answers one answer kind. ``truth(truth, labels)`` is the truth map's value
    when it is one of this kind (None: the worker cannot tell); ``give(profile, labels, truth,
    task, rng)`` is the worker's answer, ``message(answer)`` that answer as an Answer, and
    ``right(answer, truth)`` whether it counts as correct. ``labelled`` kinds need labels."""

    truth: Callable[[Truth | None, list[str]], Any]
    give: Callable[[WorkerProfile, list[str], Any, tasking_pb2.WorkerTask, random.Random], Any]
    message: Callable[[Any], common_pb2.Answer]
    right: Callable[[Any, Any], bool] = operator.eq
    labelled: bool = True

    def answer(
        self, profile: WorkerProfile, task: tasking_pb2.WorkerTask, truth: Truth | None, rng: random.Random
    ) -> tuple[common_pb2.Answer, bool, bool] | None:
        """The answer, whether the truth of its task was known, and whether the answer is
        right; None when the task has no labels to answer with."""
        labels = task_labels(task)
        if self.labelled and not labels:
            return None
        known = self.truth(truth, labels)
        given = self.give(profile, labels, known, task, rng)
        return self.message(given), known is not None, known is not None and self.right(given, known)


def _pick(
    p: WorkerProfile, labels: list[str], truth: str | None, task: tasking_pb2.WorkerTask, rng: random.Random
) -> str:
    return choose_label(p, labels, truth, rng)


def _typed(
    p: WorkerProfile, labels: list[str], truth: str | None, task: tasking_pb2.WorkerTask, rng: random.Random
) -> str:
    return transcribe(p, truth, rng)[: task.transcription.max_chars or DEFAULT_TRANSCRIPTION_CHARS]


def _polygon(drawn: TruePolygon) -> common_pb2.Polygon:
    return common_pb2.Polygon(label=drawn.label, points=[common_pb2.Point(x=x, y=y) for x, y in drawn.points])


# The crowd's answer to each answer kind (quorum.tasktypes); see the module docstring.
_ANSWER_KINDS: dict[str, _AnswerKind] = {
    "classification": _AnswerKind(
        _label_truth,
        _pick,
        lambda label: common_pb2.Answer(classification=common_pb2.ClassificationAnswer(label=label)),
    ),
    "pairwise": _AnswerKind(
        _label_truth, _pick, lambda winner: common_pb2.Answer(pairwise=common_pb2.PairwiseAnswer(winner=winner))
    ),
    "multi_label": _AnswerKind(
        lambda truth, _: truth if isinstance(truth, frozenset) else None,
        lambda p, labels, truth, _, rng: pick_labels(p, labels, truth, rng),
        lambda picked: common_pb2.Answer(multi_label=common_pb2.MultiLabelAnswer(labels=sorted(picked))),
    ),
    "boxes": _AnswerKind(
        _tuple_of(TrueBox),
        lambda p, labels, truth, _, rng: draw_boxes(p, labels, truth, rng),
        lambda drawn: common_pb2.Answer(
            boxes=common_pb2.BoxesAnswer(boxes=[common_pb2.Box(**asdict(b)) for b in drawn])
        ),
        boxes_match,
    ),
    "keypoints": _AnswerKind(
        lambda truth, _: truth if isinstance(truth, Figure) else None,
        lambda p, labels, truth, _, rng: place_keypoints(p, labels, truth, rng),
        lambda placed: common_pb2.Answer(
            keypoints=common_pb2.KeypointsAnswer(points=[common_pb2.Keypoint(**asdict(k)) for k in placed])
        ),
        keypoints_match,
    ),
    "polygons": _AnswerKind(
        _tuple_of(TruePolygon),
        lambda p, labels, truth, _, rng: draw_polygons(p, labels, truth, rng),
        lambda drawn: common_pb2.Answer(polygons=common_pb2.PolygonsAnswer(polygons=[_polygon(d) for d in drawn])),
        polygons_match,
    ),
    "spans": _AnswerKind(
        _tuple_of(TrueSpan),
        lambda p, labels, truth, task, rng: mark_spans(p, labels, truth, task.content.text, rng),
        lambda marked: common_pb2.Answer(
            spans=common_pb2.SpansAnswer(spans=[common_pb2.Span(**asdict(s)) for s in marked])
        ),
        lambda marked, truth: set(marked) == set(truth),
    ),
    "transcription": _AnswerKind(
        lambda truth, _: truth if isinstance(truth, str) else None,
        _typed,
        lambda text: common_pb2.Answer(transcription=common_pb2.TranscriptionAnswer(text=text)),
        labelled=False,
    ),
}


class SimulatedCrowd:
    """Simulated workers driving a TaskingService at ``tasking_addr`` (``"host:port"``).

    ``truth`` maps content fingerprints to the truth of each object (:data:`Truth`): true labels
    (:meth:`DemoDataset.truth_by_key`), true boxes
    (:meth:`~quorum.demo.boxes.BoxDataset.truth_by_key`) or the truth of any other kind
    (:meth:`~quorum.demo.items.ItemSet.truth_by_key`); one map may hold several kinds.
    ``think_time_ms`` is a (low, high) range: each worker waits a uniform time in it before
    answering, holding the lease meanwhile. ``job_id`` restricts workers to one job.
    ``channels`` spreads workers over that many HTTP/2 connections, over TLS with ``tls``
    (:func:`quorum.tls.client_tls`). ``rpc_timeout_s`` bounds
    every call; ``max_retry_ms`` bounds the wait after an empty ``GetNextTask`` (the server's
    ``retry_after_ms`` is honoured up to it) or after an error.

    Constructing a crowd draws the profiles (:func:`make_profiles`) and opens no connection.
    Raises ValueError for bad arguments (see :func:`make_profiles`; also a negative think time,
    ``channels < 1`` or a non-positive timeout).
    """

    def __init__(
        self,
        tasking_addr: str,
        truth: Mapping[str, Truth],
        n_workers: int,
        seed: int,
        spammer_share: float = SPAMMER_SHARE,
        think_time_ms: tuple[int, int] = (0, 0),
        *,
        skip_rate: float = 0.02,
        accuracy_range: tuple[float, float] = (0.55, 0.98),
        job_id: str = "",
        channels: int = 1,
        rpc_timeout_s: float = 5.0,
        max_retry_ms: int = 1000,
        stop_poll_s: float = 0.05,
        worker_id_prefix: str = "sim-worker",
        tls: ClientTls | None = None,
    ) -> None:
        low, high = think_time_ms
        if not 0 <= low <= high:
            raise ValueError(f"think_time_ms must satisfy 0 <= low <= high, got {think_time_ms}")
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        if rpc_timeout_s <= 0 or stop_poll_s <= 0 or max_retry_ms <= 0:
            raise ValueError("rpc_timeout_s, stop_poll_s and max_retry_ms must be positive")
        self.tasking_addr = tasking_addr
        self.seed = seed
        self.profiles: list[WorkerProfile] = make_profiles(
            n_workers,
            seed,
            spammer_share=spammer_share,
            accuracy_range=accuracy_range,
            skip_rate=skip_rate,
            worker_id_prefix=worker_id_prefix,
        )
        self._truth = truth
        self._think_s = (low / 1000.0, high / 1000.0)
        self._job_id = job_id
        self._channels = channels
        self._tls = tls
        self._rpc_timeout_s = rpc_timeout_s
        self._max_retry_s = max_retry_ms / 1000.0
        self._stop_poll_s = stop_poll_s
        self._run_lock = threading.Lock()
        self._interrupted = threading.Event()
        self._keys: dict[str, str] = {}
        self._reset_counters()

    def authorize(self, keys: Mapping[str, str]) -> None:
        """Gives each simulated worker its API key (worker id -> key), as real workers have."""
        self._keys = dict(keys)

    # ------------------------------------------------------------------ public

    @property
    def answers_submitted(self) -> int:
        """Answers accepted so far in the current (or last) run; safe to read from any thread."""
        return self._answers

    def run(self, stop: Callable[[], bool], deadline_s: float) -> CrowdReport:
        """Runs every worker until ``stop()`` returns True or ``deadline_s`` seconds have passed.

        Blocks the calling thread. The workers run on a fresh event loop in a private thread
        (so this works from code that already has a loop), which is joined before returning.
        ``stop`` is called from a helper thread every ``stop_poll_s`` seconds, so it may block
        briefly (for instance to ask the server for stats). On stopping, workers finish or
        abandon their current call within ``rpc_timeout_s`` and give back leased tasks they
        had not answered yet.

        gRPC errors are counted in the report, never raised. Raises RuntimeError when this
        crowd is already running, and re-raises whatever ``stop`` raises or a worker raised
        other than a gRPC error (after shutting down).
        A KeyboardInterrupt in the calling thread stops the workers the same way, then is
        re-raised.
        """
        self._interrupted.clear()
        outcome: list[CrowdReport] = []
        failure: list[BaseException] = []
        finished = threading.Event()

        def target() -> None:
            try:
                outcome.append(asyncio.run(self.run_async(stop, deadline_s)))
            except BaseException as exc:  # handed to the calling thread below
                failure.append(exc)
            finally:
                finished.set()

        thread = threading.Thread(target=target, name="quorum-demo-crowd", daemon=True)
        thread.start()
        # Waiting on an Event rather than in join(): on Python 3.11 a join() interrupted by
        # Ctrl-C marks the thread finished while it still runs, and a second join() returns
        # at once.
        try:
            finished.wait()
        except KeyboardInterrupt:
            # Ctrl-C during `quorum demo`: give leases back and close the channels first.
            self._interrupted.set()
            finished.wait()
            raise
        finally:
            thread.join()
        if failure:
            raise failure[0]
        return outcome[0]

    async def run_async(self, stop: Callable[[], bool], deadline_s: float) -> CrowdReport:
        """:meth:`run` for callers already on an event loop. Same behaviour and errors."""
        if not self._run_lock.acquire(blocking=False):
            raise RuntimeError("this crowd is already running")
        try:
            return await self._run(stop, deadline_s)
        finally:
            self._run_lock.release()

    # ------------------------------------------------------------------ running

    def _reset_counters(self) -> None:
        self._answers = 0
        self._empty_polls = 0
        self._sessions = 0
        self._errors: dict[str, int] = {}
        self._errors_by_call: dict[str, int] = {}

    async def _run(self, stop: Callable[[], bool], deadline_s: float) -> CrowdReport:
        self._reset_counters()
        started = time.monotonic()
        workers = [
            _WorkerState(
                profile=p,
                rng=random.Random(f"quorum-crowd:{self.seed}:{p.worker_id}"),
                metadata=(("authorization", f"Bearer {self._keys[p.worker_id]}"),) if p.worker_id in self._keys else (),
            )
            for p in self.profiles
        ]
        # A local subchannel pool gives each channel its own connection; with the default
        # global pool, channels to the same address would share one.
        options: list[tuple[str, str | int]] = [("grpc.use_local_subchannel_pool", 1)]
        channels = [self._open_channel(options) for _ in range(self._channels)]
        stubs = [tasking_pb2_grpc.TaskingServiceStub(channel) for channel in channels]
        stopping = asyncio.Event()
        tasks = [
            asyncio.create_task(self._work(w, stubs[i % len(stubs)], stopping), name=w.profile.worker_id)
            for i, w in enumerate(workers)
        ]
        try:
            stopped_by = await self._watch(stop, stopping, started + deadline_s)
        finally:
            stopping.set()
            # Every call has a timeout, so workers come back within about rpc_timeout_s;
            # cancelling is the fallback for a call that does not.
            crashed: list[BaseException] = []
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=self._rpc_timeout_s + 1.0)
                for task in pending:
                    task.cancel()
                results = await asyncio.gather(*tasks, return_exceptions=True)
                crashed = [r for r in results if isinstance(r, Exception)]
            for channel in channels:
                await channel.close()
        if crashed:
            # gRPC errors never get here; anything else is a bug worth seeing.
            raise crashed[0]
        return CrowdReport(
            answers=self._answers,
            correct=sum(w.stats.correct for w in workers),
            skips=sum(w.stats.skips for w in workers),
            unknown_content=sum(w.stats.unknown_content for w in workers),
            empty_polls=self._empty_polls,
            sessions=self._sessions,
            errors=dict(self._errors),
            errors_by_call=dict(self._errors_by_call),
            per_worker={w.profile.worker_id: w.stats for w in workers},
            elapsed_s=time.monotonic() - started,
            stopped_by=stopped_by,
        )

    def _open_channel(self, options: list[tuple[str, str | int]]) -> grpc.aio.Channel:
        if self._tls is None:
            return grpc.aio.insecure_channel(self.tasking_addr, options=options)
        return grpc.aio.secure_channel(
            self.tasking_addr, self._tls.credentials(), options=[*options, *self._tls.options()]
        )

    async def _watch(self, stop: Callable[[], bool], stopping: asyncio.Event, deadline: float) -> StopReason:
        while True:
            # In a helper thread: stop() may do blocking I/O and must not stall the workers.
            if self._interrupted.is_set() or await asyncio.to_thread(stop):
                return "stop"
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return "deadline"
            await asyncio.sleep(min(self._stop_poll_s, remaining))

    async def _work(self, w: _WorkerState, stub: tasking_pb2_grpc.TaskingServiceStub, stopping: asyncio.Event) -> None:
        while not stopping.is_set():
            if w.session_id is None:
                try:
                    session = await stub.StartSession(
                        tasking_pb2.StartSessionRequest(worker_id=w.profile.worker_id),
                        timeout=self._rpc_timeout_s,
                        metadata=w.metadata,
                    )
                except grpc.aio.AioRpcError as exc:
                    self._count_error(w, "StartSession", exc)
                    await self._pause(stopping, self._error_backoff(w))
                    continue
                w.session_id = session.session_id
                self._sessions += 1
            try:
                response = await stub.GetNextTask(
                    tasking_pb2.GetNextTaskRequest(session_id=w.session_id, job_id=self._job_id),
                    timeout=self._rpc_timeout_s,
                    metadata=w.metadata,
                )
            except grpc.aio.AioRpcError as exc:
                self._count_error(w, "GetNextTask", exc)
                if exc.code() in _SESSION_LOST:
                    w.session_id = None
                await self._pause(stopping, self._error_backoff(w))
                continue
            w.error_streak = 0
            if not response.HasField("task"):
                self._empty_polls += 1
                wait_s = min(max(response.retry_after_ms, 1) / 1000.0, self._max_retry_s)
                await self._pause(stopping, wait_s)
                continue
            await self._answer(w, stub, response.task, stopping)

    async def _answer(
        self,
        w: _WorkerState,
        stub: tasking_pb2_grpc.TaskingServiceStub,
        task: tasking_pb2.WorkerTask,
        stopping: asyncio.Event,
    ) -> None:
        which = task.WhichOneof("task")
        task_type = TASK_TYPES.get(which) if which is not None else None
        answer_kind = _ANSWER_KINDS.get(task_type.answer_kind) if task_type is not None else None
        if answer_kind is None:
            await self._skip(w, stub, task, "task type not supported by the simulated crowd")
            return
        low, high = self._think_s
        if high > 0 and await self._pause(stopping, w.rng.uniform(low, high)):
            await self._skip(w, stub, task, "worker left")
            return
        if w.rng.random() < w.profile.skip_rate:
            await self._skip(w, stub, task, "simulated skip")
            return
        key = task_truth_key(task)
        answered = answer_kind.answer(w.profile, task, self._truth.get(key) if key is not None else None, w.rng)
        if answered is None:
            await self._skip(w, stub, task, "the task has no labels to answer with")
            return
        answer, known, correct = answered
        request = tasking_pb2.SubmitAnswerRequest(session_id=w.session_id, lease_id=task.lease_id, answer=answer)
        lease_ends = task.lease_expires_at.ToMilliseconds() / 1000.0
        while True:
            try:
                await stub.SubmitAnswer(request, timeout=self._rpc_timeout_s, metadata=w.metadata)
                break
            except grpc.aio.AioRpcError as exc:
                # FAILED_PRECONDITION (lease expired) and INVALID_ARGUMENT are part of the game:
                # the task goes back in play and the worker moves on. A lost session shows up on
                # the next GetNextTask, which starts a new one. A service that is restarting or
                # slow gets the answer again while the lease lasts, as a worker's client would
                # send it: otherwise the task waits for the lease to expire, and this worker,
                # having held it, is never offered it again.
                self._count_error(w, "SubmitAnswer", exc)
                if exc.code() not in _SUBMIT_AGAIN or time.time() >= lease_ends:
                    return
                if await self._pause(stopping, self._error_backoff(w)):
                    return
        self._answers += 1
        w.stats.answers += 1
        if not known:
            w.stats.unknown_content += 1
        elif correct:
            w.stats.correct += 1

    async def _skip(
        self,
        w: _WorkerState,
        stub: tasking_pb2_grpc.TaskingServiceStub,
        task: tasking_pb2.WorkerTask,
        reason: str,
    ) -> None:
        try:
            await stub.SkipTask(
                tasking_pb2.SkipTaskRequest(session_id=w.session_id, lease_id=task.lease_id, reason=reason),
                timeout=self._rpc_timeout_s,
                metadata=w.metadata,
            )
        except grpc.aio.AioRpcError as exc:
            self._count_error(w, "SkipTask", exc)
            return
        w.stats.skips += 1

    def _count_error(self, w: _WorkerState, method: str, exc: grpc.aio.AioRpcError) -> None:
        code = exc.code().name
        self._errors[code] = self._errors.get(code, 0) + 1
        call = f"{method}:{code}"
        self._errors_by_call[call] = self._errors_by_call.get(call, 0) + 1
        w.stats.errors += 1

    def _error_backoff(self, w: _WorkerState) -> float:
        w.error_streak += 1
        base = min(_ERROR_BACKOFF_S * 2 ** (w.error_streak - 1), self._max_retry_s)
        # Jitter, so that workers that failed together do not retry together.
        return base * w.rng.uniform(0.5, 1.0)

    @staticmethod
    async def _pause(stopping: asyncio.Event, seconds: float) -> bool:
        """Sleeps up to ``seconds``; returns True at once if the crowd is stopping."""
        if stopping.is_set():
            return True
        try:
            await asyncio.wait_for(stopping.wait(), timeout=seconds)
        except TimeoutError:
            return False
        return True
