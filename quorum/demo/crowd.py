"""A simulated crowd that labels tasks through the public TaskingService gRPC API.

Each simulated worker starts a session, leases tasks with ``GetNextTask``, answers them with
``SubmitAnswer`` and now and then gives one back with ``SkipTask``. A worker knows the truth
only by fingerprinting the content it is shown (:func:`quorum.demo.dataset.content_key`) and
looking it up in the truth map, so it sees exactly what a real worker sees: gold tasks are not
special.

Profiles are drawn from the seed: about ``spammer_share`` of the workers are spammers (answer
uniformly at random, or always the same label), the others answer correctly with an accuracy
between 0.55 and 0.98 and, when wrong, tend to confuse a label with its neighbour in the job's
label list. Profiles are deterministic for a seed; which worker gets which task is not.

The crowd answers single-label classification (:func:`choose_label`) and bounding boxes
(:func:`draw_boxes`: the same profile sets how precisely a worker draws, how often it misses an
object or names the wrong class); it gives back tasks of any other type with ``SkipTask``.

All workers are coroutines on one asyncio event loop over ``grpc.aio`` channels: a worker
waiting for an answer or for ``retry_after_ms`` costs no thread, and on a 2-core machine an aio
client reaches about 10k unary calls/s where four blocking threads reach about 5k. Against an
in-memory servicer in another process the crowd submits about 2,000 answers/s (two calls per
answer), bounded by the server.
"""

from __future__ import annotations

import asyncio
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import grpc

from quorum.demo.boxes import TrueBox, boxes_match
from quorum.demo.dataset import content_key
from quorum.tasktypes import TASK_TYPES
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
    "draw_boxes",
    "make_profiles",
    "task_labels",
    "task_truth_key",
]

SpamStrategy = Literal["uniform", "constant"]
StopReason = Literal["stop", "deadline"]
# What the crowd knows of an object: its label (classification) or its boxes.
Truth = str | tuple[TrueBox, ...]

# The answer kinds the crowd gives; it skips tasks of the other types.
_ANSWERED_KINDS = frozenset({"classification", "boxes"})
# How far an honest worker misplaces a box edge: a normal error whose standard deviation is
# this times the worker's error rate (1 - accuracy) times the box's side. The mean worker
# (accuracy 0.86) is off by about 4% of the side per edge, the worst (0.55) by about 13%.
_EDGE_JITTER = 0.3
# Smallest side of a drawn box, relative to the image: tasking refuses an empty box.
_MIN_BOX_SIDE = 0.01

# A GetNextTask error means the server is unhappy; waiting keeps a crowd of 200 from hammering
# it. Starts here, doubles per consecutive error, capped at max_retry_ms.
_ERROR_BACKOFF_S = 0.05
# Failures after which a submit is worth sending again: the answer may not have arrived.
_SUBMIT_AGAIN = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})
# Codes after which the session is assumed gone, so the worker starts a new one.
_SESSION_LOST = frozenset({grpc.StatusCode.NOT_FOUND, grpc.StatusCode.UNAUTHENTICATED})


@dataclass(frozen=True)
class WorkerProfile:
    """How one simulated worker answers.

    ``accuracy`` is the probability that an honest worker picks the true label. Spammers never
    look at the content, so their ``accuracy`` is 0.0 and :meth:`expected_accuracy` gives what
    they score by chance. ``constant_choice`` picks the label (by position, modulo the label
    count) a ``"constant"`` spammer always gives. ``confusion_bias`` is the share of an honest
    worker's mistakes that go to the label after the true one in the job's list; the rest are
    spread uniformly over the other wrong labels. ``skip_rate`` is the chance of skipping a task.
    """

    worker_id: str
    accuracy: float
    spammer: bool
    spam_strategy: SpamStrategy | None = None
    constant_choice: int = 0
    confusion_bias: float = 0.0
    skip_rate: float = 0.0

    def expected_accuracy(self, n_labels: int) -> float:
        """Expected share of correct answers on tasks with ``n_labels`` balanced labels."""
        if self.spammer:
            return 1.0 / n_labels
        return self.accuracy


@dataclass
class WorkerStats:
    """Counters for one worker over one run. ``correct`` counts answers equal to the truth (for
    boxes: every object drawn with its class at IoU >= 0.5 and nothing else, see
    :func:`~quorum.demo.boxes.boxes_match`)."""

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


def make_profiles(
    n_workers: int,
    seed: int,
    *,
    spammer_share: float = 0.15,
    accuracy_range: tuple[float, float] = (0.55, 0.98),
    skip_rate: float = 0.02,
    worker_id_prefix: str = "sim-worker",
) -> list[WorkerProfile]:
    """Draws ``n_workers`` profiles, deterministic for ``seed``.

    Exactly ``round(spammer_share * n_workers)`` workers are spammers, at seeded positions;
    about 60% of them answer uniformly at random and the rest always give one label. Honest
    accuracies follow Beta(4, 1.5) stretched over ``accuracy_range`` (mean about 0.86 with the
    default range), so most workers are good and a few are barely better than a coin.
    Worker ids are ``f"{worker_id_prefix}-{i:03d}"``.

    Raises ValueError for a negative ``n_workers``, a ``spammer_share`` or ``skip_rate``
    outside [0, 1], or an ``accuracy_range`` that is not ``0 <= low <= high <= 1``.
    """
    if n_workers < 0:
        raise ValueError(f"n_workers must be >= 0, got {n_workers}")
    if not 0.0 <= spammer_share <= 1.0:
        raise ValueError(f"spammer_share must be in [0, 1], got {spammer_share}")
    if not 0.0 <= skip_rate <= 1.0:
        raise ValueError(f"skip_rate must be in [0, 1], got {skip_rate}")
    low, high = accuracy_range
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"accuracy_range must satisfy 0 <= low <= high <= 1, got {accuracy_range}")

    rng = random.Random(f"quorum-crowd:{seed}")
    n_spammers = round(spammer_share * n_workers)
    spammers = set(rng.sample(range(n_workers), n_spammers))
    profiles: list[WorkerProfile] = []
    for i in range(n_workers):
        worker_id = f"{worker_id_prefix}-{i:03d}"
        if i in spammers:
            strategy: SpamStrategy = "uniform" if rng.random() < 0.6 else "constant"
            profiles.append(
                WorkerProfile(
                    worker_id=worker_id,
                    accuracy=0.0,
                    spammer=True,
                    spam_strategy=strategy,
                    constant_choice=rng.randrange(1 << 16),
                    skip_rate=skip_rate,
                )
            )
        else:
            accuracy = low + (high - low) * rng.betavariate(4.0, 1.5)
            profiles.append(
                WorkerProfile(
                    worker_id=worker_id,
                    accuracy=round(accuracy, 4),
                    spammer=False,
                    confusion_bias=round(rng.uniform(0.0, 0.6), 4),
                    skip_rate=skip_rate,
                )
            )
    return profiles


def choose_label(profile: WorkerProfile, labels: Sequence[str], truth: str | None, rng: random.Random) -> str:
    """The label ``profile`` gives to a task whose true label is ``truth``.

    A ``truth`` of None (or one outside ``labels``) means the worker cannot tell, and it answers
    uniformly at random. Raises ValueError when ``labels`` is empty.
    """
    if not labels:
        raise ValueError("a task needs at least one label")
    if profile.spammer:
        if profile.spam_strategy == "constant":
            return labels[profile.constant_choice % len(labels)]
        return rng.choice(labels)
    if truth is None or truth not in labels:
        return rng.choice(labels)
    if len(labels) == 1 or rng.random() < profile.accuracy:
        return truth
    index = labels.index(truth)
    neighbour = labels[(index + 1) % len(labels)]
    if rng.random() < profile.confusion_bias:
        return neighbour
    return rng.choice([label for label in labels if label != truth])


def draw_boxes(
    profile: WorkerProfile, labels: Sequence[str], truth: Sequence[TrueBox] | None, rng: random.Random
) -> list[TrueBox]:
    """The boxes ``profile`` draws on an image whose objects are ``truth``, for a job asking
    for the classes ``labels``.

    An honest worker with error rate ``e = 1 - accuracy`` misses each object with probability
    ``e / 2``, names another class with probability ``e / 3`` and misplaces each edge by a
    normal error of ``0.3 * e`` times the box's side; boxes stay within the image. Objects of
    a class outside ``labels`` are not drawn. A ``"constant"`` spammer never draws anything; a
    ``"uniform"`` one draws 0 to 2 random boxes, as does anyone when ``truth`` is None (an
    image it cannot tell). Raises ValueError when ``labels`` is empty.
    """
    if not labels:
        raise ValueError("a task needs at least one label")
    if profile.spammer and profile.spam_strategy == "constant":
        return []
    if profile.spammer or truth is None:
        return [_random_box(labels, rng) for _ in range(rng.randint(0, 2))]
    error = 1.0 - profile.accuracy
    drawn: list[TrueBox] = []
    for box in truth:
        if box.label not in labels or rng.random() < error / 2:
            continue
        label = box.label
        if len(labels) > 1 and rng.random() < error / 3:
            label = rng.choice([other for other in labels if other != box.label])
        sigma_x, sigma_y = _EDGE_JITTER * error * box.w, _EDGE_JITTER * error * box.h
        x0, x1 = _edges(box.x + rng.gauss(0, sigma_x), box.x + box.w + rng.gauss(0, sigma_x))
        y0, y1 = _edges(box.y + rng.gauss(0, sigma_y), box.y + box.h + rng.gauss(0, sigma_y))
        drawn.append(TrueBox(label, x0, y0, x1 - x0, y1 - y0))
    return drawn


def _edges(low: float, high: float) -> tuple[float, float]:
    """Two edges of a box in order, within [0, 1] and at least ``_MIN_BOX_SIDE`` apart."""
    low, high = sorted((min(1.0, max(0.0, low)), min(1.0, max(0.0, high))))
    if high - low < _MIN_BOX_SIDE:
        low = min(low, 1.0 - _MIN_BOX_SIDE)
        high = low + _MIN_BOX_SIDE
    return low, high


def _random_box(labels: Sequence[str], rng: random.Random) -> TrueBox:
    x0, x1 = _edges(rng.random(), rng.random())
    y0, y1 = _edges(rng.random(), rng.random())
    return TrueBox(rng.choice(labels), x0, y0, x1 - x0, y1 - y0)


def task_labels(task: tasking_pb2.WorkerTask) -> list[str]:
    """The label set of a classification or bounding-box task; empty for a task type the
    crowd cannot answer."""
    which = task.WhichOneof("task")
    kind = TASK_TYPES.get(which) if which is not None else None
    if kind is None or kind.answer_kind not in _ANSWERED_KINDS:
        return []
    config: common_pb2.ClassificationConfig | common_pb2.BoundingBoxConfig = getattr(task, which)
    return list(config.labels)


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


def _classification_answer(
    w: _WorkerState, labels: list[str], truth: Truth | None
) -> tuple[common_pb2.Answer, bool, bool]:
    """A classification answer, whether its truth is known, and whether it is right."""
    label_truth = truth if isinstance(truth, str) else None
    label = choose_label(w.profile, labels, label_truth, w.rng)
    answer = common_pb2.Answer(classification=common_pb2.ClassificationAnswer(label=label))
    known = label_truth is not None and label_truth in labels
    return answer, known, known and label == label_truth


def _boxes_answer(w: _WorkerState, labels: list[str], truth: Truth | None) -> tuple[common_pb2.Answer, bool, bool]:
    """A boxes answer, whether its truth is known, and whether it is right (every object
    found with IoU >= 0.5 and the right class, nothing else drawn)."""
    box_truth = truth if isinstance(truth, tuple) else None
    drawn = draw_boxes(w.profile, labels, box_truth, w.rng)
    boxes = [common_pb2.Box(label=b.label, x=b.x, y=b.y, w=b.w, h=b.h) for b in drawn]
    answer = common_pb2.Answer(boxes=common_pb2.BoxesAnswer(boxes=boxes))
    if box_truth is None:
        return answer, False, False
    return answer, True, boxes_match(drawn, box_truth)


class SimulatedCrowd:
    """Simulated workers driving a TaskingService at ``tasking_addr`` (``"host:port"``).

    ``truth`` maps content fingerprints to true labels (:meth:`DemoDataset.truth_by_key`) or,
    for bounding-box tasks, to true boxes (:meth:`~quorum.demo.boxes.BoxDataset.truth_by_key`).
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
        spammer_share: float = 0.15,
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
        labels = task_labels(task)
        if not labels:
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
        truth = self._truth.get(key) if key is not None else None
        if TASK_TYPES[task.WhichOneof("task") or ""].answer_kind == "boxes":
            answer, known, correct = _boxes_answer(w, labels, truth)
        else:
            answer, known, correct = _classification_answer(w, labels, truth)
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
