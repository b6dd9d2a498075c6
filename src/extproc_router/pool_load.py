"""What each pool is doing right now: its endpoints' queues, read from their Prometheus metrics.

A task polls every endpoint of every monitored pool (`pools[].load.metrics_path`) each
`load.poll_interval_ms`, all at once and each with its own timeout, off the request path. The
readings land on a `LoadBoard`; a request only reads the board, so a slow or dead pool never
makes a request wait. What the board says is judged when it is read: a reading older than
`load.stale_after_ms`, or none at all, is *unknown* — never taken for an idle pool.

vLLM's names are read: `vllm:num_requests_waiting`, `vllm:num_requests_running` and
`vllm:kv_cache_usage_perc` (or the older `vllm:gpu_cache_usage_perc`), summed over their label
sets (one per served model).
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal

import aiohttp

from extproc_router import metrics
from extproc_router.settings import PoolSettings, Settings

__all__ = [
    "METRIC_NAMES",
    "EndpointReading",
    "LoadBoard",
    "PoolLoad",
    "State",
    "parse_metrics",
    "poll_forever",
    "poll_once",
]

logger = logging.getLogger(__name__)

# Field -> the metric names that feed it, preferred first.
METRIC_NAMES: dict[str, tuple[str, ...]] = {
    "waiting": ("vllm:num_requests_waiting",),
    "running": ("vllm:num_requests_running",),
    "kv_cache": ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"),
}
_WANTED = frozenset(name for names in METRIC_NAMES.values() for name in names)
# A metrics page is small; one that is not is not a vLLM metrics page.
_MAX_PAGE_BYTES = 4 * 1024 * 1024

# ok: at or under the soft limit; busy: between the limits (penalised); full: at or above the
# hard limit (skipped); down: no endpoint up (skipped); unknown: no fresh reading;
# unmonitored: not polled (load-aware routing off, or no metrics path).
State = Literal["ok", "busy", "full", "down", "unknown", "unmonitored"]
STATES: tuple[State, ...] = ("ok", "busy", "full", "down", "unknown", "unmonitored")


def parse_metrics(text: str) -> dict[str, float]:
    """The wanted vLLM gauges from a Prometheus text page, each summed over its label sets.
    Lines that do not parse are skipped: one odd line must not hide the queue."""
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if not line.startswith("vllm:"):
            continue
        name_end = min((i for i in (line.find("{"), line.find(" ")) if i > 0), default=-1)
        if name_end < 0 or line[:name_end] not in _WANTED:
            continue
        # The value follows the labels (which may hold spaces inside quotes): the first field
        # after the closing brace, or after the name when there are no labels.
        rest = line[line.rfind("}") + 1 :] if line[name_end] == "{" else line[name_end:]
        fields = rest.split()
        if not fields:
            continue
        try:
            value = float(fields[0])
        except ValueError:
            continue
        if not math.isfinite(value):
            continue
        name = line[:name_end]
        totals[name] = totals.get(name, 0.0) + value
    return totals


@dataclass(frozen=True, slots=True)
class EndpointReading:
    """The last word from one endpoint. `read_at` (time.monotonic) is the last good reading's
    time; `failures` counts failed polls since; `refused` is true when the last poll found
    nothing listening."""

    waiting: float | None = None
    running: float | None = None
    kv_cache: float | None = None
    read_at: float | None = None
    failures: int = 0
    refused: bool = False
    error: str = ""


@dataclass(frozen=True, slots=True)
class PoolLoad:
    pool: str
    state: State
    # Mean over the endpoints with a fresh reading; None when unknown.
    waiting: float | None = None
    running: float | None = None
    kv_cache: float | None = None
    # How old the freshest reading is, in milliseconds.
    age_ms: float | None = None
    endpoints_up: int = 0
    endpoints: int = 0
    # How far from the soft limit to the hard one, in [0, 1] (the penalty's multiplier).
    pressure: float = 0.0

    @property
    def skipped(self) -> bool:
        return self.state in ("full", "down")

    def brief(self) -> str:
        """What the explanation says of this pool: `waiting=37`, `down`, `unknown`."""
        if self.waiting is not None and self.state in ("ok", "busy", "full"):
            return f"waiting={self.waiting:.0f}"
        return self.state

    def evidence(self) -> dict[str, Any]:
        def rounded(value: float | None, digits: int) -> float | None:
            return None if value is None else round(value, digits)

        return {
            "state": self.state,
            "waiting": rounded(self.waiting, 1),
            "running": rounded(self.running, 1),
            "kv_cache": rounded(self.kv_cache, 3),
            "age_ms": rounded(self.age_ms, 0),
            "endpoints_up": self.endpoints_up,
            "endpoints": self.endpoints,
            "pressure": round(self.pressure, 3),
        }


class LoadBoard:
    """The latest reading of every endpoint: written by the polling task, read per request.
    Both run on the event loop's thread, so a plain dict needs no lock."""

    def __init__(self) -> None:
        self._readings: dict[tuple[str, str], EndpointReading] = {}
        self._failed: dict[str, float] = {}

    def report_failure(self, pool: str, now: float | None = None) -> None:
        """A request to `pool` failed the way a dead or overwhelmed pool fails (Envoy's 502,
        503 or 504, after its retries): treat the pool as down until a poll newer than this
        reads it again. Between polls, this is what keeps the next requests off it."""
        self._failed[pool] = time.monotonic() if now is None else now

    def reading(self, pool: str, endpoint: str) -> EndpointReading:
        return self._readings.get((pool, endpoint), EndpointReading())

    def record(self, pool: str, endpoint: str, reading: EndpointReading) -> None:
        self._readings[pool, endpoint] = reading

    def view(self, settings: Settings, now: float | None = None) -> dict[str, PoolLoad]:
        """Every pool's state as of `now` (time.monotonic), judged with the config in force."""
        now = time.monotonic() if now is None else now
        return {pool.name: self.pool_load(pool, settings, now) for pool in settings.pools}

    def pool_load(self, pool: PoolSettings, settings: Settings, now: float) -> PoolLoad:
        load = settings.load
        if not load.enabled or pool.load.metrics_path is None:
            return PoolLoad(pool.name, "unmonitored", endpoints=len(pool.endpoints))
        fresh: list[EndpointReading] = []
        down = 0
        for endpoint in pool.endpoints:
            reading = self.reading(pool.name, endpoint)
            if reading.refused or reading.failures >= load.down_after_failures:
                down += 1
            elif reading.read_at is not None and now - reading.read_at <= load.stale_after_s:
                fresh.append(reading)
        total = len(pool.endpoints)
        failed_at = self._failed.get(pool.name)
        if failed_at is not None and all((r.read_at or 0.0) < failed_at for r in fresh):
            down = total  # no endpoint read since the failure: believe the failure
        if down == total:
            return PoolLoad(pool.name, "down", endpoints=total, pressure=1.0)
        if not fresh:
            return PoolLoad(pool.name, "unknown", endpoints=total, pressure=load.unknown_pressure)
        waiting = _mean(r.waiting for r in fresh)
        age = (now - max(r.read_at or 0.0 for r in fresh)) * 1000
        result = PoolLoad(
            pool.name,
            "ok",
            waiting,
            _mean(r.running for r in fresh),
            _mean(r.kv_cache for r in fresh),
            age,
            total - down,
            total,
        )
        if waiting is None:  # the page had no queue gauge: not a vLLM page we understand
            return replace(result, state="unknown", pressure=load.unknown_pressure)
        limits = pool.load
        pressure = (waiting - limits.soft_waiting) / (limits.hard_waiting - limits.soft_waiting)
        pressure = min(1.0, max(0.0, pressure))
        if waiting >= limits.hard_waiting:
            return replace(result, state="full", pressure=1.0)
        if waiting > limits.soft_waiting:
            return replace(result, state="busy", pressure=pressure)
        return result


def _mean(values: Any) -> float | None:
    known = [value for value in values if value is not None]
    return sum(known) / len(known) if known else None


def _value(found: Mapping[str, float], field: str) -> float | None:
    for name in METRIC_NAMES[field]:
        if name in found:
            return found[name]
    return None


async def _fetch(session: aiohttp.ClientSession, url: str, seconds: float) -> str:
    async with asyncio.timeout(seconds):
        async with session.get(url) as response:
            if response.status != 200:
                raise ValueError(f"HTTP {response.status}")
            body = await response.content.read(_MAX_PAGE_BYTES)
            return body.decode("utf-8", "replace")


async def poll_endpoint(
    session: aiohttp.ClientSession, url: str, seconds: float, previous: EndpointReading
) -> EndpointReading:
    """One poll of one endpoint, given `seconds`; never raises (a failure is part of the
    reading)."""
    try:
        text = await _fetch(session, url, seconds)
    except aiohttp.ClientConnectorError as error:
        # Nothing listens (or the host is unreachable): down now, not after several polls.
        return replace(previous, failures=previous.failures + 1, refused=True, error=str(error))
    except (TimeoutError, aiohttp.ClientError, ValueError, OSError) as error:
        kind = "timeout" if isinstance(error, TimeoutError) else type(error).__name__
        return replace(previous, failures=previous.failures + 1, refused=False, error=kind)
    found = parse_metrics(text)
    return EndpointReading(
        waiting=_value(found, "waiting"),
        running=_value(found, "running"),
        kv_cache=_value(found, "kv_cache"),
        read_at=time.monotonic(),
    )


def _result(reading: EndpointReading) -> str:
    if reading.failures == 0:
        return "ok"
    return "refused" if reading.refused else ("timeout" if reading.error == "timeout" else "error")


async def poll_once(board: LoadBoard, settings: Settings, session: aiohttp.ClientSession) -> None:
    """Poll every monitored endpoint at once, record what each said, update the gauges."""
    load = settings.load
    jobs: list[tuple[str, str, asyncio.Task[EndpointReading]]] = []
    for pool in settings.pools:
        path = pool.load.metrics_path
        if path is None:
            continue
        for endpoint in pool.endpoints:
            url = f"http://{endpoint}{path}"
            previous = board.reading(pool.name, endpoint)
            task = asyncio.create_task(
                poll_endpoint(session, url, load.timeout_ms / 1000, previous)
            )
            jobs.append((pool.name, endpoint, task))
    for pool_name, endpoint, task in jobs:
        reading = await task
        board.record(pool_name, endpoint, reading)
        metrics.LOAD_POLLS.labels(pool=pool_name, result=_result(reading)).inc()
    observe(board.view(settings))


def observe(view: Mapping[str, PoolLoad]) -> None:
    for name, pool in view.items():
        for state in STATES:
            metrics.POOL_STATE.labels(pool=name, state=state).set(1 if pool.state == state else 0)
        metrics.POOL_WAITING.labels(pool=name).set(pool.waiting if pool.waiting is not None else -1)
        metrics.POOL_RUNNING.labels(pool=name).set(pool.running if pool.running is not None else -1)


async def poll_forever(board: LoadBoard, current: Callable[[], Settings]) -> None:
    """Poll until cancelled. `current` gives the config in force at each round, so a reload
    that turns load-aware routing on, or changes pools, takes effect at the next poll."""
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    async with aiohttp.ClientSession(connector=connector) as session:
        while True:
            settings = current()
            started = time.monotonic()
            if settings.load.enabled:
                try:
                    await poll_once(board, settings, session)
                except Exception:
                    # A bug here must not end polling (the readings would go stale, unknown,
                    # for good): logged, and the next round tries again.
                    logger.exception("pool load poll failed")
            interval = settings.load.poll_interval_ms / 1000
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))
