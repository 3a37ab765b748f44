"""gRPC plumbing shared by the four services: the server, its health and
reflection services, its transport (TLS, or plaintext on loopback only), the client
channel, and the one table that maps domain errors to status codes."""

from __future__ import annotations

import ipaddress
import logging
import threading
import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent import futures
from dataclasses import dataclass
from typing import Any, NamedTuple

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from quorum import errors
from quorum.tls import ClientTls, ServerTls

log = logging.getLogger(__name__)

STATUS_FOR_ERROR: dict[type[errors.QuorumError], grpc.StatusCode] = {
    errors.InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFound: grpc.StatusCode.NOT_FOUND,
    errors.FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    errors.PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    errors.Unauthenticated: grpc.StatusCode.UNAUTHENTICATED,
    errors.ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.Unavailable: grpc.StatusCode.UNAVAILABLE,
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


def _settled(context: grpc.ServicerContext, exc: Exception) -> bool:
    """Whether the call already has its status: the handler aborted (gRPC raises a bare
    Exception after setting code and details), or the client went away (an RpcError from
    the request stream, which gRPC recognises as its own)."""
    return isinstance(exc, grpc.RpcError) or (context.code() is not None and context.details() is not None)


def _abort_unexpected(context: grpc.ServicerContext, method: str) -> None:
    """Ends a call whose handler raised what no one expected with INTERNAL and an incident id.
    gRPC's own answer would be "Exception calling application: <the exception's text>",
    and that text may carry a secret or another organisation's data: the caller gets the id,
    the log gets the traceback. Call from an ``except`` block."""
    incident = uuid.uuid4().hex[:12]
    log.exception("incident %s: %s failed", incident, method)
    context.abort(grpc.StatusCode.INTERNAL, f"internal error (incident {incident})")


def _wrap_unary(behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            return behavior(request, context)
        except errors.QuorumError as error:
            _abort(context, error)
        except Exception as exc:
            if _settled(context, exc):
                raise
            _abort_unexpected(context, method)

    return wrapped


def _wrap_streaming(behavior: Callable[..., Any], method: str) -> Callable[..., Any]:
    def wrapped(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            yield from behavior(request, context)
        except errors.QuorumError as error:
            _abort(context, error)
        except Exception as exc:
            if _settled(context, exc):
                raise
            _abort_unexpected(context, method)

    return wrapped


# Methods named like this only read: backpressure never refuses them, so operators can
# still see what is going on while writers are asked to wait.
READ_PREFIXES = ("Get", "List", "Export", "Verify", "Quote", "Check", "Watch", "ServerReflectionInfo")


class BackpressureInterceptor(grpc.ServerInterceptor):
    """Refuses calls with RESOURCE_EXHAUSTED and a ``retry-after-ms`` hint while
    ``overloaded()`` returns a hint in milliseconds (None: accept), saying ``reason``.
    Guards the methods named in ``methods`` (short names, e.g. ``"GetNextTask"``), or
    without them every method that writes (every method not named like a read).
    Cheap: ``overloaded`` must not do I/O. Install it inside
    :class:`DomainErrorInterceptor`, which turns the error into the status and sets the
    trailing metadata."""

    def __init__(
        self,
        overloaded: Callable[[], int | None],
        reason: str = "this service is behind on publishing its events",
        methods: Collection[str] | None = None,
    ) -> None:
        self._overloaded = overloaded
        self._reason = reason
        self._methods = None if methods is None else frozenset(methods)

    def _guards(self, method: str) -> bool:
        name = method.rsplit("/", 1)[-1]
        if self._methods is not None:
            return name in self._methods
        return not method.startswith("/grpc.") and not name.startswith(READ_PREFIXES)

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None or not self._guards(str(handler_call_details.method)):
            return handler
        overloaded, reason = self._overloaded, self._reason

        def guard(behavior: Callable[..., Any]) -> Callable[..., Any]:
            def guarded(request: Any, context: grpc.ServicerContext) -> Any:
                retry_ms = overloaded()
                if retry_ms is not None:
                    raise errors.ResourceExhausted(f"{reason}; retry later", retry_after_ms=retry_ms)
                return behavior(request, context)

            return guarded

        if handler.unary_unary:
            return handler._replace(unary_unary=guard(handler.unary_unary))
        if handler.stream_unary:
            return handler._replace(stream_unary=guard(handler.stream_unary))
        return handler


class DomainErrorInterceptor(grpc.ServerInterceptor):
    """Turns a :class:`quorum.errors.QuorumError` raised by a servicer into its status code,
    and any other exception into INTERNAL with an incident id that names its traceback in
    the log, never its text. Outermost, so it sees what the other interceptors raise."""

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Any],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        handler = continuation(handler_call_details)
        if handler is None:
            return None
        method = str(handler_call_details.method)
        if handler.unary_unary:
            return handler._replace(unary_unary=_wrap_unary(handler.unary_unary, method))
        if handler.stream_unary:
            return handler._replace(stream_unary=_wrap_unary(handler.stream_unary, method))
        if handler.unary_stream:
            return handler._replace(unary_stream=_wrap_streaming(handler.unary_stream, method))
        if handler.stream_stream:
            return handler._replace(stream_stream=_wrap_streaming(handler.stream_stream, method))
        return handler


@dataclass
class RunningServer:
    server: grpc.Server
    health: health.HealthServicer
    port: int
    service_names: tuple[str, ...]
    # The plaintext listener that serves only grpc.health.v1 (start_server's health_address).
    health_server: grpc.Server | None = None
    health_port: int | None = None
    # The threads that run the handlers; stop() waits for them.
    handlers: futures.ThreadPoolExecutor | None = None

    def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *self.service_names):
            self.health.set(name, status)

    def stop(self, grace: float = 2.0) -> None:
        """Reports NOT_SERVING, gives in-flight calls ``grace`` seconds, then stops. gRPC
        cancels the calls still running then, but their handlers run on to the end (and
        may clean up after themselves, e.g. give back a lease the caller never got): this
        waits up to ``grace`` seconds more for them, so they finish before the service
        closes its connections."""
        self.set_serving(False)
        self.server.stop(grace).wait()
        if self.handlers is not None:
            finishing = threading.Thread(target=self.handlers.shutdown, name="grpc-handlers-finish", daemon=True)
            finishing.start()
            finishing.join(grace)
        if self.health_server is not None:
            self.health_server.stop(0).wait()


class PlaintextRefused(RuntimeError):
    """Plaintext gRPC was asked for on an address other machines can reach."""


def is_loopback(address: str) -> bool:
    """Whether ``host:port`` (``[v6]:port``, ``localhost:port``, ``unix:path``) is reachable
    from this machine only. A host name other than ``localhost`` counts as reachable from
    elsewhere: what it resolves to is not known here."""
    if address.startswith(("unix:", "unix-abstract:")):
        return True
    host = address[1 : address.find("]")] if address.startswith("[") else address.rsplit(":", 1)[0]
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def plaintext_loopback_notice(address: str) -> str:
    """What a server without a certificate says at start-up: it serves plaintext, on loopback."""
    return f"serving plaintext gRPC on loopback {address} only; set QUORUM_TLS_CERT_FILE/QUORUM_TLS_KEY_FILE for TLS"


def check_transport(address: str, tls: ServerTls | None, allow_plaintext_off_loopback: bool = False) -> None:
    """Raises :class:`PlaintextRefused`, naming the variables to set, when a server on
    ``address`` would serve plaintext to other machines without that being allowed."""
    if tls is None and not allow_plaintext_off_loopback and not is_loopback(address):
        raise PlaintextRefused(
            f"refusing to serve plaintext gRPC on {address}, which other machines can reach: "
            "set QUORUM_TLS_CERT_FILE and QUORUM_TLS_KEY_FILE to serve TLS, bind to loopback "
            "(QUORUM_BIND_HOST=127.0.0.1), or set QUORUM_ALLOW_PLAINTEXT_OFF_LOOPBACK=true "
            "when a mesh or proxy in front encrypts the traffic"
        )


def _bind(server: grpc.Server, address: str, tls: ServerTls | None) -> int:
    try:
        port = server.add_secure_port(address, tls.credentials()) if tls else server.add_insecure_port(address)
    except RuntimeError as exc:
        raise RuntimeError(f"cannot listen on {address}: {exc}") from exc
    if port == 0:
        raise RuntimeError(f"cannot listen on {address}: port in use?")
    return port


def _with_port(address: str, port: int) -> str:
    return f"{address.rsplit(':', 1)[0]}:{port}"


def start_server(
    registrations: Sequence[tuple[Callable[[Any, grpc.Server], None], Any, str]],
    address: str,
    max_workers: int = 32,
    interceptors: Iterable[grpc.ServerInterceptor] = (),
    max_concurrent_rpcs: int | None = None,
    *,
    tls: ServerTls | None = None,
    allow_plaintext_off_loopback: bool = False,
    health_address: str | None = None,
) -> RunningServer:
    """Starts a gRPC server with health checking and reflection.

    ``registrations`` holds ``(add_XServicer_to_server, servicer, full service name)``.
    ``address`` is ``host:port``; port 0 picks a free port. With ``tls`` the server speaks
    only TLS (and requires client certificates when ``tls.mutual``). Without it, it serves
    plaintext on a loopback address only, and logs a warning saying so, unless
    ``allow_plaintext_off_loopback``. ``health_address`` adds a plaintext listener that
    serves only the health service, for probes that cannot speak TLS.

    Raises :class:`PlaintextRefused` (a RuntimeError) for plaintext off loopback, and
    RuntimeError when a port cannot be bound.
    """
    check_transport(address, tls, allow_plaintext_off_loopback)
    handlers = futures.ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="grpc")
    server = grpc.server(
        handlers,
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
    port = _bind(server, address, tls)
    health_server = health_port = None
    if health_address is not None:
        health_server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="grpc-health"),
            options=[("grpc.so_reuseport", 0)],
        )
        # The same servicer: the probe sees exactly what TLS clients see, draining included.
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, health_server)
        health_port = _bind(health_server, health_address, None)
        health_server.start()
        log.info("serving grpc.health.v1 only, in plaintext, on %s", _with_port(health_address, health_port))
    server.start()
    bound = _with_port(address, port)
    if tls is not None:
        log.info(
            "serving gRPC over TLS on %s%s", bound, " (mutual TLS: client certificates required)" if tls.mutual else ""
        )
    elif is_loopback(address):
        log.warning("%s", plaintext_loopback_notice(bound))
    else:
        log.warning(
            "serving plaintext gRPC on %s, reachable from other machines (QUORUM_ALLOW_PLAINTEXT_OFF_LOOPBACK): "
            "whatever sits in front must encrypt the traffic",
            bound,
        )
    running = RunningServer(server, health_servicer, port, tuple(names), health_server, health_port, handlers)
    running.set_serving(True)
    return running


GRPC_MESSAGE_OPTIONS = [
    ("grpc.max_receive_message_length", 32 * 1024 * 1024),
    ("grpc.max_send_message_length", 32 * 1024 * 1024),
]


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


def channel(address: str, *, api_key: str | None = None, tls: ClientTls | None = None) -> grpc.Channel:
    """A channel to ``address``: TLS with ``tls`` (see :func:`quorum.tls.client_tls`),
    plaintext without; with ``api_key``, every call carries it as a bearer credential.
    Opens no connection until the first call."""
    if tls is None:
        plain = grpc.insecure_channel(address, options=GRPC_MESSAGE_OPTIONS)
    else:
        plain = grpc.secure_channel(address, tls.credentials(), options=[*GRPC_MESSAGE_OPTIONS, *tls.options()])
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


def wait_healthy(address: str, timeout: float = 30.0, *, tls: ClientTls | None = None) -> None:
    """Blocks until the server at ``address`` reports SERVING, over TLS with ``tls``.
    Raises TimeoutError."""
    import time

    deadline = time.monotonic() + timeout
    with channel(address, tls=tls) as ch:
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
