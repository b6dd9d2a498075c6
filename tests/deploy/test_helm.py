"""The Helm chart, rendered by Helm's own Go engine (helm.py: helm-python-sdk binds Helm's SDK;
no helm binary or cluster is needed): its objects validate, match the kustomize base, and its values
produce a config the router accepts. A values key the chart's schema does not know, or a config
key the router does not know, fails."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
import yaml

from extproc_router.exceptions import ConfigError
from extproc_router.settings import SIGNALS, Settings, load_settings, parse_settings

from .crds import validate_custom
from .helm import HelmFailed, helm_lint, helm_render
from .tools import REPO, Object, by_kind, kustomize, validate_kubernetes

CHART = REPO / "deploy" / "helm" / "extproc-router"
BASE = REPO / "deploy" / "kubernetes" / "base"


def render(values: dict[str, Any] | None = None) -> list[Object]:
    manifests = helm_render(CHART, values or {}, name="llm")
    return [
        doc
        for path, text in sorted(manifests.items())
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def router_settings(objects: list[Object]) -> Settings:
    text = by_kind(objects, "ConfigMap")["llm-config"]["data"]["router.yaml"]
    return parse_settings(yaml.safe_load(text), source="the chart's ConfigMap")


DEFAULT = render()


def test_every_object_validates() -> None:
    for obj in DEFAULT:
        validate_kubernetes(obj)
    monitored = render({"monitoring": {"prometheus": {"serviceMonitor": {"enabled": True}}}})
    (monitor,) = [o for o in monitored if o["kind"] == "ServiceMonitor"]
    validate_custom(monitor)


def test_lint_finds_no_errors() -> None:
    assert helm_lint(CHART)["errors"] == []


def test_default_values_give_the_base_router_config() -> None:
    assert router_settings(DEFAULT) == load_settings(BASE / "router.yaml")
    envoy = by_kind(DEFAULT, "ConfigMap")["llm-envoy"]["data"]["envoy.yaml"]
    assert envoy == (BASE / "envoy.yaml").read_text()


def _pod(deployment: Object) -> Object:
    """The pod spec without what legitimately differs: names, labels, image references."""
    spec: Object = copy.deepcopy(deployment["spec"]["template"]["spec"])
    for container in [*spec["initContainers"], *spec["containers"]]:
        container.pop("image")
        container.pop("imagePullPolicy", None)
    for volume in spec["volumes"]:
        volume.get("configMap", {}).pop("name", None)
    spec.pop("serviceAccountName")
    for constraint in spec["topologySpreadConstraints"]:
        constraint.pop("labelSelector")
    return spec


def test_chart_renders_the_objects_of_the_kustomize_base() -> None:
    base = [*kustomize(BASE), *kustomize(REPO / "deploy/kubernetes/autoscaling")]
    base = [o for o in base if not o["metadata"]["name"].startswith("vllm-")]
    assert sorted(o["kind"] for o in DEFAULT) == sorted(o["kind"] for o in base)
    (chart_deployment,) = by_kind(DEFAULT, "Deployment").values()
    (base_deployment,) = by_kind(base, "Deployment").values()
    assert _pod(chart_deployment) == _pod(base_deployment)
    assert chart_deployment["spec"]["replicas"] == base_deployment["spec"]["replicas"] == 3
    (chart_hpa,) = by_kind(DEFAULT, "HorizontalPodAutoscaler").values()
    (base_hpa,) = by_kind(base, "HorizontalPodAutoscaler").values()
    assert chart_hpa["spec"]["metrics"] == base_hpa["spec"]["metrics"]
    for kind in ("Service", "PodDisruptionBudget", "NetworkPolicy"):
        (chart_obj,) = by_kind(DEFAULT, kind).values()
        (base_obj,) = by_kind(base, kind).values()
        chart_spec, base_spec = chart_obj["spec"], base_obj["spec"]
        for spec in (chart_spec, base_spec):
            spec.pop("selector", None)
            spec.pop("podSelector", None)
        assert chart_spec == base_spec, kind


def test_values_mirror_the_router_schema() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert set(schema["properties"]["signals"]["properties"]) == set(SIGNALS)
    assert set(schema["properties"]["weights"]["properties"]) == set(SIGNALS)
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert set(values["signals"]) == set(values["weights"]) == set(SIGNALS)
    deployment = by_kind(DEFAULT, "Deployment")["llm"]
    router = deployment["spec"]["template"]["spec"]["initContainers"][0]
    assert router["resources"] == values["router"]["resources"]
    assert deployment["spec"]["replicas"] == values["router"]["replicas"]


def test_disabled_signals_cast_no_vote_and_decide_nothing() -> None:
    settings = router_settings(
        render(
            {
                "signals": {
                    "keyword": {"enabled": False},
                    "domain": {"enabled": False},
                    "embedding": {"enabled": True, "threshold": 0.5},
                    "complexity": {"enabled": True, "token_thresholds": [40, 200]},
                }
            }
        )
    )
    routing = settings.routing
    assert routing.weights["keyword"] == 0
    assert routing.weights["domain"] == 0
    assert routing.weights["embedding"] == 0.4
    assert routing.keyword_rules == ()
    assert routing.domains.floor == 0
    assert {route.threshold for route in routing.embedding_routes} == {0.5}
    assert routing.complexity.token_thresholds == (40, 200)
    embedding_off = router_settings(render({"signals": {"embedding": {"enabled": False}}}))
    assert embedding_off.routing.embedding_routes == ()
    assert embedding_off.routing.weights["embedding"] == 0


def test_config_values_merge_into_the_router_config() -> None:
    objects = render({"config": {"safety": {"pii": {"default_action": "block"}}}})
    assert router_settings(objects).safety.pii.default_action == "block"
    # The pods roll when the config changes.
    old = by_kind(DEFAULT, "Deployment")["llm"]["spec"]["template"]["metadata"]["annotations"]
    new = by_kind(objects, "Deployment")["llm"]["spec"]["template"]["metadata"]["annotations"]
    assert old["checksum/config"] != new["checksum/config"]


def test_a_config_key_the_router_does_not_know_fails() -> None:
    objects = render({"config": {"routing": {"confidence_treshold": 0.7}}})
    with pytest.raises(ConfigError, match=r"routing\.confidence_treshold"):
        router_settings(objects)


@pytest.mark.parametrize(
    "values",
    [
        {"signal": {}},
        {"signals": {"sentiment": {"enabled": True}}},
        {"weights": {"domian": 0.3}},
        {"config": {"pools": []}},
        {"config": {"envoy": {"message_timeout_ms": 5000}}},
    ],
    ids=["top-level", "signal", "weight", "pools", "envoy"],
)
def test_values_the_chart_does_not_know_fail(values: dict[str, Any]) -> None:
    with pytest.raises(HelmFailed, match="HelmValuesError"):
        render(values)
