"""`extproc-router health`, the image's HEALTHCHECK, against a real gRPC health service."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1._async import HealthServicer

from extproc_router.probe import EXTPROC_SERVICE, check_health


@pytest.fixture
async def health_server() -> AsyncIterator[tuple[str, HealthServicer]]:
    server = grpc.aio.server()
    servicer = HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}", servicer
    await server.stop(0)


async def test_serving_then_draining(
    health_server: tuple[str, HealthServicer],
) -> None:
    target, servicer = health_server
    assert await check_health(target) == "SERVICE_UNKNOWN"
    await servicer.set(EXTPROC_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    assert await check_health(target) == "SERVING"
    await servicer.enter_graceful_shutdown()
    assert await check_health(target) == "NOT_SERVING"


async def test_unreachable_router() -> None:
    assert await check_health("127.0.0.1:1", deadline=1.0) == "UNREACHABLE"


async def test_command_exit_status(
    health_server: tuple[str, HealthServicer],
) -> None:
    """The command runs its own event loop, as in the container: here in a thread, while the
    server answers on the test's loop."""
    from extproc_router.cli import run

    target, servicer = health_server
    command = ["health", "--address", target, "--timeout", "2"]
    await servicer.set(EXTPROC_SERVICE, health_pb2.HealthCheckResponse.SERVING)
    assert await asyncio.to_thread(run, command) == 0
    await servicer.set(EXTPROC_SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
    assert await asyncio.to_thread(run, command) == 1
