"""An in-memory TaskingService for driving the simulated crowd over real gRPC.

A plain module (not conftest.py) so that test modules can import it by a name no other test
folder uses.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NoReturn

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from quorum.demo.boxes import BoxImage
from quorum.demo.dataset import DemoObject
from quorum.demo.items import Item
from quorum.errors import InvalidArgument
from quorum.taskmessages import answer_text, config_options, schema_labels
from quorum.tasktypes import TASK_TYPES
from quorum.v1 import common_pb2, tasking_pb2, tasking_pb2_grpc
from services.tasking.domain import JobRules, SubmittedAnswer, validate_answer


def _abort(context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> NoReturn:
    context.abort(code, message)
    raise AssertionError("context.abort raises")


@dataclass
class FakeTask:
    task_id: str
    kind: str
    labels: list[str]
    truth: str | None
    content: tasking_pb2.TaskContent
    # The task config of a structured task (kind: its task type), and the rules its answers meet.
    config: Message | None = None
    rules: JobRules | None = None
    answered_by: set[str] = field(default_factory=set)
    skipped_by: set[str] = field(default_factory=set)
    leased_by: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class RecordedAnswer:
    worker_id: str
    task_id: str
    label: str
    truth: str | None
    labels: tuple[str, ...]


@dataclass
class _Lease:
    task_id: str
    worker_id: str
    expires_at: float


class FakeTasking(tasking_pb2_grpc.TaskingServiceServicer):
    """Hands out tasks from memory: each task to at most ``overlap`` distinct workers.

    A lease lives ``lease_s`` seconds. With ``endless`` set, a fresh text task (unknown to any
    truth map) is made whenever nothing else is available. ``box_images`` become
    bounding-box tasks with the classes ``box_labels``; their answers are recorded with the
    stored answer text (:func:`quorum.taskmessages.answer_text`) as the label. ``structured``
    holds job specs of any task type with their objects: each object becomes a task with the
    spec's config, whose answers must pass tasking's own answer validation (INVALID_ARGUMENT
    otherwise) and are recorded as box answers are.
    """

    def __init__(
        self,
        objects: Sequence[DemoObject] = (),
        *,
        image_labels: tuple[str, ...] = (),
        text_labels: tuple[str, ...] = (),
        overlap: int = 1,
        lease_s: float = 30.0,
        retry_after_ms: int = 20,
        endless: bool = False,
        box_images: Sequence[BoxImage] = (),
        box_labels: tuple[str, ...] = (),
        structured: Sequence[tuple[common_pb2.JobSpec, Sequence[Item[object]]]] = (),
        failed_submits: Sequence[grpc.StatusCode] = (),
    ) -> None:
        self.lock = threading.Lock()
        # The first SubmitAnswer calls fail with these codes, one each, before reaching the task.
        self.failed_submits = list(failed_submits)
        self.overlap = overlap
        self.lease_s = lease_s
        self.retry_after_ms = retry_after_ms
        self.endless = endless
        self.tasks: list[FakeTask] = []
        self.sessions: dict[str, str] = {}
        self.leases: dict[str, _Lease] = {}
        self.answers: list[RecordedAnswer] = []
        self.skips = 0
        # Tasks before this index have all the answers they need; scanning starts here so
        # that a long endless run does not slow the server down.
        self._first_open = 0
        self.calls: Counter[str] = Counter()
        for obj in objects:
            if obj.kind == "image":
                content = tasking_pb2.TaskContent(content_type="image/png", data=obj.data)
                labels = list(image_labels)
            else:
                content = tasking_pb2.TaskContent(content_type="text/plain", text=obj.text)
                labels = list(text_labels)
            self.tasks.append(FakeTask(f"task-{len(self.tasks)}", obj.kind, labels, obj.label, content))
        for image in box_images:
            content = tasking_pb2.TaskContent(content_type="image/png", data=image.data)
            self.tasks.append(FakeTask(f"task-{len(self.tasks)}", "boxes", list(box_labels), None, content))
        for spec, items in structured:
            member = spec.WhichOneof("task") or ""
            schema = schema_labels(spec, member)
            options = tuple(sorted(config_options(spec, member).items()))
            rules = JobRules("job-1", member, schema, "", 3, 5, 0.0, 30, options)
            for item in items:
                if isinstance(item.content, str):
                    content = tasking_pb2.TaskContent(content_type="text/plain", text=item.content)
                else:
                    content = tasking_pb2.TaskContent(content_type="image/png", data=item.content)
                task = FakeTask(
                    f"task-{len(self.tasks)}", member, list(schema), None, content, getattr(spec, member), rules
                )
                self.tasks.append(task)

    # ---------------------------------------------------------------- helpers for tests

    def answer_count(self) -> int:
        with self.lock:
            return len(self.answers)

    def all_done(self) -> bool:
        """Every task has ``overlap`` answers, or was answered or skipped by every session."""
        with self.lock:
            workers = len(set(self.sessions.values()))
            return all(
                len(t.answered_by) >= self.overlap or len(t.answered_by | t.skipped_by) >= workers > 0
                for t in self.tasks
            )

    def forget_sessions(self) -> None:
        with self.lock:
            self.sessions.clear()

    # ---------------------------------------------------------------- the service

    def StartSession(self, request, context):
        with self.lock:
            self.calls["StartSession"] += 1
            session_id = uuid.uuid4().hex
            self.sessions[session_id] = request.worker_id
        return tasking_pb2.Session(session_id=session_id, worker_id=request.worker_id)

    def GetNextTask(self, request, context):
        with self.lock:
            self.calls["GetNextTask"] += 1
            worker = self.sessions.get(request.session_id)
            if worker is None:
                _abort(context, grpc.StatusCode.NOT_FOUND, f"session {request.session_id!r} not found")
            self._expire_leases()
            while self._first_open < len(self.tasks) and len(self.tasks[self._first_open].answered_by) >= self.overlap:
                self._first_open += 1
            candidates = (self.tasks[i] for i in range(self._first_open, len(self.tasks)))
            task = next((t for t in candidates if self._offerable(t, worker)), None)
            if task is None and self.endless:
                n = len(self.tasks)
                content = tasking_pb2.TaskContent(content_type="text/plain", text=f"endless text {n}")
                task = FakeTask(f"task-{n}", "text", ["positive", "negative", "neutral"], None, content)
                self.tasks.append(task)
            if task is None:
                return tasking_pb2.GetNextTaskResponse(retry_after_ms=self.retry_after_ms)
            lease_id = uuid.uuid4().hex
            self.leases[lease_id] = _Lease(task.task_id, worker, time.monotonic() + self.lease_s)
            task.leased_by.add(worker)
            config = common_pb2.ClassificationConfig(labels=task.labels)
            worker_task = tasking_pb2.WorkerTask(
                task_id=task.task_id, lease_id=lease_id, job_id="job-1", content=task.content
            )
            worker_task.lease_expires_at.FromMilliseconds(int((time.time() + self.lease_s) * 1000))
            if task.config is not None:
                getattr(worker_task, task.kind).CopyFrom(task.config)
            elif task.kind == "image":
                worker_task.image_classification.CopyFrom(config)
            elif task.kind == "boxes":
                worker_task.bounding_boxes.labels.extend(task.labels)
            else:
                worker_task.text_classification.CopyFrom(config)
            return tasking_pb2.GetNextTaskResponse(task=worker_task)

    def SubmitAnswer(self, request, context):
        with self.lock:
            self.calls["SubmitAnswer"] += 1
            if self.failed_submits:
                _abort(context, self.failed_submits.pop(0), "refused by the test")
            task, worker = self._take_lease(request.session_id, request.lease_id, context)
            label = answer_text(request.answer)
            if task.rules is not None:
                self._validate(task, request.answer, context)
            elif (request.answer.WhichOneof("value") == "boxes") != (task.kind == "boxes"):
                _abort(context, grpc.StatusCode.INVALID_ARGUMENT, "answer: wrong kind for the task")
            elif task.kind != "boxes" and label not in task.labels:
                _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"answer.classification.label: {label!r}")
            task.answered_by.add(worker)
            self.answers.append(RecordedAnswer(worker, task.task_id, label, task.truth, tuple(task.labels)))
            return tasking_pb2.SubmitAnswerResponse(answer_id=uuid.uuid4().hex)

    def SkipTask(self, request, context):
        with self.lock:
            self.calls["SkipTask"] += 1
            task, worker = self._take_lease(request.session_id, request.lease_id, context)
            task.skipped_by.add(worker)
            self.skips += 1
            return tasking_pb2.SkipTaskResponse()

    # ---------------------------------------------------------------- internals (lock held)

    @staticmethod
    def _validate(task: FakeTask, answer: common_pb2.Answer, context: grpc.ServicerContext) -> None:
        """Tasking's answer validation, on the answer as tasking's servicer reads it."""
        kind = answer.WhichOneof("value")
        if kind != TASK_TYPES[task.kind].answer_kind or task.rules is None:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, f"answer: {kind} for a {task.kind} task")
        body = json_format.MessageToDict(getattr(answer, kind), preserving_proto_field_name=True)
        text_length = len(task.content.text) if task.content.WhichOneof("body") == "text" else None
        try:
            validate_answer(task.rules, SubmittedAnswer(kind, body=body), text_length)
        except InvalidArgument as exc:
            _abort(context, grpc.StatusCode.INVALID_ARGUMENT, str(exc))

    def _offerable(self, task: FakeTask, worker: str) -> bool:
        if worker in task.answered_by or worker in task.skipped_by or worker in task.leased_by:
            return False
        return len(task.answered_by) + len(task.leased_by) < self.overlap

    def _expire_leases(self) -> None:
        now = time.monotonic()
        for lease_id, lease in list(self.leases.items()):
            if lease.expires_at <= now:
                del self.leases[lease_id]
                self._task(lease.task_id).leased_by.discard(lease.worker_id)

    def _task(self, task_id: str) -> FakeTask:
        return self.tasks[int(task_id.removeprefix("task-"))]

    def _take_lease(self, session_id: str, lease_id: str, context) -> tuple[FakeTask, str]:
        self._expire_leases()
        worker = self.sessions.get(session_id)
        lease = self.leases.get(lease_id)
        if worker is None or lease is None or lease.worker_id != worker:
            _abort(context, grpc.StatusCode.FAILED_PRECONDITION, "no live lease")
        del self.leases[lease_id]
        task = self._task(lease.task_id)
        task.leased_by.discard(worker)
        return task, worker
