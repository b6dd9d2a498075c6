"""The clusters of the rendered Envoy config: one per pool, the routers' (gRPC, health-checked)
and the OpenTelemetry collector's, plus the failover aggregates.

Pools answer with long-lived generations, so the circuit breakers and outlier detection here are
sized for them rather than left at Envoy's defaults (see `envoy_failover.circuit_breakers`).
"""

from __future__ import annotations

import ipaddress
from typing import Any

from extproc_router.envoy_failover import circuit_breakers, failover_clusters
from extproc_router.mutations import METADATA_NAMESPACE
from extproc_router.settings import PoolSettings, Settings, TLSSettings

__all__ = ["EXTPROC_CLUSTER", "OTEL_CLUSTER", "clusters", "extproc_cluster", "seconds"]

EXTPROC_CLUSTER = "extproc_router"
OTEL_CLUSTER = "opentelemetry_collector"

_TYPE = "type.googleapis.com/"
_EXTPROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _host_port(endpoint: str) -> tuple[str, int]:
    host, port = endpoint.rsplit(":", 1)
    return host.strip("[]"), int(port)


def _load_assignment(
    name: str, endpoints: list[tuple[str, int]], *, pool: bool = False
) -> dict[str, Any]:
    """`pool`: each endpoint carries the (pool) cluster's name as metadata, which Envoy hands
    back on the response (`SERVED_BY_HEADER`): after a failover the router learns which pool
    answered."""
    metadata = (
        {"metadata": {"filter_metadata": {METADATA_NAMESPACE: {"pool": name}}}} if pool else {}
    )
    return {
        "cluster_name": name,
        "endpoints": [
            {
                "lb_endpoints": [
                    {
                        "endpoint": {
                            "address": {
                                "socket_address": {"address": host.strip("[]"), "port_value": port}
                            }
                        },
                        **metadata,
                    }
                    for host, port in endpoints
                ]
            }
        ],
    }


def seconds(milliseconds: int) -> str:
    return f"{milliseconds / 1000:g}s"


def _pool_cluster(pool: PoolSettings, settings: Settings) -> dict[str, Any]:
    endpoints = [_host_port(endpoint) for endpoint in pool.endpoints]
    static = all(_is_ip(host) for host, _ in endpoints)
    outlier = settings.envoy.outlier_detection
    return {
        "name": pool.name,
        "type": "STATIC" if static else "STRICT_DNS",
        "connect_timeout": "2s",
        "lb_policy": "LEAST_REQUEST",
        # Per pool. Generations are long-lived: Envoy's defaults (1,024 requests, 3 retries at
        # once) would turn a burst into 503s long before the model servers are full; the
        # router's queue limits shape the load, the breaker only bounds it.
        "circuit_breakers": circuit_breakers(pool.circuit_breaker),
        # An endpoint that keeps failing leaves rotation at once, between the router's polls.
        # Connect failures and resets count apart from the pool's own 5xx answers.
        "outlier_detection": {
            "consecutive_5xx": outlier.consecutive_5xx,
            "split_external_local_origin_errors": True,
            "consecutive_local_origin_failure": outlier.consecutive_local_origin_failure,
            "interval": seconds(outlier.interval_ms),
            "base_ejection_time": seconds(outlier.base_ejection_ms),
            "max_ejection_percent": outlier.max_ejection_percent,
        },
        "load_assignment": _load_assignment(pool.name, endpoints, pool=True),
    }


def _http2_cluster(
    name: str, endpoints: list[tuple[str, int]], settings: Settings
) -> dict[str, Any]:
    """A gRPC upstream: the routers, or an OTLP collector."""
    return {
        "name": name,
        "type": "STATIC" if all(_is_ip(host) for host, _ in endpoints) else "STRICT_DNS",
        "connect_timeout": "1s",
        "typed_extension_protocol_options": {
            "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
                "@type": _TYPE + "envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
                "explicit_http_config": {
                    "http2_protocol_options": {
                        # Less often than the router's min_ping_interval_ms, or it sends GOAWAY.
                        "connection_keepalive": {
                            "interval": f"{settings.envoy.keepalive_interval_s}s",
                            "timeout": "5s",
                        },
                        "max_concurrent_streams": 1000,
                    }
                },
            }
        },
        "load_assignment": _load_assignment(name, endpoints),
    }


def _upstream_tls(tls: TLSSettings) -> dict[str, Any]:
    """Envoy's side of TLS to the router: verify its certificate, present Envoy's own (mTLS)."""
    context: dict[str, Any] = {"sni": tls.envoy_server_name}
    common: dict[str, Any] = {"alpn_protocols": ["h2"]}
    if tls.envoy_ca_file is not None:
        common["validation_context"] = {
            "trusted_ca": {"filename": str(tls.envoy_ca_file)},
            "match_typed_subject_alt_names": [
                {"san_type": "DNS", "matcher": {"exact": tls.envoy_server_name}}
            ],
        }
    if tls.envoy_cert_file is not None and tls.envoy_key_file is not None:
        common["tls_certificates"] = [
            {
                "certificate_chain": {"filename": str(tls.envoy_cert_file)},
                "private_key": {"filename": str(tls.envoy_key_file)},
            }
        ]
    context["common_tls_context"] = common
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": _TYPE + "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext",
            **context,
        },
    }


def extproc_cluster(settings: Settings) -> dict[str, Any]:
    """The routers' cluster, health-checked over gRPC; also what the Istio EnvoyFilter adds."""
    grpc = settings.server.grpc
    routers = [_host_port(endpoint) for endpoint in settings.envoy.router_endpoints] or [
        ("127.0.0.1" if grpc.host in ("0.0.0.0", "") else grpc.host, grpc.port)
    ]
    extproc = _http2_cluster(EXTPROC_CLUSTER, routers, settings)
    interval = seconds(settings.envoy.health_check_interval_ms)
    # A draining router answers NOT_SERVING: the next check takes it out of rotation while
    # its open streams finish, so a rolling restart loses nothing.
    extproc["health_checks"] = [
        {
            "timeout": "1s",
            "interval": interval,
            "no_traffic_interval": interval,
            "unhealthy_threshold": 1,
            "healthy_threshold": 1,
            "grpc_health_check": {"service_name": _EXTPROC_SERVICE},
        }
    ]
    tls = settings.server.tls
    if tls is not None:
        extproc["transport_socket"] = _upstream_tls(tls)
    return extproc


def clusters(settings: Settings) -> list[dict[str, Any]]:
    clusters = [extproc_cluster(settings)]
    tracing = settings.telemetry.tracing
    if tracing.enabled and tracing.endpoint is not None:
        clusters.append(_http2_cluster(OTEL_CLUSTER, [_host_port(tracing.endpoint)], settings))
    pools = [_pool_cluster(pool, settings) for pool in settings.pools]
    return [*clusters, *pools, *failover_clusters(settings)]
