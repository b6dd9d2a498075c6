"""The machinery `make bench` measures with: the three Envoys (no ext_proc, a do-nothing
ext_proc, the full router) in front of one set of demo pools, and wrk driving them."""

from __future__ import annotations

import json
import re
import socket
import statistics
import subprocess
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from extproc_router.envoy_config import render_envoy
from extproc_router.settings import Settings, load_settings, override
from extproc_router.stack import Stack, envoy_binary, start_stack

__all__ = [
    "Bench",
    "Result",
    "median",
    "rss_mb",
    "start_bench",
    "wrk",
    "wrk_script",
]


@dataclass(frozen=True)
class Result:
    p50_ms: float
    p99_ms: float
    rps: float
    errors: int


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ports(settings: Settings) -> Settings:
    return override(
        settings,
        {
            "envoy.listen.port": free_port(),
            "envoy.admin.port": free_port(),
            "server.grpc.port": free_port(),
            "server.admin.port": free_port(),
        },
    )


def full_settings() -> Settings:
    base = load_settings()
    pools = [
        {**pool.model_dump(mode="json"), "endpoints": [f"127.0.0.1:{free_port()}"]}
        for pool in base.pools
    ]
    quiet = {
        "envoy.access_log": False,
        "server.drain_seconds": 0,
        "log_level": "warning",
        "safety.audit.enabled": False,
    }
    return _ports(override(base, {"pools": pools, **quiet}))


def nothing_settings(full: Settings) -> Settings:
    """The router with every stage off: requests name their model, nothing is scanned, no
    usage is read. What is left is the ext_proc round trip and a JSON parse: the gRPC floor."""
    return _ports(
        override(
            full,
            {
                "safety.jailbreak.enabled": False,
                "safety.pii.enabled": False,
                "telemetry.usage": False,
            },
        )
    )


def transformer_settings(full: Settings) -> Settings:
    """The full router with the cascade off: every routed request runs the transformer, so
    its cost shows even for prompts the static stage would decide."""
    return _ports(override(full, {"model.cascade_confidence": None}))


def _wait_http(url: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} not ready")


def _direct_envoy(settings: Settings, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The same Envoy config with the ext_proc filter taken out: the floor."""
    direct = _ports(settings)
    config: dict[str, Any] = render_envoy(direct)
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    filters = hcm["typed_config"]["http_filters"]
    hcm["typed_config"]["http_filters"] = [
        f for f in filters if f["name"] != "envoy.filters.http.ext_proc"
    ]
    path = workdir / "envoy-direct.yaml"
    path.write_text(yaml.safe_dump(config))
    log = (workdir / "envoy-direct.log").open("wb")
    command = [envoy_binary(), "-c", str(path), "--disable-hot-restart"]
    command += ["--log-level", "warn", "--concurrency", "2"]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    _wait_http(f"http://{direct.envoy.admin.host}:{direct.envoy.admin.port}/ready")
    listen = direct.envoy.listen
    return process, f"http://{listen.host}:{listen.port}"


@dataclass
class Bench:
    full: Stack
    nothing: Stack
    transformer: Stack
    direct: subprocess.Popen[bytes]
    urls: dict[str, str]

    def stop(self) -> None:
        self.direct.terminate()
        self.direct.wait()
        self.transformer.stop_all()
        self.nothing.stop_all()
        self.full.stop_all()


def start_bench(workdir: Path) -> Bench:
    settings = full_settings()
    started: list[Stack] = []
    try:
        full = start_stack(settings, workdir / "full", log_to_files=True)
        started.append(full)
        # In front of the full stack's pools: a router and an Envoy each.
        for name, variant in (("nothing", nothing_settings), ("transformer", transformer_settings)):
            started.append(
                start_stack(
                    variant(settings),
                    workdir / name,
                    log_to_files=True,
                    components=("router", "envoy"),
                )
            )
        direct, direct_url = _direct_envoy(settings, workdir)
    except BaseException:  # nothing left running when one of them fails to start
        for stack in reversed(started):
            stack.stop_all()
        raise
    _, nothing, transformer = started
    urls = {"direct": direct_url, "full": full.url}
    urls |= {"nothing": nothing.url, "transformer": transformer.url}
    return Bench(full, nothing, transformer, direct, urls)


def wrk_script(path: Path, bodies: list[dict[str, Any]]) -> Path:
    """A wrk script that sends the bodies in turn (one body: the same request every time)."""
    encoded = ", ".join(json.dumps(json.dumps(body)) for body in bodies)
    path.write_text(
        f"local bodies = {{{encoded}}}\n"
        "local i = 0\n"
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        "request = function()\n"
        "  i = i % #bodies + 1\n"
        '  return wrk.format(nil, "/v1/chat/completions", nil, bodies[i])\n'
        "end\n"
    )
    return path


_LATENCY = re.compile(r"^\s+(50|99)%\s+([\d.]+)(us|ms|s)\s*$", re.M)
_UNITS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url: str, script: Path, concurrency: int, seconds: int) -> Result:
    command = ["wrk", f"-t{min(concurrency, 2)}", f"-c{concurrency}", f"-d{seconds}s"]
    command += ["--latency", "--timeout", "10s", "-s", str(script), url + "/v1/chat/completions"]
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    latencies = {pct: float(value) * _UNITS[unit] for pct, value, unit in _LATENCY.findall(output)}
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sockets = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output
    )
    errors = int(non_2xx.group(1)) if non_2xx else 0
    if sockets:
        errors += sum(int(n) for n in sockets.groups())
    return Result(latencies["50"], latencies["99"], rps, errors)


def median(results: list[Result]) -> Result:
    return Result(
        statistics.median(r.p50_ms for r in results),
        statistics.median(r.p99_ms for r in results),
        statistics.median(r.rps for r in results),
        sum(r.errors for r in results),
    )


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")
