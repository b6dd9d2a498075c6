"""Autoscaling on queue depth: the HPAs read custom metrics that the prometheus-adapter rules
shipped beside them define, from series the router and vLLM export; promtool checks the
queries the adapter will send Prometheus."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import REGISTRY

import extproc_router.metrics

from .test_helm import DEFAULT as CHART_OBJECTS
from .tools import REPO, Object, by_kind, kustomize, run, tool

RULES: list[dict[str, Any]] = yaml.safe_load(
    (REPO / "deploy/kubernetes/autoscaling/prometheus-adapter/config.yaml").read_text()
)["rules"]
PRODUCTION = kustomize(REPO / "deploy/kubernetes/overlays/production")
# The queue metric vLLM's OpenAI server exports (its /metrics, Prometheus spelling).
VLLM_QUEUE = "vllm:num_requests_waiting"


def _series(rule: dict[str, Any]) -> str:
    query: str = rule["seriesQuery"]
    return query.split("{", maxsplit=1)[0]


def _custom_metrics(hpa: Object) -> list[tuple[str, Object]]:
    return [(m["pods"]["metric"]["name"], m["pods"]["target"]) for m in hpa["spec"]["metrics"]]


def test_every_hpa_metric_is_an_adapter_rule() -> None:
    served = {rule["name"]["as"]: rule for rule in RULES}
    hpas = [*by_kind(PRODUCTION, "HorizontalPodAutoscaler").values()]
    hpas += by_kind(CHART_OBJECTS, "HorizontalPodAutoscaler").values()
    assert len(hpas) == 5
    for hpa in hpas:
        for name, _ in _custom_metrics(hpa):
            rule = served[name]
            assert re.fullmatch(rule["name"]["matches"], _series(rule))


def test_rules_read_series_that_are_exported() -> None:
    assert extproc_router.metrics.STREAMS_ACTIVE is not None
    exported = {family.name for family in REGISTRY.collect()}
    for rule in RULES:
        series = _series(rule)
        assert series == VLLM_QUEUE or series in exported, series
        # Per pod and namespace: what a Pods metric on an HPA asks for.
        assert set(rule["resources"]["overrides"]) == {"namespace", "pod"}


def test_pools_scale_on_their_queue_router_on_its_streams() -> None:
    hpas = by_kind(PRODUCTION, "HorizontalPodAutoscaler")
    deployments = by_kind(PRODUCTION, "Deployment")
    for name, hpa in hpas.items():
        assert hpa["spec"]["scaleTargetRef"]["name"] in deployments
        ((metric, target),) = _custom_metrics(hpa)
        if name.startswith("vllm-"):
            assert (metric, target) == (
                "vllm_num_requests_waiting",
                {"type": "AverageValue", "averageValue": "10"},
            )
            assert (hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (4, 20)
        else:
            assert metric == "extproc_streams_active"
            assert hpa["spec"]["minReplicas"] == deployments[name]["spec"]["replicas"] == 3
    assert {n for n in deployments if n.startswith("vllm-")} == {
        n for n in hpas if n.startswith("vllm-")
    }


def _rules_file(tmp_path: Path, queries: list[str]) -> Path:
    path = tmp_path / "rules.yaml"
    rules = [{"record": f"check:query{i}", "expr": q} for i, q in enumerate(queries)]
    path.write_text(yaml.safe_dump({"groups": [{"name": "adapter", "rules": rules}]}))
    return path


def _expand(rule: dict[str, Any]) -> str:
    """The query the adapter sends for two pods of one namespace."""
    query: str = rule["metricsQuery"]
    return (
        query.replace("<<.Series>>", _series(rule))
        .replace("<<.LabelMatchers>>", 'namespace="llm",pod=~"a|b"')
        .replace("<<.GroupBy>>", "pod")
    )


def test_promtool_accepts_the_adapter_queries(tmp_path: Path) -> None:
    queries = [_expand(rule) for rule in RULES]
    assert all("<<" not in q for q in queries), queries
    result = run([tool("promtool"), "check", "rules", str(_rules_file(tmp_path, queries))])
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_rejects_a_broken_query(tmp_path: Path) -> None:
    result = run([tool("promtool"), "check", "rules", str(_rules_file(tmp_path, ["sum(x by"]))])
    assert result.returncode != 0


@pytest.mark.parametrize("rule", RULES, ids=_series)
def test_series_query_is_a_valid_selector(rule: dict[str, Any], tmp_path: Path) -> None:
    result = run(
        [tool("promtool"), "check", "rules", str(_rules_file(tmp_path, [rule["seriesQuery"]]))]
    )
    assert result.returncode == 0, result.stdout + result.stderr
