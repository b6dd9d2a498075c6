"""`make soak`: the router's memory under sustained mixed traffic.

Starts the full stack, drives it with wrk (the shipped prompt mix, 32 connections) in slices,
and samples the router's RSS after each slice. Writes docs/SOAK.md: the RSS curve, the growth
from the first sample to the last, and the requests served.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from bench.harness import full_settings, rss_mb, wrk, wrk_script
from bench.prompts import MIX, body
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
        script = wrk_script(workdir / "mix.lua", [body(prompt) for prompt in MIX])
        stack = start_stack(full_settings(), workdir / "stack", log_to_files=True)
        try:
            pid = stack.processes["router"].pid
            wrk(stack.url, script, 8, 5)  # warm up
            samples.append((0.0, rss_mb(pid), 0.0, 0))
            started = time.monotonic()
            while time.monotonic() - started < args.minutes * 60:
                result = wrk(stack.url, script, 32, args.slice)
                minute = (time.monotonic() - started) / 60
                samples.append((minute, rss_mb(pid), result.rps, result.errors))
                print(f"{minute:5.1f} min: RSS {samples[-1][1]:.0f} MB, {result.rps:.0f} req/s")
        finally:
            stack.stop_all()
    first, last = samples[0][1], samples[-1][1]
    served = sum(rps * args.slice for _, _, rps, _ in samples[1:])
    lines = [
        "# Soak",
        "",
        f"Router RSS under the shipped prompt mix at 32 connections for {args.minutes:g} "
        f"minutes (`{command}`), sampled every {args.slice} s.",
        "",
        f"RSS after warm-up {first:.0f} MB, at the end {last:.0f} MB ({last - first:+.0f} MB); "
        f"about {served:,.0f} requests served, {sum(s[3] for s in samples)} errors.",
        "",
        "| minute | RSS MB | req/s | errors |",
        "|---|---|---|---|",
        *(f"| {m:.1f} | {rss:.0f} | {rps:.0f} | {errors} |" for m, rss, rps, errors in samples),
        "",
    ]
    args.output.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
