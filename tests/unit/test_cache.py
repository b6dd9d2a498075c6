"""What the semantic cache may serve, how it keys entries, and how answers are kept and
replayed (JSON and SSE); no model files: prompts match by their exact text here."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from extproc_router import metrics
from extproc_router.cache import (
    CachedAnswer,
    ResponseRecorder,
    SemanticCache,
    cache_route,
    render_answer,
    scope_of,
)
from extproc_router.request import ParsedRequest, parse_body
from extproc_router.routing import Decision, Router
from extproc_router.safety.gate import JailbreakVerdict, PIIVerdict
from extproc_router.settings import CacheSettings, load_settings, override
from extproc_router.usage import Usage

SETTINGS = override(load_settings(), {"cache.routes": [{"pool": "small"}]})
ALLOW = JailbreakVerdict(0.0, "allow")
NO_PII = PIIVerdict({}, "allow")


def chat(prompt: str = "What is the capital of France?", **extra: Any) -> ParsedRequest:
    body = {"model": "auto", "temperature": 0, **extra}
    body.setdefault("messages", [{"role": "user", "content": prompt}])
    return parse_body("chat_completions", json.dumps(body).encode())


def decided(pool: str = "small") -> Decision:
    return Decision(SETTINGS.pool(pool), "vote", "test")


@pytest.mark.parametrize(
    ("request_", "pool", "pii", "jailbreak", "cacheable"),
    [
        (chat(), "small", NO_PII, ALLOW, True),
        (chat(), "large", NO_PII, ALLOW, False),  # no route for that pool
        (chat(temperature=0.7), "small", NO_PII, ALLOW, False),
        (chat(temperature=None), "small", NO_PII, ALLOW, False),  # OpenAI's default is 1
        (chat(temperature=False), "small", NO_PII, ALLOW, False),
        (chat(n=2), "small", NO_PII, ALLOW, False),
        (chat(), "small", PIIVerdict({"email": 1}, "redact"), ALLOW, False),
        (chat(), "small", PIIVerdict({"ip_address": 1}, "allow"), ALLOW, False),
        (chat(), "small", NO_PII, JailbreakVerdict(0.6, "flag"), False),
    ],
)
def test_what_may_be_cached(
    request_: ParsedRequest,
    pool: str,
    pii: PIIVerdict,
    jailbreak: JailbreakVerdict,
    cacheable: bool,
) -> None:
    route = cache_route(SETTINGS.cache, request_, decided(pool), pii, jailbreak)
    assert (route is not None) is cacheable


def test_routes_may_name_an_api_and_sampled_answers_may_be_allowed() -> None:
    settings = CacheSettings(
        routes=({"pool": "small", "api": "completions"},),  # type: ignore[arg-type]
        temperature_zero_only=False,
    )
    assert cache_route(settings, chat(), decided(), NO_PII, ALLOW) is None
    completion = parse_body("completions", b'{"prompt": "x", "temperature": 1}')
    assert cache_route(settings, completion, decided(), NO_PII, ALLOW) is not None


def test_scope_is_everything_but_the_last_user_turn() -> None:
    base = scope_of(chat("one"), "small")
    assert base == scope_of(chat("two"), "small")
    assert base == scope_of(chat("two", stream=True, user="u-1"), "small")
    assert base != scope_of(chat("one"), "medium")
    assert base != scope_of(chat("one", max_tokens=5), "small")
    system = [{"role": "system", "content": "Answer in French."}, {"role": "user", "content": "x"}]
    assert base != scope_of(chat(messages=system), "small")
    history = [
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": "one"},
    ]
    assert base != scope_of(chat(messages=history), "small")
    image = [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": "data:,"}},
            ],
        }
    ]
    assert scope_of(chat(messages=image), "small") is None


def sse(events: list[dict[str, Any]]) -> bytes:
    return b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + (
        b"data: [DONE]\n\n"
    )


def test_recorder_reads_json_and_sse_answers() -> None:
    recorder = ResponseRecorder(chat=True, event_stream=False, limit=10_000)
    body = {
        "choices": [{"index": 0, "message": {"content": "Paris."}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 7, "completion_tokens": 2},
    }
    raw = json.dumps(body).encode()
    recorder.feed(raw[:10])
    recorder.feed(raw[10:])
    assert recorder.answer() == CachedAnswer("Paris.", "stop", Usage(7, 2))
    stream = sse(
        [
            {"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]},
            {"choices": [{"index": 0, "delta": {"content": "Par"}}]},
            {"choices": [{"index": 0, "delta": {"content": "is."}, "finish_reason": "stop"}]},
            {"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2}},
        ]
    )
    recorder = ResponseRecorder(chat=True, event_stream=True, limit=10_000)
    for index in range(0, len(stream), 7):  # chunk boundaries anywhere
        recorder.feed(stream[index : index + 7])
    assert recorder.answer() == CachedAnswer("Paris.", "stop", Usage(7, 2))


@pytest.mark.parametrize(
    "body",
    [
        {"choices": [{"message": {"tool_calls": [{}]}, "finish_reason": "tool_calls"}]},
        {"choices": [{"message": {"content": "a"}, "finish_reason": "stop"}] * 2},
        {"choices": [{"message": {"content": "cut"}, "finish_reason": "content_filter"}]},
        {"error": {"message": "boom"}},
    ],
)
def test_answers_not_to_replay(body: dict[str, Any]) -> None:
    recorder = ResponseRecorder(chat=True, event_stream=False, limit=10_000)
    recorder.feed(json.dumps(body).encode())
    assert recorder.answer() is None


def test_too_large_answers_are_not_kept() -> None:
    recorder = ResponseRecorder(chat=False, event_stream=False, limit=1024)
    recorder.feed(json.dumps({"choices": [{"text": "x" * 2000, "finish_reason": "stop"}]}).encode())
    assert recorder.answer() is None


@pytest.mark.parametrize("api", ["chat_completions", "completions"])
@pytest.mark.parametrize("include_usage", [True, False])
def test_a_replayed_stream_reads_back_as_the_answer(api: str, include_usage: bool) -> None:
    """What the cache sends a streaming client is well-formed: read back, it is the answer."""
    answer = CachedAnswer("The capital of France is Paris,\n obviously.  ", "stop", Usage(9, 8))
    body: dict[str, Any] = {"stream": True, "temperature": 0}
    body |= (
        {"messages": [{"role": "user", "content": "q"}]}
        if api == "chat_completions"
        else {"prompt": "q"}
    )
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    request = parse_body(api, json.dumps(body).encode())  # type: ignore[arg-type]
    content_type, raw = render_answer(answer, request, "llama3-8b")
    assert content_type == "text/event-stream"
    assert raw.endswith(b"data: [DONE]\n\n")
    events = [json.loads(line[6:]) for line in raw.split(b"\n\n") if line.startswith(b"data: {")]
    assert all(e["model"] == "llama3-8b" for e in events)
    assert len({e["id"] for e in events}) == 1
    assert ("usage" in events[-1] and events[-1]["usage"] is not None) is include_usage
    recorder = ResponseRecorder(chat=api == "chat_completions", event_stream=True, limit=10_000)
    recorder.feed(raw)
    assert recorder.answer() == (answer if include_usage else CachedAnswer(answer.content, "stop"))


def test_a_replayed_json_answer() -> None:
    content_type, raw = render_answer(CachedAnswer("Paris.", "stop", Usage(7, 2)), chat(), "m")
    body = json.loads(raw)
    assert content_type == "application/json"
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"] == {"role": "assistant", "content": "Paris."}
    assert body["usage"] == {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}


class BrokenBackend:
    async def find(self, *args: object) -> tuple[str, float] | None:
        raise ConnectionError("redis is down")

    async def put(self, *args: object) -> None:
        raise ConnectionError("redis is down")

    async def aclose(self) -> None:
        pass


def counter(result: str) -> float:
    value = metrics.CACHE_LOOKUPS.labels(result=result)._value.get()
    return float(value)


async def test_exact_text_hit_without_models_and_a_failing_backend_is_a_miss() -> None:
    router = Router(SETTINGS, None)
    cache = SemanticCache(SETTINGS.cache)
    lookup = await cache.lookup(chat(), decided(), NO_PII, ALLOW, router=router, embedding=None)
    assert lookup is not None
    assert lookup.hit is None
    assert lookup.vector is None  # no encoder: exact text only
    cache.store(lookup, CachedAnswer("Paris."))
    await cache.drain()
    again = await cache.lookup(chat(), decided(), NO_PII, ALLOW, router=router, embedding=None)
    assert again is not None
    assert again.hit == CachedAnswer("Paris.")
    other = await cache.lookup(
        chat("What's the capital of France?"), decided(), NO_PII, ALLOW, router=router,
        embedding=None,
    )  # fmt: skip
    assert other is not None
    assert other.hit is None
    errors = counter("error")
    broken = SemanticCache(SETTINGS.cache, backend=BrokenBackend())
    missed = await broken.lookup(chat(), decided(), NO_PII, ALLOW, router=router, embedding=None)
    assert missed is not None
    assert missed.hit is None
    assert counter("error") == errors + 1
    broken.store(missed, CachedAnswer("x"))
    await broken.drain()  # the failed store is logged and counted, never raised


def test_reference_config_documents_every_cache_key() -> None:
    path = Path(__file__).resolve().parents[2] / "config" / "reference.yaml"
    settings = load_settings(path)
    documented = yaml.safe_load(path.read_text())["cache"]
    assert set(documented) == set(CacheSettings.model_fields)
    assert settings.cache == CacheSettings()  # the documented values are the defaults
