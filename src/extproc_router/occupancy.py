"""How many requests the router is deciding at once: the models read it to pick their thread
count.

On a machine the router shares (two cores with Envoy and the event loop, here), a model run on
two intra-op threads answers a lone request fastest, but under concurrent requests those
threads only fight the event loop and each other for the same cores: one thread per run
sustained ~12% more mixed-traffic requests/s at concurrency 32 in the same run, at the same
latency at concurrency 1 (docs/BENCHMARKS.md). Only the decision counts, not the stream: a
request waiting minutes for its answer costs the router nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["busy", "deciding"]

_deciding = 0


@contextmanager
def deciding() -> Iterator[None]:
    """Around one request's decision (event loop thread only)."""
    global _deciding  # noqa: PLW0603 - one counter per process, read from worker threads
    _deciding += 1
    try:
        yield
    finally:
        _deciding -= 1


def busy() -> bool:
    """Whether another decision is under way besides the caller's (an int read is atomic)."""
    return _deciding > 1
