"""Per-stage time inside the router, in process (no Envoy, no gRPC): where a request's
milliseconds go."""

from __future__ import annotations

import asyncio
import json

import numpy as np

from bench.prompts import SIZES, body
from extproc_router.live import LiveConfig
from extproc_router.request import parse_body
from extproc_router.settings import Settings

__all__ = ["stage_lines"]


async def _measure(settings: Settings, runs: int) -> dict[str, dict[str, list[float]]]:
    live = await LiveConfig.start(settings, None)
    timings: dict[str, dict[str, list[float]]] = {}
    for name, prompt in SIZES.items():
        raw = json.dumps(body(prompt)).encode()
        rows: dict[str, list[float]] = {}
        for _ in range(runs):
            outcome = await live.pipeline.run(
                parse_body("chat_completions", raw), "bench", dry_run=True
            )
            for signal in outcome.decision.signals:
                rows.setdefault(signal.name, []).append(signal.latency_ms)
            rows.setdefault("jailbreak (patterns + classifier)", []).append(
                outcome.jailbreak.latency_ms
            )
            rows.setdefault("pii (scan + redact)", []).append(outcome.pii.latency_ms)
            rows.setdefault("MiniLM embedding (shared)", []).append(outcome.embed_ms)
            rows.setdefault("whole pipeline", []).append(outcome.decision.latency_ms)
        timings[name] = rows
    return timings


def stage_lines(settings: Settings, runs: int = 200) -> list[str]:
    timings = asyncio.run(_measure(settings, runs))
    lines = [
        f"Per-stage time inside the router (in process, {runs} runs each, p50 / p99 ms); every "
        "model-based stage reads the one shared embedding:",
        "",
        "| stage | " + " | ".join(timings) + " |",
        "|---|" + "---|" * len(timings),
    ]
    names = list(next(iter(timings.values())))
    for stage in names:
        cells = [
            f"{np.percentile(rows[stage], 50):.2f} / {np.percentile(rows[stage], 99):.2f}"
            if stage in rows
            else "-"
            for rows in timings.values()
        ]
        lines.append(f"| {stage} | " + " | ".join(cells) + " |")
    return [*lines, ""]
