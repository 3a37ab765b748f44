"""Fixtures for the demo tests: a real gRPC server around an in-memory TaskingService."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent import futures

import grpc
import pytest

from quorum.v1 import tasking_pb2_grpc


@pytest.fixture
def serve() -> Iterator[Callable[[tasking_pb2_grpc.TaskingServiceServicer], str]]:
    """Starts a gRPC server on a free port for a servicer; returns its address. Stops it after."""
    servers: list[grpc.Server] = []

    def start(servicer: tasking_pb2_grpc.TaskingServiceServicer) -> str:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=8))
        tasking_pb2_grpc.add_TaskingServiceServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(grace=None).wait()
