import json

import pytest

from extproc_router.exceptions import RequestError
from extproc_router.request import api_for_path, encode_body, gather, parse_body


@pytest.mark.parametrize(
    ("method", "path", "api"),
    [
        ("POST", "/v1/chat/completions", "chat_completions"),
        ("POST", "/v1/chat/completions?x=1", "chat_completions"),
        ("POST", "/v1/chat/completions/", "chat_completions"),
        ("POST", "/v1/completions", "completions"),
        ("GET", "/v1/chat/completions", None),
        ("GET", "/v1/models", None),
        ("POST", "/v1/embeddings", None),
        ("POST", "/", None),
    ],
)
def test_api_for_path(method: str, path: str, api: str | None) -> None:
    assert api_for_path(method, path) == api


def test_chat_prompt_is_the_last_user_turn() -> None:
    body = {
        "model": "auto",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": None, "tool_calls": []},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "second"},
                    {"type": "image_url", "image_url": {"url": "x"}},
                    {"type": "text", "text": "part"},
                ],
            },
        ],
        "stream": True,
    }
    parsed = parse_body("chat_completions", json.dumps(body).encode())
    assert parsed.prompt == "second\npart"
    assert parsed.model == "auto"
    assert parsed.stream is True


def test_missing_model_means_auto() -> None:
    parsed = parse_body("chat_completions", b'{"messages": [{"role": "user", "content": "x"}]}')
    assert parsed.model is None


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (b"", "empty_body"),
        (b"\xff\xfe{}", "invalid_encoding"),
        (b"{not json", "invalid_json"),
        (b"[1, 2]", "invalid_json"),
        (b'"text"', "invalid_json"),
        (b"[" * 100_000 + b"]" * 100_000, "invalid_json"),
        (b'{"model": 7, "messages": []}', "invalid_type"),
        (b'{"model": "auto"}', "missing_required_parameter"),
        (b'{"messages": []}', "invalid_type"),
        (b'{"messages": "hi"}', "invalid_type"),
        (b'{"messages": [{"content": "no role"}]}', "invalid_type"),
        (b'{"messages": [{"role": "user", "content": 5}]}', "invalid_type"),
        (b'{"messages": [{"role": "user", "content": "x"}], "stream": "yes"}', "invalid_type"),
        # A lone surrogate half decodes but cannot be encoded again (nor tokenised).
        (b'{"messages": [{"role": "user", "content": "\\udc00 x"}]}', "invalid_encoding"),
        # The router would scan one copy, a model server might read the other.
        (b'{"model": "a", "model": "b", "messages": [{"role": "user"}]}', "duplicate_key"),
        (b'{"messages": [{"role": "user", "content": "hi", "content": "bye"}]}', "duplicate_key"),
        (
            b'{"messages": [' + b",".join([b'{"role": "user", "content": "x"}'] * 4097) + b"]}",
            "too_many_messages",
        ),
    ],
)
def test_bad_chat_bodies(raw: bytes, code: str) -> None:
    with pytest.raises(RequestError) as caught:
        parse_body("chat_completions", raw)
    assert caught.value.code == code
    assert caught.value.status == 400


@pytest.mark.parametrize(
    ("prompt", "text"),
    [("hello", "hello"), (["a", "b"], "a\nb"), ([1, 2, 3], ""), ([[1, 2]], "")],
)
def test_completion_prompts(prompt: object, text: str) -> None:
    parsed = parse_body("completions", json.dumps({"model": "m", "prompt": prompt}).encode())
    assert parsed.prompt == text


@pytest.mark.parametrize("body", [b'{"model": "m"}', b'{"prompt": {"a": 1}}'])
def test_bad_completion_bodies(body: bytes) -> None:
    with pytest.raises(RequestError):
        parse_body("completions", body)


def test_encode_body_round_trips_unicode_compactly() -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "héllo ✓"}]}
    encoded = encode_body(body)
    assert json.loads(encoded) == body
    assert "héllo ✓".encode() in encoded


def test_lone_surrogate_is_a_client_error() -> None:
    with pytest.raises(RequestError, match="surrogate"):
        encode_body({"messages": [{"role": "user", "content": "\ud800"}]})
    paired = parse_body(
        "chat_completions", b'{"messages": [{"role": "user", "content": "\\ud83d\\ude00"}]}'
    )
    assert paired.prompt == "\U0001f600"


def test_context_is_the_bounded_tail_of_earlier_turns() -> None:
    messages = [{"role": "system", "content": "be brief"}]
    for turn in range(2000):
        messages.append({"role": "user", "content": f"question {turn}"})
        messages.append({"role": "assistant", "content": f"answer {turn}"})
    messages.append({"role": "user", "content": "last"})
    parsed = parse_body("chat_completions", json.dumps({"messages": messages}).encode())
    assert parsed.prompt == "last"
    assert parsed.system == "be brief"
    assert len(parsed.context) <= 4000
    assert parsed.context.endswith("answer 1999")
    assert "be brief" not in parsed.context


def test_a_body_in_chunks_is_gathered_whole() -> None:
    chunks: list[bytes] = []
    assert gather(chunks, b'{"model": ', False) is None
    assert gather(chunks, b'"auto"}', True) == b'{"model": "auto"}'
    assert chunks == []  # ready for nothing else to leak into the next body
    assert gather(chunks, b"{}", True) == b"{}"
