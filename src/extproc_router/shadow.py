"""Shadow routing: Envoy mirrors a fraction of the routed requests to a shadow pool, the client
gets only the primary's answer, and the router logs both answers for comparison.

How a copy travels: for a request it picks (a stable hash of the decision id under
`shadow.fraction`; never one with PII in it, nor one the cache answered), the router sets
`x-router-shadow-cluster`, and the route's `request_mirror_policies` (`cluster_header`) sends a
copy to Envoy's own shadow listener (`shadow.listen`, loopback). That listener runs the ext_proc
filter too, so the copy comes back to a router, which checks the token the first pass signed,
rewrites the body's `model` for the shadow pool, routes it there and reads its answer. Envoy
drops the mirrored answer; the router has logged it by then.

Each answer becomes one JSON line (`shadow.log_path`): the decision id, which side, pool,
status, latency, tokens and a float16 embedding of the answer's text (never the text).
`extproc-router shadow-report` joins the two sides by decision id.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import sys
import time
from typing import IO, TYPE_CHECKING, Any

import numpy as np
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext_proc

from extproc_router import mutations
from extproc_router.cache import CachedAnswer, ResponseRecorder
from extproc_router.logs import stamped
from extproc_router.request import encode_body, gather
from extproc_router.settings import PoolSettings, ShadowSettings
from extproc_router.usage import ask_for_usage

if TYPE_CHECKING:
    from extproc_router.pipeline import Outcome
    from extproc_router.routing import Router

__all__ = ["SHADOW_CLUSTER", "SHADOW_OF", "Shadow", "ShadowProcessor"]

# The Envoy cluster of the shadow listener, named in the mirror's cluster header.
SHADOW_CLUSTER = "extproc_router_shadow"
SHADOW_CLUSTER_HEADER = "x-router-shadow-cluster"
SHADOW_OF = "x-router-shadow-of"
SHADOW_TOKEN = "x-router-shadow-token"
_ANSWER_LIMIT = 1024 * 1024
_BUFFERED_BODY_LIMIT = 256 * 1024


class Shadow:
    """Picks the requests to mirror, signs them, and keeps the log of both sides' answers."""

    def __init__(self, settings: ShadowSettings, pools: tuple[PoolSettings, ...]) -> None:
        self.settings = settings
        self.pool = next(p for p in pools if p.name == settings.pool)
        self._key = (
            settings.key_file.read_bytes().strip()
            if settings.key_file is not None
            else secrets.token_bytes(32)
        )
        self._stream: IO[str] = (
            sys.stdout
            if settings.log_path == "-"
            else open(settings.log_path, "a", encoding="utf-8")  # noqa: SIM115
        )
        self._tasks: set[asyncio.Task[None]] = set()

    def token(self, decision_id: str) -> str:
        message = f"{decision_id}:{self.pool.name}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()[:32]

    def plan(self, decision_id: str, outcome: Outcome) -> dict[str, str]:
        """The headers that make Envoy mirror this request; empty when it is not picked."""
        pool = outcome.decision.pool.name
        settings = self.settings
        if pool == self.pool.name or outcome.pii.counts:
            return {}
        if settings.from_pools and pool not in settings.from_pools:
            return {}
        if _bucket(decision_id) >= settings.fraction:
            return {}
        return {
            SHADOW_CLUSTER_HEADER: SHADOW_CLUSTER,
            SHADOW_OF: decision_id,
            SHADOW_TOKEN: self.token(decision_id),
        }

    def verify(self, headers: dict[str, str]) -> str | None:
        """The decision id a mirrored copy names, when its token is one a router signed."""
        decision_id = headers.get(SHADOW_OF, "")
        token = headers.get(SHADOW_TOKEN, "")
        if decision_id and hmac.compare_digest(token, self.token(decision_id)):
            return decision_id
        return None

    def record(
        self,
        router: Router,
        *,
        side: str,
        decision_id: str,
        pool: PoolSettings,
        status: int,
        latency_s: float,
        answer: CachedAnswer | None,
    ) -> None:
        """Logged in the background: embedding the answer never delays a client."""
        usage = answer.usage if answer else None
        entry = stamped(
            decision_id,
            side=side,
            pool=pool.name,
            model=pool.model,
            tier=pool.tier,
            status=status,
            latency_s=round(latency_s, 4),
            prompt_tokens=usage.prompt_tokens if usage else None,
            completion_tokens=usage.completion_tokens if usage else None,
        )
        if side == "primary":
            entry["shadow_pool"] = self.pool.name
        task = asyncio.get_running_loop().create_task(self._write(router, entry, answer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _write(
        self, router: Router, entry: dict[str, Any], answer: CachedAnswer | None
    ) -> None:
        vector = await router.embed(answer.content) if answer and answer.content else None
        entry["embedding"] = (
            base64.b64encode(vector.astype(np.float16).tobytes()).decode()
            if vector is not None
            else None
        )
        self._stream.write(json.dumps(entry) + "\n")
        self._stream.flush()

    async def drain(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def aclose(self) -> None:
        await self.drain()
        if self._stream is not sys.stdout:
            self._stream.close()


def _bucket(decision_id: str) -> float:
    """A stable number in [0, 1) per decision id: the same request is always picked or not."""
    return int(hashlib.sha256(decision_id.encode()).hexdigest()[:8], 16) / 2**32


class ShadowProcessor:
    """The mirrored copy's way through the router: no second decision, the shadow pool."""

    def __init__(self, shadow: Shadow, router: Router, *, cluster_header: str) -> None:
        self._shadow = shadow
        self._router = router
        self._cluster_header = cluster_header
        self._decision_id = ""
        self._chunks: list[bytes] = []
        self._chat = True
        self._started = time.perf_counter()
        self._status = 0
        self._recorder: ResponseRecorder | None = None
        self._recorded = False

    async def on_request_headers(
        self, headers: dict[str, str], end_of_stream: bool
    ) -> ext_proc.ProcessingResponse:
        decision_id = self._shadow.verify(headers)
        if decision_id is None:
            return mutations.immediate_response(
                403,
                {"content-type": "application/json"},
                b'{"error": {"message": "not a mirrored request", "type": "invalid_request_error"'
                b', "param": null, "code": "shadow_token_invalid"}}',
                details="extproc_router_shadow_token_invalid",
            )
        self._decision_id = decision_id
        self._chat = "chat" in headers.get(":path", "")
        return mutations.continue_request_headers()

    async def on_request_body(
        self, body: bytes, end_of_stream: bool
    ) -> ext_proc.ProcessingResponse:
        raw = gather(self._chunks, body, end_of_stream)
        if raw is None:
            return mutations.continue_request_body()
        data = json.loads(raw)
        pool = self._shadow.pool
        data["model"] = pool.model
        ask_for_usage(data)  # the shadow's tokens are counted even when the client's were not
        headers = {self._cluster_header: pool.name, "x-router-model": pool.model}
        return mutations.route_request(headers, encode_body(data))

    async def on_response_headers(self, headers: dict[str, str]) -> ext_proc.ProcessingResponse:
        self._status = int(headers.get(":status", "0") or 0)
        if self._status >= 300:
            return mutations.continue_response_headers()
        event_stream = headers.get("content-type", "").startswith("text/event-stream")
        self._recorder = ResponseRecorder(
            chat=self._chat, event_stream=event_stream, limit=_ANSWER_LIMIT
        )
        length = headers.get("content-length", "")
        small = not event_stream and length.isdigit() and int(length) <= _BUFFERED_BODY_LIMIT
        return mutations.continue_response_headers(body="buffered" if small else "streamed")

    async def on_response_body(
        self, body: bytes, end_of_stream: bool
    ) -> ext_proc.ProcessingResponse:
        if self._recorder is not None:
            self._recorder.feed(body)
            if end_of_stream:
                self.close()
        return mutations.continue_response_body()

    def close(self) -> None:
        if self._recorded or not self._decision_id or not self._status:
            return
        self._recorded = True
        self._shadow.record(
            self._router,
            side="shadow",
            decision_id=self._decision_id,
            pool=self._shadow.pool,
            status=self._status,
            latency_s=time.perf_counter() - self._started,
            answer=self._recorder.answer() if self._recorder is not None else None,
        )

    def trace_attributes(self) -> dict[str, Any]:
        return {"router.decision_id": self._decision_id, "router.shadow": True}
