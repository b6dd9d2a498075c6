"""A sidecar-like Envoy bootstrap and the EnvoyFilter patch operations we use, applied to it as
istiod would, so `envoy --mode validate` judges the patched config.

istiod itself is not here (no cluster). The bootstrap stands in for what it writes: a gateway's
or a sidecar's HTTP listener whose routes come from our VirtualService (header match -> the
`outbound|port||host` cluster Istio names for the destination), its usual filters ending in the
router filter, and one cluster per destination. An operation or match this module does not know
raises, so a new kind of patch cannot pass unexamined.
"""

from __future__ import annotations

import copy
from typing import Any

Object = dict[str, Any]

_HCM = "envoy.filters.network.http_connection_manager"
_HCM_TYPE = (
    "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3"
    ".HttpConnectionManager"
)
_T = "type.googleapis.com/"


def istio_cluster_name(host: str, port: int) -> str:
    return f"outbound|{port}||{host}"


def _string_match(match: Object) -> Object:
    """Istio's StringMatch as Envoy's (istiod turns `regex` into RE2 `safe_regex`)."""
    if "regex" in match:
        return {"safe_regex": {"regex": match["regex"]}}
    return {"exact": match["exact"]}


def _routes(virtual_service: Object) -> list[Object]:
    routes = []
    for http in virtual_service["spec"]["http"]:
        destination = http["route"][0]["destination"]
        cluster = istio_cluster_name(destination["host"], destination["port"]["number"])
        headers = [
            {"name": name, "string_match": _string_match(match)}
            for condition in http.get("match", [])
            for name, match in condition.get("headers", {}).items()
        ]
        routes.append(
            {
                "name": http["name"],
                "match": {"prefix": "/", "headers": headers},
                "route": {"cluster": cluster, "timeout": http.get("timeout", "15s")},
            }
        )
    return routes


def _listener(name: str, port: int, routes: list[Object]) -> Object:
    hcm = {
        "@type": _HCM_TYPE,
        "stat_prefix": name,
        "route_config": {
            "name": str(port),
            "virtual_hosts": [{"name": f"llm:{port}", "domains": ["*"], "routes": routes}],
        },
        "http_filters": [
            {
                "name": "envoy.filters.http.cors",
                "typed_config": {"@type": _T + "envoy.extensions.filters.http.cors.v3.Cors"},
            },
            {
                "name": "envoy.filters.http.fault",
                "typed_config": {"@type": _T + "envoy.extensions.filters.http.fault.v3.HTTPFault"},
            },
            {
                "name": "envoy.filters.http.router",
                "typed_config": {"@type": _T + "envoy.extensions.filters.http.router.v3.Router"},
            },
        ],
    }
    return {
        "name": name,
        "address": {"socket_address": {"address": "0.0.0.0", "port_value": port}},
        "filter_chains": [{"filters": [{"name": _HCM, "typed_config": hcm}]}],
    }


def bootstrap(
    context: str, ports: list[int], virtual_service: Object
) -> tuple[Object, dict[str, str]]:
    """The config, and each listener's patch context (GATEWAY or SIDECAR_OUTBOUND)."""
    routes = _routes(virtual_service)
    listeners = [_listener(f"0.0.0.0_{port}", port, routes) for port in ports]
    clusters: list[Object] = []
    for route in routes:
        name = route["route"]["cluster"]
        if any(c["name"] == name for c in clusters):
            continue
        host, port = name.split("|")[3], int(name.split("|")[1])
        clusters.append(
            {
                "name": name,
                "type": "STRICT_DNS",
                "connect_timeout": "2s",
                "load_assignment": {
                    "cluster_name": name,
                    "endpoints": [
                        {
                            "lb_endpoints": [
                                {
                                    "endpoint": {
                                        "address": {
                                            "socket_address": {"address": host, "port_value": port}
                                        }
                                    }
                                }
                            ]
                        }
                    ],
                },
            }
        )
    config = {
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 15000}}},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }
    return config, {listener["name"]: context for listener in listeners}


def _proto_merge(target: Object, patch: Object) -> None:
    """Protobuf merge, as Istio's MERGE: maps merge, repeated fields append, scalars replace."""
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _proto_merge(target[key], value)
        elif isinstance(value, list) and isinstance(target.get(key), list):
            target[key].extend(copy.deepcopy(value))
        else:
            target[key] = copy.deepcopy(value)


def _context_matches(wanted: str, actual: str) -> bool:
    return wanted in ("ANY", actual)


def _matching_hcms(config: Object, contexts: dict[str, str], match: Object) -> list[Object]:
    listener_match = match.get("listener", {})
    unknown = set(listener_match) - {"portNumber", "filterChain"}
    if unknown:
        raise NotImplementedError(f"listener match on {sorted(unknown)}")
    wanted_filter = listener_match.get("filterChain", {}).get("filter", {}).get("name")
    found = []
    for listener in config["static_resources"]["listeners"]:
        if not _context_matches(match["context"], contexts[listener["name"]]):
            continue
        port = listener["address"]["socket_address"]["port_value"]
        if "portNumber" in listener_match and listener_match["portNumber"] != port:
            continue
        for chain in listener["filter_chains"]:
            for network_filter in chain["filters"]:
                if wanted_filter in (None, network_filter["name"]):
                    found.append(network_filter)
    return found


def apply_patches(config: Object, contexts: dict[str, str], envoy_filter: Object) -> int:
    """Applies every patch that matches; returns how many places were patched."""
    patched = 0
    for item in envoy_filter["spec"]["configPatches"]:
        apply_to, match, patch = item["applyTo"], item["match"], item["patch"]
        operation, value = patch["operation"], patch["value"]
        if apply_to == "CLUSTER" and operation == "ADD":
            if any(_context_matches(match["context"], c) for c in contexts.values()):
                config["static_resources"]["clusters"].append(copy.deepcopy(value))
                patched += 1
        elif apply_to == "NETWORK_FILTER" and operation == "MERGE":
            for network_filter in _matching_hcms(config, contexts, match):
                if value["typed_config"]["@type"] != network_filter["typed_config"]["@type"]:
                    raise ValueError("MERGE with another @type than the filter's")
                _proto_merge(network_filter, value)
                patched += 1
        elif apply_to == "HTTP_FILTER" and operation == "INSERT_BEFORE":
            sub = match["listener"]["filterChain"]["filter"]["subFilter"]["name"]
            for network_filter in _matching_hcms(config, contexts, match):
                chain = network_filter["typed_config"]["http_filters"]
                names = [f["name"] for f in chain]
                if sub in names:
                    chain.insert(names.index(sub), copy.deepcopy(value))
                    patched += 1
        else:
            raise NotImplementedError(f"{apply_to} {operation}")
    return patched
