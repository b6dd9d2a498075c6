"""Parse OpenAI-style request bodies into what the routing decision needs.

The body is validated only as far as routing depends on it (shape of `model`, `messages`,
`prompt`, `stream`); everything else is the model server's business and is forwarded untouched.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any, Literal

from extproc_router.exceptions import RequestError

__all__ = [
    "API_PATHS",
    "MAX_MESSAGES",
    "Api",
    "ParsedRequest",
    "api_for_path",
    "encode_body",
    "gather",
    "parse_body",
]

Api = Literal["chat_completions", "completions"]

API_PATHS: dict[str, Api] = {
    "/v1/chat/completions": "chat_completions",
    "/v1/completions": "completions",
}


@dataclass(frozen=True, slots=True)
class ParsedRequest:
    api: Api
    # None when the client sent no `model`: treated like the "auto" alias.
    model: str | None
    stream: bool
    body: dict[str, Any]
    # The text the routing signals judge: the last user turn (or the completion prompt).
    prompt: str
    # System and developer messages, read only when the config says so.
    system: str = ""
    # The turns before the last user turn (their tail), for the optional context window.
    context: str = ""
    # Size of the body as received: what scanning all of it will cost.
    size: int = 0


def api_for_path(method: str, path: str) -> Api | None:
    """The API a request speaks, or None for anything the router passes through untouched."""
    if method != "POST":
        return None
    return API_PATHS.get(path.split("?", 1)[0].rstrip("/") or "/")


def gather(chunks: list[bytes], body: bytes, end_of_stream: bool) -> bytes | None:
    """The whole body once its last chunk has come (None before it). In BUFFERED mode Envoy
    sends the body in one message; gathering anyway makes a chunked configuration cost a copy
    rather than a wrong decision."""
    chunks.append(body)
    if not end_of_stream:
        return None
    whole = b"".join(chunks)
    chunks.clear()
    return whole


def parse_body(api: Api, raw: bytes) -> ParsedRequest:
    if not raw:
        raise RequestError("the request body is empty; expected a JSON object", code="empty_body")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise RequestError(
            f"the request body is not valid UTF-8 (byte {error.start})", code="invalid_encoding"
        ) from None
    try:
        body = json.loads(text, object_pairs_hook=_unique_keys)
    except DuplicateKeyError as error:
        raise RequestError(
            f"the request body repeats the key {error.key!r} in one object; parsers disagree on "
            "which copy counts, so the router would check one and the model read the other",
            code="duplicate_key",
        ) from None
    except json.JSONDecodeError as error:
        raise RequestError(
            f"the request body is not valid JSON: {error.msg} at line {error.lineno} "
            f"column {error.colno}",
            code="invalid_json",
        ) from None
    except RecursionError:
        raise RequestError("the request body is nested too deeply", code="invalid_json") from None
    if not isinstance(body, dict):
        raise RequestError(
            f"the request body must be a JSON object, not {_json_type(body)}", code="invalid_json"
        )
    if _SURROGATE_ESCAPE.search(text):
        # A pair decodes to one character; a lone half can be neither scanned nor sent on.
        encode_body(body)

    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise RequestError(
            f"'model' must be a string, not {_json_type(model)}",
            code="invalid_type",
            param="model",
        )
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise RequestError("'stream' must be true or false", code="invalid_type", param="stream")
    if api == "chat_completions":
        prompt, system, context = _chat_prompt(body)
    else:
        prompt, system, context = _completion_prompt(body), "", ""
    return ParsedRequest(api, model, bool(stream), body, prompt, system, context, len(raw))


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


class DuplicateKeyError(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKeyError(key[:64])
            seen.add(key)
    return result


def encode_body(body: dict[str, Any]) -> bytes:
    """Serialise a rewritten body compactly; lone surrogates from `\\ud800`-style escapes cannot
    be sent on as UTF-8, so they are a client error rather than a crash."""
    try:
        return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(
            "the request body contains an unpaired UTF-16 surrogate escape",
            code="invalid_encoding",
        ) from None


_SYSTEM_ROLES = ("system", "developer")


# Far beyond any model's context, and it bounds the per-message work of the safety scans.
MAX_MESSAGES = 4096

# Earlier turns kept for the signals' optional context window (`routing.context_chars`).
_CONTEXT_LIMIT = 4000


def _chat_prompt(body: dict[str, Any]) -> tuple[str, str, str]:
    """The last user turn, the system prompts joined, and the tail of the turns before."""
    messages = body.get("messages")
    if messages is None:
        raise RequestError(
            "'messages' is required", code="missing_required_parameter", param="messages"
        )
    if not isinstance(messages, list) or not messages:
        raise RequestError(
            "'messages' must be a non-empty array", code="invalid_type", param="messages"
        )
    if len(messages) > MAX_MESSAGES:
        raise RequestError(
            f"'messages' has {len(messages)} items; at most {MAX_MESSAGES} are accepted",
            code="too_many_messages",
            param="messages",
        )
    last_user, last_index = "", -1
    system = []
    for index, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise RequestError(
                f"messages[{index}] must be an object with a string 'role'",
                code="invalid_type",
                param=f"messages[{index}]",
            )
        if message["role"] == "user":
            last_user, last_index = _content_text(message.get("content"), index), index
        elif message["role"] in _SYSTEM_ROLES:
            system.append(_content_text(message.get("content"), index))
    context: list[str] = []
    size = 0
    for message in reversed(messages[: max(last_index, 0)]):
        if size >= _CONTEXT_LIMIT:
            break
        if message["role"] in ("user", "assistant"):
            text = _content_text(message.get("content"), 0)
            context.append(text)
            size += len(text)
    return last_user, "\n".join(system), "\n".join(reversed(context))[-_CONTEXT_LIMIT:]


def _content_text(content: Any, index: int) -> str:
    if content is None or isinstance(content, str):
        return content or ""
    if isinstance(content, list):
        texts = [
            part["text"]
            for part in content
            if isinstance(part, dict)
            and part.get("type") == "text"
            and isinstance(part.get("text"), str)
        ]
        return "\n".join(texts)
    raise RequestError(
        f"messages[{index}].content must be a string or an array of content parts",
        code="invalid_type",
        param=f"messages[{index}].content",
    )


def _completion_prompt(body: dict[str, Any]) -> str:
    prompt = body.get("prompt")
    if prompt is None:
        raise RequestError(
            "'prompt' is required", code="missing_required_parameter", param="prompt"
        )
    if isinstance(prompt, str):
        return prompt
    if isinstance(prompt, list) and all(isinstance(item, str) for item in prompt):
        return "\n".join(prompt)
    if isinstance(prompt, list) and all(isinstance(item, int | list) for item in prompt):
        return ""  # token ids: nothing for text signals to read
    raise RequestError(
        "'prompt' must be a string, an array of strings or of token ids",
        code="invalid_type",
        param="prompt",
    )


def _json_type(value: Any) -> str:
    names = {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        type(None): "null",
        int: "a number",
        float: "a number",
    }
    return names.get(type(value), type(value).__name__)
