"""Real clients through a real Envoy: the request path a user gets from `make run`."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from extproc_router.stack import Stack, start_stack
from tests.helpers import free_port_settings


@pytest.fixture(scope="module")
def client(stack: Stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack.url + "/v1", api_key="unused", max_retries=0)


PROOF = (
    "Prove that the square root of 2 is irrational, then generalise the argument to the square "
    "root of any prime, and explain where the proof fails for 4."
)


@pytest.mark.parametrize(
    ("model", "prompt", "pool", "served"),
    [
        ("auto", "What is the capital of France?", "small", "llama3-8b"),
        ("auto", PROOF, "large", "gpt-5.2"),
        ("auto", "Write a poem about autumn rain in Kyoto.", "medium", "gemini-flash"),
        ("gpt-5.2", "hello there", "large", "gpt-5.2"),
        ("meta-llama/Meta-Llama-3-8B-Instruct", PROOF, "small", "llama3-8b"),
    ],
)
def test_chat_is_routed_by_envoy(
    client: openai.OpenAI, model: str, prompt: str, pool: str, served: str
) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": prompt}]
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == prompt  # the pool saw the prompt unchanged
    assert completion.model == served  # ...and the model name it serves
    assert raw.headers["x-demo-pool"] == pool  # Envoy sent it to that pool's cluster
    assert raw.headers["x-router-pool"] == pool
    assert raw.headers["x-router-model"] == served
    assert raw.headers["x-router-decision-id"]
    explanation = raw.headers["x-router-decision"]
    assert explanation.startswith(f"pool={pool}; method=")
    if model == "auto":
        assert "domain=" in explanation
        assert "complexity=" in explanation


def test_streaming_chat_arrives_chunk_by_chunk(client: openai.OpenAI) -> None:
    prompt = "one two three four five six"
    started = time.monotonic()
    stream = client.chat.completions.create(
        model="auto",
        messages=[{"role": "user", "content": prompt}],
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-demo-token-delay-ms": "150"},
    )
    arrivals, parts, usage = [], [], None
    for chunk in stream:
        arrivals.append(time.monotonic() - started)
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
        if chunk.usage is not None:
            usage = chunk.usage
    assert "".join(parts) == prompt
    assert usage is not None
    assert usage.completion_tokens == 6
    # The pool waits 150 ms after each of ~9 events: if anything buffered the response, every
    # chunk would arrive at the end together.
    assert arrivals[-1] - arrivals[0] > 0.5


def test_completions_api(client: openai.OpenAI) -> None:
    raw = client.completions.with_raw_response.create(model="auto", prompt=PROOF)
    assert raw.parse().choices[0].text == PROOF
    assert raw.headers["x-router-pool"] == "large"
    streamed = client.completions.create(model="llama3-8b", prompt="a b c", stream=True)
    assert "".join(chunk.choices[0].text for chunk in streamed if chunk.choices) == "a b c"


def test_unknown_model_is_a_404_listing_models(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "x"}])
    assert caught.value.code == "model_not_found"
    assert "gpt-5.2" in caught.value.message


@pytest.mark.parametrize(
    ("content", "headers", "status", "code"),
    [
        (b"{not json", {"content-type": "application/json"}, 400, "invalid_json"),
        (b"\xff\xfe\x00{", {"content-type": "application/json"}, 400, "invalid_encoding"),
        (b"", {"content-type": "application/json"}, 400, "empty_body"),
        (b"[1, 2, 3]", {"content-type": "application/json"}, 400, "invalid_json"),
        (
            b'{"model": "auto"}',
            {"content-type": "application/json"},
            400,
            "missing_required_parameter",
        ),
        (
            b'{"model": 42, "messages": [{"role": "user", "content": "x"}]}',
            {"content-type": "application/json"},
            400,
            "invalid_type",
        ),
        (
            b'{"model": "auto", "messages": [{"role": "user", "content": "x"}]}',
            {"content-type": "text/plain"},
            415,
            "unsupported_media_type",
        ),
        (
            b'{"model": "auto", "messages": [{"role": "user", "content": "x"}]}',
            {},
            415,
            "unsupported_media_type",
        ),
        (b"[" * 50_000, {"content-type": "application/json"}, 400, "invalid_json"),
        (
            b'{"model": "auto", "model": "gpt-5.2", "messages": [{"role": "user"}]}',
            {"content-type": "application/json"},
            400,
            "duplicate_key",
        ),
        (
            b'{"model": "auto", "messages": [{"role": "user", "content": "\\ud800 x"}]}',
            {"content-type": "application/json"},
            400,
            "invalid_encoding",
        ),
        (
            b'{"messages": [' + b",".join([b'{"role": "user", "content": "x"}'] * 100_000) + b"]}",
            {"content-type": "application/json"},
            400,
            "too_many_messages",
        ),
    ],
)
def test_bad_input_gets_a_json_error(
    stack: Stack, content: bytes, headers: dict[str, str], status: int, code: str
) -> None:
    response = httpx.post(
        stack.url + "/v1/chat/completions", content=content, headers=headers, timeout=10
    )
    assert response.status_code == status
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == code
    assert "x-demo-pool" not in response.headers  # no pool ever saw it


def test_other_paths_pass_through_to_the_default_pool(stack: Stack) -> None:
    models = httpx.get(stack.url + "/v1/models", timeout=10)
    assert models.status_code == 200
    assert models.headers["x-demo-pool"] == "small"
    assert "x-router-pool" not in models.headers
    assert next(m["id"] for m in models.json()["data"]) == "llama3-8b"
    assert httpx.get(stack.url + "/health", timeout=10).status_code == 200


def test_client_cannot_pick_its_own_pool(stack: Stack) -> None:
    body = {"model": "llama3-8b", "messages": [{"role": "user", "content": "hi"}]}
    spoofed = httpx.post(
        stack.url + "/v1/chat/completions",
        json=body,
        headers={"x-router-cluster": "large"},
        timeout=10,
    )
    assert spoofed.headers["x-demo-pool"] == "small"
    passthrough = httpx.get(
        stack.url + "/v1/models", headers={"x-router-cluster": "large"}, timeout=10
    )
    assert passthrough.headers["x-demo-pool"] == "small"


@pytest.fixture(scope="module")
def roomy_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Scanning 10 MB of prose with numbers for PII takes 1.2-1.4 s of router time on a slow
    2-core host: inside a 2 s message timeout the router would rightly refuse it (503
    `request_budget_exceeded`). Deployments that accept such bodies give the router more time."""
    settings = free_port_settings({"envoy.message_timeout_ms": 6000})
    running = start_stack(settings, tmp_path_factory.mktemp("roomy"), log_to_files=True)
    yield running
    running.stop_all()


@pytest.mark.parametrize("size", [32 * 1024, 1024 * 1024, 10 * 1024 * 1024], ids=str)
def test_big_bodies_within_the_limit_are_routed_and_scanned(roomy_stack: Stack, size: int) -> None:
    stack = roomy_stack
    # Prose with numbers in it, the costly kind for the PII scan; above gRPC's 4 MiB default
    # message size at 10 MiB. The address at both ends must come back redacted.
    filler = "Section 12 of the 2024 report covers 3 regions and 45 offices. "
    middle = filler * (size // len(filler))
    prompt = f"{PROOF} Mail jane.doe@example.com. {middle} Again: jane.doe@example.com."
    response = httpx.post(
        stack.url + "/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": prompt}]},
        timeout=60,
    )
    assert response.status_code == 200, response.text[:300]
    assert response.headers["x-router-pool"] == "large"
    echoed = response.json()["choices"][0]["message"]["content"]
    assert echoed == prompt.replace("jane.doe@example.com", "[EMAIL_1]")


def test_body_over_the_limit_is_a_json_413(stack: Stack) -> None:
    too_big = (
        b'{"model": "auto", "messages": [{"role": "user", "content": "'
        + b"x" * (stack.settings.envoy.max_request_bytes + 1)
        + b'"}]}'
    )
    response = httpx.post(
        stack.url + "/v1/chat/completions",
        content=too_big,
        headers={"content-type": "application/json"},
        timeout=60,
    )
    assert response.status_code == 413
    assert response.json()["error"]["code"] == "request_too_large"
