"""Semantic cache lookups, memory vs Redis, as a scope grows: `python -m bench.cache`.

Starts its own redis-server (Debian's package) on a free loopback port; each lookup is one
semantic search of a 384-dimensional prompt embedding over every entry of one scope.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from extproc_router.cache_backends import Backend, MemoryBackend, RedisBackend
from extproc_router.encoder import Embeddings
from tests.helpers import start_redis

_DIMENSIONS = 384


def _vectors(count: int, seed: int) -> Embeddings:
    rows = np.random.default_rng(seed).normal(size=(count, _DIMENSIONS)).astype(np.float32)
    normalised: Embeddings = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return normalised


async def _measure(backend: Backend, entries: int, lookups: int) -> tuple[float, float]:
    stored = _vectors(entries, 1)
    for index, vector in enumerate(stored):
        await backend.put("scope", f"d{index}", vector, '{"c": "x", "f": "stop", "u": null}', 600)
    queries = _vectors(lookups, 2)
    times = []
    for vector in queries:
        started = time.perf_counter()
        await backend.find("scope", "miss", vector, 0.95)
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.99) - 1]


async def main(sizes: list[int], lookups: int) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        process, url = start_redis(Path(workdir))
        try:
            print("| entries in the scope | memory p50 / p99 ms | Redis p50 / p99 ms |")
            print("|---|---|---|")
            for size in sizes:
                memory = await _measure(MemoryBackend(size + 1), size, lookups)
                redis = RedisBackend(url, prefix=f"bench{size}", max_entries=size + 1, timeout_s=5)
                shared = await _measure(redis, size, lookups)
                await redis.aclose()
                print(f"| {size:,} | {memory[0]:.3f} / {memory[1]:.3f} "
                      f"| {shared[0]:.3f} / {shared[1]:.3f} |")  # fmt: skip
        finally:
            process.terminate()
            process.wait(10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 100, 1000, 10000])
    parser.add_argument("--lookups", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(main(args.sizes, args.lookups))
