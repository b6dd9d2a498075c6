"""The shipped Grafana dashboard parses, and every panel asks for metrics the router exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

import extproc_router.metrics

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "extproc-router.json"

_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gauge": ("",),
}
_PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or"}


def _exported() -> set[str]:
    assert extproc_router.metrics.DECISIONS  # the module registers its instruments on import
    names = set()
    for family in REGISTRY.collect():
        names |= {family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",))}
    return names


def _metric_names(expr: str) -> set[str]:
    """Identifiers in a PromQL expression that name series (not functions, labels, keywords)."""
    expr = re.sub(r'"[^"]*"', "", expr)  # label values
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\b(by|without)\s*\([^)]*\)", "", expr)  # grouping labels
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", expr):
        rest = expr[match.end() :].lstrip()
        if rest.startswith("(") or match.group() in _PROMQL_WORDS:
            continue
        names.add(match.group())
    return names


def test_every_panel_names_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exported = _exported()
    used: set[str] = set()
    assert dashboard["panels"]
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = _metric_names(target["expr"])
            assert names, target["expr"]
            unknown = names - exported
            assert not unknown, f"{panel['title']}: {sorted(unknown)} are not exported"
            used |= names
    # What the issue asks dashboards to answer: traffic, why, signal time, cost, blocks, p99.
    for required in (
        "routing_decisions_total",
        "signal_latency_ms_bucket",
        "total_cost_saved_usd",
        "requests_blocked_total",
        "pii_detections_total",
        "extproc_message_latency_ms_bucket",
    ):
        assert required in used, required


def test_the_name_check_itself_catches_an_unknown_metric() -> None:
    names = _metric_names('histogram_quantile(0.99, sum by (le) (rate(nope_ms_bucket{a="b"}[5m])))')
    assert names == {"nope_ms_bucket"}
    assert "nope_ms_bucket" not in _exported()
