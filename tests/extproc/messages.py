"""Build the ext_proc messages Envoy would send, and read the answers."""

from __future__ import annotations

import json
from typing import Any

from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext_proc


def request_headers(
    path: str = "/v1/chat/completions",
    *,
    method: str = "POST",
    content_type: str | None = "application/json",
    end_of_stream: bool = False,
    extra: dict[str, str] | None = None,
) -> ext_proc.ProcessingRequest:
    headers = {":method": method, ":path": path, ":authority": "llm", "x-request-id": "req-1"}
    if content_type is not None:
        headers["content-type"] = content_type
    headers.update(extra or {})
    return ext_proc.ProcessingRequest(
        request_headers=ext_proc.HttpHeaders(
            headers=base_pb2.HeaderMap(
                headers=[
                    base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in headers.items()
                ]
            ),
            end_of_stream=end_of_stream,
        )
    )


def request_body(body: bytes | dict[str, Any]) -> ext_proc.ProcessingRequest:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return ext_proc.ProcessingRequest(request_body=ext_proc.HttpBody(body=raw, end_of_stream=True))


def response_headers(
    status: str = "200", content_type: str = "application/json", length: int | None = None
) -> ext_proc.ProcessingRequest:
    headers = {":status": status, "content-type": content_type}
    if length is not None:
        headers["content-length"] = str(length)
    return ext_proc.ProcessingRequest(
        response_headers=ext_proc.HttpHeaders(
            headers=base_pb2.HeaderMap(
                headers=[
                    base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in headers.items()
                ]
            )
        )
    )


def response_body(chunk: bytes, *, end_of_stream: bool = False) -> ext_proc.ProcessingRequest:
    return ext_proc.ProcessingRequest(
        response_body=ext_proc.HttpBody(body=chunk, end_of_stream=end_of_stream)
    )


def chat(content: str, model: str | None = "auto", **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"messages": [{"role": "user", "content": content}], **extra}
    if model is not None:
        body["model"] = model
    return body


def set_headers(mutation: ext_proc.HeaderMutation) -> dict[str, str]:
    return {h.header.key: h.header.raw_value.decode() for h in mutation.set_headers}
