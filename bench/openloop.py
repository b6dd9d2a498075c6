"""Open-loop load: requests leave on a fixed schedule whatever the earlier ones are doing.

Why: a closed-loop generator (wrk) sends the next request only when a connection is free, so a
slow or stalled proxy lowers the request rate instead of showing as late replies (coordinated
omission), and its latency is tied to its concurrency. Here a reply's time counts from when its
request was due, so a proxy that falls behind shows it. Used by `make bench` (the sustained
rates, the burst) and by the fault tests' load.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["open_loop"]

T = TypeVar("T")


async def open_loop(
    send: Callable[[int, float], Coroutine[Any, Any, T]], rate: float, seconds: float
) -> list[T]:
    """`send(index, due)` for index 0, 1, ... at `rate` a second for `seconds`; `due` is the
    `time.monotonic()` the request was due. The results in sending order."""
    started = time.monotonic()
    tasks = []
    for index in range(int(rate * seconds)):
        due = started + index / rate
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(send(index, due)))
    return list(await asyncio.gather(*tasks))
