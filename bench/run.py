"""`make bench`: what the router costs, measured against Envoy alone in the same run.

Starts the demo stack (pools, router, Envoy with ext_proc) and a second Envoy without ext_proc in
front of the same pools, then drives both with wrk, alternating, at each concurrency, several
times. Reports medians and the ratios router/direct, and writes docs/BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from bench.streaming import measure_streaming, streaming_lines
from extproc_router.envoy_config import render_envoy
from extproc_router.settings import Settings, load_settings, override
from extproc_router.stack import Stack, envoy_binary, start_stack

REPO = Path(__file__).resolve().parents[1]
_FRANCE = [{"role": "user", "content": "What is the capital of France?"}]
_TRACE = "Traceback (most recent call last):\n  File \"app.py\", line 3\nKeyError: 'id'"
_LONG = (
    "I am preparing a workshop for new engineers on our payments service. Explain how idempotency "
    "keys prevent double charges when a client retries after a timeout, what happens if two "
    "requests with the same key arrive at the same moment on different replicas, and how we "
    "should store the keys so that they expire safely. Then compare this with relying on the "
    "database's unique constraints alone, and list the failure cases we should test."
)
# Each setup: (which Envoy, request body). `direct` has no ext_proc at all.
SETUPS: dict[str, tuple[str, dict[str, Any]]] = {
    "direct": ("direct", {"model": "llama3-8b", "messages": _FRANCE}),
    "router: explicit model": ("router", {"model": "llama3-8b", "messages": _FRANCE}),
    "router: keyword fast path": (
        "router",
        {"model": "auto", "messages": [{"role": "user", "content": _TRACE}]},
    ),
    "router: all signals, ~15 tokens": ("router", {"model": "auto", "messages": _FRANCE}),
    "router: all signals, ~100 tokens": (
        "router",
        {"model": "auto", "messages": [{"role": "user", "content": _LONG}]},
    ),
}


@dataclass(frozen=True)
class Result:
    p50_ms: float
    p99_ms: float
    rps: float
    errors: int


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _settings() -> Settings:
    base = load_settings()
    pools = [
        {**pool.model_dump(mode="json"), "endpoints": [f"127.0.0.1:{_free_port()}"]}
        for pool in base.pools
    ]
    return override(
        base,
        {
            "pools": pools,
            "envoy.listen.port": _free_port(),
            "envoy.admin.port": _free_port(),
            "envoy.access_log": False,
            "server.grpc.port": _free_port(),
            "server.admin.port": _free_port(),
            "server.drain_seconds": 0,
            "log_level": "warning",
        },
    )


def _direct_envoy(settings: Settings, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The same Envoy config with the ext_proc filter taken out: the floor to compare with."""
    direct = override(
        settings, {"envoy.listen.port": _free_port(), "envoy.admin.port": _free_port()}
    )
    config: dict[str, Any] = render_envoy(direct)
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    filters = hcm["typed_config"]["http_filters"]
    hcm["typed_config"]["http_filters"] = [
        f for f in filters if f["name"] != "envoy.filters.http.ext_proc"
    ]
    path = workdir / "envoy-direct.yaml"
    path.write_text(yaml.safe_dump(config))
    log = (workdir / "envoy-direct.log").open("wb")
    process = subprocess.Popen(
        [
            envoy_binary(),
            "-c",
            str(path),
            "--disable-hot-restart",
            "--log-level",
            "warn",
            "--concurrency",
            "2",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    listen = direct.envoy.listen
    url = f"http://{listen.host}:{listen.port}"
    _wait_http(f"http://{direct.envoy.admin.host}:{direct.envoy.admin.port}/ready")
    return process, url


def _wait_http(url: str, timeout: float = 30) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} not ready")


_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def _wrk(url: str, script: Path, concurrency: int, seconds: int) -> Result:
    threads = min(concurrency, 2)
    output = subprocess.run(
        [
            "wrk",
            f"-t{threads}",
            f"-c{concurrency}",
            f"-d{seconds}s",
            "--latency",
            "-s",
            str(script),
            url + "/v1/chat/completions",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    latencies = {pct: float(value) * _UNITS[unit] for pct, value, unit in _LATENCY.findall(output)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if socket_errors:
        errors += sum(int(n) for n in socket_errors.groups())
    return Result(latencies["50"], latencies["99"], rps, errors)


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _median(results: list[Result]) -> Result:
    return Result(
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        statistics.median(r.rps for r in results),
        sum(r.errors for r in results),
    )


def _machine() -> str:
    cpu = "unknown CPU"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    system = f"{platform.system()} {platform.release()}"
    return f"{os.cpu_count()} cores, {cpu}, {system}, Python {platform.python_version()}"


def _signal_latencies(settings: Settings) -> list[str]:
    """Per-signal time inside the router for the two all-signals prompts, in process."""
    from extproc_router.live import LiveConfig
    from extproc_router.request import parse_body

    async def measure() -> dict[str, dict[str, list[float]]]:
        live = await LiveConfig.start(settings, None)
        prompts = {
            name.removeprefix("router: all signals, "): body
            for name, (_, body) in SETUPS.items()
            if name.startswith("router: all signals")
        }
        # A long pasted document: what the safety scans cost on big prompts.
        prompts["~2,000 tokens"] = {
            "model": "auto",
            "messages": [{"role": "user", "content": (_LONG + " ") * 20}],
        }
        timings: dict[str, dict[str, list[float]]] = {}
        for name, body in prompts.items():
            request = parse_body("chat_completions", json.dumps(body).encode())
            rows: dict[str, list[float]] = {}
            for _ in range(200):
                outcome = await live.pipeline.run(request, "bench", dry_run=True)
                for signal in outcome.decision.signals:
                    rows.setdefault(signal.name, []).append(signal.latency_ms)
                rows.setdefault("jailbreak (patterns + head)", []).append(
                    outcome.jailbreak.latency_ms
                )
                rows.setdefault("pii (scan + redact)", []).append(outcome.pii.latency_ms)
                rows.setdefault("MiniLM embedding (shared)", []).append(outcome.embed_ms)
                rows.setdefault("whole pipeline", []).append(outcome.decision.latency_ms)
            timings[name] = rows
        return timings

    import asyncio

    timings = asyncio.run(measure())
    lines = [
        "Per-stage time inside the router (in process, 200 runs each, p50 / p99 ms); every "
        "model-based stage reads the one shared MiniLM embedding:",
        "",
        "| signal | " + " | ".join(timings) + " |",
        "|---|" + "---|" * len(timings),
    ]
    names = list(next(iter(timings.values())))
    for signal in names:
        cells = [
            f"{np.percentile(rows[signal], 50):.2f} / {np.percentile(rows[signal], 99):.2f}"
            for rows in timings.values()
        ]
        lines.append(f"| {signal} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _report(
    table: dict[int, dict[str, Result]],
    rss: float,
    args: argparse.Namespace,
    command: str,
    signal_lines: list[str],
) -> str:
    lines = [
        "# Benchmarks",
        "",
        "What the router adds to a request, measured against Envoy alone **in the same run** on "
        "the same machine with the same load generator (wrk, closed loop, keep-alive).",
        "",
        f"- Command: `{command}`",
        f"- Machine: {_machine()}",
        f"- Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        f"- Each cell: median of {args.repeats} runs of {args.duration} s, setups alternating.",
        "- `direct`: client → Envoy → demo pool, no ext_proc: the floor. `router: ...`: client → "
        "Envoy → ext_proc router → demo pool. `explicit model`: parse and route by the named "
        "model, no signals (close to a do-nothing ext_proc). `keyword fast path`: a short-circuit "
        "rule decides before any model runs. `all signals`: keyword, then one MiniLM embedding "
        "(ONNX int8) shared by the embedding, domain and preference signals, plus complexity, "
        "and the vote.",
        "- Everything (wrk, Envoy, router, pools) shares the same cores, as in a sidecar.",
        "",
        "| concurrency | setup | p50 ms | p99 ms | req/s | errors | p50 / direct | p99 / direct "
        "| req/s / direct | added p50 ms | req/s / explicit |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for concurrency, results in table.items():
        direct, floor = results["direct"], results["router: explicit model"]
        for name, result in results.items():
            ratios = (
                f"{result.p50_ms / direct.p50_ms:.2f} | {result.p99_ms / direct.p99_ms:.2f} | "
                f"{result.rps / direct.rps:.2f} | {result.p50_ms - direct.p50_ms:+.2f} | "
                f"{result.rps / floor.rps:.2f}"
            )
            lines.append(
                f"| {concurrency} | {name} | {result.p50_ms:.2f} | {result.p99_ms:.2f} | "
                f"{result.rps:.0f} | {result.errors} | {ratios} |"
            )
    lines += [
        "",
        f"Router RSS after the run: {rss:.0f} MB.",
        "",
        *signal_lines,
        "",
        "Timings on these shared machines drift between runs; compare the ratios, which come "
        "from one run.",
        "",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--duration", type=int, default=8, help="seconds per wrk run")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrency", default="1,32")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "BENCHMARKS.md")
    args = parser.parse_args(argv)
    concurrencies = [int(c) for c in args.concurrency.split(",")]
    command = "make bench" + (f" ARGS='{' '.join(argv)}'" if argv else "")

    settings = _settings()
    with tempfile.TemporaryDirectory(prefix="extproc-bench-") as tmp:
        workdir = Path(tmp)
        scripts = {}
        for index, (name, (_, body)) in enumerate(SETUPS.items()):
            scripts[name] = workdir / f"setup{index}.lua"
            scripts[name].write_text(
                'wrk.method = "POST"\n'
                f"wrk.body = {json.dumps(json.dumps(body))}\n"
                'wrk.headers["Content-Type"] = "application/json"\n'
            )
        stack: Stack = start_stack(settings, workdir / "stack", log_to_files=True)
        direct, direct_url = _direct_envoy(settings, workdir)
        try:
            envoys = {"direct": direct_url, "router": stack.url}
            urls = {name: envoys[envoy] for name, (envoy, _) in SETUPS.items()}
            for name, url in urls.items():  # warm up connections and caches
                _wrk(url, scripts[name], 8, 2)
            runs: dict[int, dict[str, list[Result]]] = {
                c: {name: [] for name in urls} for c in concurrencies
            }
            for repeat in range(args.repeats):
                for concurrency in concurrencies:
                    for name, url in urls.items():
                        result = _wrk(url, scripts[name], concurrency, args.duration)
                        runs[concurrency][name].append(result)
                        print(f"run {repeat + 1} c={concurrency} {name}: {result}", flush=True)
            rss = _rss_mb(stack.processes["router"].pid)
            stream_lines = streaming_lines(
                measure_streaming(direct_url), measure_streaming(stack.url)
            )
        finally:
            direct.terminate()
            direct.wait()
            stack.stop_all()
    table = {c: {name: _median(results) for name, results in runs[c].items()} for c in runs}
    report = _report(table, rss, args, command, [*stream_lines, *_signal_latencies(settings)])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
