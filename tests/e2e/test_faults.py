"""The router down, stalled or abandoned: the proxy answers anyway, as the config says."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from extproc_router.stack import Stack
from tests.e2e.conftest import own_stack
from tests.helpers import free_port_settings

PROOF = "Prove that the square root of 2 is irrational, then generalise it to every prime."
CHAT = {"model": "auto", "messages": [{"role": "user", "content": PROOF}]}


def envoy_stat(stack: Stack, name: str) -> int:
    admin = stack.settings.envoy.admin
    text = httpx.get(f"http://{admin.host}:{admin.port}/stats?filter={name}", timeout=5).text
    values = [int(line.rsplit(":", 1)[1]) for line in text.splitlines() if line.strip()]
    return sum(values)


def post(stack: Stack, **headers: str) -> httpx.Response:
    return httpx.post(stack.url + "/v1/chat/completions", json=CHAT, headers=headers, timeout=15)


def test_fail_open_forwards_to_the_default_pool_while_the_router_is_down(tmp_path: Path) -> None:
    stack = own_stack(tmp_path, {"envoy.failure_mode_allow": True})
    try:
        assert "x-router-pool" in post(stack).headers  # routed
        stack.stop("router", sig=signal.SIGKILL)
        for _ in range(5):
            response = post(stack, **{"x-router-cluster": "large"})
            assert response.status_code == 200
            assert response.headers["x-demo-pool"] == "small"  # default pool, not the spoof
            assert "x-router-pool" not in response.headers
            # The default pool answers "auto" too: nothing rewrote the body.
        assert envoy_stat(stack, "ext_proc.failure_mode_allowed") >= 5
        stack.start("router")
        assert "x-router-pool" in post(stack).headers
    finally:
        stack.stop_all()


def test_fail_closed_answers_a_json_503_while_the_router_is_down(tmp_path: Path) -> None:
    stack = own_stack(tmp_path, {"envoy.failure_mode_allow": False})
    try:
        stack.stop("router", sig=signal.SIGKILL)
        response = post(stack)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "service_unavailable"
        assert "x-demo-pool" not in response.headers
        stack.start("router")
        assert post(stack).status_code == 200
    finally:
        stack.stop_all()


def test_a_stalled_router_times_out_instead_of_hanging(tmp_path: Path) -> None:
    stack = own_stack(
        tmp_path, {"envoy.failure_mode_allow": False, "envoy.message_timeout_ms": 1000}
    )
    router = stack.processes["router"]
    try:
        os.kill(router.pid, signal.SIGSTOP)
        started = time.monotonic()
        response = post(stack)
        elapsed = time.monotonic() - started
        assert response.status_code >= 500
        assert response.json()["error"]["code"] in ("gateway_timeout", "service_unavailable")
        assert elapsed < 10  # bounded by the message timeout, not by the client's patience
        assert envoy_stat(stack, "ext_proc.message_timeouts") >= 1
    finally:
        os.kill(router.pid, signal.SIGCONT)
        stack.stop_all()


def test_clients_that_disconnect_leave_no_errors(stack: Stack) -> None:
    for _ in range(5):
        with httpx.stream(
            "POST",
            stack.url + "/v1/chat/completions",
            json={**CHAT, "stream": True, "messages": [{"role": "user", "content": "a b c d e"}]},
            headers={"x-demo-token-delay-ms": "200"},
            timeout=10,
        ) as response:
            assert response.status_code == 200
            next(response.iter_raw())  # first chunk, then hang up
    # Hang up while Envoy still waits for the router's answer too.
    with httpx.Client(timeout=0.001) as hasty:
        for _ in range(5):
            with contextlib.suppress(httpx.TimeoutException):
                hasty.post(stack.url + "/v1/chat/completions", json=CHAT)
    assert post(stack).status_code == 200
    admin = stack.settings.server.admin
    scrape = httpx.get(f"http://{admin.host}:{admin.port}/metrics", timeout=5).text
    assert 'extproc_stream_errors_total{kind="internal"}' not in scrape
    active = [line for line in scrape.splitlines() if line.startswith("extproc_streams_active ")]
    assert active == ["extproc_streams_active 0.0"]
    # Envoy agrees: every ext_proc stream it opened has ended, one way or the other.
    ended = 0
    for _ in range(50):
        started = envoy_stat(stack, "ext_proc.streams_started")
        ended = envoy_stat(stack, "ext_proc.streams_closed") + envoy_stat(
            stack, "ext_proc.streams_failed"
        )
        if started == ended:
            break
        time.sleep(0.1)
    assert started == ended > 0
    log = stack.log_path("router").read_text()
    assert "Traceback" not in log
    assert '"level": "error"' not in log


def test_sse_events_reach_the_client_as_they_are_sent(stack: Stack) -> None:
    """20 events 200 ms apart: none held back by Envoy or the router reading the stream."""
    words = " ".join(f"w{i}" for i in range(20))
    arrivals = []
    with httpx.stream(
        "POST",
        stack.url + "/v1/chat/completions",
        json={**CHAT, "stream": True, "messages": [{"role": "user", "content": words}]},
        headers={"x-demo-token-delay-ms": "200"},
        timeout=30,
    ) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if not line.startswith("data: {"):
                continue
            choices = json.loads(line.removeprefix("data: "))["choices"]
            if choices and choices[0]["delta"].get("content"):
                arrivals.append(time.monotonic())
    assert len(arrivals) == 20
    lateness = [at - (arrivals[0] + 0.2 * index) for index, at in enumerate(arrivals)]
    assert max(lateness) < 0.3, lateness


def test_a_dead_pool_is_a_json_503_not_a_hang(tmp_path: Path) -> None:
    stack = own_stack(tmp_path, {})
    try:
        stack.stop("pools", sig=signal.SIGKILL)
        started = time.monotonic()
        response = post(stack)
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "service_unavailable"
        assert time.monotonic() - started < 10
    finally:
        stack.stop_all()


def test_missing_model_fails_fast_with_a_fix(tmp_path: Path) -> None:
    settings = free_port_settings({"model.path": str(tmp_path / "no-model-here")})
    config = tmp_path / "router.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    result = subprocess.run(
        [sys.executable, "-m", "extproc_router", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 3
    assert "make setup" in result.stderr
