"""The Envoy configs we ship are what `render-envoy` writes, and Envoy itself accepts them."""

from pathlib import Path

import pytest
import yaml

from extproc_router.envoy_config import render_envoy, render_envoy_yaml
from extproc_router.exceptions import ConfigError
from extproc_router.settings import load_settings, override
from tests.helpers import envoy_validate

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted((REPO / "envoy").glob("*.yaml"))


validate = envoy_validate


@pytest.mark.parametrize("path", SHIPPED, ids=[p.name for p in SHIPPED])
def test_shipped_envoy_configs_validate(path: Path) -> None:
    result = validate(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "OK" in result.stdout


def test_shipped_config_is_rendered_from_the_example() -> None:
    shipped = (REPO / "envoy" / "envoy.yaml").read_text()
    assert shipped == render_envoy_yaml(load_settings()), "run `make render-envoy`"


def test_fail_closed_render_validates(tmp_path: Path) -> None:
    settings = override(
        load_settings(), {"envoy.failure_mode_allow": False, "envoy.status_on_error": 503}
    )
    path = tmp_path / "closed.yaml"
    path.write_text(render_envoy_yaml(settings))
    assert validate(path).returncode == 0
    ext_proc = _filter(render_envoy(settings), "envoy.filters.http.ext_proc")
    assert ext_proc["failure_mode_allow"] is False
    assert ext_proc["status_on_error"] == {"code": 503}


def test_tracing_render_validates_and_points_at_the_collector(tmp_path: Path) -> None:
    settings = override(
        load_settings(),
        {"telemetry.tracing.enabled": True, "telemetry.tracing.endpoint": "otel.example:4317"},
    )
    path = tmp_path / "traced.yaml"
    path.write_text(render_envoy_yaml(settings))
    assert validate(path).returncode == 0
    config = render_envoy(settings)
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    provider = hcm["typed_config"]["tracing"]["provider"]
    assert provider["name"] == "envoy.tracers.opentelemetry"
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    collector = clusters["opentelemetry_collector"]
    assert collector["type"] == "STRICT_DNS"
    assert (
        "tracing"
        not in render_envoy(load_settings())["static_resources"]["listeners"][0]["filter_chains"][
            0
        ]["filters"][0]["typed_config"]
    )


def test_a_broken_config_fails_validation(tmp_path: Path) -> None:
    config = render_envoy(load_settings())
    config["static_resources"]["clusters"][0]["type"] = "NOT_A_TYPE"
    path = tmp_path / "broken.yaml"
    path.write_text(yaml.safe_dump(config))
    assert validate(path).returncode != 0


def _filter(config: dict, name: str) -> dict:  # type: ignore[type-arg]
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    for http_filter in hcm["typed_config"]["http_filters"]:
        if http_filter["name"] == name:
            return http_filter["typed_config"]  # type: ignore[no-any-return]
    raise KeyError(name)


def test_rendered_choices_that_envoy_defaults_get_wrong() -> None:
    settings = load_settings()
    config = render_envoy(settings)
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    routes = hcm["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    assert routes[0]["route"]["cluster_header"] == "x-router-cluster"
    assert routes[0]["route"]["timeout"] == "0s"
    assert routes[1]["route"]["cluster"] == "small"  # fail-open lands on the default pool
    filters = [f["name"] for f in hcm["typed_config"]["http_filters"]]
    assert filters == ["envoy.filters.http.ext_proc", "envoy.filters.http.router"]
    early = hcm["typed_config"]["early_header_mutation_extensions"][0]["typed_config"]
    assert early["mutations"] == [
        {"remove": "x-router-cluster"},
        {"remove_on_match": {"key_matcher": {"prefix": "x-router-"}}},
    ]
    ext_proc = _filter(config, "envoy.filters.http.ext_proc")
    assert ext_proc["processing_mode"]["request_body_mode"] == "BUFFERED"
    assert ext_proc["processing_mode"]["response_body_mode"] == "NONE"
    assert ext_proc["message_timeout"] == "2s"
    # The router streams a response body to itself only for requests it routed.
    assert ext_proc["allow_mode_override"] is True
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    pools = {"small", "medium", "large"}
    assert set(clusters) == {"extproc_router", *pools, "small~medium", "medium~large"}
    assert config["static_resources"]["listeners"][0]["per_connection_buffer_limit_bytes"] == (
        settings.envoy.max_request_bytes
    )


def test_hostnames_use_dns_clusters() -> None:
    settings = load_settings()
    pools = [p.model_dump(mode="json") for p in settings.pools]
    pools[0]["endpoints"] = ["vllm-small.llm.svc:8000"]
    config = render_envoy(override(settings, {"pools": pools}))
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    assert clusters["small"]["type"] == "STRICT_DNS"
    assert clusters["medium"]["type"] == "STATIC"


def test_guarded_routes_render_fail_closed_and_validate(tmp_path: Path) -> None:
    guard = {"prefix": "/", "header": "x-tenant", "value": "hospital"}
    settings = override(load_settings(), {"envoy.guarded_routes": [guard]})
    path = tmp_path / "guarded.yaml"
    path.write_text(render_envoy_yaml(settings))
    result = validate(path)
    assert result.returncode == 0, result.stdout + result.stderr
    routes = render_envoy(settings)["static_resources"]["listeners"][0]["filter_chains"][0][
        "filters"
    ][0]["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    assert [route["name"] for route in routes] == [
        "guarded_0_routed",
        "guarded_0_default",
        "routed",
        "default",
    ]
    for route in routes[:2]:
        override_ = route["typed_per_filter_config"]["envoy.filters.http.ext_proc"]
        assert override_["overrides"] == {"failure_mode_allow": False}
        assert {"name": "x-tenant", "string_match": {"exact": "hospital"}} in route["match"][
            "headers"
        ]
    assert "typed_per_filter_config" not in routes[2]


def test_a_guard_names_a_valid_header() -> None:
    with pytest.raises(ConfigError, match="guarded_routes"):
        override(load_settings(), {"envoy.guarded_routes": [{"header": "X Tenant"}]})


def test_pool_clusters_have_outlier_detection_bounded_retries_and_breakers(
    tmp_path: Path,
) -> None:
    """The shipped config's resilience, per pool, from the router config, and Envoy takes it."""
    settings = load_settings()
    pools = [p.model_dump(mode="json") for p in settings.pools]
    pools[2]["circuit_breaker"] = {"max_requests": 64, "retry_budget_percent": 10}
    settings = override(
        settings,
        {
            "pools": pools,
            "envoy.retries.num_retries": 3,
            "envoy.outlier_detection.consecutive_5xx": 7,
        },
    )
    config = render_envoy(settings)
    path = tmp_path / "resilient.yaml"
    path.write_text(render_envoy_yaml(settings))
    result = validate(path)
    assert result.returncode == 0, result.stdout + result.stderr
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    for name in ("small", "medium", "large"):
        outlier = clusters[name]["outlier_detection"]
        assert outlier["consecutive_5xx"] == 7
        assert outlier["split_external_local_origin_errors"] is True
        assert outlier["consecutive_local_origin_failure"] == 3
    large = clusters["large"]["circuit_breakers"]["thresholds"][0]
    assert large["max_requests"] == 64
    assert large["retry_budget"]["budget_percent"] == {"value": 10.0}
    assert clusters["small"]["circuit_breakers"]["thresholds"][0]["max_requests"] == 10_000
    assert "outlier_detection" not in clusters["extproc_router"]
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    for route in hcm["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]:
        policy = route["route"]["retry_policy"]
        assert policy["retry_on"] == "5xx,reset,connect-failure"
        assert policy["num_retries"] == 3
        assert policy["retry_host_predicate"][0]["name"].endswith("previous_hosts")
    shipped = (REPO / "envoy" / "envoy.yaml").read_text()
    assert "retry_on: 5xx,reset,connect-failure" in shipped
    assert "&id" not in shipped  # one policy per route, not a YAML alias


def test_retries_can_be_turned_off() -> None:
    config = render_envoy(override(load_settings(), {"envoy.retries.num_retries": 0}))
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    routes = hcm["typed_config"]["route_config"]["virtual_hosts"][0]["routes"]
    assert all("retry_policy" not in route["route"] for route in routes)
