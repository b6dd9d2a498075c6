"""The router process: the gRPC server (ext_proc, RouterService, health, reflection) and the
admin HTTP server (/metrics, /healthz, /readyz), with an orderly start and stop.

Stopping on SIGTERM follows what a mesh expects of a sidecar: health turns NOT_SERVING at once
(so Envoy and Kubernetes stop sending new work), open streams keep being served for
`drain_seconds`, then the server stops. SIGINT (Ctrl-C at a terminal) skips the drain; a second
signal of either kind stops at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import grpc
from aiohttp import web
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext_proc
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as ext_proc_grpc
from grpc_health.v1 import _async as health_aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from extproc_router import metrics, tracing
from extproc_router._gen import router_pb2, router_pb2_grpc
from extproc_router.api import RouterService
from extproc_router.exceptions import ConfigError
from extproc_router.live import LiveConfig
from extproc_router.pool_load import poll_forever
from extproc_router.service import ExternalProcessor
from extproc_router.settings import Settings, TLSSettings

__all__ = ["Server"]

logger = logging.getLogger(__name__)

_SERVICE_NAMES = (
    ext_proc.DESCRIPTOR.services_by_name["ExternalProcessor"].full_name,
    router_pb2.DESCRIPTOR.services_by_name["RouterService"].full_name,
)


class Server:
    def __init__(self, settings: Settings, *, source: Path | None = None) -> None:
        self.settings = settings
        self.source = source
        self.live: LiveConfig | None = None
        self._tasks: set[asyncio.Task[object]] = set()
        self.grpc_port = 0
        self.admin_port = 0
        self.should_exit = asyncio.Event()
        self._drain = True
        self._signals = 0
        self._health = health_aio.HealthServicer()
        self._grpc: grpc.aio.Server | None = None
        self._admin: web.AppRunner | None = None
        self._ready = False

    def _grpc_options(self) -> list[tuple[str, Any]]:
        server = self.settings.server
        return [
            ("grpc.max_receive_message_length", server.max_message_bytes),
            ("grpc.max_send_message_length", server.max_message_bytes),
            # Envoy pings idle HTTP/2 connections; accept that instead of answering GOAWAY.
            ("grpc.keepalive_permit_without_calls", 1),
            ("grpc.http2.min_recv_ping_interval_without_data_ms", server.min_ping_interval_ms),
            ("grpc.http2.max_ping_strikes", 0),
            # Two routers on one port would split traffic silently; fail to bind instead.
            ("grpc.so_reuseport", 0),
        ]

    async def start(self) -> None:
        """Loads the models first: a missing model fails here, before anything listens."""
        self.live = live = await LiveConfig.start(self.settings, self.source)
        loop = asyncio.get_running_loop()
        # Read at scrape time, on the loop's own thread (the admin server runs on it).
        metrics.ASYNCIO_TASKS.set_function(lambda: len(asyncio.all_tasks(loop)))
        tracing.setup_tracing(self.settings.telemetry.tracing)
        self._grpc = grpc.aio.server(options=self._grpc_options())
        ext_proc_grpc.add_ExternalProcessorServicer_to_server(ExternalProcessor(live), self._grpc)
        router_pb2_grpc.add_RouterServiceServicer_to_server(RouterService(live), self._grpc)
        health_pb2_grpc.add_HealthServicer_to_server(self._health, self._grpc)
        reflection.enable_server_reflection(
            (*_SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME), self._grpc
        )
        address = self.settings.server.grpc
        target = f"{address.host}:{address.port}"
        tls = self.settings.server.tls
        if tls is None:
            self.grpc_port = self._grpc.add_insecure_port(target)
        else:
            self.grpc_port = self._grpc.add_secure_port(target, _credentials(tls))
        await self._grpc.start()
        await self._start_admin()
        for name in ("", *_SERVICE_NAMES):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._ready = True
        self._spawn(live.watch())
        # Off the request path; idles while `load.enabled` is off (a reload may turn it on).
        self._spawn(poll_forever(live.load, lambda: live.settings))
        logger.info(
            "extproc-router serving gRPC on %s:%d, admin on %s:%d",
            address.host,
            self.grpc_port,
            self.settings.server.admin.host,
            self.admin_port,
        )

    async def _start_admin(self) -> None:
        app = web.Application()
        app.router.add_get("/metrics", _metrics)
        app.router.add_get("/healthz", _healthz)
        app.router.add_get("/readyz", self._readyz)
        app.router.add_get("/load", self._load)
        self._admin = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._admin.setup()
        address = self.settings.server.admin
        site = web.TCPSite(self._admin, address.host, address.port, reuse_port=False)
        await site.start()
        self.admin_port = self._admin.addresses[0][1]

    async def _readyz(self, request: web.Request) -> web.Response:
        if self._ready:
            return web.Response(text="ready\n")
        return web.Response(status=503, text="not ready\n")

    async def _load(self, request: web.Request) -> web.Response:
        """Every pool's load as the router sees it now (what load-aware routing acts on)."""
        if self.live is None:
            return web.json_response({}, status=503)
        view = self.live.load.view(self.live.settings)
        return web.json_response({name: pool.evidence() for name, pool in view.items()})

    def _spawn(self, coroutine: Coroutine[Any, Any, object]) -> None:
        task = asyncio.create_task(coroutine)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def reload(self) -> None:
        """SIGHUP: read the config file again (the result is logged)."""
        if self.live is not None:
            self._spawn(self.live.reload())

    async def shutdown(self, *, drain: bool = True) -> None:
        self._ready = False
        for task in list(self._tasks):
            task.cancel()
        await self._health.enter_graceful_shutdown()
        drain_seconds = self.settings.server.drain_seconds if drain else 0.0
        if drain_seconds > 0:
            logger.info("draining for %.1fs before stopping", drain_seconds)
            # A second signal ends the drain early.
            self.should_exit.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.should_exit.wait(), drain_seconds)
        if self._grpc is not None:
            await self._grpc.stop(grace=1.0 if drain else 0.0)
        if self._admin is not None:
            await self._admin.cleanup()
        if self.live is not None:
            await self.live.aclose()
        await asyncio.to_thread(tracing.shutdown_tracing)
        logger.info("extproc-router stopped")

    def handle_exit(self, signum: int) -> None:
        self._signals += 1
        if signum == signal.SIGINT:
            self._drain = False
        if self._signals > 1:
            self._drain = False
        self.should_exit.set()

    async def serve(self) -> None:
        """Run until SIGTERM or SIGINT; the only long-running entry point."""
        loop = asyncio.get_running_loop()
        await self.start()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.handle_exit, signum)
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        try:
            await self.should_exit.wait()
            await self.shutdown(drain=self._drain)
        finally:
            for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                loop.remove_signal_handler(signum)


def _credentials(tls: TLSSettings) -> grpc.ServerCredentials:
    """Unreadable files fail here, at start-up, naming the file."""
    try:
        chain = tls.cert_file.read_bytes()
        key = tls.key_file.read_bytes()
        client_ca = tls.client_ca_file.read_bytes() if tls.client_ca_file else None
    except OSError as error:
        raise ConfigError(
            "server.tls", [f"cannot read {error.filename}: {error.strerror}"]
        ) from None
    return grpc.ssl_server_credentials(
        [(key, chain)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


async def _metrics(request: web.Request) -> web.Response:
    response = web.Response(body=generate_latest())
    response.headers["content-type"] = CONTENT_TYPE_LATEST
    return response


async def _healthz(request: web.Request) -> web.Response:
    return web.Response(text="ok\n")
