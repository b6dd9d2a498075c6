"""docs/BENCHMARKS.md and its plot, from the medians `bench.run` measured."""

from __future__ import annotations

import os
import platform
import time
from pathlib import Path

from bench.harness import Result

__all__ = ["Table", "plot", "report", "transformer_lines"]

# (case, target, concurrency) -> median result; targets: direct, nothing, full.
Table = dict[tuple[str, str, int], Result]


def _machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    system = f"{platform.system()} {platform.release()}"
    return f"{os.cpu_count()} cores, {cpu}, {system}, Python {platform.python_version()}"


def _added(target: Result, direct: Result) -> str:
    """What `target` adds over `direct`, ms, p50 / p99."""
    return f"{target.p50_ms - direct.p50_ms:+.2f} / {target.p99_ms - direct.p99_ms:+.2f}"


def _row(table: Table, case: str, concurrency: int) -> str:
    direct = table[case, "direct", concurrency]
    nothing = table[case, "nothing", concurrency]
    full = table[case, "full", concurrency]
    floor_p50 = max(nothing.p50_ms - direct.p50_ms, 1e-3)
    return (
        f"| {case} | {concurrency} | {direct.p50_ms:.2f} / {direct.p99_ms:.2f} | "
        f"{_added(nothing, direct)} | {_added(full, direct)} | "
        f"{(full.p50_ms - direct.p50_ms) / floor_p50:.1f} | "
        f"{direct.rps:.0f} | {nothing.rps:.0f} | {full.rps:.0f} | "
        f"{full.rps / direct.rps:.2f} | {full.rps / nothing.rps:.2f} | "
        f"{direct.errors}/{nothing.errors}/{full.errors} |"
    )


def report(
    table: Table,
    cases: list[str],
    concurrencies: list[int],
    *,
    command: str,
    details: tuple[int, int],
    rss: tuple[float, float],
    extra: list[str],
    image: str,
) -> str:
    repeats, seconds = details
    lines = [
        "# Benchmarks",
        "",
        "What the router adds to a request, measured **in the same run**, on the same machine, "
        "with the same load generator (wrk: closed loop, keep-alive), against two floors:",
        "",
        "- `direct`: client → Envoy → demo pool, no ext_proc at all.",
        "- `nothing`: client → Envoy → ext_proc → demo pool, our server with every stage off "
        "(model named, no safety, no usage accounting): the gRPC round-trip floor.",
        "- `full`: the router as shipped (example config, model `auto`): safety, every signal, "
        "the vote, usage accounting of the response.",
        "",
        f"- Command: `{command}`",
        f"- Machine: {_machine()}; wrk, Envoy, router and pools share these cores, as in a pod.",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- Each cell: median of {repeats} runs of {seconds} s; the targets alternate.",
        "",
        "Latencies in ms (p50 / p99). *Added* = target minus `direct` for the same prompts.",
        "",
        "| case | conc. | direct | nothing added | full added | full/nothing added p50 "
        "| direct req/s | nothing req/s | full req/s | full/direct | full/nothing | errors d/n/f |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for case in cases:
        lines += [_row(table, case, concurrency) for concurrency in concurrencies]
    lines += [
        "",
        f"![added latency against concurrency]({image})",
        "",
        f"Router RSS: {rss[0]:.0f} MB after warm-up, {rss[1]:.0f} MB after the run.",
        "",
        *extra,
        "Timings on these shared machines drift between runs; compare the ratios, which come "
        "from one run.",
        "",
    ]
    return "\n".join(lines)


def transformer_lines(table: Table, cases: list[str], concurrencies: list[int]) -> list[str]:
    """The cases also run with the cascade off, beside the full router's figures."""
    rows = []
    for case in cases:
        for concurrency in concurrencies:
            cascade_off = table.get((case, "transformer", concurrency))
            if cascade_off is None:
                continue
            direct = table[case, "direct", concurrency]
            full = table[case, "full", concurrency]
            nothing = table[case, "nothing", concurrency]
            rows.append(
                f"| {case} | {concurrency} | {_added(full, direct)} | "
                f"{_added(cascade_off, direct)} | {full.rps:.0f} | "
                f"{cascade_off.rps:.0f} | {cascade_off.rps / nothing.rps:.2f} | "
                f"{cascade_off.errors} |"
            )
    if not rows:
        return []
    return [
        "The same requests to a router with the cascade off (`model.cascade_confidence: null`): "
        "the transformer embeds every routed prompt, where the static stage would decide some "
        "(~150 tokens: the shipped cascade decides it without the transformer). Added ms, p50 / "
        "p99, in the same run.",
        "",
        "| case | conc. | full added | cascade off added | full req/s | cascade off req/s "
        "| cascade off/nothing | errors |",
        "|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def plot(table: Table, cases: list[str], concurrencies: list[int], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for index, percentile in enumerate(("p50", "p99")):
        axis = axes[index]
        for case in cases:
            added = [
                max(
                    getattr(table[case, "full", c], f"{percentile}_ms")
                    - getattr(table[case, "direct", c], f"{percentile}_ms"),
                    0.01,
                )
                for c in concurrencies
            ]
            axis.plot(concurrencies, added, marker="o", label=f"full: {case}")
        floor = [
            max(
                getattr(table[cases[0], "nothing", c], f"{percentile}_ms")
                - getattr(table[cases[0], "direct", c], f"{percentile}_ms"),
                0.01,
            )
            for c in concurrencies
        ]
        axis.plot(concurrencies, floor, "k--", marker="x", label="do-nothing ext_proc")
        axis.set_xscale("log", base=2)
        axis.set_yscale("log")
        axis.set_xlabel("concurrent clients")
        axis.set_ylabel(f"added {percentile} latency vs direct (ms)")
        axis.set_title(f"{percentile} added by the router")
        axis.grid(True, which="both", alpha=0.3)
    axes[1].legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
