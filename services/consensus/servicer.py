"""ConsensusService over gRPC: validate the request, call the query, translate the answer.

Errors are :mod:`quorum.errors`; the interceptor in :mod:`quorum.rpc` maps them to status codes.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc

from quorum.errors import InvalidArgument
from quorum.security.audit import AuditRecorder
from quorum.v1 import consensus_pb2, consensus_pb2_grpc
from services.consensus import messages
from services.consensus.handlers import ConsensusQueries
from services.consensus.review import ExpertReview

SERVICE_NAME = consensus_pb2.DESCRIPTOR.services_by_name["ConsensusService"].full_name
MAX_ID_LENGTH = 200


def _required_id(value: str, field: str) -> str:
    if not value:
        raise InvalidArgument(field, "required")
    return _optional_id(value, field)


def _optional_id(value: str, field: str) -> str:
    if len(value) > MAX_ID_LENGTH:
        raise InvalidArgument(field, f"longer than {MAX_ID_LENGTH} characters")
    if value != value.strip():
        raise InvalidArgument(field, "has leading or trailing whitespace")
    return value


class ConsensusServicer(consensus_pb2_grpc.ConsensusServiceServicer):
    """Read-only API over resolved labels and quality figures; every call is a few indexed queries."""

    def __init__(
        self,
        queries: ConsensusQueries,
        review: ExpertReview,
        audit: AuditRecorder,
    ) -> None:
        self._queries = queries
        self._review = review
        self._audit = audit

    def GetResult(
        self, request: consensus_pb2.GetResultRequest, context: grpc.ServicerContext
    ) -> consensus_pb2.TaskResult:
        """NOT_FOUND until the task is resolved (and always for gold tasks)."""
        task_id = _required_id(request.task_id, "task_id")
        return messages.result_message(self._queries.get_result(task_id))

    def ExportResults(
        self, request: consensus_pb2.ExportResultsRequest, context: grpc.ServicerContext
    ) -> Iterator[consensus_pb2.TaskResult]:
        """Streams every resolved task of the job; NOT_FOUND for a job this service never saw."""
        job_id = _required_id(request.job_id, "job_id")
        results = self._queries.export_results(job_id)
        self._audit.record("results.exported", f"job/{job_id}", org_id=self._queries.owner_of("job", job_id) or "")
        for result in results:
            yield messages.result_message(result)

    def GetJobQuality(
        self, request: consensus_pb2.GetJobQualityRequest, context: grpc.ServicerContext
    ) -> consensus_pb2.JobQuality:
        """Figures of one job, or of all jobs when ``job_id`` is empty."""
        job_id = _optional_id(request.job_id, "job_id")
        return messages.quality_message(self._queries.job_quality(job_id or None))

    def ListWorkers(
        self, request: consensus_pb2.ListWorkersRequest, context: grpc.ServicerContext
    ) -> consensus_pb2.ListWorkersResponse:
        """Workers of one job, or all workers when ``job_id`` is empty, most reliable first."""
        job_id = _optional_id(request.job_id, "job_id")
        return messages.workers_message(self._queries.list_workers(job_id or None))

    def ListReviewTasks(
        self, request: consensus_pb2.ListReviewTasksRequest, context: grpc.ServicerContext
    ) -> consensus_pb2.ListReviewTasksResponse:
        """Tasks of expert-review jobs waiting for a reviewer, oldest first."""
        job_id = _optional_id(request.job_id, "job_id")
        if not 0 <= request.page_size <= 1000:
            raise InvalidArgument("page_size", "must be between 0 and 1000")
        return messages.review_tasks_message(self._review.pending(job_id or None, request.page_size or 100))

    def SubmitReview(
        self, request: consensus_pb2.SubmitReviewRequest, context: grpc.ServicerContext
    ) -> consensus_pb2.TaskResult:
        """The reviewer's label resolves the task with confidence 1 and is published."""
        task_id = _required_id(request.task_id, "task_id")
        reviewer_id = _required_id(request.reviewer_id, "reviewer_id")
        if request.label.WhichOneof("value") is None:
            raise InvalidArgument("label", "an answer is required (classification, or the job's structured kind)")
        return messages.result_message(self._review.submit(task_id, reviewer_id, messages.label_of(request.label)))
