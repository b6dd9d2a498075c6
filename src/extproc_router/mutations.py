"""The only module that builds ext_proc protobuf responses.

Everything upstream of here works with plain values (a `Decision`, a `RequestError`, a dict of
headers); this turns them into what Envoy expects, and keeps Envoy's sharp edges in one place:
header values go in `raw_value` only (setting `value` too makes Envoy reject the mutation), a
replaced body needs a matching `content-length`, and a header change only moves the request to
another cluster when `clear_route_cache` is set in the same response.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from envoy.config.core.v3 import base_pb2
from envoy.extensions.filters.http.ext_proc.v3 import processing_mode_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as ext_proc
from envoy.type.v3 import http_status_pb2

from extproc_router.exceptions import RequestError

__all__ = [
    "continue_request_body",
    "continue_request_headers",
    "continue_response_body",
    "continue_response_headers",
    "error_body",
    "immediate_error",
    "immediate_response",
    "route_request",
]

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def _header_mutation(
    headers: Mapping[str, str], remove: tuple[str, ...] = ()
) -> ext_proc.HeaderMutation:
    return ext_proc.HeaderMutation(
        set_headers=[
            base_pb2.HeaderValueOption(
                header=base_pb2.HeaderValue(key=key, raw_value=value.encode()),
                append_action=_OVERWRITE,
            )
            for key, value in headers.items()
        ],
        remove_headers=list(remove),
    )


def continue_request_headers() -> ext_proc.ProcessingResponse:
    return ext_proc.ProcessingResponse(request_headers=ext_proc.HeadersResponse())


def continue_request_body() -> ext_proc.ProcessingResponse:
    return ext_proc.ProcessingResponse(request_body=ext_proc.BodyResponse())


def continue_response_headers(
    headers: Mapping[str, str] | None = None,
    *,
    remove: tuple[str, ...] = (),
    body: str = "",
) -> ext_proc.ProcessingResponse:
    """`body`: have Envoy send this response's body to the router, "streamed" chunk by chunk
    as it arrives (SSE) or "buffered" whole in one message (a small JSON answer, which the
    client cannot use before its end anyway). The filter's `allow_mode_override` must be on;
    it is in the rendered config."""
    response = ext_proc.ProcessingResponse(response_headers=ext_proc.HeadersResponse())
    if headers or remove:
        response.response_headers.response.header_mutation.CopyFrom(
            _header_mutation(headers or {}, remove)
        )
    if body:
        mode = processing_mode_pb2.ProcessingMode
        response.mode_override.response_body_mode = (
            mode.STREAMED if body == "streamed" else mode.BUFFERED
        )
    return response


def continue_response_body(body: bytes | None = None) -> ext_proc.ProcessingResponse:
    """`body` replaces the chunk (a streamed chunk may become shorter, or empty)."""
    response = ext_proc.ProcessingResponse(response_body=ext_proc.BodyResponse())
    if body is not None:
        mutation = response.response_body.response.body_mutation
        if body:
            mutation.body = body
        else:
            mutation.clear_body = True
    return response


def route_request(headers: Mapping[str, str], body: bytes | None) -> ext_proc.ProcessingResponse:
    """Answer the buffered request body: set the routing headers, maybe replace the body, and
    make Envoy pick the route again so the new cluster header takes effect.

    `body` None leaves the body as the client sent it.
    """
    headers = dict(headers)
    common = ext_proc.CommonResponse(clear_route_cache=True)
    if body is not None:
        headers["content-length"] = str(len(body))
        common.body_mutation.body = body
    common.header_mutation.CopyFrom(_header_mutation(headers))
    return ext_proc.ProcessingResponse(request_body=ext_proc.BodyResponse(response=common))


# The dynamic metadata namespace (and key) the router's own error answers carry.
METADATA_NAMESPACE = "extproc_router"
# Envoy adds it to the answer of a request the router routed: the pool whose endpoint answered
# (it differs from the router's choice after a failover); the router removes it.
SERVED_BY_HEADER = "x-router-served-by"
ROUTER_REPLY_KEY = "router_reply"


def error_body(error: RequestError) -> bytes:
    """The OpenAI error shape, so SDKs raise their usual typed exceptions."""
    return json.dumps(
        {
            "error": {
                "message": error.message,
                "type": error.error_type,
                "param": error.param,
                "code": error.code,
            }
        },
        ensure_ascii=False,
    ).encode("utf-8")


def immediate_error(
    error: RequestError, headers: Mapping[str, str] | None = None
) -> ext_proc.ProcessingResponse:
    """Answer the client directly: the request never reaches a pool."""
    all_headers = {"content-type": "application/json", **(headers or {})}
    return immediate_response(
        error.status, all_headers, error_body(error), details=f"extproc_router_{error.code}"
    )


def immediate_response(
    status: int, headers: Mapping[str, str], body: bytes, *, details: str
) -> ext_proc.ProcessingResponse:
    """The router answers in Envoy's place (an error, or an answer from the cache); `headers`
    include the content type."""
    response = ext_proc.ProcessingResponse(
        immediate_response=ext_proc.ImmediateResponse(
            status=http_status_pb2.HttpStatus(code=status),
            headers=_header_mutation(headers),
            body=body,
            details=details,
        )
    )
    # Envoy's local_reply_config would give a 503 from the router Envoy's own generic JSON;
    # this marks the answer as the router's, and the rendered mappers leave it alone.
    response.dynamic_metadata.update({METADATA_NAMESPACE: {ROUTER_REPLY_KEY: True}})
    return response
