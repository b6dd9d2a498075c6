"""Reading pool load: vLLM's metrics page, the states a pool can be in, and polling that never
waits on a slow endpoint nor mistakes silence for an idle pool."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp import web

from extproc_router import metrics
from extproc_router.demo import Capacity
from extproc_router.pool_load import (
    EndpointReading,
    LoadBoard,
    parse_metrics,
    poll_endpoint,
    poll_once,
)
from extproc_router.settings import DemoCapacity, Settings, load_settings, override
from tests.helpers import free_port

VLLM_PAGE = """\
# HELP vllm:num_requests_running Number of requests in model execution batches.
# TYPE vllm:num_requests_running gauge
vllm:num_requests_running{engine="0",model_name="llama3-8b"} 4.0
vllm:num_requests_running{engine="1",model_name="llama3-8b"} 3.0
# HELP vllm:num_requests_waiting Number of requests waiting to be processed.
# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{engine="0",model_name="llama 3 8b"} 30.0
vllm:num_requests_waiting{engine="1",model_name="llama3-8b"} 7
vllm:num_requests_waiting_by_reason{reason="capacity"} 99
vllm:kv_cache_usage_perc{model_name="llama3-8b"} 0.875
vllm:num_requests_swapped{model_name="llama3-8b"} NaN
vllm:num_requests_running{model_name="x"} not-a-number
process_cpu_seconds_total 12.5
"""


def test_parse_sums_label_sets_and_skips_what_does_not_parse() -> None:
    found = parse_metrics(VLLM_PAGE)
    assert found == {
        "vllm:num_requests_running": 7.0,
        "vllm:num_requests_waiting": 37.0,
        "vllm:kv_cache_usage_perc": 0.875,
    }


def test_parse_reads_the_older_cache_name_and_pages_without_labels() -> None:
    found = parse_metrics("vllm:gpu_cache_usage_perc 0.5\nvllm:num_requests_waiting 2\n")
    assert found == {"vllm:gpu_cache_usage_perc": 0.5, "vllm:num_requests_waiting": 2.0}
    assert parse_metrics("") == {}


def test_the_demo_pool_page_parses_as_vllm() -> None:
    capacity = Capacity(DemoCapacity(max_running=4))
    capacity.running, capacity.waiting = 3, 5
    found = parse_metrics(capacity.metrics('odd "model"'))
    assert found["vllm:num_requests_waiting"] == 5
    assert found["vllm:num_requests_running"] == 3
    assert found["vllm:kv_cache_usage_perc"] == 0.75


def enabled(values: dict[str, object] | None = None) -> Settings:
    limits = {"soft_waiting": 4, "hard_waiting": 12}
    settings = load_settings()
    pools = [
        {**pool.model_dump(mode="json"), "load": {**limits, "metrics_path": "/metrics"}}
        for pool in settings.pools
    ]
    data = {
        "load.enabled": True,
        "load.poll_interval_ms": 100,
        "load.timeout_ms": 50,
        "pools": pools,
    }
    return override(settings, {**data, **(values or {})})


def reading(waiting: float | None, age: float = 0.0, **extra: object) -> EndpointReading:
    return EndpointReading(waiting=waiting, running=1.0, read_at=time.monotonic() - age, **extra)  # type: ignore[arg-type]


def endpoint(settings: Settings, pool: str) -> str:
    return settings.pool(pool).endpoints[0]


@pytest.mark.parametrize(
    ("waiting", "state", "pressure"),
    [(0, "ok", 0.0), (4, "ok", 0.0), (8, "busy", 0.5), (11, "busy", 0.875), (12, "full", 1.0)],
)
def test_states_follow_the_queue_limits(waiting: int, state: str, pressure: float) -> None:
    settings = enabled()
    board = LoadBoard()
    board.record("small", endpoint(settings, "small"), reading(waiting))
    load = board.view(settings)["small"]
    assert (load.state, load.pressure, load.waiting) == (state, pressure, waiting)
    assert load.skipped is (state == "full")
    assert load.brief() == f"waiting={waiting}"


def test_missing_and_stale_readings_are_unknown_never_idle() -> None:
    settings = enabled()
    board = LoadBoard()
    board.record("small", endpoint(settings, "small"), reading(0, age=0.31))  # 3 intervals: 0.3
    view = board.view(settings)
    assert view["small"].state == "unknown"
    assert view["small"].waiting is None
    assert view["small"].pressure == settings.load.unknown_pressure
    assert view["medium"].state == "unknown"  # never polled
    assert not view["small"].skipped


def test_a_page_without_the_queue_gauge_is_unknown() -> None:
    settings = enabled()
    board = LoadBoard()
    board.record("small", endpoint(settings, "small"), reading(None))
    assert board.view(settings)["small"].state == "unknown"


def test_refused_is_down_at_once_failures_after_several_polls() -> None:
    settings = enabled({"load.down_after_failures": 3})
    board = LoadBoard()
    board.record("small", endpoint(settings, "small"), EndpointReading(failures=1, refused=True))
    board.record("medium", endpoint(settings, "medium"), reading(0, failures=2))
    board.record("large", endpoint(settings, "large"), EndpointReading(failures=3))
    view = board.view(settings)
    assert view["small"].state == "down"
    assert view["small"].skipped
    # Two timeouts in a row: the last good reading still counts while it is fresh.
    assert view["medium"].state == "ok"
    assert view["large"].state == "down"


def test_a_pool_is_the_mean_of_its_live_endpoints() -> None:
    settings = enabled()
    pools = [p.model_dump(mode="json") for p in settings.pools]
    pools[0]["endpoints"] = ["127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3"]
    settings = override(settings, {"pools": pools})
    board = LoadBoard()
    board.record("small", "127.0.0.1:1", reading(10))
    board.record("small", "127.0.0.1:2", reading(2))
    board.record("small", "127.0.0.1:3", EndpointReading(failures=1, refused=True))
    load = board.view(settings)["small"]
    assert (load.state, load.waiting, load.endpoints_up, load.endpoints) == ("busy", 6, 2, 3)


def test_unmonitored_when_off_or_without_a_metrics_path() -> None:
    board = LoadBoard()
    assert {p.state for p in board.view(load_settings()).values()} == {"unmonitored"}
    settings = enabled()
    pools = [p.model_dump(mode="json") for p in settings.pools]
    pools[1]["load"]["metrics_path"] = None
    view = board.view(override(settings, {"pools": pools}))
    assert view["medium"].state == "unmonitored"
    assert view["medium"].pressure == 0
    assert view["small"].state == "unknown"


@pytest.fixture
async def metrics_server() -> AsyncIterator[tuple[str, dict[str, object]]]:
    """A metrics endpoint whose answer the test sets: a page, a status or a delay."""
    behaviour: dict[str, object] = {"page": VLLM_PAGE, "status": 200, "delay": 0.0}

    async def page(request: web.Request) -> web.Response:
        await asyncio.sleep(float(behaviour["delay"]))  # type: ignore[arg-type]
        return web.Response(text=str(behaviour["page"]), status=int(behaviour["status"]))  # type: ignore[call-overload]

    app = web.Application()
    app.router.add_get("/metrics", page)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"127.0.0.1:{port}", behaviour
    await runner.cleanup()


async def test_poll_endpoint_reads_fails_and_times_out(
    metrics_server: tuple[str, dict[str, object]],
) -> None:
    address, behaviour = metrics_server
    url = f"http://{address}/metrics"
    async with aiohttp.ClientSession() as session:
        good = await poll_endpoint(session, url, 1.0, EndpointReading())
        assert (good.waiting, good.running, good.kv_cache, good.failures) == (37, 7, 0.875, 0)
        behaviour["status"] = 500
        failed = await poll_endpoint(session, url, 1.0, good)
        assert failed.failures == 1
        assert not failed.refused
        assert failed.waiting == 37  # kept, and judged by its age
        behaviour["status"], behaviour["delay"] = 200, 0.5
        started = time.monotonic()
        late = await poll_endpoint(session, url, 0.05, failed)
        assert time.monotonic() - started < 0.4
        assert (late.failures, late.error) == (2, "timeout")
        refused = await poll_endpoint(
            session, f"http://127.0.0.1:{free_port()}/metrics", 1.0, EndpointReading()
        )
        assert refused.refused
        assert refused.failures == 1


async def test_poll_once_polls_every_endpoint_at_once(
    metrics_server: tuple[str, dict[str, object]],
) -> None:
    address, behaviour = metrics_server
    behaviour["delay"] = 0.1
    settings = enabled({"load.poll_interval_ms": 500, "load.timeout_ms": 300})
    pools = [{**p.model_dump(mode="json"), "endpoints": [address]} for p in settings.pools]
    pools[2]["endpoints"] = [f"127.0.0.1:{free_port()}"]  # nothing listens there
    settings = override(settings, {"pools": pools})
    board = LoadBoard()
    before = metrics.LOAD_POLLS.labels(pool="large", result="refused")._value.get()
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        await poll_once(board, settings, session)
    # Two slow endpoints polled together take one delay (0.1 s), not two.
    assert time.monotonic() - started < 0.17
    view = board.view(settings)
    assert view["small"].state == "full"  # 37 waiting, hard limit 12
    assert view["medium"].state == "full"
    assert view["large"].state == "down"
    assert metrics.LOAD_POLLS.labels(pool="large", result="refused")._value.get() == before + 1
    assert metrics.POOL_STATE.labels(pool="large", state="down")._value.get() == 1
    assert metrics.POOL_WAITING.labels(pool="small")._value.get() == 37


def test_a_reported_failure_is_down_until_a_newer_poll_reads_the_pool() -> None:
    settings = enabled()
    board = LoadBoard()
    board.record("small", endpoint(settings, "small"), reading(0))
    board.report_failure("small")
    assert board.view(settings)["small"].state == "down"
    assert board.view(settings)["medium"].state == "unknown"  # only the pool that failed
    board.record("small", endpoint(settings, "small"), reading(0))  # read after the failure
    assert board.view(settings)["small"].state == "ok"
