"""`extproc-router health`: one question to a router's gRPC health service.

Kubernetes asks the health service itself (a `grpc` probe); a container runtime without gRPC
probes (Docker's HEALTHCHECK) runs this instead. It asks for the ext_proc service by name, the
same question Envoy's health check asks, so "healthy" means what Envoy would route to:
SERVING after the models are loaded, NOT_SERVING while the router drains.
"""

from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

__all__ = ["EXTPROC_SERVICE", "check_health"]

EXTPROC_SERVICE = "envoy.service.ext_proc.v3.ExternalProcessor"


async def check_health(
    target: str, *, service: str = EXTPROC_SERVICE, deadline: float = 3.0
) -> str:
    """The serving status's name (SERVING, NOT_SERVING, SERVICE_UNKNOWN...), or UNREACHABLE."""
    async with grpc.aio.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = await stub.Check(
                health_pb2.HealthCheckRequest(service=service), timeout=deadline
            )
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                return "SERVICE_UNKNOWN"
            return "UNREACHABLE"
    name: str = health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)
    return name
