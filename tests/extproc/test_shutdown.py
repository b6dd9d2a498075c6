"""SIGTERM: health turns NOT_SERVING at once, open streams are served during the drain, then the
process exits by itself."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import yaml
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ext_proc_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from extproc_router.settings import override
from tests.extproc.messages import chat, request_body, request_headers
from tests.helpers import free_port_settings


async def _wait_serving(stub: health_pb2_grpc.HealthStub, deadline: float) -> None:
    while True:
        try:
            answer = await stub.Check(health_pb2.HealthCheckRequest(), timeout=1)
            if answer.status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.aio.AioRpcError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError("router did not become SERVING")
        await asyncio.sleep(0.05)


async def test_sigterm_drains_then_exits(tmp_path: Path) -> None:
    settings = override(free_port_settings(), {"server.drain_seconds": 1.5})
    config = tmp_path / "router.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    log = (tmp_path / "router.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "extproc_router", "serve", "--config", str(config)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{settings.server.grpc.port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            await _wait_serving(health, time.monotonic() + 20)
            # A request in flight when SIGTERM arrives...
            call = ext_proc_grpc.ExternalProcessorStub(channel).Process()
            await call.write(request_headers())
            await call.read()
            signal_sent = time.monotonic()
            process.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.3)
            answer = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
            assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING
            # ...is still answered during the drain.
            await call.write(request_body(chat("hello")))
            routed = await call.read()
            assert routed.request_body.response.clear_route_cache
            await call.done_writing()
        returncode = await asyncio.to_thread(process.wait, 15)
        elapsed = time.monotonic() - signal_sent
        assert returncode == 0
        assert elapsed >= 1.5  # it waited for the drain
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()
    assert "draining" in (tmp_path / "router.log").read_text()
