"""What a stage that fails does to its request: the per-stage `on_error` policy.

A signal, the encoder or a safety check can raise (a bug, a model that errs at inference). Left
alone, that ends the ext_proc stream with a gRPC error, and Envoy's `failure_mode_allow` would
forward the request unrouted and unscanned. Instead each stage answers for itself: `allow` goes
on without it (the explanation names the stage that failed), `block` answers a 503 JSON error
and nothing is forwarded. Safety stages default to `block`, routing signals to `allow`.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from extproc_router import metrics
from extproc_router.exceptions import RequestError
from extproc_router.settings import OnErrorSettings

__all__ = ["guard", "guard_async"]

logger = logging.getLogger(__name__)

T = TypeVar("T")


def guard(
    name: str, policy: OnErrorSettings, run: Callable[[], T], fallback: Callable[[str], T]
) -> T:
    """`run()`, or on an unexpected exception `fallback(error)` / a 503 as `policy` says."""
    try:
        return run()
    except RequestError:
        raise
    except Exception as error:
        return fallback(_failed(name, policy, error))


async def guard_async(
    name: str,
    policy: OnErrorSettings,
    run: Callable[[], Awaitable[T]],
    fallback: Callable[[str], T],
) -> T:
    try:
        return await run()
    except RequestError:
        raise
    except Exception as error:
        return fallback(_failed(name, policy, error))


def _failed(name: str, policy: OnErrorSettings, error: Exception) -> str:
    """Logs and counts the failure; raises the 503 when the stage blocks, else describes it."""
    action = getattr(policy, name)
    metrics.STAGE_ERRORS.labels(stage=name, action=action).inc()
    logger.error("stage %s failed (on_error: %s)", name, action, exc_info=error)
    if action == "block":
        raise RequestError(
            f"the router's {name} check failed, and its policy is to refuse rather than forward "
            "the request unchecked; nothing was forwarded (retry later)",
            status=503,
            code="stage_failed",
            error_type="server_error",
        ) from None
    return f"{type(error).__name__}: {error}"[:200]
