"""Shared test helpers: free loopback ports, configs that use them, a real redis-server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from extproc_router.settings import Settings, load_settings, override


def envoy_validate(path: Path) -> subprocess.CompletedProcess[str]:
    """`envoy --mode validate` on a config file: what Envoy itself accepts, not a schema."""
    from extproc_router.stack import envoy_binary

    command = [envoy_binary(), "--mode", "validate", "-c", str(path), "--disable-hot-restart"]
    return subprocess.run(
        [*command, "--log-level", "error"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def free_port_settings(values: dict[str, Any] | None = None) -> Settings:
    """The example config on free loopback ports, with `values` (dotted keys) replaced."""
    base = load_settings()
    data: dict[str, Any] = {
        "envoy.listen.port": free_port(),
        "envoy.admin.port": free_port(),
        "server.grpc.port": free_port(),
        "server.admin.port": free_port(),
        "server.drain_seconds": 0,
    }
    settings = override(base, data)
    pools = [
        {**pool.model_dump(mode="json"), "endpoints": [f"127.0.0.1:{free_port()}"]}
        for pool in settings.pools
    ]
    return override(settings, {"pools": pools, **(values or {})})


def start_redis(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """A missing redis-server fails the test: `make setup` installs it."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed: run `make setup` (Debian package redis-server)")
    port = free_port()
    log = (workdir / "redis.log").open("ab")
    process = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
         "--dir", str(workdir)],
        stdout=log,
        stderr=subprocess.STDOUT,
    )  # fmt: skip
    log.close()
    import redis

    client = redis.Redis(port=port)
    deadline = time.monotonic() + 10
    while True:
        try:
            client.ping()
            break
        except redis.ConnectionError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"redis-server did not start: {(workdir / 'redis.log').read_text()}")
            time.sleep(0.02)
        finally:
            client.close()
    return process, f"redis://127.0.0.1:{port}/0"


def demo_received(settings: Settings, pool: str) -> list[dict[str, Any]]:
    """What the demo pool's (first) endpoint has received, oldest first."""
    import httpx

    endpoint = settings.pool(pool).endpoints[0]
    answer: list[dict[str, Any]] = httpx.get(f"http://{endpoint}/demo/received").json()
    return answer


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real redis-server for the module; import this fixture where it is used."""
    process, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    process.terminate()
    process.wait(10)
