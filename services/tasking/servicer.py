"""TaskingService over gRPC: request -> validate -> service layer -> response.

Domain errors raised below become status codes in quorum.rpc's interceptor.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from google.protobuf import json_format
from google.protobuf.timestamp_pb2 import Timestamp

from quorum import taskmessages
from quorum.errors import InvalidArgument
from quorum.v1 import common_pb2, tasking_pb2, tasking_pb2_grpc
from services.tasking.domain import RETRY_AFTER_MS, HandedOutTask, SubmittedAnswer, WorkerStanding
from services.tasking.handlers import TaskingService

SERVICE_NAME = tasking_pb2.DESCRIPTOR.services_by_name["TaskingService"].full_name


def _timestamp(moment: dt.datetime) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(moment)
    return stamp


def _submitted(answer: common_pb2.Answer) -> SubmittedAnswer:
    kind = answer.WhichOneof("value")
    if kind is None:
        return SubmittedAnswer(kind=None)
    if kind == "classification":
        return SubmittedAnswer(kind=kind, label=answer.classification.label)
    body = json_format.MessageToDict(getattr(answer, kind), preserving_proto_field_name=True)
    return SubmittedAnswer(kind=kind, body=body, text=taskmessages.answer_text(answer))


def worker_task(task: HandedOutTask) -> tasking_pb2.WorkerTask:
    """The worker's view of a handout: nothing says whether it is gold."""
    message = tasking_pb2.WorkerTask(
        task_id=task.task_id,
        lease_id=task.lease_id,
        job_id=task.job.job_id,
        instructions=task.job.instructions,
        lease_expires_at=_timestamp(task.lease_expires_at),
    )
    config = taskmessages.config_message(task.job.task_type, task.job.labels, dict(task.job.options))
    getattr(message, task.job.task_type).CopyFrom(config)
    message.content.content_type = task.content_type
    if task.text is not None:
        message.content.text = task.text
    elif task.data is not None:
        message.content.data = task.data
    return message


def worker_status(standing: WorkerStanding) -> tasking_pb2.WorkerStatus:
    message = tasking_pb2.WorkerStatus(
        worker_id=standing.worker_id,
        suspended=standing.suspended,
        reason=standing.reason,
        suspended_by_operator=standing.suspended_by_operator,
        suspension_reason=standing.suspension_reason,
        spam_flagged=standing.spam_flagged,
        spam_reason=standing.spam_reason,
        flag_overridden=standing.flag_overridden,
        changed_by=standing.changed_by,
    )
    if standing.changed_at is not None:
        message.changed_at.CopyFrom(_timestamp(standing.changed_at))
    return message


def _page_size(value: int) -> int:
    if value < 0:
        raise InvalidArgument("page_size", f"must be >= 0 (got {value})")
    return value or 100


def _reply_cannot_arrive(context: Any) -> bool:
    """Whether the call is over: cancelled (the caller gave up, or a draining server's
    grace ran out) or past its deadline, which gRPC may notice only after the handler."""
    remaining = context.time_remaining()
    return not context.is_active() or (remaining is not None and remaining <= 0)


class TaskingServicer(tasking_pb2_grpc.TaskingServiceServicer):
    """Thin gRPC adapter over :class:`TaskingService`."""

    def __init__(self, service: TaskingService) -> None:
        self._service = service

    def StartSession(self, request: tasking_pb2.StartSessionRequest, context: Any) -> tasking_pb2.Session:
        session = self._service.start_session(request.worker_id)
        return tasking_pb2.Session(
            session_id=session.session_id,
            worker_id=session.worker_id,
            started_at=_timestamp(session.started_at),
        )

    def GetNextTask(self, request: tasking_pb2.GetNextTaskRequest, context: Any) -> tasking_pb2.GetNextTaskResponse:
        task = self._service.next_task(request.session_id, request.job_id)
        if task is not None and _reply_cannot_arrive(context):
            # Cancelled while the task was being leased: the reply would go nowhere, and the
            # lease would hold the task's slot until it expired.
            self._service.release_undelivered(request.session_id, task.lease_id)
            task = None
        if task is None:
            return tasking_pb2.GetNextTaskResponse(retry_after_ms=RETRY_AFTER_MS)
        return tasking_pb2.GetNextTaskResponse(task=worker_task(task))

    def SubmitAnswer(self, request: tasking_pb2.SubmitAnswerRequest, context: Any) -> tasking_pb2.SubmitAnswerResponse:
        answer_id = self._service.submit_answer(request.session_id, request.lease_id, _submitted(request.answer))
        return tasking_pb2.SubmitAnswerResponse(answer_id=answer_id)

    def Heartbeat(self, request: tasking_pb2.HeartbeatRequest, context: Any) -> tasking_pb2.HeartbeatResponse:
        expires_at = self._service.heartbeat(request.session_id, request.lease_id)
        return tasking_pb2.HeartbeatResponse(lease_expires_at=_timestamp(expires_at))

    def SkipTask(self, request: tasking_pb2.SkipTaskRequest, context: Any) -> tasking_pb2.SkipTaskResponse:
        self._service.skip_task(request.session_id, request.lease_id, request.reason)
        return tasking_pb2.SkipTaskResponse()

    def GetTaskingStats(self, request: tasking_pb2.GetTaskingStatsRequest, context: Any) -> tasking_pb2.TaskingStats:
        stats = self._service.stats(request.job_id)
        return tasking_pb2.TaskingStats(
            tasks=stats.tasks,
            gold_tasks=stats.gold_tasks,
            backlog=stats.backlog,
            answers=stats.answers,
            active_leases=stats.active_leases,
            workers=stats.workers,
            created_per_minute=[common_pb2.MinuteCount(minute=m, count=c) for m, c in stats.created_per_minute],
            answered_per_minute=[common_pb2.MinuteCount(minute=m, count=c) for m, c in stats.answered_per_minute],
        )

    def SuspendWorker(self, request: tasking_pb2.SuspendWorkerRequest, context: Any) -> tasking_pb2.WorkerStatus:
        return worker_status(self._service.suspend_worker(request.worker_id, request.reason))

    def ReinstateWorker(self, request: tasking_pb2.ReinstateWorkerRequest, context: Any) -> tasking_pb2.WorkerStatus:
        return worker_status(self._service.reinstate_worker(request.worker_id, request.reason))

    def GetWorkerStatus(self, request: tasking_pb2.GetWorkerStatusRequest, context: Any) -> tasking_pb2.WorkerStatus:
        return worker_status(self._service.worker_standing(request.worker_id))

    def ListWorkerStatuses(
        self, request: tasking_pb2.ListWorkerStatusesRequest, context: Any
    ) -> tasking_pb2.ListWorkerStatusesResponse:
        standings, next_after = self._service.worker_standings(
            request.suspended_only, _page_size(request.page_size), request.page_token
        )
        return tasking_pb2.ListWorkerStatusesResponse(
            workers=[worker_status(standing) for standing in standings], next_page_token=next_after
        )
