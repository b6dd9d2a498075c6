"""The kustomize overlays build with kubectl's kustomize, every object passes the Kubernetes
schemas (strict), and what they say agrees with the router's config and the reference values."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from extproc_router.envoy_config import render_envoy_yaml
from extproc_router.settings import parse_settings

from .crds import validate_custom
from .tools import REPO, Object, by_kind, envoy_validate, kustomize, validate_kubernetes

KUSTOMIZATIONS = {
    "production": REPO / "deploy/kubernetes/overlays/production",
    "dev": REPO / "deploy/kubernetes/overlays/dev",
    "prometheus-adapter": REPO / "deploy/kubernetes/autoscaling/prometheus-adapter",
    "istio": REPO / "deploy/istio",
}
BUILT = {name: kustomize(path) for name, path in KUSTOMIZATIONS.items()}


def _validate(obj: Object) -> None:
    if "istio.io" in obj["apiVersion"] or "coreos.com" in obj["apiVersion"]:
        validate_custom(obj)
    else:
        validate_kubernetes(obj)


@pytest.mark.parametrize("name", sorted(BUILT))
def test_every_object_validates(name: str) -> None:
    assert BUILT[name]
    for obj in BUILT[name]:
        _validate(obj)


def test_a_misspelt_field_fails_validation() -> None:
    deployment = by_kind(BUILT["production"], "Deployment")["extproc-router"]
    deployment["spec"]["template"]["spec"]["initContainers"][0]["startupprobe"] = {}
    with pytest.raises(Exception, match="startupprobe"):
        validate_kubernetes(deployment)


def _router_pod(objects: list[Object]) -> dict[str, Any]:
    spec: dict[str, Any] = by_kind(objects, "Deployment")["extproc-router"]["spec"]
    return spec


def _configmap(objects: list[Object], prefix: str, key: str) -> str:
    for obj in objects:
        if obj["kind"] == "ConfigMap" and obj["metadata"]["name"].startswith(prefix):
            text: str = obj["data"][key]
            return text
    raise KeyError(prefix)


@pytest.mark.parametrize("name", ["production", "dev"])
def test_configmaps_hold_a_router_config_and_its_envoy_config(name: str, tmp_path: Path) -> None:
    objects = BUILT[name]
    router = _configmap(objects, "extproc-router-config", "router.yaml")
    envoy = _configmap(objects, "extproc-router-envoy", "envoy.yaml")
    settings = parse_settings(yaml.safe_load(router), source=f"{name} ConfigMap")
    assert yaml.safe_load(envoy) == yaml.safe_load(render_envoy_yaml(settings))
    envoy_validate(envoy, tmp_path)
    # The pod mounts these two, under the names kustomize gave them.
    volumes = {v["name"]: v for v in _router_pod(objects)["template"]["spec"]["volumes"]}
    names = {o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"}
    assert volumes["router-config"]["configMap"]["name"] in names
    assert volumes["envoy-config"]["configMap"]["name"] in names


def test_router_is_a_native_sidecar_started_before_envoy() -> None:
    pod = _router_pod(BUILT["production"])["template"]["spec"]
    (router,) = pod["initContainers"]
    assert router["restartPolicy"] == "Always"
    # The kubelet starts Envoy only after this probe passes: the gRPC health service.
    assert router["startupProbe"]["grpc"] == {
        "port": 50051,
        "service": "envoy.service.ext_proc.v3.ExternalProcessor",
    }
    assert "grpc" in router["readinessProbe"]
    assert "grpc" in router["livenessProbe"]
    assert [c["name"] for c in pod["containers"]] == ["envoy"]
    for container in (router, *pod["containers"]):
        assert container["securityContext"]["runAsUser"] != 0
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_reference_values_replicas_and_resources() -> None:
    spec = _router_pod(BUILT["production"])
    assert spec["replicas"] == 3
    router = spec["template"]["spec"]["initContainers"][0]
    assert router["resources"] == {
        "requests": {"cpu": "1", "memory": "2Gi"},
        "limits": {"cpu": "2", "memory": "4Gi"},
    }
    pdb = by_kind(BUILT["production"], "PodDisruptionBudget")["extproc-router"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= (
        spec["template"]["metadata"]["labels"].items()
    )


def test_router_ports_match_its_config_and_the_network_policy() -> None:
    objects = BUILT["production"]
    settings = parse_settings(
        yaml.safe_load(_configmap(objects, "extproc-router-config", "router.yaml"))
    )
    pod = _router_pod(objects)["template"]["spec"]
    router_ports = {p["containerPort"] for p in pod["initContainers"][0]["ports"]}
    assert router_ports == {settings.server.grpc.port, settings.server.admin.port}
    assert pod["containers"][0]["ports"][0]["containerPort"] == settings.envoy.listen.port
    allowed = {
        p["port"]
        for rule in by_kind(objects, "NetworkPolicy")["extproc-router"]["spec"]["ingress"]
        for p in rule["ports"]
    }
    assert allowed == {settings.envoy.listen.port, settings.server.admin.port}
    annotations = (
        pod.get("annotations") or _router_pod(objects)["template"]["metadata"]["annotations"]
    )
    assert annotations["prometheus.io/port"] == str(settings.server.admin.port)


def test_every_pool_endpoint_is_a_service_of_the_overlay() -> None:
    objects = BUILT["production"]
    settings = parse_settings(
        yaml.safe_load(_configmap(objects, "extproc-router-config", "router.yaml"))
    )
    services = by_kind(objects, "Service")
    for pool in settings.pools:
        (endpoint,) = pool.endpoints
        host, port = endpoint.rsplit(":", 1)
        name, namespace, *_ = host.split(".")
        service = services[name]
        assert service["metadata"]["namespace"] == namespace
        assert int(port) in {p["port"] for p in service["spec"]["ports"]}
        # Headless: Envoy balances requests over the pods, not connections over a VIP.
        assert service["spec"]["clusterIP"] == "None"
        deployment = by_kind(objects, "Deployment")[name]
        args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        served = args[args.index("--served-model-name") + 1 :]
        assert pool.model in served
    default = settings.pool(settings.routing.default_pool)
    default_args = by_kind(objects, "Deployment")[default.endpoints[0].split(".")[0]]
    assert "auto" in default_args["spec"]["template"]["spec"]["containers"][0]["args"]


def test_dev_overlay_pools_are_the_demo_pools_in_the_pod() -> None:
    objects = BUILT["dev"]
    spec = _router_pod(objects)
    assert spec["replicas"] == 1
    containers = {c["name"]: c for c in spec["template"]["spec"]["containers"]}
    assert containers["demo-pools"]["args"][0] == "demo-pools"
    assert (
        containers["demo-pools"]["image"] == spec["template"]["spec"]["initContainers"][0]["image"]
    )
    settings = parse_settings(
        yaml.safe_load(_configmap(objects, "extproc-router-config", "router.yaml"))
    )
    assert all(e.startswith("127.0.0.1:") for p in settings.pools for e in p.endpoints)
