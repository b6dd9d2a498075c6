"""The router killed, restarted or rolled under ~200 requests a second: what clients see.

Each test drives real Envoy, real routers and the demo pools with an open-loop load, and acts
on the routers from a thread while the load runs (`make test`; about 15 s each)."""

from __future__ import annotations

import asyncio
import signal
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from extproc_router.settings import override
from extproc_router.stack import Stack, start_stack
from tests.e2e.conftest import own_stack
from tests.e2e.test_faults import envoy_stat
from tests.helpers import free_port, free_port_settings
from tests.load import REQUESTS, Reply, run_load

RATE = 200.0


def _under_load(
    stack: Stack,
    duration: float,
    act: Callable[[], None],
    requests: Sequence[tuple[str, str]] = REQUESTS,
) -> list[Reply]:
    async def main() -> list[Reply]:
        load = asyncio.create_task(run_load(stack.url, RATE, duration, requests))
        await asyncio.sleep(2)  # steady state first
        await asyncio.to_thread(act)
        return await load

    return asyncio.run(main())


def _summary(replies: list[Reply]) -> Counter[tuple[int, str]]:
    return Counter((reply.status, reply.code) for reply in replies)


def _report(scenario: str, replies: list[Reply]) -> None:
    """The figures docs/RELIABILITY.md quotes (`pytest -s` shows them)."""
    slowest = max(reply.elapsed for reply in replies)
    print(
        f"\n{scenario}: {len(replies)} requests, {dict(_summary(replies))}, slowest {slowest:.2f}s"
    )


def test_a_rolling_restart_of_two_routers_loses_nothing(tmp_path: Path) -> None:
    """Fail-closed, so any stream Envoy could not hand to a router would show as a 503."""
    second = {"server.grpc.port": free_port(), "server.admin.port": free_port()}
    settings = free_port_settings(
        {
            "envoy.failure_mode_allow": False,
            "envoy.health_check_interval_ms": 250,
            "server.drain_seconds": 1.5,
        }
    )
    endpoints = [
        f"127.0.0.1:{settings.server.grpc.port}",
        f"127.0.0.1:{second['server.grpc.port']}",
    ]
    settings = override(settings, {"envoy.router_endpoints": endpoints})
    other = start_stack(
        override(settings, second), tmp_path / "b", log_to_files=True, components=("router",)
    )
    stack = start_stack(settings, tmp_path / "a", log_to_files=True)
    try:

        def roll() -> None:
            for each in (stack, other):
                assert each.stop("router", sig=signal.SIGTERM, timeout=15) == 0
                each.start("router")
                time.sleep(1)  # the next health check sees it serving again

        replies = _under_load(stack, 16, roll)
    finally:
        stack.stop_all()
        other.stop_all()
    failed = [reply for reply in replies if reply.status != 200]
    _report("rolling restart, fail-closed", replies)
    assert not failed, (_summary(replies), failed[:5])


def test_fail_open_serves_every_request_while_the_router_is_killed(tmp_path: Path) -> None:
    stack = own_stack(tmp_path, {"envoy.failure_mode_allow": True})
    try:

        def kill_and_restart() -> None:
            stack.stop("router", sig=signal.SIGKILL)
            time.sleep(3)
            stack.start("router")

        # Fail-open forwards the body untouched: a model only another pool serves would get
        # the default pool's 404. Clients asking for "auto" or the default pool's model see
        # no error at all.
        default_pool = [(model, prompt) for model, prompt in REQUESTS if model != "gpt-5.2"]
        replies = _under_load(stack, 12, kill_and_restart, default_pool)
        allowed = envoy_stat(stack, "ext_proc.failure_mode_allowed")
    finally:
        stack.stop_all()
    _report(f"SIGKILL, fail-open ({allowed} failure_mode_allowed)", replies)
    assert _summary(replies) == Counter({(200, ""): len(replies)})
    assert allowed > 0  # Envoy counted the requests that went on without the router
    assert "small" in {reply.pool for reply in replies}


def test_fail_closed_answers_clean_503s_while_killed_and_recovers(tmp_path: Path) -> None:
    stack = own_stack(tmp_path, {"envoy.failure_mode_allow": False})
    timeout = stack.settings.envoy.message_timeout_ms / 1000
    restarted = 0.0
    started = time.monotonic()
    try:

        def kill_and_restart() -> None:
            nonlocal restarted
            stack.stop("router", sig=signal.SIGKILL)
            time.sleep(3)
            stack.start("router")
            restarted = time.monotonic() - started

        replies = _under_load(stack, 16, kill_and_restart)
    finally:
        stack.stop_all()
    outcomes = _summary(replies)
    after = [reply for reply in replies if restarted < reply.sent < restarted + 5]
    _report(f"SIGKILL, fail-closed; within 5 s of the restart: {_summary(after)}", replies)
    assert set(outcomes) <= {(200, ""), (503, "service_unavailable")}, outcomes
    assert outcomes[(503, "service_unavailable")] > 0  # the router really was down
    slow = [reply for reply in replies if reply.elapsed >= timeout + 1]
    assert not slow, (restarted, slow[:5], len(slow))  # no reply hung
    # `started` is taken a moment before the load's own clock: a slightly later window.
    assert after
    ok = sum(reply.status == 200 for reply in after)
    assert ok / len(after) >= 0.99, _summary(after)
