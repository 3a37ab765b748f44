"""gRPC plumbing shared by the four services: the server, its health and
reflection services, and the one table that maps domain errors to status codes."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any, NamedTuple

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from quorum import errors

log = logging.getLogger(__name__)

STATUS_FOR_ERROR: dict[type[errors.QuorumError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def status_for(error: errors.QuorumError) -> grpc.StatusCode:
    for kind in type(error).__mro__:
        if kind in STATUS_FOR_ERROR:
            return STATUS_FOR_ERROR[kind]
    return grpc.StatusCode.INTERNAL


# Trailing metadata naming the factor (e.g. "totp") an UNAUTHENTICATED call lacked, so a
# client can ask for the code instead of reporting the key as wrong.
SECOND_FACTOR_METADATA = "quorum-second-factor"


def _abort(context: grpc.ServicerContext, error: errors.QuorumError) -> None:
    if isinstance(error, errors.ResourceExhausted):
        context.set_trailing_metadata((("retry-after-ms", str(error.retry_after_ms)),))
    if isinstance(error, errors.SecondFactorRequired):
        context.set_trailing_metadata(((SECOND_FACTOR_METADATA, error.factor),))
    context.abort(status_for(error), str(error))


def _wrap_unary(behavior: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return behavior(request, context)
        except errors.QuorumError as error:
            _abort(context, error)

    return wrapped


def _wrap_streaming(behavior: Callable[..., Any]) -> Callable[..., Any]:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            yield from behavior(request, context)
        except errors.QuorumError as error:
            _abort(context, error)

    return wrapped


# Methods named like this only read: backpressure never refuses them, so operators can
# still see what is going on while writers are asked to wait.
READ_PREFIXES = ("Get", "List", "Export", "Verify", "Quote", "Check", "Watch", "ServerReflectionInfo")


class BackpressureInterceptor(grpc.ServerInterceptor):
    """Refuses calls that write (every method not named like a read) with
    RESOURCE_EXHAUSTED and a ``retry-after-ms`` hint while ``overloaded()`` returns a
    hint in milliseconds (None: accept). Cheap: ``overloaded`` must not do I/O.
    Install it inside :class:`DomainErrorInterceptor`, which turns the error into the
    status and sets the trailing metadata."""

    def __init__(self, overloaded: Callable[[], int | None]) -> None:
        self._overloaded = overloaded

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = continuation(handler_call_details)
        method = str(handler_call_details.method)
        if handler is None or method.startswith("/grpc.") or method.rsplit("/", 1)[-1].startswith(READ_PREFIXES):
            return handler
        overloaded = self._overloaded

        def guard(behavior: Callable[..., Any]) -> Callable[..., Any]:
            def guarded(request: Any, context: grpc.ServicerContext) -> Any:
                retry_ms = overloaded()
                if retry_ms is not None:
                    raise errors.ResourceExhausted(
                        "this service is behind on publishing its events; retry later", retry_after_ms=retry_ms
                    )
                return behavior(request, context)

            return guarded

        if handler.unary_unary:
            return handler._replace(unary_unary=guard(handler.unary_unary))
        if handler.stream_unary:
            return handler._replace(stream_unary=guard(handler.stream_unary))
        return handler


class DomainErrorInterceptor(grpc.ServerInterceptor):
    """Turns a :class:`quorum.errors.QuorumError` raised by a servicer into its status code."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        if handler.unary_unary:
            return handler._replace(unary_unary=_wrap_unary(handler.unary_unary))
        if handler.stream_unary:
            return handler._replace(stream_unary=_wrap_unary(handler.stream_unary))
        if handler.unary_stream:
            return handler._replace(unary_stream=_wrap_streaming(handler.unary_stream))
        if handler.stream_stream:
            return handler._replace(stream_stream=_wrap_streaming(handler.stream_stream))
        return handler


@dataclass
class RunningServer:
    server: grpc.Server
    health: health.HealthServicer
    port: int
    service_names: tuple[str, ...]

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *self.service_names):
            self.health.set(name, status)

    def stop(self, grace: float = 2.0) -> None:
        self.set_serving(False)
        self.server.stop(grace).wait()


def start_server(
    registrations: Sequence[tuple[Callable[[Any, grpc.Server], None], Any, str]],
    address: str,
    max_workers: int = 32,
    interceptors: Iterable[grpc.ServerInterceptor] = (),
    max_concurrent_rpcs: int | None = None,
) -> RunningServer:
    """Starts a gRPC server with health checking and reflection.

    ``registrations`` holds ``(add_XServicer_to_server, servicer, full service name)``.
    ``address`` is ``host:port``; port 0 picks a free port. Raises RuntimeError when the
    port cannot be bound.
    """
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc"),
        interceptors=[DomainErrorInterceptor(), *interceptors],
        # Calls beyond this wait nowhere: gRPC answers RESOURCE_EXHAUSTED at once instead of
        # queueing them without bound behind busy threads.
        maximum_concurrent_rpcs=max_concurrent_rpcs or max_workers * 32,
        options=[
            ("grpc.max_receive_message_length", 32 * 1024 * 1024),
            ("grpc.max_send_message_length", 32 * 1024 * 1024),
            ("grpc.so_reuseport", 0),
        ],
    )
    names = []
    for add, servicer, name in registrations:
        add(servicer, server)
        names.append(name)
    health_servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*names, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise RuntimeError(f"cannot listen on {address}: {exc}") from exc
    if port == 0:
        raise RuntimeError(f"cannot listen on {address}: port in use?")
    server.start()
    running = RunningServer(server, health_servicer, port, tuple(names))
    running.set_serving(True)
    return running


class _CallDetails(NamedTuple):
    method: str
    timeout: float | None
    metadata: Sequence[tuple[str, str | bytes]] | None
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class BearerKey(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Sends ``authorization: Bearer <key>`` with every call of a channel."""

    def __init__(self, api_key: str) -> None:
        self._header = ("authorization", f"Bearer {api_key}")

    def __repr__(self) -> str:  # never show the key
        return "BearerKey(***)"

    def _with_key(self, details: grpc.ClientCallDetails) -> _CallDetails:
        metadata = [*(details.metadata or ()), self._header]
        return _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._with_key(client_call_details), request)

    def intercept_unary_stream(self, continuation: Any, client_call_details: Any, request: Any) -> Any:
        return continuation(self._with_key(client_call_details), request)

    def intercept_stream_unary(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return continuation(self._with_key(client_call_details), request_iterator)

    def intercept_stream_stream(self, continuation: Any, client_call_details: Any, request_iterator: Any) -> Any:
        return continuation(self._with_key(client_call_details), request_iterator)


def channel(address: str, *, api_key: str | None = None) -> grpc.Channel:
    """A channel for loopback and in-cluster traffic; with ``api_key``, every call
    carries it as a bearer credential."""
    plain = grpc.insecure_channel(
        address,
        options=[
            ("grpc.max_receive_message_length", 32 * 1024 * 1024),
            ("grpc.max_send_message_length", 32 * 1024 * 1024),
        ],
    )
    if api_key is None:
        return plain
    return grpc.intercept_channel(plain, BearerKey(api_key))


def second_factor_required(error: grpc.RpcError) -> str | None:
    """The second factor (e.g. ``"totp"``) a refused call needs, or None when the refusal
    was for any other reason (a wrong or revoked key, a wrong code)."""
    if not isinstance(error, grpc.Call) or error.code() != grpc.StatusCode.UNAUTHENTICATED:
        return None
    for name, value in error.trailing_metadata() or ():
        if name == SECOND_FACTOR_METADATA:
            return value.decode() if isinstance(value, bytes) else str(value)
    return None


def wait_healthy(address: str, timeout: float = 30.0) -> None:
    """Blocks until the server at ``address`` reports SERVING. Raises TimeoutError."""
    import time

    deadline = time.monotonic() + timeout
    with channel(address) as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while True:
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"no healthy gRPC server at {address} after {timeout:.0f} s")
            time.sleep(0.05)
