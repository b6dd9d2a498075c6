"""Demo model pools: small OpenAI-compatible servers standing in for vLLM, which needs a GPU.

Each answers with the text of the last user message it received, under the model name it
serves, so a person or a test can see exactly what reached which pool. They speak the parts of
vLLM's API the router touches: `GET /v1/models`, `POST /v1/chat/completions` and
`POST /v1/completions` (JSON, or SSE with `stream: true` and `stream_options.include_usage`),
and reject a model name they do not serve with a 404, as vLLM does.

Each can simulate a capacity (`pools[].demo`): at most `max_running` requests are served at
once, the rest wait in a queue, and every output token takes `token_ms`. `GET /metrics` shows
that queue under vLLM's metric names, so load-aware routing can be tested and benchmarked
without a GPU. A client that goes away leaves the queue at once (its handler is cancelled).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Iterator
from typing import Any

from aiohttp import web

from extproc_router.settings import DemoCapacity, PoolSettings, Settings

__all__ = ["build_app", "run_demo_pools"]

logger = logging.getLogger(__name__)

# A test (or a curious person) can slow the stream down to watch it arrive chunk by chunk.
TOKEN_DELAY_HEADER = "x-demo-token-delay-ms"
_RECEIVED = 1000


def _error(status: int, message: str, code: str) -> web.Response:
    body = {
        "error": {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    }
    return web.json_response(body, status=status)


def _words(text: str) -> list[str]:
    """Split into chunks that keep their whitespace, so the chunks join back to `text`."""
    chunks: list[str] = []
    for index, word in enumerate(text.split(" ")):
        chunks.append(word if index == 0 else " " + word)
    return [chunk for chunk in chunks if chunk] or [""]


def _message_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            part.get("text", "")
            for part in content
            if isinstance(part, dict) and part.get("type") == "text"
        )
    return ""


class Capacity:
    """vLLM's scheduler in miniature: `max_running` slots (0: unlimited), a queue before them."""

    def __init__(self, config: DemoCapacity) -> None:
        self.config = config
        self.running = 0
        self.waiting = 0
        self._slots = asyncio.Semaphore(config.max_running) if config.max_running else None

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        self.waiting += 1
        try:
            if self._slots is not None:
                await self._slots.acquire()
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            yield
        finally:
            self.running -= 1
            if self._slots is not None:
                self._slots.release()

    def metrics(self, model: str) -> str:
        """The Prometheus text vLLM would show (its names; the KV cache filled like the slots)."""
        limit = self.config.max_running
        cache = min(1.0, self.running / limit) if limit else 0.0
        label = '{model_name="' + model.replace("\\", "\\\\").replace('"', '\\"') + '"}'
        lines = []
        for name, kind, value, text in (
            ("vllm:num_requests_running", "gauge", self.running, "Requests running."),
            ("vllm:num_requests_waiting", "gauge", self.waiting, "Requests waiting."),
            ("vllm:kv_cache_usage_perc", "gauge", cache, "KV-cache usage; 1 is full."),
        ):
            lines += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name}{label} {value}"]
        return "\n".join(lines) + "\n"


class _Pool:
    def __init__(self, pool: PoolSettings, endpoint: str, accepted: tuple[str, ...]) -> None:
        self.pool = pool
        self.endpoint = endpoint
        self.accepted = frozenset(accepted)
        self.capacity = Capacity(pool.demo)
        # What reached this endpoint, newest last (GET /demo/received): lets a test see that a
        # cached answer never came here, or that a mirrored copy did.
        self.received: deque[dict[str, Any]] = deque(maxlen=_RECEIVED)

    async def metrics(self, request: web.Request) -> web.Response:
        text = self.capacity.metrics(self.pool.model)
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    def _headers(self, request: web.Request | None = None) -> dict[str, str]:
        headers = {"x-demo-pool": self.pool.name, "x-demo-endpoint": self.endpoint}
        if request is not None:
            # What arrived, by name only (like httpbin's /headers): lets a caller check which
            # headers the proxy let through to the model server.
            headers["x-demo-received"] = ",".join(sorted(name.lower() for name in request.headers))
        return headers

    async def models(self, request: web.Request) -> web.Response:
        data = [
            {"id": name, "object": "model", "created": 0, "owned_by": "extproc-router-demo"}
            for name in self.pool.served_models
        ]
        return web.json_response({"object": "list", "data": data}, headers=self._headers())

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n", headers=self._headers())

    async def received_requests(self, request: web.Request) -> web.Response:
        return web.json_response(list(self.received), headers=self._headers())

    async def chat_completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=True)

    async def completions(self, request: web.Request) -> web.StreamResponse:
        return await self._complete(request, chat=False)

    async def _complete(self, request: web.Request, *, chat: bool) -> web.StreamResponse:
        try:
            body = json.loads(await request.read())
        except (json.JSONDecodeError, UnicodeDecodeError):
            return _error(400, "the body is not valid JSON", "invalid_json")
        if not isinstance(body, dict):
            return _error(400, "the body must be a JSON object", "invalid_json")
        model = body.get("model")
        if chat:
            messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
            users = [m for m in messages if m.get("role") == "user"]
            reply = _message_text(users[-1].get("content")) if users else ""
            prompt_tokens = sum(len(_message_text(m.get("content")).split()) for m in messages)
        else:
            prompt = body.get("prompt", "")
            reply = prompt if isinstance(prompt, str) else json.dumps(prompt)
            prompt_tokens = len(reply.split())
        self.received.append(
            {
                "path": request.path,
                "host": request.host,
                "model": model,
                "prompt": reply,
                "stream": bool(body.get("stream")),
                "decision_id": request.headers.get("x-router-decision-id", ""),
            }
        )
        if model not in self.accepted:
            return _error(404, f"The model `{model}` does not exist.", "model_not_found")
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(reply.split()),
            "total_tokens": prompt_tokens + len(reply.split()),
        }
        ident = ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex
        header = request.headers.get(TOKEN_DELAY_HEADER, "")
        delay = (float(header) if header else self.pool.demo.token_ms) / 1000
        async with self.capacity.slot():
            if body.get("stream"):
                options = body.get("stream_options") or {}
                include_usage = isinstance(options, dict) and bool(options.get("include_usage"))
                return await self._stream(
                    request, ident, reply, usage if include_usage else None, chat=chat, delay=delay
                )
            if delay:  # generating the answer, token by token
                await asyncio.sleep(delay * usage["completion_tokens"])
        if chat:
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": reply},
                "finish_reason": "stop",
                "logprobs": None,
            }
        else:
            choice = {"index": 0, "text": reply, "finish_reason": "stop", "logprobs": None}
        result = {
            "id": ident,
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": self.pool.model,
            "choices": [choice],
            "usage": usage,
        }
        return web.json_response(result, headers=self._headers(request))

    async def _stream(
        self,
        request: web.Request,
        ident: str,
        reply: str,
        usage: dict[str, int] | None,
        *,
        chat: bool,
        delay: float,
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={
                "content-type": "text/event-stream",
                "cache-control": "no-cache",
                **self._headers(request),
            }
        )
        await response.prepare(request)
        for event in self._events(ident, reply, usage, chat=chat):
            await response.write(b"data: " + json.dumps(event).encode() + b"\n\n")
            if delay:
                await asyncio.sleep(delay)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    def _events(
        self, ident: str, reply: str, usage: dict[str, int] | None, *, chat: bool
    ) -> Iterator[dict[str, Any]]:
        base = {
            "id": ident,
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": self.pool.model,
        }
        extra = {"usage": None} if usage is not None else {}
        if chat:
            yield {
                **base,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "finish_reason": None,
                    }
                ],
                **extra,
            }
        for word in _words(reply):
            if chat:
                choice: dict[str, Any] = {
                    "index": 0,
                    "delta": {"content": word},
                    "finish_reason": None,
                }
            else:
                choice = {"index": 0, "text": word, "finish_reason": None}
            yield {**base, "choices": [choice], **extra}
        final = (
            {"index": 0, "delta": {}, "finish_reason": "stop"}
            if chat
            else {"index": 0, "text": "", "finish_reason": "stop"}
        )
        yield {**base, "choices": [final], **extra}
        if usage is not None:
            yield {**base, "choices": [], "usage": usage}


def build_app(
    pool: PoolSettings, endpoint: str, extra_models: tuple[str, ...] = ()
) -> web.Application:
    """`extra_models` are accepted but not listed, like vLLM's extra `--served-model-name`s."""
    handlers = _Pool(pool, endpoint, (*pool.served_models, *extra_models))
    app = web.Application(client_max_size=1 << 30)
    app.router.add_get("/v1/models", handlers.models)
    app.router.add_get("/health", handlers.health)
    app.router.add_get("/metrics", handlers.metrics)
    app.router.add_get("/demo/received", handlers.received_requests)
    app.router.add_post("/v1/chat/completions", handlers.chat_completions)
    app.router.add_post("/v1/completions", handlers.completions)
    return app


async def run_demo_pools(
    settings: Settings, stop: asyncio.Event, only: tuple[str, ...] = ()
) -> None:
    """Serve every endpoint of every pool (or of the pools named in `only`) until `stop` is
    set. One process per pool lets a test kill one pool and leave the others.

    The default pool also accepts the "auto" aliases: when the router is down and Envoy fails
    open, requests reach it with their body unchanged (the way to deploy vLLM for that is
    `--served-model-name llama3-8b auto`).
    """
    runners: list[web.AppRunner] = []
    try:
        for pool in settings.pools:
            if only and pool.name not in only:
                continue
            default = pool.name == settings.routing.default_pool
            # And the names it `accepts`: the model names of pools it may take over from.
            extra = (*(settings.routing.auto_models if default else ()), *pool.accepts)
            for endpoint in pool.endpoints:
                host, port = endpoint.rsplit(":", 1)
                runner = web.AppRunner(
                    build_app(pool, endpoint, extra),
                    access_log=None,
                    handle_signals=False,
                    # A client that hangs up leaves the queue, as it does in vLLM.
                    handler_cancellation=True,
                )
                await runner.setup()
                runners.append(runner)
                await web.TCPSite(runner, host.strip("[]"), int(port)).start()
                logger.info("demo pool %s (%s) on %s", pool.name, pool.model, endpoint)
        await stop.wait()
    finally:
        for runner in runners:
            await runner.cleanup()
