"""Domain errors become the right gRPC status codes; health and reflection are served."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from quorum import errors
from quorum.rpc import RunningServer, channel, second_factor_required, start_server
from quorum.v1 import consensus_pb2, consensus_pb2_grpc

# What an unexpected exception's text may carry: a password, another organisation's data.
LEAKY_URL = "postgresql://quorum:hunter2-secret@db/quorum_ingest"


class Raising(consensus_pb2_grpc.ConsensusServiceServicer):
    """Raises the domain error named by the request's task id."""

    RAISES = {
        "bad": errors.InvalidArgument("task_id", "must not be 'bad'"),
        "missing": errors.NotFound("task", "missing"),
        "late": errors.FailedPrecondition("no live lease"),
        "denied": errors.PermissionDenied("not yours"),
        "busy": errors.ResourceExhausted("slow down", retry_after_ms=250),
        "stranger": errors.Unauthenticated("unknown or revoked API key"),
        "no-code": errors.SecondFactorRequired("this key needs a TOTP code"),
    }

    def GetResult(
        self, request: consensus_pb2.GetResultRequest, context: grpc.ServicerContext
    ) -> consensus_pb2.TaskResult:
        if request.task_id == "crash":
            raise RuntimeError(f"could not connect to {LEAKY_URL}")
        if request.task_id == "aborted":
            context.abort(grpc.StatusCode.UNAVAILABLE, "try the other replica")
        raise self.RAISES[request.task_id]

    def ExportResults(
        self, request: consensus_pb2.ExportResultsRequest, context: grpc.ServicerContext
    ) -> Iterator[consensus_pb2.TaskResult]:
        yield consensus_pb2.TaskResult(task_id="first")
        if request.job_id == "crash":
            raise KeyError(f"row of {LEAKY_URL}")
        raise errors.NotFound("job", request.job_id)


@pytest.fixture
def server() -> Iterator[RunningServer]:
    running = start_server(
        [(consensus_pb2_grpc.add_ConsensusServiceServicer_to_server, Raising(), "quorum.v1.ConsensusService")],
        "127.0.0.1:0",
    )
    yield running
    running.stop(0)


@pytest.mark.parametrize(
    ("task_id", "code", "text"),
    [
        ("bad", grpc.StatusCode.INVALID_ARGUMENT, "task_id: must not be 'bad'"),
        ("missing", grpc.StatusCode.NOT_FOUND, "task 'missing' not found"),
        ("late", grpc.StatusCode.FAILED_PRECONDITION, "no live lease"),
        ("denied", grpc.StatusCode.PERMISSION_DENIED, "not yours"),
        ("busy", grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down"),
    ],
)
def test_domain_errors_map_to_status_codes(
    server: RunningServer, task_id: str, code: grpc.StatusCode, text: str
) -> None:
    with channel(f"127.0.0.1:{server.port}") as ch:
        stub = consensus_pb2_grpc.ConsensusServiceStub(ch)
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetResult(consensus_pb2.GetResultRequest(task_id=task_id), timeout=5)
    assert caught.value.code() == code
    assert caught.value.details() == text
    if task_id == "busy":
        assert ("retry-after-ms", "250") in caught.value.trailing_metadata()


@pytest.mark.parametrize(("task_id", "factor"), [("no-code", "totp"), ("stranger", None), ("denied", None)])
def test_a_missing_second_factor_is_told_apart_from_a_wrong_key(
    server: RunningServer, task_id: str, factor: str | None
) -> None:
    with channel(f"127.0.0.1:{server.port}") as ch:
        stub = consensus_pb2_grpc.ConsensusServiceStub(ch)
        with pytest.raises(grpc.RpcError) as caught:
            stub.GetResult(consensus_pb2.GetResultRequest(task_id=task_id), timeout=5)
    if factor:
        assert caught.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert second_factor_required(caught.value) == factor


def test_streaming_errors_arrive_after_the_messages_sent(server: RunningServer) -> None:
    with channel(f"127.0.0.1:{server.port}") as ch:
        stream = consensus_pb2_grpc.ConsensusServiceStub(ch).ExportResults(
            consensus_pb2.ExportResultsRequest(job_id="j")
        )
        assert next(stream).task_id == "first"
        with pytest.raises(grpc.RpcError) as caught:
            next(stream)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_an_unexpected_exception_reaches_the_caller_as_an_incident_id_only(
    server: RunningServer, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.ERROR, logger="quorum.rpc"), channel(f"127.0.0.1:{server.port}") as ch:
        stub = consensus_pb2_grpc.ConsensusServiceStub(ch)
        with pytest.raises(grpc.RpcError) as unary:
            stub.GetResult(consensus_pb2.GetResultRequest(task_id="crash"), timeout=5)
        stream = stub.ExportResults(consensus_pb2.ExportResultsRequest(job_id="crash"), timeout=5)
        assert next(stream).task_id == "first"
        with pytest.raises(grpc.RpcError) as streaming:
            next(stream)
    incidents = []
    for caught in (unary.value, streaming.value):
        assert caught.code() == grpc.StatusCode.INTERNAL
        match = re.fullmatch(r"internal error \(incident ([0-9a-f]{12})\)", caught.details())
        assert match, caught.details()
        incidents.append(match[1])
    # The operator finds the whole story under the id; the caller saw none of it.
    for incident, method in zip(incidents, ("GetResult", "ExportResults"), strict=True):
        [record] = [r for r in caplog.records if incident in r.getMessage()]
        assert method in record.getMessage() and record.exc_info is not None
    assert "hunter2-secret" in caplog.text


def test_a_handler_that_aborts_keeps_its_own_status(server: RunningServer) -> None:
    with channel(f"127.0.0.1:{server.port}") as ch, pytest.raises(grpc.RpcError) as caught:
        consensus_pb2_grpc.ConsensusServiceStub(ch).GetResult(
            consensus_pb2.GetResultRequest(task_id="aborted"), timeout=5
        )
    assert (caught.value.code(), caught.value.details()) == (grpc.StatusCode.UNAVAILABLE, "try the other replica")


def test_health_and_reflection(server: RunningServer) -> None:
    with channel(f"127.0.0.1:{server.port}") as ch:
        health = health_pb2_grpc.HealthStub(ch)
        reply = health.Check(health_pb2.HealthCheckRequest(service="quorum.v1.ConsensusService"), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        reflection = reflection_pb2_grpc.ServerReflectionStub(ch)
        responses = reflection.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
        names = {s.name for s in next(responses).list_services_response.service}
    assert {"quorum.v1.ConsensusService", "grpc.health.v1.Health"} <= names
    server.set_serving(False)
    with channel(f"127.0.0.1:{server.port}") as ch:
        reply = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    assert reply.status == health_pb2.HealthCheckResponse.NOT_SERVING
