"""`make bench`: what the router costs, measured against Envoy alone in the same run.

Three Envoys in front of one set of demo pools: no ext_proc (`direct`, the floor), a do-nothing
ext_proc (our server with every stage off: the gRPC floor), and the full router. wrk drives each
with the same requests at each concurrency, the three alternating, several times; the report
gives medians, what the router adds over `direct`, and ratios against both floors, and writes
docs/BENCHMARKS.md with a plot. Then the mixed traffic open loop, at shares of the do-nothing
router's requests/s (bench/sustained.py), and a burst beyond the small pool's capacity, with
load-aware routing off and on (bench/burst.py).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from bench.burst import burst_lines, measure_burst
from bench.harness import Result, median, rss_mb, start_bench, wrk, wrk_script
from bench.prompts import KEYWORD, MIX, SIZES, body
from bench.report import Table, plot, report, transformer_lines
from bench.stages import stage_lines
from bench.streaming import measure_streaming, streaming_lines
from bench.sustained import measure_sustained, sustained_lines

REPO = Path(__file__).resolve().parents[1]

# Each case: the prompts it cycles through. `direct` and `full` get them with model "auto"
# (the default pool serves that alias too), the do-nothing router with the model named.
CASES: dict[str, list[str]] = {
    "keyword fast path": [KEYWORD],
    **{f"all stages, {name}": [prompt] for name, prompt in SIZES.items()},
    "mixed traffic": MIX,
}
TARGETS = ("direct", "nothing", "full")
# Also sent to the router with the cascade off (`transformer`): what the transformer costs where
# the static stage would have decided.
TRANSFORMER_CASES = ("all stages, ~150 tokens", "mixed traffic")


def _scripts(workdir: Path, cases: list[str]) -> dict[tuple[str, str], Path]:
    scripts = {}
    for index, (case, prompts) in enumerate((c, CASES[c]) for c in cases):
        targets = (*TARGETS, "transformer") if case in TRANSFORMER_CASES else TARGETS
        for target in targets:
            model = "llama3-8b" if target == "nothing" else "auto"
            bodies = [body(prompt, model) for prompt in prompts]
            scripts[case, target] = wrk_script(workdir / f"case{index}-{target}.lua", bodies)
    return scripts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--concurrency", default="1,8,32,128")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "BENCHMARKS.md")
    parser.add_argument(
        "--sustained-seconds",
        type=float,
        default=6,
        help="seconds per open-loop rate (needs mixed traffic at concurrency 32; 0 skips)",
    )
    parser.add_argument("--burst-rate", type=float, default=40, help="burst requests/s")
    parser.add_argument("--burst-seconds", type=float, default=4, help="0 skips the burst")
    parser.add_argument(
        "--cases", default=";".join(CASES), help="a ;-separated subset of: " + "; ".join(CASES)
    )
    args = parser.parse_args(argv)
    cases = [case.strip() for case in args.cases.split(";")]
    unknown = [case for case in cases if case not in CASES]
    if unknown:
        parser.error(f"unknown cases: {', '.join(unknown)}")
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    command = "make bench" + (f" ARGS='{' '.join(argv)}'" if argv else "")

    with tempfile.TemporaryDirectory(prefix="extproc-bench-") as tmp:
        workdir = Path(tmp)
        scripts = _scripts(workdir, cases)
        bench = start_bench(workdir)
        try:
            for (_, target), script in scripts.items():  # warm up connections and caches
                wrk(bench.urls[target], script, 8, 2)
            router_pid = bench.full.processes["router"].pid
            rss_start = rss_mb(router_pid)
            runs: dict[tuple[str, str, int], list[Result]] = {}
            for repeat in range(args.repeats):
                for concurrency in concurrencies:
                    for (case, target), script in scripts.items():
                        result = wrk(bench.urls[target], script, concurrency, args.duration)
                        runs.setdefault((case, target, concurrency), []).append(result)
                        print(f"run {repeat + 1} c={concurrency} {case} {target}: {result}")
            rss_end = rss_mb(router_pid)
            mixed = runs.get(("mixed traffic", "nothing", 32))
            sustained = []
            if mixed and args.sustained_seconds > 0:
                base = median(mixed).rps
                offered = measure_sustained(
                    bench.urls, [body(p) for p in MIX], base, seconds=args.sustained_seconds
                )
                sustained = sustained_lines(offered, base, args.sustained_seconds)
            stream = streaming_lines(
                measure_streaming(bench.urls["direct"]),
                measure_streaming(bench.urls["full"]),
            )
            settings = bench.full.settings
        finally:
            bench.stop()
        burst = (
            burst_lines(
                measure_burst(workdir, rate=args.burst_rate, seconds=args.burst_seconds),
                rate=args.burst_rate,
                seconds=args.burst_seconds,
            )
            if args.burst_seconds > 0
            else []
        )
    table: Table = {key: median(results) for key, results in runs.items()}
    image = args.output.with_name("bench-latency.png")
    plot(table, cases, concurrencies, image)
    text = report(
        table,
        cases,
        concurrencies,
        command=command,
        details=(args.repeats, args.duration),
        rss=(rss_start, rss_end),
        extra=[
            *transformer_lines(table, cases, concurrencies),
            *sustained,
            *stream,
            *stage_lines(settings),
            *burst,
        ],
        image=image.name,
    )
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
