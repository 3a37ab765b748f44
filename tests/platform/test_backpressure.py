"""Backpressure: writes are refused with RESOURCE_EXHAUSTED and a retry hint while the
service is overloaded; reads still go through."""

from __future__ import annotations

from typing import Any

import grpc

from quorum.rpc import BackpressureInterceptor, channel, start_server


def _echo(request: bytes, context: Any) -> bytes:
    return request


def test_writes_are_refused_with_a_retry_hint_while_overloaded() -> None:
    overloaded: list[int | None] = [None]
    handler = grpc.method_handlers_generic_handler(
        "test.Svc",
        {
            "SubmitThing": grpc.unary_unary_rpc_method_handler(_echo),
            "GetThing": grpc.unary_unary_rpc_method_handler(_echo),
        },
    )
    running = start_server(
        [(lambda _servicer, server: server.add_generic_rpc_handlers((handler,)), None, "test.Svc")],
        "127.0.0.1:0",
        max_workers=2,
        interceptors=[BackpressureInterceptor(lambda: overloaded[0])],
    )
    try:
        with channel(f"127.0.0.1:{running.port}") as ch:
            submit = ch.unary_unary("/test.Svc/SubmitThing")
            get = ch.unary_unary("/test.Svc/GetThing")
            assert submit(b"a", timeout=5) == b"a"
            overloaded[0] = 750
            try:
                submit(b"a", timeout=5)
                raise AssertionError("an overloaded service accepted a write")
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
                assert ("retry-after-ms", "750") in tuple(error.trailing_metadata() or ())
            assert get(b"b", timeout=5) == b"b"
            overloaded[0] = None
            assert submit(b"c", timeout=5) == b"c"
    finally:
        running.stop(0)
