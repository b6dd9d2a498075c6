"""Shadow routing through a real Envoy: the client gets the primary pool's answer only, the
shadow pool receives Envoy's mirrored copy, and both answers land in the shadow log."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from extproc_router.cli import run
from extproc_router.stack import Stack, start_stack
from tests.helpers import demo_received, free_port, free_port_settings


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("shadow")
    values = {
        "shadow.pool": "large",
        "shadow.fraction": 1.0,
        "shadow.listen.port": free_port(),
        "shadow.log_path": str(workdir / "shadow.jsonl"),
    }
    running = start_stack(free_port_settings(values), workdir, log_to_files=True)
    yield running
    running.stop_all()


def received(stack: Stack, pool: str) -> list[dict[str, Any]]:
    return demo_received(stack.settings, pool)


def logged(stack: Stack, decision_id: str) -> dict[str, dict[str, Any]]:
    """Both sides' lines for one request; the shadow's answer may come after the client's."""
    path = Path(stack.settings.shadow.log_path)
    deadline = time.monotonic() + 10
    while True:
        lines = path.read_text().splitlines() if path.exists() else []
        sides = {
            entry["side"]: entry
            for entry in map(json.loads, lines)
            if entry["decision_id"] == decision_id
        }
        if len(sides) == 2:
            return sides
        if time.monotonic() > deadline:
            pytest.fail(f"the shadow log has {sorted(sides)} for {decision_id} after 10 s")
        time.sleep(0.05)


def test_the_client_sees_the_primary_and_the_shadow_gets_the_copy(stack: Stack) -> None:
    prompt = "What is the capital of France?"
    response = httpx.post(
        stack.url + "/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": prompt}]},
        timeout=10,
    )
    assert response.status_code == 200
    assert response.headers["x-demo-pool"] == "small"
    assert response.json()["model"] == "llama3-8b"
    assert response.json()["choices"][0]["message"]["content"] == prompt
    decision_id = response.headers["x-router-decision-id"]
    sides = logged(stack, decision_id)
    copies = [r for r in received(stack, "large") if r["decision_id"] == decision_id]
    assert len(copies) == 1
    assert copies[0]["model"] == "gpt-5.2"  # rewritten for the shadow pool
    assert copies[0]["prompt"] == prompt
    primary, shadow = sides["primary"], sides["shadow"]
    assert (primary["pool"], primary["shadow_pool"], shadow["pool"]) == ("small", "large", "large")
    assert primary["status"] == shadow["status"] == 200
    assert primary["completion_tokens"] == shadow["completion_tokens"] == 6
    assert primary["embedding"]
    assert "prompt" not in primary  # embeddings, never the text


def test_streams_are_mirrored_and_reported(
    stack: Stack, capsys: pytest.CaptureFixture[str]
) -> None:
    with httpx.stream(
        "POST",
        stack.url + "/v1/chat/completions",
        json={
            "model": "auto",
            "messages": [{"role": "user", "content": "Write a short poem about autumn rain."}],
            "stream": True,
        },
        timeout=10,
    ) as response:
        body = response.read()
        decision_id = response.headers["x-router-decision-id"]
    assert response.headers["x-demo-pool"] == "medium"
    assert b'"usage"' not in body  # the client did not ask for usage
    logged(stack, decision_id)
    log = stack.settings.shadow.log_path
    config = stack.config_path
    assert run(["shadow-report", log, "--config", str(config), "--json"]) == 0
    routes = {r["pool"]: r for r in json.loads(capsys.readouterr().out)}
    assert routes["medium"]["compared"] >= 1
    assert routes["medium"]["shadow_pool"] == "large"
    # The demo pools echo the prompt, so both answers are the same text.
    assert routes["medium"]["agreement"] == pytest.approx(1.0, abs=0.01)
    assert routes["medium"]["cost_usd"]["shadow"] > routes["medium"]["cost_usd"]["primary"]
    assert run(["shadow-report", log, "--config", str(config)]) == 0
    assert "medium" in capsys.readouterr().out


def test_the_shadow_listener_refuses_requests_without_a_token(stack: Stack) -> None:
    before = len(received(stack, "large"))
    response = httpx.post(
        f"http://127.0.0.1:{stack.settings.shadow.listen.port}/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": "hi"}]},
        headers={"x-router-shadow-of": "forged", "x-router-shadow-token": "0" * 32},
        timeout=10,
    )
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "shadow_token_invalid"
    assert len(received(stack, "large")) == before
