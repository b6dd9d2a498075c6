"""`make bench`'s burst scenario: load-aware routing on against off, on the same traffic.

One set of demo pools with a simulated capacity (the small pool serves 4 requests at once, every
output token takes 25 ms) and two router + Envoy pairs in front of them, identical but for
`load.enabled`. An open-loop burst of simple questions (all of which the router sends to the
small pool while it has room) goes through each in turn, with the pools' queues drained
between runs. Reported: end-to-end p50 / p99, errors, where the requests went and what their
tokens cost at the pools' prices.

Run alone: `python -m bench.burst --seconds 4 --rate 40`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.harness import full_settings
from bench.openloop import open_loop
from extproc_router.pool_load import parse_metrics
from extproc_router.settings import Settings, override
from extproc_router.stack import Stack, start_stack

__all__ = ["BurstRun", "burst_lines", "measure_burst"]

# Simple factual questions: the small pool's work, ~6-9 output tokens each from the demo pool.
QUESTIONS = (
    "What is the capital of France?",
    "What is the capital of Peru?",
    "How many legs does a spider have?",
    "What is the boiling point of water at sea level?",
    "Who wrote the novel Pride and Prejudice?",
    "What is the largest planet in our solar system?",
    "What language is spoken in Brazil?",
    "How many days are there in a leap year?",
)
_CAPACITY = {"small": (4, 25.0), "medium": (16, 25.0), "large": (32, 25.0)}


def _settings() -> Settings:
    """The full bench config with capacities, queue limits and load-aware routing on."""
    base = full_settings()
    values: dict[str, Any] = {
        "load.enabled": True,
        "load.poll_interval_ms": 250,
        "load.timeout_ms": 200,
    }
    for index, pool in enumerate(base.pools):
        running, token_ms = _CAPACITY.get(pool.name, (0, 0.0))
        values[f"pools.{index}.demo.max_running"] = running
        values[f"pools.{index}.demo.token_ms"] = token_ms
        values[f"pools.{index}.load.soft_waiting"] = 2
        values[f"pools.{index}.load.hard_waiting"] = 8
    return override(base, values)


@dataclass(frozen=True)
class Reply:
    seconds: float
    status: int
    pool: str
    cost_usd: float


@dataclass(frozen=True)
class BurstRun:
    label: str
    replies: list[Reply]

    def percentile(self, share: float) -> float:
        times = sorted(r.seconds for r in self.replies if r.status == 200)
        if not times:
            return float("nan")
        return times[min(len(times) - 1, int(share * len(times)))] * 1000

    def line(self) -> str:
        ok = [r for r in self.replies if r.status == 200]
        pools = Counter(r.pool for r in ok)
        share = ", ".join(f"{name} {count}" for name, count in sorted(pools.items()))
        cost = sum(r.cost_usd for r in ok)
        per_1k = cost / len(ok) * 1000 if ok else float("nan")
        return (
            f"| {self.label} | {len(self.replies)} | {len(self.replies) - len(ok)} | "
            f"{statistics.median(r.seconds for r in ok) * 1000:.0f} / "
            f"{self.percentile(0.99):.0f} | {share} | {cost:.5f} | {per_1k:.4f} |"
        )


async def _burst(url: str, rate: float, seconds: float, settings: Settings) -> list[Reply]:
    prices = {p.name: (p.price.input_per_1k, p.price.output_per_1k) for p in settings.pools}
    limits = httpx.Limits(max_connections=1000, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=60, limits=limits) as client:

        async def one(index: int, due: float) -> Reply:
            question = QUESTIONS[index % len(QUESTIONS)]
            body = {"model": "auto", "messages": [{"role": "user", "content": question}]}
            try:
                response = await client.post(url + "/v1/chat/completions", json=body)
            except httpx.HTTPError:
                return Reply(time.monotonic() - due, 0, "", 0.0)
            seconds = time.monotonic() - due
            pool = response.headers.get("x-demo-pool", "")
            cost = 0.0
            if response.status_code == 200:
                usage = response.json()["usage"]
                price_in, price_out = prices.get(pool, (0.0, 0.0))
                cost = (
                    usage["prompt_tokens"] * price_in + usage["completion_tokens"] * price_out
                ) / 1000
            return Reply(seconds, response.status_code, pool, cost)

        return await open_loop(one, rate, seconds)


def _drain(settings: Settings, timeout: float = 60) -> None:
    """Wait until no pool has a request queued or running, so runs start alike."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        busy = 0.0
        for pool in settings.pools:
            for endpoint in pool.endpoints:
                found = parse_metrics(httpx.get(f"http://{endpoint}/metrics", timeout=5).text)
                busy += found.get("vllm:num_requests_waiting", 0.0)
                busy += found.get("vllm:num_requests_running", 0.0)
        if busy == 0:
            return
        time.sleep(0.1)


def measure_burst(
    workdir: Path, *, rate: float = 40, seconds: float = 4, repeats: int = 1
) -> list[BurstRun]:
    on = _settings()
    off = override(
        full_settings(),
        {"load.enabled": False, "pools": [p.model_dump(mode="json") for p in on.pools]},
    )
    stacks: dict[str, Stack] = {}
    try:
        stacks["on"] = start_stack(on, workdir / "burst-on", log_to_files=True)
        stacks["off"] = start_stack(
            off, workdir / "burst-off", log_to_files=True, components=("router", "envoy")
        )
        for stack in stacks.values():  # warm up: connections, the models' first runs
            asyncio.run(_burst(stack.url, 5, 1, on))
        _drain(on)
        runs: list[BurstRun] = []
        for _ in range(repeats):
            for label in ("off", "on"):
                replies = asyncio.run(_burst(stacks[label].url, rate, seconds, on))
                runs.append(BurstRun(f"load-aware {label}", replies))
                print(runs[-1].line())
                _drain(on)
    finally:
        for stack in reversed(stacks.values()):
            stack.stop_all()
    return runs


def burst_lines(runs: list[BurstRun], *, rate: float, seconds: float) -> list[str]:
    return [
        "",
        f"Burst: {rate:g} simple requests/s for {seconds:g} s (open loop), all of them the "
        "small pool's by routing. Demo pools with simulated capacity: small serves 4 at once, "
        "medium 16, large 32, 25 ms per output token; queue limits soft 2 / hard 8 waiting, "
        "polled every 250 ms. The same traffic with load-aware routing off and on "
        "(`python -m bench.burst`).",
        "",
        "| routing | requests | errors | p50 / p99 ms | answered by | cost USD | per 1K req USD |",
        "|---|---|---|---|---|---|---|",
        *(run.line() for run in runs),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rate", type=float, default=40)
    parser.add_argument("--seconds", type=float, default=4)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="extproc-burst-") as tmp:
        runs = measure_burst(Path(tmp), rate=args.rate, seconds=args.seconds, repeats=args.repeats)
    print("\n".join(burst_lines(runs, rate=args.rate, seconds=args.seconds)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
