"""What shadow routing adds to the rendered Envoy config: a mirror policy on the routed routes,
and the loopback listener (with its cluster) that mirrored copies pass through, so that the
router sees the shadow pool's answer too (Envoy drops a mirror's answer itself).

The shadow listener is the main one's copy with three differences: only the cluster header is
removed from incoming requests (the copy must keep the router's `x-router-shadow-*` headers,
which the main listener strips from clients), every route goes by the cluster header the router
sets, and a copy the router did not route (fail-open) gets a 503 instead of a default pool.
"""

from __future__ import annotations

import copy
from typing import Any

from extproc_router.settings import Settings
from extproc_router.shadow import SHADOW_CLUSTER, SHADOW_CLUSTER_HEADER

__all__ = ["add_shadow"]


def add_shadow(config: dict[str, Any], settings: Settings) -> None:
    """Mirror routed requests by `x-router-shadow-cluster` and add the shadow listener; a
    config without `shadow.pool` is left as it is."""
    if settings.shadow.pool is None:
        return
    resources = config["static_resources"]
    listener = resources["listeners"][0]
    hcm = listener["filter_chains"][0]["filters"][0]["typed_config"]
    for route in hcm["route_config"]["virtual_hosts"][0]["routes"]:
        if "cluster_header" in route["route"]:
            route["route"]["request_mirror_policies"] = [
                {"cluster_header": SHADOW_CLUSTER_HEADER, "disable_shadow_host_suffix_append": True}
            ]
    shadow_hcm = copy.deepcopy(hcm)
    shadow_hcm["stat_prefix"] = "llm_shadow"
    mutation = shadow_hcm["early_header_mutation_extensions"][0]["typed_config"]
    mutation["mutations"] = [{"remove": settings.envoy.cluster_header}]
    shadow_hcm["route_config"] = {
        "name": "llm_shadow",
        "virtual_hosts": [
            {
                "name": "llm_shadow",
                "domains": ["*"],
                "routes": [
                    {
                        "name": "shadow_routed",
                        "match": {
                            "prefix": "/",
                            "headers": [
                                {"name": settings.envoy.cluster_header, "present_match": True}
                            ],
                        },
                        "route": {
                            "cluster_header": settings.envoy.cluster_header,
                            "timeout": f"{settings.envoy.route_timeout_s}s",
                        },
                    },
                    {
                        "name": "shadow_unrouted",
                        "match": {"prefix": "/"},
                        "direct_response": {"status": 503},
                    },
                ],
            }
        ],
    }
    listen = settings.shadow.listen
    shadow_listener = copy.deepcopy(listener)
    shadow_listener["name"] = "llm_shadow"
    shadow_listener["address"] = {
        "socket_address": {"address": listen.host, "port_value": listen.port}
    }
    shadow_listener["filter_chains"][0]["filters"][0]["typed_config"] = shadow_hcm
    resources["listeners"].append(shadow_listener)
    resources["clusters"].append(
        {
            "name": SHADOW_CLUSTER,
            "type": "STATIC",
            "connect_timeout": "1s",
            "load_assignment": {
                "cluster_name": SHADOW_CLUSTER,
                "endpoints": [
                    {
                        "lb_endpoints": [
                            {
                                "endpoint": {
                                    "address": {
                                        "socket_address": {
                                            "address": listen.host,
                                            "port_value": listen.port,
                                        }
                                    }
                                }
                            }
                        ]
                    }
                ],
            },
        }
    )
