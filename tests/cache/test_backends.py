"""Both cache backends behave alike; Redis against a real redis-server, shared by two routers."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest

from extproc_router.cache_backends import Backend, MemoryBackend, RedisBackend
from extproc_router.encoder import Embeddings


def unit(*values: float) -> Embeddings:
    vector = np.zeros(8, dtype=np.float32)
    vector[: len(values)] = values
    result: Embeddings = vector / np.linalg.norm(vector)
    return result


A = unit(1.0)
NEAR_A = unit(1.0, 0.2)  # cosine 0.98 to A
FAR = unit(1.0, 1.0)  # cosine 0.71 to A


@pytest.fixture(params=["memory", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    made: Backend
    if request.param == "memory":
        made = MemoryBackend(max_entries=3)
    else:
        url = request.getfixturevalue("redis_url")
        made = RedisBackend(url, prefix=f"test-{request.node.name}", max_entries=3, timeout_s=1)
    yield made
    await made.aclose()


async def test_exact_and_semantic_matches(backend: Backend) -> None:
    await backend.put("scope", "digest-a", A, '"a"', 60)
    assert await backend.find("scope", "digest-a", None, 0.95) == ('"a"', 1.0)
    found = await backend.find("scope", "other", NEAR_A, 0.95)
    assert found is not None
    assert found[0] == '"a"'
    assert found[1] == pytest.approx(0.9806, abs=1e-3)
    assert await backend.find("scope", "other", FAR, 0.95) is None
    assert await backend.find("other-scope", "digest-a", A, 0.95) is None


async def test_exact_only_entries_never_match_by_meaning(backend: Backend) -> None:
    await backend.put("scope", "long-prompt", None, '"long"', 60)
    assert await backend.find("scope", "another", A, 0.0) is None
    assert await backend.find("scope", "long-prompt", None, 0.95) == ('"long"', 1.0)


async def test_the_same_prompt_replaces_its_answer(backend: Backend) -> None:
    await backend.put("scope", "d", A, '"old"', 60)
    await backend.put("scope", "d", A, '"new"', 60)
    assert await backend.find("scope", "d", None, 0.95) == ('"new"', 1.0)
    found = await backend.find("scope", "x", A, 0.95)
    assert found is not None
    assert found[0] == '"new"'


async def test_oldest_entries_go_beyond_max_entries(backend: Backend) -> None:
    for index in range(5):
        await backend.put("scope", f"d{index}", None, f'"{index}"', 60 + index)
    assert await backend.find("scope", "d0", None, 0.95) is None
    assert await backend.find("scope", "d1", None, 0.95) is None
    assert await backend.find("scope", "d4", None, 0.95) == ('"4"', 1.0)


async def test_memory_entries_expire() -> None:
    now = [1000.0]
    backend = MemoryBackend(10, clock=lambda: now[0])
    await backend.put("scope", "d", A, '"a"', 30)
    now[0] += 29
    assert await backend.find("scope", "d", None, 0.9) is not None
    now[0] += 2
    assert await backend.find("scope", "d", A, 0.9) is None
    assert len(backend) == 0


async def test_redis_entries_expire_and_replicas_share_them(redis_url: str) -> None:
    import redis.asyncio

    first = RedisBackend(redis_url, prefix="shared", max_entries=10, timeout_s=1)
    second = RedisBackend(redis_url, prefix="shared", max_entries=10, timeout_s=1)
    try:
        await first.put("scope", "d", A, '"a"', 1)
        assert await second.find("scope", "x", NEAR_A, 0.95) is not None
        client = redis.asyncio.Redis.from_url(redis_url)
        ttl = [await client.pttl(key) for key in await client.keys("shared:a:*")]
        await client.aclose()
        assert len(ttl) == 1
        assert 0 < ttl[0] <= 1000
    finally:
        await first.aclose()
        await second.aclose()


async def test_an_unreachable_redis_raises_quickly() -> None:
    from tests.helpers import free_port

    backend = RedisBackend(
        f"redis://127.0.0.1:{free_port()}/0", prefix="x", max_entries=1, timeout_s=0.2
    )
    import redis.exceptions

    with pytest.raises(redis.exceptions.ConnectionError):
        await backend.find("scope", "d", A, 0.9)
    await backend.aclose()
