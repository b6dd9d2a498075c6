"""Token usage read from model responses as they pass, and what those tokens cost.

OpenAI-style servers report `usage` in a JSON response's body, or, when streaming, in one last
SSE chunk (`choices: []`) that they send only if the request asked for it with
`stream_options.include_usage`. The router asks on the client's behalf and, when the client had
not asked, takes that chunk out again on the way back, so the client sees exactly the stream it
asked for.

Chunks of a stream are never held back, except the unfinished tail of an event while the router
is removing a chunk (it must see the whole event to know); a chunk that ends on an event
boundary goes on at once, unchanged.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from extproc_router.settings import Price

__all__ = ["ResponseMeter", "Usage", "ask_for_usage", "cost_usd"]

# A JSON response longer than this is forwarded without its usage being read.
_MAX_JSON_BYTES = 4 * 1024 * 1024
_EVENT_ENDS = (b"\n\n", b"\r\n\r\n")
# Asking for usage also puts `"usage": null` into every other chunk. Quotes inside JSON strings
# are escaped, so this only ever matches a key.
_NULL_USAGE = re.compile(rb',\s*"usage"\s*:\s*null(?=\s*[,}])|"usage"\s*:\s*null\s*,')


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @classmethod
    def from_json(cls, usage: object) -> Usage | None:
        if not isinstance(usage, dict):
            return None
        prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens", 0)
        if not isinstance(prompt, int) or not isinstance(completion, int):
            return None
        return cls(max(prompt, 0), max(completion, 0))


def cost_usd(usage: Usage, price: Price) -> float:
    return (
        usage.prompt_tokens * price.input_per_1k + usage.completion_tokens * price.output_per_1k
    ) / 1000


def ask_for_usage(body: dict[str, Any]) -> bool:
    """Make a streaming request ask for the final usage chunk. True when the client had not
    asked (so the chunk is the router's to remove from the response)."""
    if body.get("stream") is not True:
        return False
    options = body.get("stream_options")
    if isinstance(options, dict) and options.get("include_usage") is True:
        return False
    kept = options if isinstance(options, dict) else {}
    body["stream_options"] = {**kept, "include_usage": True}
    return True


def _last_event_end(data: bytes) -> int:
    """Index just past the last complete SSE event in `data` (0 if none)."""
    return max(
        (index + len(end) for end in _EVENT_ENDS if (index := data.rfind(end)) >= 0), default=0
    )


class ResponseMeter:
    """Reads one response body, chunk by chunk, for its usage. `strip` removes the usage-only
    chunk of an SSE stream (the client did not ask for it)."""

    def __init__(self, *, event_stream: bool, strip: bool) -> None:
        self.usage: Usage | None = None
        self._event_stream = event_stream
        self._strip = strip and event_stream
        self._pending = b""
        self._json_size = 0
        self._json_parts: list[bytes] = []

    def feed(self, chunk: bytes, end_of_stream: bool) -> bytes | None:
        """The bytes to send on in place of `chunk`, or None to send it unchanged."""
        if not self._event_stream:
            self._collect_json(chunk, end_of_stream)
            return None
        data = self._pending + chunk if self._pending else chunk
        cut = len(data) if end_of_stream else _last_event_end(data)
        complete, self._pending = data[:cut], data[cut:]
        kept = self._read_events(complete)
        if not self._strip:
            # Nothing is ever removed: the unfinished tail is kept only to be read later.
            return None
        if kept is complete and len(complete) == len(data) == len(chunk):
            return None
        return kept

    def _read_events(self, data: bytes) -> bytes:
        """Read the usage out of complete events. When stripping, the usage-only chunk goes,
        and so does the `"usage": null` the request's new option put into the others."""
        if b'"usage"' not in data:
            return data
        kept: list[bytes] = []
        changed = False
        start = 0
        while start < len(data):
            end = _next_event_end(data, start)
            event = data[start:end]
            start = end
            if b'"usage"' not in event:
                kept.append(event)
            elif _NULL_USAGE.search(event):
                if self._strip:
                    event = _NULL_USAGE.sub(b"", event)
                    changed = True
                kept.append(event)
            elif self._read_usage(event) and self._strip:
                changed = True
            else:
                kept.append(event)
        return b"".join(kept) if changed else data

    def _read_usage(self, event: bytes) -> bool:
        """Record the usage in one event; True when it is the usage-only chunk."""
        for line in event.splitlines():
            if not line.startswith(b"data:"):
                continue
            payload = line[5:].strip()
            if not payload.startswith(b"{"):
                continue
            try:
                chunk = json.loads(payload)
            except ValueError:
                return False
            usage = Usage.from_json(chunk.get("usage")) if isinstance(chunk, dict) else None
            if usage is None:
                return False
            self.usage = usage
            return bool(chunk.get("choices") == [])
        return False

    def _collect_json(self, chunk: bytes, end_of_stream: bool) -> None:
        self._json_size += len(chunk)
        if self._json_size <= _MAX_JSON_BYTES:
            self._json_parts.append(chunk)
        if not end_of_stream or self._json_size > _MAX_JSON_BYTES:
            return
        raw, self._json_parts = b"".join(self._json_parts), []
        try:
            body = json.loads(raw)
        except (ValueError, RecursionError):
            return
        if isinstance(body, dict):
            self.usage = Usage.from_json(body.get("usage"))


def _next_event_end(data: bytes, start: int) -> int:
    ends = [i + len(end) for end in _EVENT_ENDS if (i := data.find(end, start)) >= 0]
    return min(ends) if ends else len(data)
