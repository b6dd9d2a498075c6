"""Streaming through the router: time to first token and per-chunk delay it adds.

The router reads every chunk of a streamed answer for its token usage (Envoy sends it the
response body in STREAMED mode); this measures what that costs a client, against Envoy alone,
in the same run: one client at a time, chunks 10 ms apart, like a model generating.
"""

from __future__ import annotations

import itertools
import statistics
import time
from dataclasses import dataclass

import httpx
import numpy as np

__all__ = ["StreamTimes", "measure_streaming", "streaming_lines"]

# The client asks for usage itself, so direct and router streams carry the same events (when
# the router asks on its behalf, the demo pool spends one more 10 ms tick on the usage chunk).
_BODY = {
    "model": "llama3-8b",
    "stream": True,
    "stream_options": {"include_usage": True},
    "messages": [{"role": "user", "content": " ".join(f"w{i}" for i in range(40))}],
}


@dataclass(frozen=True)
class StreamTimes:
    ttft_ms: list[float]
    gap_ms: list[float]
    total_ms: list[float]


def _one(client: httpx.Client, url: str, delay_ms: int) -> tuple[float, list[float], float]:
    started = time.perf_counter()
    arrivals = []
    with client.stream(
        "POST",
        url + "/v1/chat/completions",
        json=_BODY,
        headers={"x-demo-token-delay-ms": str(delay_ms)},
    ) as response:
        response.raise_for_status()
        for _ in response.iter_raw():
            arrivals.append(time.perf_counter())
    gaps = [(b - a) * 1000 for a, b in itertools.pairwise(arrivals)]
    return (arrivals[0] - started) * 1000, gaps, (arrivals[-1] - started) * 1000


def measure_streaming(url: str, requests: int = 40, delay_ms: int = 10) -> StreamTimes:
    ttft, gaps, total = [], [], []
    with httpx.Client(timeout=30) as client:
        _one(client, url, delay_ms)  # warm up the connection
        for _ in range(requests):
            first, between, whole = _one(client, url, delay_ms)
            ttft.append(first)
            gaps += between
            total.append(whole)
    return StreamTimes(ttft, gaps, total)


def streaming_lines(direct: StreamTimes, router: StreamTimes) -> list[str]:
    def row(name: str, values: list[float], base: list[float]) -> str:
        p50, p99 = np.percentile(values, 50), np.percentile(values, 99)
        b50, b99 = np.percentile(base, 50), np.percentile(base, 99)
        return (
            f"| {name} | {b50:.2f} / {b99:.2f} | {p50:.2f} / {p99:.2f} | {p50 - b50:+.2f} / "
            f"{p99 - b99:+.2f} | {p50 / b50:.2f} |"
        )

    return [
        "Streaming (SSE, ~45 chunks 10 ms apart, one client; the router reads every chunk for "
        f"token usage): {len(router.ttft_ms)} requests each, p50 / p99 ms.",
        "",
        "| measure | direct | router | added | p50 ratio |",
        "|---|---|---|---|---|",
        row("time to first chunk", router.ttft_ms, direct.ttft_ms),
        row("gap between chunks", router.gap_ms, direct.gap_ms),
        row("whole stream", router.total_ms, direct.total_ms),
        "",
        f"Median whole-stream time: direct {statistics.median(direct.total_ms):.1f} ms, "
        f"router {statistics.median(router.total_ms):.1f} ms.",
        "",
    ]
