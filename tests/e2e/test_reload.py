"""Config changes while traffic flows: a broken edit is rejected and the old config serves on;
a good edit takes effect on SIGHUP or when the file changes."""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import yaml

from extproc_router.stack import Stack
from tests.e2e.conftest import own_stack

POEM = {"model": "auto", "messages": [{"role": "user", "content": "Write a poem about rain."}]}


def wait_for_log(stack: Stack, text: str, count: int = 1, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while stack.log_path("router").read_text().count(text) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"router log never said {text!r} {count} times")
        time.sleep(0.05)


def routed_pool(stack: Stack) -> str:
    response = httpx.post(stack.url + "/v1/chat/completions", json=POEM, timeout=10)
    assert response.status_code == 200
    return response.headers["x-router-pool"]


def edit(path: Path, change: dict[str, object]) -> None:
    data = yaml.safe_load(path.read_text())
    data["routing"].update(change)
    path.write_text(yaml.safe_dump(data))


def test_bad_edit_is_rejected_and_good_edits_apply(tmp_path: Path) -> None:
    stack = own_stack(tmp_path, {})
    router = stack.processes["router"]
    try:
        before = routed_pool(stack)
        assert before != "large"
        original = stack.config_path.read_text()
        edit(stack.config_path, {"default_pool": "nowhere"})
        router.send_signal(signal.SIGHUP)
        wait_for_log(stack, "config reload rejected")
        assert (
            "routing.default_pool: no pool named 'nowhere'" in stack.log_path("router").read_text()
        )
        assert routed_pool(stack) == before  # the old config serves on

        stack.config_path.write_text(original)
        rule = {"name": "poems", "target": "large", "keywords": ["poem"], "short_circuit": True}
        edit(stack.config_path, {"keyword_rules": [rule]})
        router.send_signal(signal.SIGHUP)
        wait_for_log(stack, "config reloaded")
        assert routed_pool(stack) == "large"

        # No signal this time: the router notices the file changed.
        time.sleep(1.1)  # a new modification time, on filesystems with 1 s resolution
        stack.config_path.write_text(original)
        wait_for_log(stack, "config reloaded", count=2)
        assert routed_pool(stack) == before
        assert router.poll() is None
    finally:
        stack.stop_all()
