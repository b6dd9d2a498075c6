from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ext_proc_grpc

from extproc_router.server import Server
from extproc_router.settings import Settings, override
from tests.helpers import free_port_settings


@pytest.fixture
def settings() -> Settings:
    return override(free_port_settings(), {"server.grpc.port": 0, "server.admin.port": 0})


@pytest.fixture
async def server(settings: Settings) -> AsyncIterator[Server]:
    server = Server(settings)
    await server.start()
    yield server
    await server.shutdown(drain=False)


@pytest.fixture
async def channel(server: Server) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{server.grpc_port}",
        options=[
            ("grpc.max_send_message_length", 64 << 20),
            ("grpc.max_receive_message_length", 64 << 20),
        ],
    ) as channel:
        yield channel


@pytest.fixture
def ext_proc_stub(channel: grpc.aio.Channel) -> ext_proc_grpc.ExternalProcessorStub:
    return ext_proc_grpc.ExternalProcessorStub(channel)
