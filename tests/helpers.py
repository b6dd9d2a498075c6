"""Shared test helpers: free loopback ports and configs that use them."""

from __future__ import annotations

import socket
from typing import Any

from extproc_router.settings import Settings, load_settings, override


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
