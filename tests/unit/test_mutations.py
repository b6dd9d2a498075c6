import json

from envoy.config.core.v3 import base_pb2

from extproc_router import mutations
from extproc_router.exceptions import RequestError


def test_route_request_sets_raw_values_length_and_clears_route_cache() -> None:
    body = b'{"model":"llama3-8b"}'
    response = mutations.route_request({"x-router-cluster": "small"}, body)
    common = response.request_body.response
    assert common.clear_route_cache
    assert common.body_mutation.body == body
    headers = {h.header.key: h for h in common.header_mutation.set_headers}
    assert headers["x-router-cluster"].header.raw_value == b"small"
    assert headers["content-length"].header.raw_value == str(len(body)).encode()
    for option in headers.values():
        assert option.header.value == ""  # both set makes Envoy reject the mutation
        assert option.append_action == base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def test_route_request_without_body_keeps_the_body() -> None:
    response = mutations.route_request({"x-router-cluster": "small"}, None)
    common = response.request_body.response
    assert not common.HasField("body_mutation")
    assert "content-length" not in {h.header.key for h in common.header_mutation.set_headers}


def test_immediate_error_is_openai_shaped_json() -> None:
    error = RequestError("nope", status=404, code="model_not_found", param="model")
    response = mutations.immediate_error(error, {"x-router-decision-id": "abc"})
    immediate = response.immediate_response
    assert immediate.status.code == 404
    assert json.loads(immediate.body) == {
        "error": {
            "message": "nope",
            "type": "invalid_request_error",
            "param": "model",
            "code": "model_not_found",
        }
    }
    headers = {h.header.key: h.header.raw_value for h in immediate.headers.set_headers}
    assert headers == {"content-type": b"application/json", "x-router-decision-id": b"abc"}


def test_continue_response_headers() -> None:
    assert not mutations.continue_response_headers().response_headers.HasField("response")
    added = mutations.continue_response_headers({"x-router-pool": "small"})
    keys = [h.header.key for h in added.response_headers.response.header_mutation.set_headers]
    assert keys == ["x-router-pool"]
