"""The fault tests' load, on an open-loop schedule (bench/openloop.py): a stalled proxy shows up
as late or failed replies rather than as a lower request rate."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import httpx

from bench.openloop import open_loop

__all__ = ["Reply", "run_load"]

# Cheap to route on purpose (a named model, a keyword rule, a confident static-embedding
# vote): these tests are about what failures look like, not about how fast the transformer is.
REQUESTS = (
    ("auto", "What is the capital of Peru?"),
    ("auto", "Traceback (most recent call last):\n  File 'app.py', line 3\nKeyError: 'user'"),
    ("llama3-8b", "Summarise the plot of Hamlet in two sentences."),
    ("gpt-5.2", "Prove that there are infinitely many primes."),
)


# Far above any reply the proxy should take: a hang shows as a long `elapsed`.
CLIENT_TIMEOUT = 15.0


@dataclass(frozen=True, slots=True)
class Reply:
    sent: float  # seconds since the run started
    elapsed: float
    status: int  # 0: no HTTP answer at all (connection error or client timeout)
    code: str  # the JSON error code, "" for a 200
    pool: str


async def run_load(
    url: str, rate: float, duration: float, requests: Sequence[tuple[str, str]] = REQUESTS
) -> list[Reply]:
    """`rate` requests a second for `duration` seconds, cycling through `requests` (model,
    prompt); every reply, in sending order."""
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
    async with httpx.AsyncClient(timeout=CLIENT_TIMEOUT, limits=limits) as client:
        started = time.monotonic()

        async def one(index: int, due: float) -> Reply:
            model, content = requests[index % len(requests)]
            body = {"model": model, "messages": [{"role": "user", "content": content}]}
            sent = due - started
            try:
                response = await client.post(url + "/v1/chat/completions", json=body)
            except httpx.HTTPError as error:
                return Reply(sent, time.monotonic() - due, 0, type(error).__name__, "")
            code = ""
            if response.status_code != 200:
                try:
                    code = str(response.json()["error"]["code"])
                except (ValueError, KeyError, TypeError):
                    code = "not_json"
            pool = response.headers.get("x-demo-pool", "")
            return Reply(sent, time.monotonic() - due, response.status_code, code, pool)

        return await open_loop(one, rate, duration)
