"""Concurrent embeddings share runs; a failure reaches every caller of its batch; a caller that
gave up is skipped; nothing lingers afterwards."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest

from extproc_router.batching import Batcher
from extproc_router.encoder import Embeddings


class _Encoder:
    def __init__(self) -> None:
        self.calls: list[list[str]] = []
        self.gate = threading.Event()
        self.gate.set()

    def embed(self, texts: list[str]) -> Embeddings:
        self.gate.wait(5)
        self.calls.append(list(texts))
        if any(text == "boom" for text in texts):
            raise RuntimeError("injected")
        return np.array([[float(len(text))] for text in texts], dtype=np.float32)


async def test_texts_that_wait_together_share_one_run() -> None:
    encoder = _Encoder()
    batcher = Batcher(encoder.embed, max_batch=4)
    encoder.gate.clear()  # hold the first run so the others queue behind it
    first = asyncio.create_task(batcher.embed("a"))
    await asyncio.sleep(0.05)
    rest = [asyncio.create_task(batcher.embed("x" * n)) for n in range(2, 8)]
    await asyncio.sleep(0.05)
    encoder.gate.set()
    rows = await asyncio.gather(first, *rest)
    assert [float(row[0]) for row in rows] == [1, 2, 3, 4, 5, 6, 7]
    assert [len(call) for call in encoder.calls] == [1, 4, 2]


async def test_a_lone_text_runs_at_once_and_no_task_is_left() -> None:
    encoder = _Encoder()
    batcher = Batcher(encoder.embed)
    row = await batcher.embed("hello")
    assert float(row[0]) == 5
    await asyncio.sleep(0)
    assert batcher._worker is not None
    assert batcher._worker.done()


async def test_a_failing_batch_fails_each_of_its_callers_and_the_next_batch_runs() -> None:
    encoder = _Encoder()
    batcher = Batcher(encoder.embed, max_batch=2)
    encoder.gate.clear()
    held = asyncio.create_task(batcher.embed("held"))
    await asyncio.sleep(0.05)
    bad = [asyncio.create_task(batcher.embed(t)) for t in ("boom", "fine")]
    good = asyncio.create_task(batcher.embed("later"))
    await asyncio.sleep(0.05)
    encoder.gate.set()
    assert float((await held)[0]) == 4
    for task in bad:
        with pytest.raises(RuntimeError, match="injected"):
            await task
    assert float((await good)[0]) == 5


async def test_a_caller_that_gave_up_is_not_embedded() -> None:
    encoder = _Encoder()
    batcher = Batcher(encoder.embed)
    encoder.gate.clear()
    held = asyncio.create_task(batcher.embed("held"))
    await asyncio.sleep(0.05)
    gone = asyncio.create_task(batcher.embed("gone"))
    kept = asyncio.create_task(batcher.embed("kept"))
    await asyncio.sleep(0.01)
    gone.cancel()
    encoder.gate.set()
    await asyncio.gather(held, kept)
    assert ["gone"] not in encoder.calls
    assert all("gone" not in call for call in encoder.calls)
