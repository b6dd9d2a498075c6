"""`make soak` (10 minutes) and `make soak-long` (1 hour): the router under sustained mixed
traffic, prompts from a few tokens to ~8,000.

Starts the full stack, drives it with wrk (32 connections) in slices, and samples the router's
RSS after each slice. At the end, with the load stopped: streams in flight and asyncio tasks
from the router's own metrics, and the error lines in its log. Writes docs/SOAK.md: the RSS
curve, its spread around the plateau (the median after the first two minutes), and those
end-of-run figures.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx

from bench.harness import full_settings, rss_mb, wrk, wrk_script
from bench.prompts import LONGEST, MIX, SIZES, body
from extproc_router.stack import start_stack

REPO = Path(__file__).resolve().parents[1]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--slice", type=int, default=30, help="seconds between RSS samples")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "SOAK.md")
    args = parser.parse_args(argv)
    command = "make soak" + (f" ARGS='{' '.join(argv)}'" if argv else "")
    samples: list[tuple[float, float, float, int]] = []  # minute, RSS MB, req/s, errors
    with tempfile.TemporaryDirectory(prefix="extproc-soak-") as tmp:
        workdir = Path(tmp)
        prompts = [*MIX, *SIZES.values(), LONGEST]
        script = wrk_script(workdir / "mix.lua", [body(prompt) for prompt in prompts])
        stack = start_stack(full_settings(), workdir / "stack", log_to_files=True)
        try:
            pid = stack.processes["router"].pid
            admin = stack.settings.server.admin
            metrics_url = f"http://{admin.host}:{admin.port}/metrics"
            tasks_before = _gauge(httpx.get(metrics_url, timeout=5).text, "router_asyncio_tasks")
            wrk(stack.url, script, 8, 5)  # warm up
            samples.append((0.0, rss_mb(pid), 0.0, 0))
            started = time.monotonic()
            while time.monotonic() - started < args.minutes * 60:
                result = wrk(stack.url, script, 32, args.slice)
                minute = (time.monotonic() - started) / 60
                samples.append((minute, rss_mb(pid), result.rps, result.errors))
                print(f"{minute:5.1f} min: RSS {samples[-1][1]:.0f} MB, {result.rps:.0f} req/s")
            time.sleep(2)  # the last replies drain
            scrape = httpx.get(metrics_url, timeout=5).text
            at_rest = {
                name: _gauge(scrape, name)
                for name in ("extproc_streams_active", "router_asyncio_tasks")
            }
        finally:
            stack.stop_all()
        log = stack.log_path("router").read_text()
        error_lines = sum('"level": "error"' in line for line in log.splitlines())
    first, last = samples[0][1], samples[-1][1]
    served = sum(rps * args.slice for _, _, rps, _ in samples[1:])
    settled = [rss for minute, rss, _, _ in samples if minute >= 2] or [last]
    plateau = statistics.median(settled)
    spread = max(abs(rss - plateau) for rss in settled) / plateau
    lines = [
        "# Soak",
        "",
        f"The router under the shipped prompt mix plus prompts of ~30, ~150, ~1,500 and ~8,000 "
        f"tokens, 32 connections, for {args.minutes:g} minutes (`{command}`), RSS sampled "
        f"every {args.slice} s.",
        "",
        f"RSS after warm-up {first:.0f} MB, at the end {last:.0f} MB ({last - first:+.0f} MB); "
        f"plateau (median after minute 2) {plateau:.0f} MB, every later sample within "
        f"{spread:.1%} of it. About {served:,.0f} requests served, "
        f"{sum(s[3] for s in samples)} errors.",
        "",
        f"With the load stopped: {at_rest['extproc_streams_active']:.0f} ext_proc streams in "
        f"flight, {at_rest['router_asyncio_tasks']:.0f} asyncio tasks in the router's loop "
        f"({tasks_before:.0f} before the first request: the gRPC and admin servers' own and the "
        f"config watcher), {error_lines} error lines in its log.",
        "",
        "| minute | RSS MB | req/s | errors |",
        "|---|---|---|---|",
        *(f"| {m:.1f} | {rss:.0f} | {rps:.0f} | {errors} |" for m, rss, rps, errors in samples),
        "",
    ]
    args.output.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


def _gauge(scrape: str, name: str) -> float:
    for line in scrape.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return float("nan")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
