"""`extproc-router up`, the command behind `make run`, as a newcomer uses it: wait for the ready
line, paste its curl, press Ctrl-C."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

from extproc_router.stack import Stack
from tests.e2e.conftest import own_stack
from tests.helpers import free_port, free_port_settings


def test_up_prints_a_working_curl_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    settings = free_port_settings()
    config = tmp_path / "router.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json")))
    listen_port = free_port()  # moved by an environment variable, as the README shows
    process = subprocess.Popen(
        [sys.executable, "-m", "extproc_router", "up", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "EXTPROC_ROUTER_LISTEN_PORT": str(listen_port)},
        start_new_session=True,
    )
    try:
        assert process.stdout is not None
        lines: list[str] = []
        deadline = time.monotonic() + 60
        while not lines or "Ctrl-C" not in lines[-1]:
            line = process.stdout.readline()
            assert line, f"up exited early: {lines}"
            assert time.monotonic() < deadline
            lines.append(line)
        try_line = next(line for line in lines if line.startswith("Try:"))
        command = shlex.split(try_line.removeprefix("Try:"))
        assert command[0] == "curl"
        assert f":{listen_port}/" in try_line
        result = subprocess.run(command, capture_output=True, text=True, timeout=30, check=True)
        head, _, body = result.stdout.partition("\n\n")  # text mode reads CRLF as LF
        assert head.startswith("HTTP/1.1 200")
        assert "x-router-pool: large" in head
        assert json.loads(body)["model"] == "gpt-5.2"
        # Ctrl-C at a terminal signals the whole foreground process group.
        os.killpg(process.pid, signal.SIGINT)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        if process.stdout is not None:
            process.stdout.close()
    leftovers = subprocess.run(
        ["pgrep", "-f", str(tmp_path)], capture_output=True, text=True, check=False
    )
    assert leftovers.stdout == ""
    assert subprocess.run(["pgrep", "-s", str(process.pid)], check=False).returncode == 1


def test_curl_with_a_large_body_and_expect_continue(stack: Stack) -> None:
    prompt = "Prove that the square root of 2 is irrational, then generalise it. " + "y" * 100_000
    body = json.dumps({"model": "auto", "messages": [{"role": "user", "content": prompt}]})
    result = subprocess.run(
        [
            "curl",
            "-s",
            "-D",
            "-",
            stack.url + "/v1/chat/completions",
            "-H",
            "content-type: application/json",
            "--data-binary",
            "@-",
        ],
        input=body,
        capture_output=True,
        text=True,
        timeout=30,
        check=True,
    )
    assert "x-router-pool: " in result.stdout
    assert prompt in result.stdout


def test_keepalive_pings_do_not_make_the_router_hang_up(tmp_path: Path) -> None:
    """Envoy pings the router's HTTP/2 connection every second here; a gRPC server that minded
    would answer GOAWAY too_many_pings and Envoy would have to reconnect."""
    stack = own_stack(tmp_path, {"envoy.keepalive_interval_s": 1})
    try:
        url = stack.url + "/v1/chat/completions"
        chat = {"model": "auto", "messages": [{"role": "user", "content": "hi"}]}
        assert httpx.post(url, json=chat, timeout=10).status_code == 200
        time.sleep(4)
        assert httpx.post(url, json=chat, timeout=10).status_code == 200
        admin = stack.settings.envoy.admin
        stats = httpx.get(
            f"http://{admin.host}:{admin.port}/stats?filter=cluster.extproc_router.upstream_cx_",
            timeout=5,
        ).text
        counters = dict(line.split(": ") for line in stats.splitlines() if ": " in line)
        # One connection per Envoy worker at most, none closed by the router (GOAWAY).
        assert int(counters["cluster.extproc_router.upstream_cx_total"]) <= 2
        assert counters["cluster.extproc_router.upstream_cx_destroy_remote"] == "0"
        assert counters["cluster.extproc_router.upstream_cx_close_notify"] == "0"
    finally:
        stack.stop_all()
