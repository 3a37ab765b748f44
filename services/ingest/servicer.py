"""IngestService over gRPC: request -> domain values -> handler -> response.

Domain errors raised here or by the handlers become status codes in
:mod:`quorum.rpc`'s interceptor.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from quorum.errors import InvalidArgument
from quorum.security.principal import Role, current_principal
from quorum.v1 import ingest_pb2, ingest_pb2_grpc
from services.ingest import codec
from services.ingest.handlers import IngestHandlers

SERVICE_NAME: str = ingest_pb2.DESCRIPTOR.services_by_name["IngestService"].full_name


class IngestServicer(ingest_pb2_grpc.IngestServiceServicer):
    """Thin translation layer over :class:`IngestHandlers`."""

    def __init__(self, handlers: IngestHandlers) -> None:
        self._handlers = handlers

    def CreateJob(self, request: ingest_pb2.CreateJobRequest, context: Any) -> ingest_pb2.Job:
        if not request.HasField("spec"):
            raise InvalidArgument("spec", "required")
        caller = current_principal()
        # A client key's own organisation was filled in by the policy; no other key has one to give.
        if not request.spec.client_id and caller is not None and caller.role is not Role.CLIENT:
            raise InvalidArgument(
                "spec.client_id",
                f"required: {caller.role.value} keys act for any organisation, so name the one the job is for",
            )
        job = self._handlers.create_job(codec.spec_from_proto(request.spec), request.idempotency_key)
        return codec.job_to_proto(job)

    def GetJob(self, request: ingest_pb2.GetJobRequest, context: Any) -> ingest_pb2.Job:
        return codec.job_to_proto(self._handlers.get_job(request.job_id))

    def ListJobs(self, request: ingest_pb2.ListJobsRequest, context: Any) -> ingest_pb2.ListJobsResponse:
        jobs = self._handlers.list_jobs(request.client_id)
        return ingest_pb2.ListJobsResponse(jobs=[codec.job_to_proto(job) for job in jobs])

    def UploadFiles(self, request_iterator: Iterator[ingest_pb2.UploadChunk], context: Any) -> ingest_pb2.UploadSummary:
        chunks = (codec.chunk_from_proto(chunk) for chunk in request_iterator)
        return codec.summary_to_proto(self._handlers.upload(chunks))

    def ImportManifest(self, request: ingest_pb2.ImportManifestRequest, context: Any) -> ingest_pb2.UploadSummary:
        if not request.job_id:
            raise InvalidArgument("job_id", "required")
        fmt = codec.manifest_format(request.format)
        # Whether a manifest may name files on the server depends on who sends it, not on
        # which RPC: so it is decided here rather than in the policy table, which lets
        # clients (their own jobs) and admins import.
        caller = current_principal()
        server_paths = caller is not None and caller.role is Role.ADMIN
        summary = self._handlers.import_manifest(request.job_id, fmt, request.content, request.base_dir, server_paths)
        return codec.summary_to_proto(summary)

    def SealJob(self, request: ingest_pb2.SealJobRequest, context: Any) -> ingest_pb2.Job:
        return codec.job_to_proto(self._handlers.seal_job(request.job_id))

    def DeleteJob(self, request: ingest_pb2.DeleteJobRequest, context: Any) -> ingest_pb2.DeleteJobResponse:
        return codec.delete_summary_to_proto(self._handlers.delete_job(request.job_id))

    def SetJobSla(self, request: ingest_pb2.SetJobSlaRequest, context: Any) -> ingest_pb2.Job:
        if request.clear_deadline == request.HasField("sla_deadline"):
            raise InvalidArgument("sla_deadline", "give a new deadline, or clear_deadline to remove it (not both)")
        deadline = codec.deadline(request.sla_deadline) if request.HasField("sla_deadline") else None
        return codec.job_to_proto(self._handlers.set_job_sla(request.job_id, deadline))
