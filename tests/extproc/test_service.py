"""The ext_proc service over real gRPC: message sequences as Envoy sends them."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any, TypeAlias

import grpc
import httpx
import pytest
from envoy.extensions.filters.http.ext_proc.v3.processing_mode_pb2 import ProcessingMode
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext_proc

from extproc_router import metrics
from extproc_router.routing import Router
from extproc_router.server import Server
from tests.extproc.messages import (
    chat,
    request_body,
    request_headers,
    response_body,
    response_headers,
    set_headers,
)

# The Envoy stubs are untyped (xds-protos ships no .pyi).
Stub: TypeAlias = Any
PROOF = (
    "Prove that every bounded monotone sequence converges, then derive the rate for a "
    "geometric one and compare both arguments."
)
EOF = grpc.aio.EOF  # type: ignore[attr-defined]


async def exchange(
    stub: Stub, messages: list[ext_proc.ProcessingRequest]
) -> list[ext_proc.ProcessingResponse]:
    """Send one message, read one answer, like Envoy does; stop at an immediate response."""
    call = stub.Process()
    answers = []
    for message in messages:
        await call.write(message)
        answer = await call.read()
        assert answer is not EOF
        answers.append(answer)
        if answer.HasField("immediate_response"):
            break
    await call.done_writing()
    assert await call.read() is EOF
    return answers


async def test_routed_request_sets_cluster_rewrites_model_and_tags_response(
    ext_proc_stub: Stub,
) -> None:
    headers, body, response = await exchange(
        ext_proc_stub,
        [request_headers(), request_body(chat(PROOF)), response_headers()],
    )
    assert headers.WhichOneof("response") == "request_headers"
    assert not headers.request_headers.HasField("response")
    common = body.request_body.response
    assert common.clear_route_cache
    routed = set_headers(common.header_mutation)
    assert routed["x-router-cluster"] == "large"
    assert routed["x-router-decision-id"] == "req-1"
    new_body = json.loads(common.body_mutation.body)
    assert new_body["model"] == "gpt-5.2"
    assert new_body["messages"] == chat(PROOF)["messages"]
    assert routed["content-length"] == str(len(common.body_mutation.body))
    tags = set_headers(response.response_headers.response.header_mutation)
    decision = tags.pop("x-router-decision")
    assert decision.startswith("pool=large; method=vote; confidence=")
    assert tags == {
        "x-router-pool": "large",
        "x-router-model": "gpt-5.2",
        "x-router-decision-id": "req-1",
    }


async def test_a_request_id_that_could_forge_a_log_line_is_replaced(ext_proc_stub: Stub) -> None:
    forged = request_headers(extra={"x-request-id": 'req-1"} {"decision_id": "x'})
    _, body = await exchange(ext_proc_stub, [forged, request_body(chat(PROOF))])
    decision_id = set_headers(body.request_body.response.header_mutation)["x-router-decision-id"]
    assert len(decision_id) == 32
    assert decision_id.isalnum()


async def test_served_model_name_keeps_the_body(ext_proc_stub: Stub) -> None:
    _, body = await exchange(
        ext_proc_stub, [request_headers(), request_body(chat("hi", "gemini-flash"))]
    )
    common = body.request_body.response
    assert set_headers(common.header_mutation)["x-router-cluster"] == "medium"
    assert not common.HasField("body_mutation")


async def test_completions_api_is_routed(ext_proc_stub: Stub) -> None:
    _, body = await exchange(
        ext_proc_stub,
        [
            request_headers("/v1/completions"),
            request_body({"model": "meta-llama/Meta-Llama-3-8B-Instruct", "prompt": "x"}),
        ],
    )
    common = body.request_body.response
    assert set_headers(common.header_mutation)["x-router-cluster"] == "small"
    assert json.loads(common.body_mutation.body)["model"] == "llama3-8b"


async def test_unknown_paths_pass_through(ext_proc_stub: Stub) -> None:
    answers = await exchange(
        ext_proc_stub,
        [request_headers("/v1/models", method="GET", end_of_stream=True), response_headers()],
    )
    assert [a.WhichOneof("response") for a in answers] == ["request_headers", "response_headers"]
    assert not answers[0].request_headers.HasField("response")
    assert not answers[1].response_headers.HasField("response")
    post = await exchange(
        ext_proc_stub, [request_headers("/v1/embeddings"), request_body(b'{"input": "x"}')]
    )
    assert not post[1].request_body.HasField("response")


@pytest.mark.parametrize(
    ("messages", "status", "code"),
    [
        ([request_headers(content_type="text/plain")], 415, "unsupported_media_type"),
        ([request_headers(content_type=None)], 415, "unsupported_media_type"),
        ([request_headers(end_of_stream=True)], 400, "empty_body"),
        ([request_headers(), request_body(b"{oops")], 400, "invalid_json"),
        ([request_headers(), request_body(b"\xc3\x28")], 400, "invalid_encoding"),
        ([request_headers(), request_body(chat("x", "gpt-9"))], 404, "model_not_found"),
    ],
)
async def test_bad_requests_get_an_immediate_json_error(
    ext_proc_stub: Stub, messages: list[ext_proc.ProcessingRequest], status: int, code: str
) -> None:
    answers = await exchange(ext_proc_stub, messages)
    immediate = answers[-1].immediate_response
    assert immediate.status.code == status
    assert json.loads(immediate.body)["error"]["code"] == code
    assert set_headers(immediate.headers)["content-type"] == "application/json"


async def test_body_above_grpc_default_limit(ext_proc_stub: Stub) -> None:
    big = "word " * (1_500_000)  # ~7.5 MB, above gRPC's 4 MiB default
    _, body = await exchange(ext_proc_stub, [request_headers(), request_body(chat(big))])
    common = body.request_body.response
    cluster = set_headers(common.header_mutation)["x-router-cluster"]
    assert cluster in ("small", "medium", "large", "small~medium", "medium~large")
    assert len(common.body_mutation.body) > 4 * 1024 * 1024


async def test_internal_fault_ends_the_stream_with_a_grpc_error(
    ext_proc_stub: Stub, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    async def broken(self: Router, request: object, **kwargs: object) -> None:
        raise RuntimeError("signal crashed")

    monkeypatch.setattr(Router, "decide", broken)
    call = ext_proc_stub.Process()
    await call.write(request_headers())
    await call.read()
    await call.write(request_body(chat("hi")))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call.read()
    assert caught.value.code() == grpc.StatusCode.INTERNAL
    assert "signal crashed" in caplog.text


async def test_cancelled_streams_end_quietly(
    ext_proc_stub: Stub, caplog: pytest.LogCaptureFixture
) -> None:
    before = metrics.STREAMS_ACTIVE._value.get()
    calls = []
    for _ in range(20):
        call = ext_proc_stub.Process()
        await call.write(request_headers())
        await call.read()
        calls.append(call)
    assert metrics.STREAMS_ACTIVE._value.get() == before + 20
    for call in calls:
        call.cancel()
    for _ in range(200):
        if metrics.STREAMS_ACTIVE._value.get() == before:
            break
        await asyncio.sleep(0.01)
    assert metrics.STREAMS_ACTIVE._value.get() == before
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


async def test_admin_endpoints(server: Server, ext_proc_stub: Stub) -> None:
    await exchange(ext_proc_stub, [request_headers(), request_body(chat("hi", "llama3-8b"))])
    await exchange(ext_proc_stub, [request_headers(), request_body(chat("What is a prime?"))])
    base = f"http://127.0.0.1:{server.admin_port}"
    async with httpx.AsyncClient() as client:
        assert (await client.get(base + "/healthz")).status_code == 200
        assert (await client.get(base + "/readyz")).status_code == 200
        scrape = (await client.get(base + "/metrics")).text
    assert 'routing_decisions_total{method="model",model="llama3-8b"}' in scrape
    for stage in ("keyword", "domain", "complexity", "embedding_model", "jailbreak", "pii"):
        assert f'signal_latency_ms_count{{signal="{stage}"}}' in scrape


async def test_streamed_response_is_read_for_usage_chunk_by_chunk(ext_proc_stub: Stub) -> None:
    """The router asks for usage on the client's behalf, has Envoy stream the response body
    to it, and hands back the stream without the chunk the client did not ask for."""
    usage = b'data: {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}}\n\n'
    words = b'data: {"choices": [{"delta": {"content": "hi"}}], "usage": null}\n\n'
    done = b"data: [DONE]\n\n"
    before = metrics.COST.labels(pool="large")._value.get()
    _, body, headers, first, last = await exchange(
        ext_proc_stub,
        [
            request_headers(),
            request_body(chat("hello", model="gpt-5.2", stream=True)),
            response_headers(content_type="text/event-stream"),
            response_body(words),
            response_body(usage + done, end_of_stream=True),
        ],
    )
    forwarded = json.loads(body.request_body.response.body_mutation.body)
    assert forwarded["stream_options"] == {"include_usage": True}
    assert headers.mode_override.response_body_mode == ProcessingMode.STREAMED
    assert "content-length" in headers.response_headers.response.header_mutation.remove_headers
    assert first.response_body.response.body_mutation.body == (
        b'data: {"choices": [{"delta": {"content": "hi"}}]}\n\n'
    )
    assert last.response_body.response.body_mutation.body == done
    # 3 input + 2 output tokens at gpt-5.2's price in the example config.
    spent = metrics.COST.labels(pool="large")._value.get() - before
    assert spent == pytest.approx((3 * 0.015 + 2 * 0.06) / 1000)


async def test_error_responses_are_not_streamed_to_the_router(ext_proc_stub: Stub) -> None:
    _, _, headers = await exchange(
        ext_proc_stub,
        [request_headers(), request_body(chat("hello", model="gpt-5.2")), response_headers("503")],
    )
    assert not headers.HasField("mode_override")


async def test_a_small_json_response_comes_whole_and_is_counted(ext_proc_stub: Stub) -> None:
    answer = json.dumps({"choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 1}})
    before = metrics.COST.labels(pool="large")._value.get()
    _, _, headers, body = await exchange(
        ext_proc_stub,
        [
            request_headers(),
            request_body(chat("hello", model="gpt-5.2")),
            response_headers(length=len(answer)),
            response_body(answer.encode(), end_of_stream=True),
        ],
    )
    assert headers.mode_override.response_body_mode == ProcessingMode.BUFFERED
    assert not body.response_body.response.HasField("body_mutation")  # passed on unchanged
    spent = metrics.COST.labels(pool="large")._value.get() - before
    assert spent == pytest.approx((7 * 0.015 + 1 * 0.06) / 1000)
