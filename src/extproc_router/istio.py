"""Istio objects rendered from the router's config, so the mesh and the router agree on the
cluster header, the pools and the ext_proc settings.

In a mesh there is no Envoy config file of ours: istiod writes the sidecar's and the gateway's.
So the pieces `render-envoy` would write become patches and routes Istio understands:

- an `EnvoyFilter` adds the router's cluster (the router runs in the same pod, on loopback),
  strips client-sent router headers before routing, and inserts the ext_proc filter before the
  router filter in the gateway's and the sidecar's HTTP filter chain;
- a `VirtualService` turns the cluster header into a destination: one route per pool matching
  the header the router sets (it clears the route cache, so Envoy matches again), then the
  default pool for requests the router did not route (fail-open, other paths);
- a `DestinationRule` per pool host (least-request balancing: a generation holds a connection
  for seconds) and a `ServiceEntry` for each pool that lives outside the cluster.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from extproc_router.envoy_config import early_header_mutation, ext_proc_filter, extproc_cluster
from extproc_router.exceptions import ConfigError
from extproc_router.settings import PoolSettings, Settings

__all__ = ["DEFAULT_OPTIONS", "IstioOptions", "envoy_filter", "traffic_objects"]

_HCM = "envoy.filters.network.http_connection_manager"
_HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
    ".HttpConnectionManager"
)
_CLUSTER_DOMAIN = ".svc.cluster.local"


@dataclasses.dataclass(frozen=True, kw_only=True)
class IstioOptions:
    """What the mesh side needs beyond the router's config: where clients send LLM traffic."""

    # The in-mesh name clients call (a Service of that name fronts the pools), and its port:
    # the sidecar's outbound listener on this port gets the ext_proc filter.
    entry_host: str = "llm.llm.svc.cluster.local"
    entry_port: int = 8080
    # The ingress gateway (an Istio Gateway object) and the external names it serves.
    gateway: str = "llm-gateway"
    gateway_hosts: tuple[str, ...] = ("llm.example.com",)
    # Pods carrying this label run the router beside their istio-proxy (see istiod-values.yaml).
    workload_label: tuple[str, str] = ("extproc-router.io/sidecar", "true")


DEFAULT_OPTIONS = IstioOptions()


def _host_port(pool: PoolSettings) -> tuple[str, int]:
    """In a mesh a pool is one service name; Istio balances across its endpoints itself."""
    if len(pool.endpoints) != 1:
        raise ConfigError(
            "istio", [f"pools.{pool.name}.endpoints: name one service HOST:PORT in a mesh"]
        )
    host, port = pool.endpoints[0].rsplit(":", 1)
    return host, int(port)


def _hcm_match(context: str, options: IstioOptions, sub_filter: str | None) -> dict[str, Any]:
    filter_match: dict[str, Any] = {"name": _HCM}
    if sub_filter is not None:
        filter_match["subFilter"] = {"name": sub_filter}
    listener: dict[str, Any] = {"filterChain": {"filter": filter_match}}
    if context == "SIDECAR_OUTBOUND":
        # Only the LLM port: every other outbound request of the pod skips the router.
        listener["portNumber"] = options.entry_port
    return {"context": context, "listener": listener}


def envoy_filter(settings: Settings, options: IstioOptions = DEFAULT_OPTIONS) -> dict[str, Any]:
    """The EnvoyFilter for pods (and gateways) that run the router beside istio-proxy."""
    patches: list[dict[str, Any]] = [
        {
            "applyTo": "CLUSTER",
            "match": {"context": "ANY"},
            "patch": {"operation": "ADD", "value": extproc_cluster(settings)},
        }
    ]
    for context in ("GATEWAY", "SIDECAR_OUTBOUND"):
        patches.append(
            {
                "applyTo": "NETWORK_FILTER",
                "match": _hcm_match(context, options, None),
                "patch": {
                    "operation": "MERGE",
                    "value": {
                        "typed_config": {
                            "@type": _HCM_TYPE,
                            "early_header_mutation_extensions": [
                                early_header_mutation(settings.envoy.cluster_header)
                            ],
                        }
                    },
                },
            }
        )
        patches.append(
            {
                "applyTo": "HTTP_FILTER",
                "match": _hcm_match(context, options, "envoy.filters.http.router"),
                "patch": {"operation": "INSERT_BEFORE", "value": ext_proc_filter(settings)},
            }
        )
    key, value = options.workload_label
    return {
        "apiVersion": "networking.istio.io/v1alpha3",
        "kind": "EnvoyFilter",
        "metadata": {"name": "extproc-router"},
        "spec": {"workloadSelector": {"labels": {key: value}}, "configPatches": patches},
    }


def _destination(pool: PoolSettings) -> dict[str, Any]:
    host, port = _host_port(pool)
    return {"destination": {"host": host, "port": {"number": port}}}


def virtual_service(settings: Settings, options: IstioOptions = DEFAULT_OPTIONS) -> dict[str, Any]:
    header = settings.envoy.cluster_header
    # Generations run for minutes: no route timeout (Istio's default is none, said aloud here).
    routes: list[dict[str, Any]] = [
        {
            "name": pool.name,
            # The pool alone or its failover cluster (`small~medium`): the mesh has no
            # aggregate cluster, so both go to the pool and Istio's own retries.
            "match": [{"headers": {header: {"regex": f"^{pool.name}(~[a-z0-9_-]+)?$"}}}],
            "route": [_destination(pool)],
            "timeout": "0s",
        }
        for pool in settings.pools
    ]
    default = settings.pool(settings.routing.default_pool)
    routes.append({"name": "default", "route": [_destination(default)], "timeout": "0s"})
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "llm"},
        "spec": {
            "hosts": [options.entry_host, *options.gateway_hosts],
            "gateways": ["mesh", options.gateway],
            "http": routes,
        },
    }


def destination_rule(pool: PoolSettings) -> dict[str, Any]:
    host, _ = _host_port(pool)
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": f"pool-{pool.name}"},
        "spec": {
            "host": host,
            "trafficPolicy": {
                "loadBalancer": {"simple": "LEAST_REQUEST"},
                # Envoy's default of 1024 pending requests turns a burst into 503s long before
                # the model servers' queues are full; the HPA watches those queues instead.
                "connectionPool": {
                    "http": {"http1MaxPendingRequests": 10000, "http2MaxRequests": 10000}
                },
                "outlierDetection": {
                    "consecutive5xxErrors": 5,
                    "interval": "10s",
                    "baseEjectionTime": "30s",
                    "maxEjectionPercent": 50,
                },
            },
        },
    }


def service_entry(pool: PoolSettings) -> dict[str, Any]:
    """A pool outside the cluster (another cluster's vLLM, a GPU farm) joins the mesh's registry,
    so the VirtualService can name it and its DestinationRule applies."""
    host, port = _host_port(pool)
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "ServiceEntry",
        "metadata": {"name": f"pool-{pool.name}"},
        "spec": {
            "hosts": [host],
            "location": "MESH_EXTERNAL",
            "resolution": "DNS",
            "ports": [{"number": port, "name": "http", "protocol": "HTTP"}],
        },
    }


def traffic_objects(
    settings: Settings, options: IstioOptions = DEFAULT_OPTIONS
) -> list[dict[str, Any]]:
    """The VirtualService, then per pool its ServiceEntry (if external) and DestinationRule."""
    objects = [virtual_service(settings, options)]
    for pool in settings.pools:
        host, _ = _host_port(pool)
        if not host.endswith(_CLUSTER_DOMAIN):
            objects.append(service_entry(pool))
        objects.append(destination_rule(pool))
    return objects
