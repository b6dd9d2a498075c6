"""The semantic cache: a repeated (or near-identical) question is answered by the router, and
no pool spends tokens on it again.

What may be cached is narrow on purpose, because a wrong hit hands one user another's answer:

- only requests routed to a pool a `cache.routes` entry names (per-route opt-in);
- only temperature 0 (by default), one choice (`n` 1), and text-only last user turns;
- never a request in which PII was found (whatever the PII policy did with it), nor one the
  jailbreak check flagged or routed;
- everything but the last user turn must be identical (the *scope*: pool, API, parameters,
  system prompt and earlier turns, hashed); only that turn is compared by meaning, with the
  transformer embedding every routing signal reads, at `threshold` cosine or above;
- a prompt longer than the encoder reads (`model.max_tokens`) matches only the same text:
  two long prompts that share their opening would otherwise look identical. So does every
  prompt when the router runs without models.

When the cascade decided with the static embedding, the transformer runs once more for a
cacheable request (~5 ms): the static embedding is too coarse for a 0.95 threshold, and a hit
saves a whole generation. Answers are stored from the response phase (the router asks Envoy for
the body of 2xx answers), replayed as JSON, or as a well-formed SSE stream when the new request
streams. A backend that fails or is slower than `redis_timeout_ms` is a miss, never an error.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
import uuid
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from extproc_router import metrics
from extproc_router.cache_backends import Backend, MemoryBackend, RedisBackend
from extproc_router.encoder import Embeddings
from extproc_router.settings import CacheRoute, CacheSettings
from extproc_router.usage import Usage, cost_usd

if TYPE_CHECKING:
    from extproc_router.request import ParsedRequest
    from extproc_router.routing import Decision, Router
    from extproc_router.safety.gate import JailbreakVerdict, PIIVerdict

__all__ = [
    "CachedAnswer",
    "Lookup",
    "ResponseRecorder",
    "SemanticCache",
    "cache_route",
    "render_answer",
    "scope_of",
]

logger = logging.getLogger(__name__)

# Fields that do not change the answer's text: left out of the scope.
_VOLATILE = frozenset({"model", "stream", "stream_options", "user", "metadata", "store"})
_FINISHED = frozenset({"stop", "length"})
_CHUNK_WORDS = re.compile(r"(?:\s*\S+){1,8}\s*|\s+")


@dataclass(frozen=True, slots=True)
class CachedAnswer:
    content: str
    finish_reason: str = "stop"
    usage: Usage | None = None

    def to_json(self) -> str:
        usage = self.usage
        tokens = [usage.prompt_tokens, usage.completion_tokens] if usage else None
        return json.dumps({"c": self.content, "f": self.finish_reason, "u": tokens})

    @classmethod
    def from_json(cls, text: str) -> CachedAnswer:
        data = json.loads(text)
        tokens = data.get("u")
        return cls(data["c"], data["f"], Usage(*tokens) if tokens else None)


@dataclass(frozen=True, slots=True)
class Lookup:
    """A cacheable request: where its answer is kept, and the hit when there was one."""

    route: CacheRoute
    scope: str
    digest: str
    # None: this prompt matches only the same text.
    vector: Embeddings | None
    hit: CachedAnswer | None = None
    similarity: float = 0.0


def cache_route(
    settings: CacheSettings,
    request: ParsedRequest,
    decision: Decision,
    pii: PIIVerdict,
    jailbreak: JailbreakVerdict,
) -> CacheRoute | None:
    """The route entry that lets this request be cached, or None."""
    if pii.counts or jailbreak.action != "allow":
        return None
    route = next(
        (
            r
            for r in settings.routes
            if r.pool == decision.pool.name and r.api in (None, request.api)
        ),
        None,
    )
    if route is None:
        return None
    body = request.body
    temperature = body.get("temperature")
    if settings.temperature_zero_only and (
        isinstance(temperature, bool) or temperature not in (0, 0.0)
    ):
        return None
    if body.get("n", 1) not in (1, None):
        return None
    return route


def scope_of(request: ParsedRequest, pool: str) -> str | None:
    """A hash of everything that shapes the answer but the last user turn; None when that turn
    carries more than text (an image the embedding cannot see)."""
    body = {key: value for key, value in request.body.items() if key not in _VOLATILE}
    if request.api == "chat_completions":
        messages = list(body.get("messages") or ())
        for index in range(len(messages) - 1, -1, -1):
            message = messages[index]
            if isinstance(message, dict) and message.get("role") == "user":
                content = message.get("content")
                if isinstance(content, list) and any(
                    not isinstance(p, dict) or p.get("type") != "text" for p in content
                ):
                    return None
                messages[index] = {**message, "content": None}
                break
        body["messages"] = messages
    else:
        body["prompt"] = None
    text = json.dumps([pool, request.api, body], sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


async def _prompt_vector(
    request: ParsedRequest, router: Router, embedding: Embeddings | None
) -> Embeddings | None:
    """The transformer embedding of the last user turn, when the encoder reads all of it; the
    pipeline's own when it embedded that same text."""
    models = router.models
    prompt = request.prompt
    if models is None or not prompt.strip():
        return None
    encoder = models.encoder
    # Special tokens take two places; a very long text cannot fit, so it is not even counted.
    if (
        len(prompt) > encoder.max_tokens * 16
        or encoder.count_tokens(prompt) > encoder.max_tokens - 2
    ):
        return None
    if embedding is not None and router.classification_text(request) == prompt:
        return embedding
    return await router.embed(prompt)


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:32]


class SemanticCache:
    def __init__(self, settings: CacheSettings, backend: Backend | None = None) -> None:
        self.settings = settings
        self._timeout = settings.redis_timeout_ms / 1000
        self.backend: Backend = backend or (
            RedisBackend(
                settings.redis_url,
                prefix=settings.key_prefix,
                max_entries=settings.max_entries,
                timeout_s=self._timeout,
            )
            if settings.backend == "redis"
            else MemoryBackend(settings.max_entries)
        )
        self._tasks: set[asyncio.Task[None]] = set()

    async def lookup(
        self,
        request: ParsedRequest,
        decision: Decision,
        pii: PIIVerdict,
        jailbreak: JailbreakVerdict,
        *,
        router: Router,
        embedding: Embeddings | None,
    ) -> Lookup | None:
        """None when the request is not cacheable. `embedding`: the transformer's embedding of
        the classification text, when the pipeline ran it."""
        route = cache_route(self.settings, request, decision, pii, jailbreak)
        scope = scope_of(request, decision.pool.name) if route is not None else None
        if route is None or scope is None:
            return None
        started = time.perf_counter()
        vector = await _prompt_vector(request, router, embedding)
        lookup = Lookup(route, scope, _digest(request.prompt), vector)
        threshold = route.threshold if route.threshold is not None else self.settings.threshold
        result = "miss"
        try:
            found = await asyncio.wait_for(
                self.backend.find(scope, lookup.digest, vector, threshold), self._timeout
            )
        except Exception as error:  # any backend fault is a miss, never a failed request
            logger.warning("semantic cache lookup failed: %s", error)
            result, found = "error", None
        if found is not None:
            result = "hit"
            answer = CachedAnswer.from_json(found[0])
            lookup = Lookup(route, scope, lookup.digest, vector, answer, found[1])
            if answer.usage is not None:
                metrics.CACHE_SAVED.labels(pool=decision.pool.name).inc(
                    cost_usd(answer.usage, decision.pool.price)
                )
        metrics.CACHE_LOOKUPS.labels(result=result).inc()
        metrics.CACHE_LATENCY.labels(result=result).observe((time.perf_counter() - started) * 1000)
        return lookup

    def store(self, lookup: Lookup, answer: CachedAnswer | None) -> None:
        """Stored in the background: the client's last chunk never waits for the backend."""
        if answer is None:
            metrics.CACHE_STORES.labels(result="unusable").inc()
            return
        ttl = lookup.route.ttl_s or self.settings.ttl_s
        put = self.backend.put(lookup.scope, lookup.digest, lookup.vector, answer.to_json(), ttl)
        task = asyncio.get_running_loop().create_task(self._store(put))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _store(self, put: Awaitable[None]) -> None:
        try:
            await asyncio.wait_for(put, self._timeout)
        except Exception as error:  # a failed store costs a later miss, nothing more
            logger.warning("semantic cache store failed: %s", error)
            metrics.CACHE_STORES.labels(result="error").inc()
            return
        metrics.CACHE_STORES.labels(result="stored").inc()

    async def drain(self) -> None:
        """Wait for stores under way (shutdown, and tests)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def aclose(self) -> None:
        await self.drain()
        await self.backend.aclose()


class ResponseRecorder:
    """Keeps a 2xx answer's body (up to `limit` bytes) to store it once it has ended."""

    def __init__(self, *, chat: bool, event_stream: bool, limit: int) -> None:
        self._chat = chat
        self._event_stream = event_stream
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0

    def feed(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size <= self._limit:
            self._parts.append(chunk)

    def answer(self) -> CachedAnswer | None:
        """The answer to store, or None when it is not one to replay (too large, a tool call,
        several choices, cut short, unreadable)."""
        if self._size > self._limit:
            return None
        raw = b"".join(self._parts)
        try:
            if self._event_stream:
                return self._from_events(raw)
            return self._from_json(json.loads(raw))
        except (ValueError, KeyError, TypeError, IndexError, AttributeError):
            return None

    def _from_json(self, body: dict[str, Any]) -> CachedAnswer | None:
        (choice,) = body["choices"]
        if self._chat:
            message = choice["message"]
            if message.get("tool_calls") or message.get("function_call"):
                return None
            content = message["content"]
        else:
            content = choice["text"]
        return _answer(content, choice.get("finish_reason"), body.get("usage"))

    def _from_events(self, raw: bytes) -> CachedAnswer | None:
        parts: list[str] = []
        finish, usage = None, None
        for line in raw.splitlines():
            if not line.startswith(b"data:") or line[5:].strip() == b"[DONE]":
                continue
            event = json.loads(line[5:])
            usage = event.get("usage") or usage
            for choice in event.get("choices") or ():
                if choice.get("index", 0) != 0:
                    return None
                delta = choice.get("delta", {}) if self._chat else choice
                if delta.get("tool_calls") or delta.get("function_call"):
                    return None
                parts.append(delta.get("content" if self._chat else "text") or "")
                finish = choice.get("finish_reason") or finish
        return _answer("".join(parts), finish, usage)


def _answer(content: object, finish: object, usage: object) -> CachedAnswer | None:
    if not isinstance(content, str) or finish not in _FINISHED:
        return None
    return CachedAnswer(content, str(finish), Usage.from_json(usage))


def render_answer(answer: CachedAnswer, request: ParsedRequest, model: str) -> tuple[str, bytes]:
    """The content type and body that answer `request` from the cache: a completion object,
    or the SSE stream of one when the request streams."""
    chat = request.api == "chat_completions"
    base = {
        "id": ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex,
        "created": int(time.time()),
        "model": model,
    }
    usage = answer.usage
    usage_json = (
        {
            "prompt_tokens": usage.prompt_tokens,
            "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.prompt_tokens + usage.completion_tokens,
        }
        if usage is not None
        else None
    )
    if not request.stream:
        choice: dict[str, Any] = {
            "index": 0,
            "finish_reason": answer.finish_reason,
            "logprobs": None,
        }
        choice |= (
            {"message": {"role": "assistant", "content": answer.content}}
            if chat
            else {"text": answer.content}
        )
        body = {**base, "object": "chat.completion" if chat else "text_completion"}
        body |= {"choices": [choice], "usage": usage_json}
        return "application/json", json.dumps(body, ensure_ascii=False).encode()
    options = request.body.get("stream_options")
    with_usage = isinstance(options, dict) and options.get("include_usage") is True
    extra = {"usage": None} if with_usage else {}
    base["object"] = "chat.completion.chunk" if chat else "text_completion"

    def event(choices: list[dict[str, Any]], **more: Any) -> bytes:
        data = {**base, "choices": choices, **extra, **more}
        return b"data: " + json.dumps(data, ensure_ascii=False).encode() + b"\n\n"

    def piece(text: str, finish: str | None = None) -> dict[str, Any]:
        if chat:
            delta = {"content": text} if text or finish is None else {}
            return {"index": 0, "delta": delta, "finish_reason": finish}
        return {"index": 0, "text": text, "finish_reason": finish}

    events = [event([{"index": 0, "delta": {"role": "assistant", "content": ""},
                      "finish_reason": None}])] if chat else []  # fmt: skip
    events += [event([piece(text)]) for text in _CHUNK_WORDS.findall(answer.content)]
    events.append(event([piece("", answer.finish_reason)]))
    if with_usage and usage_json is not None:
        events.append(event([], usage=usage_json))
    events.append(b"data: [DONE]\n\n")
    return "text/event-stream", b"".join(events)
