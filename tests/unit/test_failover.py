"""Failover inside Envoy: the router names a fallback pool per request (one that answers to the
pool's model name and may take this request as prepared), and the rendered config has the
aggregate cluster and retry priority that act on it."""

from __future__ import annotations

import re
from typing import Any

import pytest

from extproc_router.envoy_config import render_envoy
from extproc_router.exceptions import ConfigError
from extproc_router.istio import virtual_service
from extproc_router.pool_load import LoadBoard, PoolLoad
from extproc_router.request import parse_body
from extproc_router.routing import Decision
from extproc_router.settings import Settings, load_settings, override, parse_settings
from extproc_router.spillover import allowed_pools, failed_over, fallback_pool
from tests.unit.test_settings import example_data
from tests.unit.test_spillover import (
    PII,
    SIMPLE,
    body,
    decision,
    fill,
    idle,
    pipeline,
    settings_with,
)

SETTINGS = load_settings()


def always(pool: object) -> bool:
    return True


def test_the_fallback_answers_to_the_pool_s_model_name() -> None:
    # The shipped config: medium accepts small's model name, large accepts medium's.
    assert [(p.name, f.name) for p, f in SETTINGS.failover_pairs()] == [
        ("small", "medium"),
        ("medium", "large"),
    ]
    pools = SETTINGS.pools
    assert fallback_pool(decision("small"), pools, {}, always) == SETTINGS.pool("medium")
    assert fallback_pool(decision("medium"), pools, {}, always) == SETTINGS.pool("large")
    assert fallback_pool(decision("large"), pools, {}, always) is None
    assert decision("small").cluster == "small"  # until the pipeline names a fallback


def test_no_fallback_that_is_down_refused_or_below_the_floor() -> None:
    pools = SETTINGS.pools
    down = {"medium": PoolLoad("medium", "down", pressure=1.0)}
    assert fallback_pool(decision("small"), pools, down, always) is None
    busy = {"medium": PoolLoad("medium", "busy", 3.0, pressure=0.5)}
    assert fallback_pool(decision("small"), pools, busy, always) == SETTINGS.pool("medium")
    assert fallback_pool(decision("small"), pools, {}, lambda pool: False) is None
    floored = decision("small", excluded=frozenset({"medium"}))
    assert fallback_pool(floored, allowed_pools(floored, pools), {}, always) is None


async def run(settings: Settings, prompt: str, model: str = "auto") -> Decision:
    board = LoadBoard()
    idle(board, settings)
    request = parse_body("chat_completions", body(prompt, model))
    return (await pipeline(settings, board).run(request, "a")).decision


async def test_the_decision_names_the_failover_cluster_and_says_so() -> None:
    chosen = await run(settings_with(), SIMPLE)
    assert (chosen.pool.name, chosen.cluster) == ("small", "small~medium")
    assert "fallback=medium" in chosen.header()
    assert chosen.explanation()["fallback"] == "medium"
    named = await run(settings_with(), SIMPLE, model="llama3-8b")
    assert (named.cluster, named.fallback) == ("small", None)  # a named model never moves


async def test_an_answer_from_the_fallback_moves_the_decision_there() -> None:
    chosen = await run(settings_with(), SIMPLE)
    assert failed_over(chosen, "small") is None  # answered where it was sent
    assert failed_over(chosen, "") is None  # no header: not routed through our Envoy config
    assert failed_over(chosen, "large") is None  # not the fallback it named
    moved = failed_over(chosen, "medium")
    assert moved is not None
    assert (moved.pool.name, moved.model, moved.fallback) == ("medium", "gemini-flash", None)
    assert "spillover=small->medium,envoy_failover" in moved.header()
    assert moved.explanation()["spillover"] == "spillover: small\u2192medium, envoy_failover"


async def test_a_down_fallback_is_not_named() -> None:
    settings = settings_with()
    board = LoadBoard()
    idle(board, settings)
    fill(board, settings, "medium", 1000)  # above its hard limit: skipped
    outcome = await pipeline(settings, board).run(parse_body("chat_completions", body(SIMPLE)), "a")
    assert outcome.decision.cluster == "small"


async def test_pii_fails_over_only_where_the_policy_is_the_same() -> None:
    # Redacted for small, the same for medium: the redacted body may go there.
    same = await run(settings_with({"safety.pii.actions": {"email": "redact"}}), PII)
    assert same.fallback is not None
    pool = same.pool.name
    # The chosen pool may see the address, its fallback may not: the unredacted body must not
    # reach it.
    differ = settings_with(
        {
            "safety.pii.actions": {"email": "redact"},
            "safety.pii.pool_actions": {pool: {"email": "allow"}},
        }
    )
    assert (await run(differ, PII)).cluster == pool


async def test_pii_routed_to_compliant_pools_fails_over_to_compliant_ones_only() -> None:
    pools = [p.model_dump(mode="json") for p in SETTINGS.pools]
    pools[0]["compliant"] = True
    routed: dict[str, object] = {"pools": pools, "safety.pii.actions": {"email": "route"}}
    only_small = await run(settings_with(routed), PII)
    assert (only_small.pool.name, only_small.method, only_small.cluster) == (
        "small",
        "pii",
        "small",
    )
    # Already on a compliant pool (the vote's choice), still only a compliant fallback.
    pools[1]["compliant"] = True
    both = await run(settings_with(routed), PII)
    assert (both.pool.name, both.cluster) == ("medium", "medium")
    pools[2]["compliant"] = True
    every = await run(settings_with(routed), PII)
    assert (every.pool.name, every.cluster) == ("medium", "medium~large")


@pytest.mark.parametrize(
    ("accepts", "expected"),
    [
        (["llama3-8b"], "pools.small.accepts: 'llama3-8b' is not another pool's model"),
        (["nobody"], "pools.small.accepts: 'nobody' is not another pool's model"),
    ],
)
def test_accepts_names_another_pool_s_model(accepts: list[str], expected: str) -> None:
    data = example_data()
    data["pools"][0]["accepts"] = accepts
    with pytest.raises(ConfigError) as caught:
        parse_settings(data)
    assert expected in "\n".join(caught.value.problems)


def clusters(settings: Settings) -> dict[str, Any]:
    return {c["name"]: c for c in render_envoy(settings)["static_resources"]["clusters"]}


def routes(settings: Settings) -> Any:
    resources = render_envoy(settings)["static_resources"]
    hcm = resources["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]
    return hcm["route_config"]["virtual_hosts"][0]["routes"]


def test_envoy_gets_an_aggregate_cluster_per_pair_and_a_retry_priority() -> None:
    rendered = clusters(SETTINGS)
    aggregate = rendered["small~medium"]
    assert aggregate["cluster_type"]["typed_config"]["clusters"] == ["small", "medium"]
    assert "medium~large" in rendered
    assert "small~large" not in rendered
    policy = routes(SETTINGS)[0]["route"]["retry_policy"]
    assert policy["retry_priority"]["typed_config"]["update_frequency"] == 2  # the last retry
    no_pairs = override(SETTINGS, {"pools.1.accepts": [], "pools.2.accepts": []})
    assert not [name for name in clusters(no_pairs) if "~" in name]
    assert "retry_priority" not in routes(no_pairs)[0]["route"]["retry_policy"]


def test_istio_routes_a_failover_cluster_to_its_pool() -> None:
    matches = {
        route["name"]: route["match"][0]["headers"]["x-router-cluster"]["regex"]
        for route in virtual_service(SETTINGS)["spec"]["http"]
        if "match" in route
    }
    assert re.match(matches["small"], "small~medium")
    assert re.match(matches["small"], "small")
    assert not re.match(matches["small"], "smaller")
    assert not re.match(matches["medium"], "small~medium")


def test_envoy_tells_the_router_which_pool_answered() -> None:
    """Each pool endpoint carries its pool's name; the routed routes hand it back on the
    answer (the default route, which the router did not route, does not)."""
    small = clusters(SETTINGS)["small"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert small["metadata"] == {"filter_metadata": {"extproc_router": {"pool": "small"}}}
    added = {route["name"]: route.get("response_headers_to_add", []) for route in routes(SETTINGS)}
    assert added["routed"] == [
        {
            "header": {
                "key": "x-router-served-by",
                "value": "%UPSTREAM_METADATA(extproc_router:pool)%",
            },
            "append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
        }
    ]
    assert added["default"] == []
