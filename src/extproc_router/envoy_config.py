"""Render Envoy's bootstrap config from the router's config, so the two never disagree on pool
names, the cluster header or limits.

Every choice here answers one of Envoy's defaults that hurts LLM traffic: the route timeout
(15 s) would cut long generations, the ext_proc message timeout (200 ms) is too short for model
inference, a client could pick its own pool by sending the cluster header, and Envoy's own error
pages are plain text where OpenAI clients expect JSON.
"""

from __future__ import annotations

from typing import Any

import yaml

from extproc_router.envoy_clusters import (
    EXTPROC_CLUSTER,
    OTEL_CLUSTER,
    clusters,
    extproc_cluster,
    seconds,
)
from extproc_router.envoy_failover import retry_priority
from extproc_router.mutations import METADATA_NAMESPACE, ROUTER_REPLY_KEY, SERVED_BY_HEADER
from extproc_router.settings import ListenAddress, Settings
from extproc_router.shadow_envoy import add_shadow

__all__ = [
    "EXTPROC_CLUSTER",
    "OTEL_CLUSTER",
    "early_header_mutation",
    "ext_proc_filter",
    "extproc_cluster",
    "render_envoy",
    "render_envoy_yaml",
]

_TYPE = "type.googleapis.com/"
_EARLY_HEADER_MUTATION = (
    "envoy.extensions.http.early_header_mutation.header_mutation.v3.HeaderMutation"
)

# Headers the router sets; one a client sends is removed before anything reads it.
_ROUTER_HEADERS = "x-router-"

_LOCAL_REPLY_CODES = {
    413: ("invalid_request_error", "request_too_large"),
    500: ("server_error", "internal_error"),
    502: ("server_error", "bad_gateway"),
    503: ("server_error", "service_unavailable"),
    504: ("server_error", "gateway_timeout"),
}


def _socket(address: ListenAddress) -> dict[str, Any]:
    return {"socket_address": {"address": address.host, "port_value": address.port}}


def _retry_policy(settings: Settings) -> dict[str, Any]:
    """Bounded retries on the pool routes, each on another endpoint when the pool has one.
    Envoy retries only before a response has started, so a streamed answer is never doubled."""
    retries = settings.envoy.retries
    if retries.num_retries == 0:
        return {}
    return {
        "retry_policy": {
            "retry_on": retries.retry_on,
            "num_retries": retries.num_retries,
            "retry_host_predicate": [
                {
                    "name": "envoy.retry_host_predicates.previous_hosts",
                    "typed_config": {
                        "@type": _TYPE
                        + "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
                    },
                }
            ],
            "host_selection_retry_max_attempts": 3,
            **retry_priority(settings),
            "retry_back_off": {
                "base_interval": seconds(retries.backoff_base_ms),
                "max_interval": seconds(retries.backoff_max_ms),
            },
        }
    }


def _tracing(settings: Settings) -> dict[str, Any]:
    """Envoy's OpenTelemetry tracer: its spans and the router's share one trace, because Envoy
    passes the trace context to the router with each ext_proc stream."""
    tracing = settings.telemetry.tracing
    return {
        "random_sampling": {"value": tracing.sample_ratio * 100},
        "provider": {
            "name": "envoy.tracers.opentelemetry",
            "typed_config": {
                "@type": _TYPE + "envoy.config.trace.v3.OpenTelemetryConfig",
                "grpc_service": {"envoy_grpc": {"cluster_name": OTEL_CLUSTER}, "timeout": "1s"},
                "service_name": "envoy",
            },
        },
    }


def _local_reply_config() -> dict[str, Any]:
    return {
        "mappers": [
            {
                "filter": {
                    "and_filter": {
                        "filters": [
                            {
                                "status_code_filter": {
                                    "comparison": {
                                        "op": "EQ",
                                        "value": {
                                            "default_value": status,
                                            "runtime_key": f"extproc_router.{status}",
                                        },
                                    }
                                }
                            },
                            # Not an answer the router wrote itself (it has its own JSON).
                            {
                                "metadata_filter": {
                                    "matcher": {
                                        "filter": METADATA_NAMESPACE,
                                        "path": [{"key": ROUTER_REPLY_KEY}],
                                        "value": {"bool_match": False},
                                    },
                                    "match_if_key_not_found": True,
                                }
                            },
                        ]
                    }
                },
                "body_format_override": {
                    "json_format": {
                        "error": {
                            "message": "%LOCAL_REPLY_BODY% (%RESPONSE_CODE_DETAILS%)",
                            "type": error_type,
                            "param": None,
                            "code": code,
                        }
                    }
                },
            }
            for status, (error_type, code) in _LOCAL_REPLY_CODES.items()
        ]
    }


def ext_proc_filter(settings: Settings) -> dict[str, Any]:
    envoy = settings.envoy
    timeout_ms = envoy.message_timeout_ms
    return {
        "name": "envoy.filters.http.ext_proc",
        "typed_config": {
            "@type": _TYPE + "envoy.extensions.filters.http.ext_proc.v3.ExternalProcessor",
            "grpc_service": {
                "envoy_grpc": {"cluster_name": EXTPROC_CLUSTER},
                "timeout": seconds(timeout_ms),
            },
            "failure_mode_allow": envoy.failure_mode_allow,
            "status_on_error": {"code": envoy.status_on_error},
            "message_timeout": seconds(timeout_ms),
            # The router asks for a response's body (to read its token usage) per response,
            # streamed chunk by chunk, only for requests it routed.
            "allow_mode_override": True,
            "metadata_options": {"receiving_namespaces": {"untyped": [METADATA_NAMESPACE]}},
            "processing_mode": {
                "request_header_mode": "SEND",
                "request_body_mode": "BUFFERED",
                "request_trailer_mode": "SKIP",
                "response_header_mode": "SEND",
                # Never BUFFERED: SSE streams would wait for their end.
                "response_body_mode": "NONE",
                "response_trailer_mode": "SKIP",
            },
        },
    }


def _routes(settings: Settings) -> list[dict[str, Any]]:
    """Per match, first the request the router routed (it set the cluster header), then the
    one it did not: a path it passes through, or fail-open let the request continue while the
    router was down. Guarded matches come first and turn fail-open off for themselves."""
    envoy = settings.envoy

    def action() -> dict[str, Any]:
        """A fresh copy per route: a shared one would come out as a YAML anchor."""
        return {
            "timeout": f"{envoy.route_timeout_s}s",
            "idle_timeout": f"{envoy.stream_idle_timeout_s}s",
            **_retry_policy(settings),
        }

    def served_by() -> dict[str, Any]:
        """On the routes the router routed: the pool whose endpoint answered."""
        value = f"%UPSTREAM_METADATA({METADATA_NAMESPACE}:pool)%"
        header = {"header": {"key": SERVED_BY_HEADER, "value": value}}
        return {
            "response_headers_to_add": [{**header, "append_action": "OVERWRITE_IF_EXISTS_OR_ADD"}]
        }

    routed: dict[str, Any] = {"name": envoy.cluster_header, "present_match": True}
    fail_closed = {
        "envoy.filters.http.ext_proc": {
            "@type": _TYPE + "envoy.extensions.filters.http.ext_proc.v3.ExtProcPerRoute",
            "overrides": {"failure_mode_allow": False},
        }
    }
    routes: list[dict[str, Any]] = []
    for index, guard in enumerate(envoy.guarded_routes):
        headers: list[dict[str, Any]] = []
        if guard.header is not None:
            headers.append(
                {"name": guard.header, "string_match": {"exact": guard.value}}
                if guard.value is not None
                else {"name": guard.header, "present_match": True}
            )
        for suffix, extra, target in (
            ("routed", [routed], {"cluster_header": envoy.cluster_header}),
            ("default", [], {"cluster": settings.routing.default_pool}),
        ):
            routes.append(
                {
                    "name": f"guarded_{index}_{suffix}",
                    "match": {"prefix": guard.prefix, "headers": headers + extra},
                    "route": {**target, **action()},
                    **(served_by() if extra else {}),
                    "typed_per_filter_config": fail_closed,
                }
            )
    return [
        *routes,
        {
            "name": "routed",
            "match": {"prefix": "/", "headers": [routed]},
            "route": {"cluster_header": envoy.cluster_header, **action()},
            **served_by(),
        },
        {
            "name": "default",
            "match": {"prefix": "/"},
            "route": {"cluster": settings.routing.default_pool, **action()},
        },
    ]


def early_header_mutation(cluster_header: str) -> dict[str, Any]:
    """Removes the cluster header and every x-router-* header a client sent, before the route
    is chosen: a client never picks its own pool nor passes off a decision as the router's."""
    return {
        "name": "envoy.http.early_header_mutation.header_mutation",
        "typed_config": {
            "@type": _TYPE + _EARLY_HEADER_MUTATION,
            "mutations": [
                {"remove": cluster_header},
                {"remove_on_match": {"key_matcher": {"prefix": _ROUTER_HEADERS}}},
            ],
        },
    }


def render_envoy(settings: Settings) -> dict[str, Any]:
    envoy = settings.envoy
    access_log_format = (
        '[%START_TIME%] "%REQ(:METHOD)% %REQ(:PATH)%" %RESPONSE_CODE% %RESPONSE_FLAGS% '
        f"pool=%REQ({envoy.cluster_header.upper()})% model=%RESP(X-ROUTER-MODEL)% "
        "%DURATION%ms id=%REQ(X-REQUEST-ID)%\n"
    )
    hcm = {
        "@type": _TYPE + "envoy.extensions.filters.network.http_connection_manager.v3"
        ".HttpConnectionManager",
        "stat_prefix": "llm",
        "codec_type": "AUTO",
        "stream_idle_timeout": f"{envoy.stream_idle_timeout_s}s",
        "request_timeout": "0s",
        "access_log": [
            {
                "name": "envoy.access_loggers.stdout",
                "typed_config": {
                    "@type": _TYPE + "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog",
                    "log_format": {"text_format_source": {"inline_string": access_log_format}},
                },
            }
        ]
        if envoy.access_log
        else [],
        # The cluster header is a trust boundary: a client must never pick its own pool, least
        # of all when fail-open skips the router; nor may it pass off headers as the router's.
        # Early header mutation runs before the route is chosen; an HTTP filter would run after
        # the route had already been cached.
        "early_header_mutation_extensions": [early_header_mutation(envoy.cluster_header)],
        "local_reply_config": _local_reply_config(),
        **(
            {"tracing": _tracing(settings)}
            if settings.telemetry.tracing.enabled and settings.telemetry.tracing.endpoint
            else {}
        ),
        "route_config": {
            "name": "llm",
            "virtual_hosts": [{"name": "llm", "domains": ["*"], "routes": _routes(settings)}],
        },
        "http_filters": [
            ext_proc_filter(settings),
            {
                "name": "envoy.filters.http.router",
                "typed_config": {
                    "@type": _TYPE + "envoy.extensions.filters.http.router.v3.Router",
                },
            },
        ],
    }
    config = {
        "admin": {"address": _socket(envoy.admin)},
        "static_resources": {
            "listeners": [
                {
                    "name": "llm",
                    "address": _socket(envoy.listen),
                    # The ext_proc filter buffers the whole request body up to this limit; beyond it
                    # Envoy answers 413 (as JSON, through local_reply_config).
                    "per_connection_buffer_limit_bytes": envoy.max_request_bytes,
                    "filter_chains": [
                        {
                            "filters": [
                                {
                                    "name": "envoy.filters.network.http_connection_manager",
                                    "typed_config": hcm,
                                }
                            ]
                        }
                    ],
                }
            ],
            "clusters": clusters(settings),
        },
    }
    add_shadow(config, settings)
    return config


def render_envoy_yaml(settings: Settings, *, source: str = "the embedded example config") -> str:
    header = (
        f"# Generated by `extproc-router render-envoy` from {source}.\n"
        "# Edit the router config and render again rather than editing this file.\n"
    )
    return header + yaml.safe_dump(render_envoy(settings), sort_keys=False, width=100)
