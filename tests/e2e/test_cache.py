"""The semantic cache through a real Envoy, on a real redis-server: a repeated (or reworded)
question is answered by the router, and the demo pool never sees it again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
import redis

from extproc_router.stack import Stack, start_stack
from tests.helpers import demo_received, free_port_settings, redis_url

QUESTION = "What is the capital of France?"
__all__ = ["redis_url"]  # the fixture, imported to be used here


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory, redis_url: str) -> Iterator[Stack]:
    values = {
        "cache.backend": "redis",
        "cache.redis_url": redis_url,
        "cache.routes": [{"pool": "small"}, {"pool": "medium"}],
    }
    running = start_stack(
        free_port_settings(values), tmp_path_factory.mktemp("stack"), log_to_files=True
    )
    yield running
    running.stop_all()


def received(stack: Stack, pool: str) -> list[dict[str, Any]]:
    return demo_received(stack.settings, pool)


def ask(stack: Stack, prompt: str, **extra: Any) -> httpx.Response:
    body = {"model": "auto", "messages": [{"role": "user", "content": prompt}], **extra}
    return httpx.post(stack.url + "/v1/chat/completions", json=body, timeout=10)


def wait_stored(redis_url: str, count: int) -> None:
    """Answers are stored in the background once the response has ended."""
    client = redis.Redis.from_url(redis_url)
    deadline = time.monotonic() + 5
    try:
        while len(client.keys("extproc-router:cache:a:*")) < count:
            if time.monotonic() > deadline:
                pytest.fail(f"fewer than {count} answers stored in Redis after 5 s")
            time.sleep(0.02)
    finally:
        client.close()


def test_a_repeated_question_never_reaches_the_pool_again(stack: Stack, redis_url: str) -> None:
    first = ask(stack, QUESTION, temperature=0)
    assert first.status_code == 200
    assert first.headers["x-router-cache"] == "miss"
    assert first.headers["x-demo-pool"] == "small"
    assert first.json()["choices"][0]["message"]["content"] == QUESTION
    seen = len(received(stack, "small"))
    wait_stored(redis_url, 1)

    again = ask(stack, QUESTION, temperature=0)
    assert again.status_code == 200
    assert again.headers["x-router-cache"] == "hit"
    assert again.headers["x-router-pool"] == "small"
    assert "x-demo-pool" not in again.headers  # no pool answered
    assert again.json()["choices"][0]["message"]["content"] == QUESTION
    assert again.json()["usage"]["completion_tokens"] == 6

    # Reworded: the same answer, by meaning; another question is a miss.
    reworded = ask(stack, "What's the capital of France?", temperature=0)
    assert reworded.headers["x-router-cache"] == "hit"
    assert float(reworded.headers["x-router-cache-similarity"]) >= 0.95
    assert reworded.json()["choices"][0]["message"]["content"] == QUESTION
    assert len(received(stack, "small")) == seen

    other = ask(stack, "What is the capital of Germany?", temperature=0)
    assert other.headers["x-router-cache"] == "miss"
    assert [r["prompt"] for r in received(stack, "small")][-1] == "What is the capital of Germany?"

    metrics = httpx.get(
        f"http://127.0.0.1:{stack.settings.server.admin.port}/metrics"
    ).text  # fmt: skip
    assert 'semantic_cache_lookups_total{result="hit"} 2.0' in metrics
    assert '"outcome": "cache_hit"' in stack.log_path("router").read_text()


def test_a_streaming_client_gets_the_cached_answer_as_sse(stack: Stack, redis_url: str) -> None:
    prompt = "How many days are in a leap year?"
    assert ask(stack, prompt, temperature=0).headers["x-router-cache"] == "miss"
    wait_stored(redis_url, 2)
    seen = len(received(stack, "small"))
    client = openai.OpenAI(base_url=stack.url + "/v1", api_key="unused", max_retries=0)
    with client.chat.completions.with_streaming_response.create(
        model="auto",
        messages=[{"role": "user", "content": "How many days does a leap year have?"}],
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    ) as response:
        assert response.headers["x-router-cache"] == "hit"
        assert response.headers["content-type"] == "text/event-stream"
        chunks = list(response.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == prompt
    assert chunks[-1].usage is not None
    assert len(received(stack, "small")) == seen


@pytest.mark.parametrize(
    ("prompt", "extra"),
    [
        (QUESTION, {"temperature": 0.7}),  # sampled answers differ on purpose
        (QUESTION, {}),  # OpenAI's default temperature is 1
        ("Email jane.doe@example.com about the capital of France", {"temperature": 0}),
    ],
)
def test_uncacheable_requests_always_reach_the_pool(
    stack: Stack, prompt: str, extra: dict[str, Any]
) -> None:
    for _ in range(2):
        before = len(received(stack, "small")) + len(received(stack, "medium"))
        response = ask(stack, prompt, **extra)
        assert response.status_code == 200
        assert "x-router-cache" not in response.headers
        assert len(received(stack, "small")) + len(received(stack, "medium")) == before + 1
