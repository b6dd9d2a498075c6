import re
from pathlib import Path

import pytest
import yaml

from extproc_router.exceptions import ConfigError
from extproc_router.settings import EXAMPLE_CONFIG, load_settings, override, parse_settings

REPO = Path(__file__).resolve().parents[2]


def example_data() -> dict:  # type: ignore[type-arg]
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    assert isinstance(data, dict)
    return data


def test_embedded_example_is_the_shipped_config_file() -> None:
    assert (REPO / "config" / "example.yaml").read_text() == EXAMPLE_CONFIG.read_text()
    settings = load_settings()
    assert [pool.name for pool in settings.pools] == ["small", "medium", "large"]
    assert settings.routing.default_pool == "small"
    assert settings.envoy.cluster_header == "x-router-cluster"


def test_errors_name_the_file_and_every_bad_key(tmp_path: Path) -> None:
    data = example_data()
    data["envoy"]["message_timeout_ms"] = 50
    data["pools"][1]["endpoints"] = ["nowhere"]
    data["routing"]["default_pool"] = "huge"
    data["surprise"] = 1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    text = str(caught.value)
    assert str(path) in text
    assert "envoy.message_timeout_ms" in text
    assert "pools.1.endpoints" in text
    assert "surprise" in text


def test_cross_references_are_checked() -> None:
    data = example_data()
    data["routing"]["default_pool"] = "huge"
    data["routing"]["keyword_rules"][0]["target"] = "nowhere"
    data["routing"]["embedding_routes"][1]["target"] = "huge"
    data["routing"]["preferences"]["code"] = "tiny"
    data["routing"]["domains"]["capabilities"]["xl"] = {"math": 0.9}
    data["pools"][1]["aliases"] = ["llama3-8b"]
    with pytest.raises(ConfigError) as caught:
        parse_settings(data, source="x.yaml")
    problems = "\n".join(caught.value.problems)
    assert "routing.default_pool: no pool named 'huge'" in problems
    assert "routing.keyword_rules.0.target: 'nowhere' is neither a pool nor a tier" in problems
    assert "routing.embedding_routes.1.target: 'huge' is neither a pool nor a tier" in problems
    assert "routing.preferences.code: 'tiny' is neither a pool nor a tier" in problems
    assert "routing.domains.capabilities: no pool named 'xl'" in problems
    assert "'llama3-8b' is also served by 'small'" in problems


def test_duplicate_pool_names_and_auto_alias_clash() -> None:
    data = example_data()
    data["pools"][2]["name"] = "small"
    data["routing"]["auto_models"] = ["auto", "gpt-5.2"]
    with pytest.raises(ConfigError) as caught:
        parse_settings(data)
    problems = "\n".join(caught.value.problems)
    assert "'small' is used twice" in problems
    assert "routing.auto_models: 'gpt-5.2' is a served model name" in problems


@pytest.mark.parametrize(
    ("text", "expected"),
    [("pools: [1, 2", "invalid YAML"), ("- a\n- b\n", "expected a mapping")],
)
def test_unparseable_files(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_settings(path)


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(tmp_path / "absent.yaml")


def test_override_revalidates() -> None:
    settings = load_settings()
    moved = override(settings, {"envoy.listen.port": 18080})
    assert moved.envoy.listen.port == 18080
    assert settings.envoy.listen.port == 8080
    with pytest.raises(ConfigError, match=r"envoy\.listen\.port"):
        override(settings, {"envoy.listen.port": 70000})


def test_header_name_must_be_lowercase() -> None:
    data = example_data()
    data["envoy"]["cluster_header"] = "X-Router"
    with pytest.raises(ConfigError, match=r"envoy\.cluster_header"):
        parse_settings(data)


@pytest.mark.parametrize(
    ("path", "value", "expected"),
    [
        (("routing", "weights"), {"keyword": 0.1, "vibes": 0.5}, "unknown signals ['vibes']"),
        (("routing", "preferences"), {"poetry": "small"}, "unknown preferences ['poetry']"),
        (("routing", "domains", "capabilities"), {"small": {"astrology": 0.5}}, "unknown domain"),
        (("routing", "keyword_rules"), [{"name": "x", "target": "small"}], "needs keywords"),
        (
            ("routing", "keyword_rules"),
            [{"name": "x", "target": "small", "patterns": ["("]}],
            "not a regular expression",
        ),
        (("routing", "confidence_threshold"), 1.5, "routing.confidence_threshold"),
        (("model", "variant"), "int4", "model.variant"),
    ],
)
def test_signal_settings_are_validated(path: tuple[str, ...], value: object, expected: str) -> None:
    data = example_data()
    node = data
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = value
    with pytest.raises(ConfigError, match=re.escape(expected)):
        parse_settings(data)


@pytest.mark.parametrize("path", sorted((REPO / "config").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_configs_are_valid(path: Path) -> None:
    assert load_settings(path).pools


def test_baseline_price_defaults_to_the_priciest_pool() -> None:
    settings = override(load_settings(), {"telemetry.baseline": None})
    assert settings.baseline_price.model == "gpt-5.2"
    assert settings.baseline_price.output_per_1k == 0.06


def test_tracing_endpoint_must_be_host_port() -> None:
    with pytest.raises(ConfigError) as caught:
        override(load_settings(), {"telemetry.tracing.endpoint": "http://collector"})
    assert "telemetry.tracing.endpoint" in str(caught.value)


def test_load_aware_keys_are_checked_and_named() -> None:
    data = example_data()
    data["pools"][0]["load"] = {"soft_waiting": 10, "hard_waiting": 5}
    data["pools"][1]["demo"] = {"max_running": -1}
    data["pools"][2]["load"] = {"metrics_path": "metrics"}
    data["load"] = {"enabled": True, "poll_interval_ms": 100, "timeout_ms": 500}
    data["envoy"]["retries"] = {"retry_on": "5xx; drop table", "num_retries": 50}
    with pytest.raises(ConfigError) as caught:
        parse_settings(data)
    problems = "\n".join(caught.value.problems)
    assert "pools.0.load: soft_waiting must be below hard_waiting" in problems
    assert "pools.1.demo.max_running" in problems
    assert "pools.2.load.metrics_path: String should match pattern '^/'" in problems
    assert "load: timeout_ms must not exceed poll_interval_ms" in problems
    assert "envoy.retries.retry_on" in problems
    assert "envoy.retries.num_retries" in problems


def test_load_aware_defaults() -> None:
    settings = load_settings()
    assert settings.load.enabled is False  # on where the pools export vLLM's metrics
    assert settings.load.stale_after_s == 3.0
    assert override(settings, {"load.stale_after_ms": 700}).load.stale_after_s == 0.7
    pool = settings.pool("small")
    assert (pool.load.metrics_path, pool.load.soft_waiting, pool.load.hard_waiting) == (
        "/metrics",
        8,
        32,
    )
    assert pool.demo.max_running == 0


def test_the_reference_config_loads_with_load_aware_routing() -> None:
    settings = load_settings(REPO / "config" / "reference.yaml")
    assert settings.load.enabled is True
    assert settings.pool("small").load.hard_waiting == 32
