"""`make bench`'s open-loop rates: the mixed traffic offered at fixed shares of the do-nothing
router's requests/s, to Envoy alone and to the full router in turn.

Why beside wrk: at a fixed concurrency a closed loop ties latency to throughput (32 clients at
N requests/s wait 32/N s on average), so its p99 says how the router behaves flat out, not at a
load it is meant to carry. Here requests leave on schedule (bench/openloop.py), at most 32 in
flight (more wait for a connection, and that wait counts), and the p99 added is read at each
rate; the target is p99 added <= 100 ms at 25% of the do-nothing router's requests/s.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass
from typing import Any

import aiohttp
import numpy as np

from bench.openloop import open_loop

__all__ = ["Offered", "measure_sustained", "sustained_lines"]

# Shares of the do-nothing router's closed-loop requests/s (mixed traffic, concurrency 32).
SHARES = (0.1, 0.2, 0.25, 0.3)
CONNECTIONS = 32


@dataclass(frozen=True)
class Offered:
    """One rate, offered to both targets: latencies in ms from when each request was due."""

    share: float
    rate: float
    direct_ms: list[float]
    full_ms: list[float]
    errors: tuple[int, int]  # direct, full: non-200 answers or no answer

    def row(self) -> str:
        direct = np.percentile(self.direct_ms, [50, 99]) if self.direct_ms else [np.nan] * 2
        full = np.percentile(self.full_ms, [50, 99]) if self.full_ms else [np.nan] * 2
        return (
            f"| {self.share:.0%} | {self.rate:.0f} | {direct[0]:.2f} / {direct[1]:.2f} | "
            f"{full[0]:.2f} / {full[1]:.2f} | {full[0] - direct[0]:+.2f} / "
            f"{full[1] - direct[1]:+.2f} | {self.errors[0]}/{self.errors[1]} |"
        )


async def _offer(
    url: str, bodies: list[dict[str, Any]], rate: float, seconds: float
) -> list[float]:
    """Latencies of the 200 answers, ms; NaN for the others. aiohttp, not httpx: at 300
    requests/s it takes ~17% of a core to httpx's ~41%, CPU the router shares."""
    timeout = aiohttp.ClientTimeout(total=30)
    connector = aiohttp.TCPConnector(limit=CONNECTIONS)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one(index: int, due: float) -> float:
            body = bodies[index % len(bodies)]
            try:
                async with session.post(url + "/v1/chat/completions", json=body) as response:
                    await response.read()
                    ok = response.status == 200
            except (aiohttp.ClientError, TimeoutError):
                return float("nan")
            return (time.monotonic() - due) * 1000 if ok else float("nan")

        await open_loop(one, min(rate, 50), 1)  # warm the connections up
        return await open_loop(one, rate, seconds)


def measure_sustained(
    urls: dict[str, str],
    bodies: list[dict[str, Any]],
    base_rps: float,
    *,
    seconds: float = 6,
    shares: tuple[float, ...] = SHARES,
) -> list[Offered]:
    """`base_rps`: the do-nothing router's requests/s on the same traffic, measured in the same
    run; each share of it is offered to `direct`, then `full`."""
    offered = []
    for share in shares:
        rate = share * base_rps
        times = {
            target: asyncio.run(_offer(urls[target], bodies, rate, seconds))
            for target in ("direct", "full")
        }
        ok = {target: [t for t in found if not math.isnan(t)] for target, found in times.items()}
        errors = (len(times["direct"]) - len(ok["direct"]), len(times["full"]) - len(ok["full"]))
        offered.append(Offered(share, rate, ok["direct"], ok["full"], errors))
        print(f"offered {share:.0%} of {base_rps:.0f} req/s: {offered[-1].row()}")
    return offered


def sustained_lines(offered: list[Offered], base_rps: float, seconds: float) -> list[str]:
    return [
        "",
        f"Open loop, mixed traffic: requests leave on schedule at a share of the do-nothing "
        f"router's {base_rps:.0f} requests/s (wrk, concurrency 32, above), at most "
        f"{CONNECTIONS} in flight (a request waiting for a connection counts that wait), "
        f"{seconds:g} s per rate, Envoy alone and the full router in turn (bench/sustained.py). "
        "Latency from when each request was due, ms, p50 / p99.",
        "",
        "| offered share | req/s | direct | full | full added | errors d/f |",
        "|---|---|---|---|---|---|",
        *(o.row() for o in offered),
        "",
    ]
