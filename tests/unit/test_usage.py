"""Token usage read from responses, and the usage chunk the router asked for taken out again."""

from __future__ import annotations

import json
import random
from typing import Any

import pytest

from extproc_router.settings import Price
from extproc_router.usage import ResponseMeter, Usage, ask_for_usage, cost_usd

USAGE = {"prompt_tokens": 12, "completion_tokens": 5, "total_tokens": 17}


def _stream(*, with_usage: bool, compact: bool, words: tuple[str, ...]) -> bytes:
    """An OpenAI-style chat stream, as vLLM (compact JSON) or Python servers write it."""
    separators = (",", ":") if compact else (", ", ": ")
    base = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "model": "m"}
    extra = {"usage": None} if with_usage else {}
    chunks: list[dict[str, Any]] = [
        {**base, "choices": [{"index": 0, "delta": {"content": w}}], **extra} for w in words
    ]
    if with_usage:
        chunks.append({**base, "choices": [], "usage": USAGE})
    events = [b"data: " + json.dumps(c, separators=separators).encode() + b"\n\n" for c in chunks]
    return b"".join(events) + b"data: [DONE]\n\n"


def _run(meter: ResponseMeter, pieces: list[bytes]) -> bytes:
    out = []
    for index, piece in enumerate(pieces):
        replaced = meter.feed(piece, index == len(pieces) - 1)
        out.append(piece if replaced is None else replaced)
    return b"".join(out)


# Content that looks like the usage key must pass untouched (it is escaped inside a string).
WORDS = ("Hello", ' the "usage": null, field', " wörld", "!")


@pytest.mark.parametrize("compact", [True, False])
def test_stripped_stream_is_byte_for_byte_what_the_client_asked_for(compact: bool) -> None:
    sent = _stream(with_usage=True, compact=compact, words=WORDS)
    expected = _stream(with_usage=False, compact=compact, words=WORDS)
    for cut in range(1, len(sent)):
        meter = ResponseMeter(event_stream=True, strip=True)
        assert _run(meter, [sent[:cut], sent[cut:]]) == expected, cut
        assert meter.usage == Usage(12, 5)


def test_random_chunking_of_a_long_stream() -> None:
    rng = random.Random(7)
    words = tuple(f" word{i}" for i in range(200))
    sent = _stream(with_usage=True, compact=True, words=words)
    expected = _stream(with_usage=False, compact=True, words=words)
    for _ in range(50):
        cuts = sorted(rng.sample(range(1, len(sent)), 30))
        pieces = [sent[a:b] for a, b in zip([0, *cuts], [*cuts, len(sent)], strict=True)]
        meter = ResponseMeter(event_stream=True, strip=True)
        assert _run(meter, pieces) == expected
        assert meter.usage == Usage(12, 5)


def test_whole_events_pass_unchanged_when_the_client_asked_for_usage() -> None:
    sent = _stream(with_usage=True, compact=True, words=WORDS)
    events = [e + b"\n\n" for e in sent.split(b"\n\n") if e]
    meter = ResponseMeter(event_stream=True, strip=False)
    for index, event in enumerate(events):
        assert meter.feed(event, index == len(events) - 1) is None
    assert meter.usage == Usage(12, 5)
    # Split mid-event too: still read, still never changed.
    meter = ResponseMeter(event_stream=True, strip=False)
    assert meter.feed(sent[:37], False) is None
    assert meter.feed(sent[37:], True) is None
    assert meter.usage == Usage(12, 5)


def test_a_stream_without_usage_is_never_changed() -> None:
    sent = _stream(with_usage=False, compact=True, words=WORDS)
    meter = ResponseMeter(event_stream=True, strip=True)
    assert meter.feed(sent, True) is None
    assert meter.usage is None


def test_crlf_event_ends() -> None:
    sent = _stream(with_usage=True, compact=True, words=WORDS).replace(b"\n\n", b"\r\n\r\n")
    meter = ResponseMeter(event_stream=True, strip=True)
    out = _run(meter, [sent[:50], sent[50:]])
    assert b'"usage"' not in out.replace(b'\\"usage\\"', b"")
    assert meter.usage == Usage(12, 5)


def test_json_response_usage_in_chunks() -> None:
    body = json.dumps({"id": "x", "choices": [], "usage": USAGE}).encode()
    meter = ResponseMeter(event_stream=False, strip=True)
    assert meter.feed(body[:10], False) is None
    assert meter.usage is None
    assert meter.feed(body[10:], True) is None
    assert meter.usage == Usage(12, 5)


@pytest.mark.parametrize(
    "body", [b"not json", b"[1, 2]", b'{"usage": {"prompt_tokens": "many"}}', b'{"usage": 3}']
)
def test_unreadable_usage_is_no_usage(body: bytes) -> None:
    meter = ResponseMeter(event_stream=False, strip=False)
    meter.feed(body, True)
    assert meter.usage is None


def test_ask_for_usage() -> None:
    body: dict[str, Any] = {"stream": True, "stream_options": {"continuous_usage_stats": False}}
    assert ask_for_usage(body) is True
    assert body["stream_options"] == {"continuous_usage_stats": False, "include_usage": True}
    asked: dict[str, Any] = {"stream": True, "stream_options": {"include_usage": True}}
    assert ask_for_usage(asked) is False
    plain: dict[str, Any] = {"stream": False}
    assert ask_for_usage(plain) is False
    assert "stream_options" not in plain


def test_cost() -> None:
    price = Price(input_per_1k=0.015, output_per_1k=0.06)
    assert cost_usd(Usage(1000, 500), price) == pytest.approx(0.015 + 0.03)
    assert cost_usd(Usage(0, 0), price) == 0
