"""Load-aware routing through a real Envoy: a saturated pool's new traffic spills to the next
pool within one poll interval and comes back when its queue drains; a killed pool's traffic
goes to its fallback; a request carrying PII never spills to a pool that may not see it."""

from __future__ import annotations

import asyncio
import concurrent.futures
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from extproc_router.demo import TOKEN_DELAY_HEADER
from extproc_router.pool_load import parse_metrics
from extproc_router.settings import override
from extproc_router.stack import Stack, start_stack
from tests.e2e.test_faults import envoy_stat
from tests.helpers import free_port, free_port_settings

INTERVAL_S = 0.2
# A probe leaves this often: the time a change takes to show is measured to within it.
PROBE_EVERY_S = 0.04
# Scheduling noise on a shared 2-core machine (router, Envoy, pools and the test on it).
SLACK_S = 0.25
SIMPLE = "What is the capital of France?"
PII = "What is the capital of France? Reply to ann.smith@example.org please."

LOAD_AWARE = {
    "load.enabled": True,
    "load.poll_interval_ms": int(INTERVAL_S * 1000),
    "load.timeout_ms": 150,
    "pools.0.demo.max_running": 1,
    "pools.0.load.soft_waiting": 1,
    "pools.0.load.hard_waiting": 3,
    # Only small may see personal data the policy routes.
    "pools.0.compliant": True,
    "safety.pii.actions": {"ip_address": "allow", "email": "route"},
}


def admin(stack: Stack, path: str) -> httpx.Response:
    address = stack.settings.server.admin
    return httpx.get(f"http://{address.host}:{address.port}{path}", timeout=5)


def router_view(stack: Stack) -> dict[str, str]:
    return {pool: data["state"] for pool, data in admin(stack, "/load").json().items()}


def wait_until(check: object, timeout: float = 10.0) -> float:
    """Poll `check` (a callable) every 10 ms; the monotonic time it first held."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return time.monotonic()
        time.sleep(0.01)
    raise AssertionError(f"not true after {timeout} s: {check}")


def pool_metric(stack: Stack, pool: str, what: str = "waiting") -> float:
    endpoint = stack.settings.pool(pool).endpoints[0]
    page = httpx.get(f"http://{endpoint}/metrics", timeout=5).text
    return parse_metrics(page)[f"vllm:num_requests_{what}"]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    running = start_stack(
        free_port_settings(LOAD_AWARE), tmp_path_factory.mktemp("load"), log_to_files=True
    )
    try:
        wait_until(lambda: set(router_view(running).values()) == {"ok"})
        yield running
    finally:
        running.stop_all()


@asynccontextmanager
async def saturated(stack: Stack, requests: int = 6) -> AsyncIterator[None]:
    """`requests` long generations sent straight to the small pool (one runs, the rest
    wait); they leave its queue when the block ends (the client hangs up)."""
    endpoint = stack.settings.pool("small").endpoints[0]
    body = {"model": "llama3-8b", "messages": [{"role": "user", "content": "one two three"}]}
    client = httpx.AsyncClient(timeout=60)
    holds = [
        asyncio.create_task(
            client.post(
                f"http://{endpoint}/v1/chat/completions",
                json=body,
                headers={TOKEN_DELAY_HEADER: "20000"},
            )
        )
        for _ in range(requests)
    ]
    try:
        yield
    finally:
        for hold in holds:
            hold.cancel()
        await asyncio.gather(*holds, return_exceptions=True)
        await client.aclose()


@dataclass(frozen=True)
class Probe:
    sent: float
    status: int
    pool: str
    decision: str


async def probe(client: httpx.AsyncClient, url: str, prompt: str = SIMPLE) -> Probe:
    sent = time.monotonic()
    body = {"model": "auto", "messages": [{"role": "user", "content": prompt}]}
    try:
        response = await client.post(url + "/v1/chat/completions", json=body)
    except httpx.HTTPError as error:
        return Probe(sent, 0, type(error).__name__, "")
    return Probe(
        sent,
        response.status_code,
        response.headers.get("x-demo-pool", ""),
        response.headers.get("x-router-decision", ""),
    )


async def probes(client: httpx.AsyncClient, url: str, seconds: float) -> list[asyncio.Task[Probe]]:
    """A probe every PROBE_EVERY_S for `seconds`, each on its own (one stuck in a queue does
    not hold the next back)."""
    tasks = []
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        tasks.append(asyncio.create_task(probe(client, url)))
        await asyncio.sleep(PROBE_EVERY_S)
    return tasks


async def test_saturation_spills_within_one_poll_interval_and_comes_back(stack: Stack) -> None:
    async with httpx.AsyncClient(timeout=30) as client:
        assert (await probe(client, stack.url)).pool == "small"
        async with saturated(stack):
            full_at = await asyncio.to_thread(wait_until, lambda: pool_metric(stack, "small") >= 3)
            # Probes that reach small before the router notices wait in its queue until the
            # block ends; they must not hold later probes back, nor fail.
            first = await probes(client, stack.url, 1.0)
            done, _ = await asyncio.wait(first, timeout=0.5)
            spilled = [t.result() for t in done if t.result().pool == "medium"]
            assert spilled, "no probe went to medium while small was full"
            moved_at = min(p.sent for p in spilled)
        drained_at = await asyncio.to_thread(wait_until, lambda: pool_metric(stack, "small") == 0)
        saturated_phase = await asyncio.gather(*first)
        back = await asyncio.gather(*(await probes(client, stack.url, 0.8)))
    assert all(p.status == 200 for p in saturated_phase + back), "a client saw an error"
    assert moved_at - full_at <= INTERVAL_S + PROBE_EVERY_S + SLACK_S, moved_at - full_at
    after = [p for p in saturated_phase if p.sent >= moved_at]
    assert {p.pool for p in after} == {"medium"}, "went back to small while it was full"
    # The queue: the held requests, and the probes that reached small before the router knew.
    assert all("spillover=small->medium,waiting=" in p.decision for p in after)
    returned = [p for p in back if p.pool == "small"]
    assert returned, "never came back to small"
    returned_at = min(p.sent for p in returned)
    assert returned_at - drained_at <= INTERVAL_S + PROBE_EVERY_S + SLACK_S
    assert {p.pool for p in back if p.sent >= returned_at} == {"small"}
    assert "spillover" not in back[-1].decision
    text = admin(stack, "/metrics").text
    line = 'routing_spillovers_total{from_pool="small",to_pool="medium"}'
    assert float(text.split(line, 1)[1].split()[0]) >= len(after)


def test_pii_is_never_spilled_to_a_non_compliant_pool(stack: Stack) -> None:
    async def run() -> tuple[httpx.Response, httpx.Response]:
        async with saturated(stack):
            await asyncio.to_thread(wait_until, lambda: router_view(stack)["small"] == "full")
            async with httpx.AsyncClient(timeout=30) as client:
                body = {"model": "auto", "messages": [{"role": "user", "content": PII}]}
                refused = await client.post(stack.url + "/v1/chat/completions", json=body)
                body = {"model": "auto", "messages": [{"role": "user", "content": SIMPLE}]}
                spilled = await client.post(stack.url + "/v1/chat/completions", json=body)
        return refused, spilled

    refused, spilled = asyncio.run(run())
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "2"
    assert refused.headers["content-type"] == "application/json"
    error = refused.json()["error"]
    assert error["code"] == "pools_unavailable"
    assert "small: waiting=" in error["message"]
    assert "x-demo-pool" not in refused.headers  # no pool saw it: not medium, not large
    assert spilled.status_code == 200
    assert spilled.headers["x-demo-pool"] == "medium"  # without PII the spill is allowed
    wait_until(lambda: router_view(stack)["small"] == "ok")
    placed = httpx.post(
        stack.url + "/v1/chat/completions",
        json={"model": "auto", "messages": [{"role": "user", "content": PII}]},
        timeout=30,
    )
    assert placed.headers["x-demo-pool"] == "small"


def assert_failed_over(response: httpx.Response) -> None:
    """Answered by medium after small dropped it; the router learnt so from the answer."""
    assert (response.status_code, response.headers["x-demo-pool"]) == (200, "medium")
    assert response.json()["choices"][0]["message"]["content"] == SIMPLE
    assert response.headers["x-router-pool"] == "medium"
    assert "spillover=small->medium,envoy_failover" in response.headers["x-router-decision"]
    assert "x-router-served-by" not in response.headers


def test_a_killed_pool_s_traffic_goes_to_its_fallback(tmp_path: Path) -> None:
    """Traffic runs through the kill with no client error: a request the pool was answering
    as it died is retried by Envoy on the fallback (medium answers to small's model name), and
    new ones go there too, by Envoy's health view first and the router's polls within one
    interval. Once small is back, and Envoy no longer ejects it, its traffic returns."""
    settings = free_port_settings(
        {
            **LOAD_AWARE,
            "envoy.outlier_detection.interval_ms": 200,
            "envoy.outlier_detection.base_ejection_ms": 1000,
            "pools.0.demo.max_running": 4,  # the slow request must not queue the others
        }
    )
    # Each pool its own process, so one can be killed; the router and Envoy first.
    stack = start_stack(settings, tmp_path, log_to_files=True, components=("router", "envoy"))
    replies: list[Probe] = []
    url = stack.url + "/v1/chat/completions"
    body = {"model": "auto", "messages": [{"role": "user", "content": SIMPLE}]}
    try:
        for pool in settings.pools:
            stack.start(f"pool:{pool.name}")
        wait_until(lambda: set(router_view(stack).values()) == {"ok"})
        with (
            httpx.Client(timeout=30) as client,
            concurrent.futures.ThreadPoolExecutor(1) as executor,
        ):
            # 7 tokens at 300 ms each: small is still answering when it is killed.
            slow = executor.submit(client.post, url, json=body, headers={TOKEN_DELAY_HEADER: "300"})
            wait_until(lambda: pool_metric(stack, "small", "running") >= 1)
            started = time.monotonic()
            killed_at = 0.0
            while time.monotonic() - started < 2.0:
                if not killed_at and time.monotonic() - started > 0.5:
                    stack.stop("pool:small", sig=signal.SIGKILL)
                    killed_at = time.monotonic()
                sent = time.monotonic()
                response = client.post(url, json=body)
                headers = response.headers
                replies.append(
                    Probe(
                        sent,
                        response.status_code,
                        headers.get("x-demo-pool", ""),
                        headers.get("x-router-decision", ""),
                    )
                )
            in_flight = slow.result()
            state = router_view(stack)["small"]
            stack.start("pool:small")
            wait_until(lambda: router_view(stack)["small"] == "ok")
            # Envoy sends it traffic again when its ejection ends (1 s here).
            wait_until(lambda: client.post(url, json=body).headers["x-demo-pool"] == "small")
            returned = [client.post(url, json=body) for _ in range(10)]
    finally:
        stack.stop_all()
    assert_failed_over(in_flight)
    assert [(r.status_code, r.headers.get("x-demo-pool")) for r in returned] == [
        (200, "small")
    ] * 10
    before = [p for p in replies if p.sent < killed_at]
    after = [p for p in replies if p.sent >= killed_at]
    assert before
    assert {(p.status, p.pool) for p in before} == {(200, "small")}
    assert all("fallback=medium" in p.decision for p in before)
    assert {(p.status, p.pool) for p in after} == {(200, "medium")}  # 0 client errors
    # The router's own view follows within a poll: it routes to medium itself, saying why.
    moved = [p for p in after if "spillover=small->medium,down" in p.decision]
    assert moved
    moved_at = min(p.sent for p in moved)
    assert moved_at - killed_at <= INTERVAL_S + SLACK_S, moved_at - killed_at
    rest = [p for p in after if p.sent >= moved_at]
    assert len(rest) >= 20
    assert all("spillover=small->medium,down" in p.decision for p in rest)
    assert state == "down"


def test_envoy_retries_and_ejects_a_dead_endpoint_inside_a_pool(tmp_path: Path) -> None:
    """The router's fallback covers a whole pool; Envoy covers one endpoint: a request that
    finds a dead endpoint is retried on the live one, and the dead one is ejected."""
    dead = f"127.0.0.1:{free_port()}"
    settings = free_port_settings({**LOAD_AWARE, "envoy.outlier_detection.interval_ms": 200})
    live = settings.pool("small").endpoints[0]
    settings = override(settings, {"pools.0.endpoints": [live, dead]})
    stack = start_stack(settings, tmp_path, log_to_files=True, components=("router", "envoy"))
    # The small pool's process serves only the live endpoint (its own copy of the config).
    only_live = tmp_path / "small-live.yaml"
    data = yaml.safe_load(stack.config_path.read_text())
    data["pools"][0]["endpoints"] = [live]
    only_live.write_text(yaml.safe_dump(data))
    log = (tmp_path / "small-live.log").open("wb")
    command = [sys.executable, "-m", "extproc_router", "demo-pools", "--config", str(only_live)]
    small = subprocess.Popen([*command, "--pool", "small"], stdout=log, stderr=subprocess.STDOUT)
    log.close()
    ejections = "cluster.small.outlier_detection.ejections_enforced_total"
    try:
        stack.start("pool:medium")
        stack.start("pool:large")
        wait_until(lambda: set(router_view(stack).values()) == {"ok"})
        load = admin(stack, "/load").json()["small"]
        assert (load["endpoints_up"], load["endpoints"]) == (1, 2)  # a pool, not an endpoint
        body = {"model": "llama3-8b", "messages": [{"role": "user", "content": SIMPLE}]}
        url = stack.url + "/v1/chat/completions"
        with httpx.Client(timeout=30) as client:
            replies = [client.post(url, json=body) for _ in range(30)]
            wait_until(lambda: envoy_stat(stack, ejections) >= 1)
            later = [client.post(url, json=body) for _ in range(10)]
        retried = envoy_stat(stack, "cluster.small.upstream_rq_retry_success")
    finally:
        small.terminate()
        small.wait()
        stack.stop_all()
    assert [r.status_code for r in replies + later] == [200] * 40
    assert {r.headers["x-demo-endpoint"] for r in replies + later} == {live}
    assert retried >= 1
