"""The router's exceptions, all under one root so callers can catch them together.

    RouterError
    ├── ConfigError      a config file is unusable; lists every problem at once
    ├── ModelError       a model file is missing or broken, or inference failed
    └── RequestError     the client's request is wrong; becomes an OpenAI-style 4xx answer

Faults that are not the client's (a bug, a broken model) are not `RouterError`s: they end the
ext_proc stream with a gRPC error so that Envoy's `failure_mode_allow` decides what happens.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = ["ConfigError", "ModelError", "RequestError", "RouterError"]


class RouterError(Exception):
    """Root of the router's own exceptions."""


class ConfigError(RouterError):
    def __init__(self, source: str, problems: list[str]) -> None:
        self.source = source
        self.problems = problems
        lines = "\n".join(f"  {problem}" for problem in problems)
        super().__init__(f"invalid config {source}:\n{lines}")


class ModelError(RouterError):
    """The message says how to fix it (e.g. which command exports the missing model)."""


class RequestError(RouterError):
    """A client error, answered by Envoy on the router's behalf without reaching any pool.

    `code` is machine-readable and stable (clients switch on it); `message` is for people.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int = 400,
        code: str = "invalid_request",
        error_type: str = "invalid_request_error",
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """`headers`: extra response headers, e.g. `retry-after` on a 503."""
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.error_type = error_type
        self.param = param
        self.headers = dict(headers or {})
