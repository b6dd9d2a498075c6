"""The Istio objects: the EnvoyFilter's patches, applied to a gateway-like and a sidecar-like
bootstrap as istiod would apply them, give configs Envoy accepts, with our filter before the
router filter; the routes, DestinationRules and ServiceEntries cover every pool; the injection
template is a valid pod fragment."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from extproc_router.istio import DEFAULT_OPTIONS
from extproc_router.settings import load_settings

from .crds import validate_custom
from .istio_bootstrap import apply_patches, bootstrap, istio_cluster_name
from .tools import REPO, Object, envoy_validate, validate_kubernetes

ISTIO = REPO / "deploy" / "istio"
SETTINGS = load_settings(ISTIO / "router.yaml")
ENVOY_FILTER: Object = yaml.safe_load((ISTIO / "envoyfilter.yaml").read_text())
TRAFFIC: list[Object] = [d for d in yaml.safe_load_all((ISTIO / "traffic.yaml").read_text()) if d]
VIRTUAL_SERVICE = TRAFFIC[0]


def _http_filters(config: Object, listener: int = 0) -> list[str]:
    hcm = config["static_resources"]["listeners"][listener]["filter_chains"][0]["filters"][0]
    return [f["name"] for f in hcm["typed_config"]["http_filters"]]


@pytest.mark.parametrize(
    ("context", "ports"),
    [("GATEWAY", [8080]), ("SIDECAR_OUTBOUND", [DEFAULT_OPTIONS.entry_port, 9080])],
)
def test_patched_bootstrap_validates(context: str, ports: list[int], tmp_path: Path) -> None:
    config, contexts = bootstrap(context, ports, VIRTUAL_SERVICE)
    before = _http_filters(config)
    assert apply_patches(config, contexts, ENVOY_FILTER) == 3
    envoy_validate(config, tmp_path)
    filters = _http_filters(config)
    assert filters == [*before[:-1], "envoy.filters.http.ext_proc", "envoy.filters.http.router"]
    hcm = config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    (early,) = hcm["typed_config"]["early_header_mutation_extensions"]
    assert {"remove": SETTINGS.envoy.cluster_header} in early["typed_config"]["mutations"]
    clusters = {c["name"] for c in config["static_resources"]["clusters"]}
    assert "extproc_router" in clusters
    if len(ports) > 1:  # another outbound port of the pod never meets the router
        assert _http_filters(config, 1) == before


def test_a_broken_patch_fails_envoy_validation(tmp_path: Path) -> None:
    config, contexts = bootstrap("GATEWAY", [8080], VIRTUAL_SERVICE)
    broken: Any = yaml.safe_load((ISTIO / "envoyfilter.yaml").read_text())
    broken["spec"]["configPatches"][2]["patch"]["value"]["typed_config"]["processing_mode"][
        "request_body_mode"
    ] = "SOMETIMES"
    apply_patches(config, contexts, broken)
    with pytest.raises(AssertionError):
        envoy_validate(config, tmp_path)


def test_router_cluster_points_at_the_router_in_the_pod() -> None:
    cluster = ENVOY_FILTER["spec"]["configPatches"][0]["patch"]["value"]
    address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
    assert address["socket_address"] == {
        "address": "127.0.0.1",
        "port_value": SETTINGS.server.grpc.port,
    }
    assert cluster["health_checks"][0]["grpc_health_check"]["service_name"].endswith(
        "ExternalProcessor"
    )


def test_routes_cover_every_pool_then_the_default() -> None:
    routes = VIRTUAL_SERVICE["spec"]["http"]
    header = SETTINGS.envoy.cluster_header
    assert [r["name"] for r in routes] == [*(p.name for p in SETTINGS.pools), "default"]
    for route, pool in zip(routes, SETTINGS.pools, strict=False):
        # The pool, or its failover cluster (`small~medium`: the mesh has no aggregate).
        assert route["match"] == [{"headers": {header: {"regex": f"^{pool.name}(~[a-z0-9_-]+)?$"}}}]
        host, port = pool.endpoints[0].rsplit(":", 1)
        assert route["route"][0]["destination"] == {"host": host, "port": {"number": int(port)}}
        assert route["timeout"] == "0s"
    assert "match" not in routes[-1]  # fail-open: the router set no header
    default = SETTINGS.pool(SETTINGS.routing.default_pool)
    assert routes[-1]["route"][0]["destination"]["host"] == default.endpoints[0].split(":")[0]


def test_every_destination_has_a_rule_and_external_ones_an_entry() -> None:
    rules = {o["spec"]["host"] for o in TRAFFIC if o["kind"] == "DestinationRule"}
    entries = {h for o in TRAFFIC if o["kind"] == "ServiceEntry" for h in o["spec"]["hosts"]}
    for pool in SETTINGS.pools:
        host = pool.endpoints[0].split(":")[0]
        assert host in rules
        assert (host in entries) == (not host.endswith(".svc.cluster.local"))
    assert entries, "the example has an external pool, to show a ServiceEntry"
    for obj in [*TRAFFIC, ENVOY_FILTER]:
        validate_custom(obj)
    assert istio_cluster_name("a.b", 8000) == "outbound|8000||a.b"


def test_misspelt_istio_field_fails() -> None:
    rule: Any = next(o for o in TRAFFIC if o["kind"] == "DestinationRule")
    rule = {
        **rule,
        "spec": {**rule["spec"], "trafficPolicy": {"loadBalancer": {"simple": "LEAST"}}},
    }
    with pytest.raises(ValueError, match="simple"):
        validate_custom(rule)
    entry: Any = next(o for o in TRAFFIC if o["kind"] == "ServiceEntry")
    entry = {**entry, "spec": {**entry["spec"], "resolutions": "DNS"}}
    with pytest.raises(AssertionError, match="resolutions"):
        validate_custom(entry)


def test_injection_template_is_a_valid_pod_fragment_selected_by_the_filter() -> None:
    values = yaml.safe_load((ISTIO / "istiod-values.yaml").read_text())
    template = yaml.safe_load(values["sidecarInjectorWebhook"]["templates"]["extproc-router"])
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "app", **template["metadata"]},
        "spec": {"containers": [{"name": "app", "image": "app"}], **template["spec"]},
    }
    validate_kubernetes(pod)
    (router,) = template["spec"]["initContainers"]
    assert router["restartPolicy"] == "Always"
    assert router["startupProbe"]["grpc"]["port"] == SETTINGS.server.grpc.port
    selector = ENVOY_FILTER["spec"]["workloadSelector"]["labels"]
    assert selector.items() <= template["metadata"]["labels"].items()
    configmap = template["spec"]["volumes"][0]["configMap"]["name"]
    kustomization = yaml.safe_load((ISTIO / "kustomization.yaml").read_text())
    assert configmap in [g["name"] for g in kustomization["configMapGenerator"]]
