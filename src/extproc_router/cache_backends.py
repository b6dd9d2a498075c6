"""Where the semantic cache keeps its entries: in the router's memory, or in Redis so that
replicas share them.

Both search the same way: an entry belongs to a *scope* (a hash of everything in the request
but the last user turn: pool, API, parameters, system prompt, earlier turns), and within it a
prompt matches exactly (the same text's digest) or semantically (cosine of normalised
embeddings, numpy over the scope's vectors). Redis gets no vector index: Debian's Redis 7.0
with its RediSearch 1.2 module has no VECTOR field (`FT.CREATE ... VECTOR` fails: "Could not
parse field spec"), and a scope holds few entries, so numpy over one HGETALL is enough.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, cast

import numpy as np

from extproc_router.encoder import Embeddings

if TYPE_CHECKING:
    from redis.asyncio import Redis

__all__ = ["Backend", "MemoryBackend", "RedisBackend", "ranked"]

# Semantic candidates fetched per lookup: the best few, in case the best has just expired.
_CANDIDATES = 4


def ranked(
    keys: list[str], matrix: Embeddings, vector: Embeddings, threshold: float
) -> list[tuple[str, float]]:
    """The keys whose vectors are at least `threshold` similar to `vector`, best first
    (vectors are L2-normalised, so the dot product is the cosine)."""
    if not keys:
        return []
    similarities = matrix @ vector
    order = np.argsort(-similarities)[:_CANDIDATES]
    return [(keys[i], float(similarities[i])) for i in order if similarities[i] >= threshold]


class Backend(Protocol):
    async def find(
        self, scope: str, digest: str, vector: Embeddings | None, threshold: float
    ) -> tuple[str, float] | None:
        """The stored answer (JSON) and its similarity (1.0 for the same text), or None."""

    async def put(
        self, scope: str, digest: str, vector: Embeddings | None, answer: str, ttl_s: int
    ) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(slots=True)
class _Entry:
    scope: str
    digest: str
    vector: Embeddings | None
    answer: str
    expires: float


@dataclass(slots=True)
class _Scope:
    digests: dict[str, str] = field(default_factory=dict)
    semantic: list[str] = field(default_factory=list)
    # The semantic entries' vectors stacked, rebuilt after a change.
    matrix: Embeddings | None = None


class MemoryBackend:
    """One router's cache: oldest entries go first once `max_entries` are held."""

    def __init__(self, max_entries: int, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()
        self._scopes: dict[str, _Scope] = {}

    def __len__(self) -> int:
        return len(self._entries)

    async def find(
        self, scope: str, digest: str, vector: Embeddings | None, threshold: float
    ) -> tuple[str, float] | None:
        held = self._scopes.get(scope)
        if held is None:
            return None
        now = self._clock()
        key = held.digests.get(digest)
        candidates = [(key, 1.0)] if key is not None else []
        if vector is not None and held.semantic:
            if held.matrix is None:
                held.matrix = np.stack([self._vector(k) for k in held.semantic])
            candidates += ranked(held.semantic, held.matrix, vector, threshold)
        for key, similarity in candidates:
            entry = self._entries.get(key)
            if entry is not None and entry.expires > now:
                return entry.answer, similarity
            self._drop(key)
        return None

    def _vector(self, key: str) -> Embeddings:
        vector = self._entries[key].vector
        if vector is None:  # only semantic entries are listed
            raise KeyError(key)
        return vector

    async def put(
        self, scope: str, digest: str, vector: Embeddings | None, answer: str, ttl_s: int
    ) -> None:
        held = self._scopes.setdefault(scope, _Scope())
        old = held.digests.get(digest)
        if old is not None:
            self._drop(old)
            held = self._scopes.setdefault(scope, _Scope())
        key = uuid.uuid4().hex
        self._entries[key] = _Entry(scope, digest, vector, answer, self._clock() + ttl_s)
        held.digests[digest] = key
        if vector is not None:
            held.semantic.append(key)
            held.matrix = None
        while len(self._entries) > self._max:
            self._drop(next(iter(self._entries)))

    def _drop(self, key: str) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        held = self._scopes[entry.scope]
        if held.digests.get(entry.digest) == key:
            del held.digests[entry.digest]
        if entry.vector is not None:
            held.semantic.remove(key)
            held.matrix = None
        if not held.digests and not held.semantic:
            del self._scopes[entry.scope]

    async def aclose(self) -> None:
        self._entries.clear()
        self._scopes.clear()


class RedisBackend:
    """A cache replicas share. An answer is the key `a:SCOPE:DIGEST` with the TTL (so the same
    prompt overwrites its own entry); a scope's vectors are one hash of digest -> float32 bytes;
    a sorted set by expiry bounds the number of entries."""

    def __init__(self, url: str, *, prefix: str, max_entries: int, timeout_s: float) -> None:
        from redis.asyncio import Redis

        self._redis: Redis = Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s
        )
        self._prefix = prefix
        self._max = max_entries
        self._order = f"{prefix}:order"

    def _answer(self, scope: str, digest: str) -> str:
        return f"{self._prefix}:a:{scope}:{digest}"

    def _vectors(self, scope: str) -> str:
        return f"{self._prefix}:v:{scope}"

    async def find(
        self, scope: str, digest: str, vector: Embeddings | None, threshold: float
    ) -> tuple[str, float] | None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.get(self._answer(scope, digest))
        if vector is not None:
            pipe.hgetall(self._vectors(scope))
        found = await pipe.execute()
        if found[0] is not None:
            return _text(found[0]), 1.0
        if vector is None or not found[1]:
            return None
        rows = {_text(k): v for k, v in found[1].items() if len(v) == vector.nbytes}
        keys = list(rows)
        matrix = np.frombuffer(b"".join(rows.values()), dtype=np.float32)
        candidates = ranked(keys, matrix.reshape(len(keys), -1), vector, threshold)
        if not candidates:
            return None
        answers = await self._redis.mget([self._answer(scope, key) for key, _ in candidates])
        for (_, similarity), answer in zip(candidates, answers, strict=True):
            if answer is not None:
                return _text(answer), similarity
        # Every candidate has expired: forget their vectors, so the next lookup is cheaper.
        await self._redis.hdel(self._vectors(scope), *(key for key, _ in candidates))
        return None

    async def put(
        self, scope: str, digest: str, vector: Embeddings | None, answer: str, ttl_s: int
    ) -> None:
        now = time.time()
        pipe = self._redis.pipeline(transaction=False)
        pipe.set(self._answer(scope, digest), answer, ex=ttl_s)
        if vector is not None:
            pipe.hset(self._vectors(scope), digest, vector.astype(np.float32).tobytes())
            pipe.expire(self._vectors(scope), ttl_s)
        pipe.zadd(self._order, {f"{scope}:{digest}": now + ttl_s})
        pipe.zrangebyscore(self._order, 0, now)
        pipe.zcard(self._order)
        results = await pipe.execute()
        count = int(results[-1])
        # Expired entries first, then the soonest to expire beyond `max_entries`.
        gone = {_text(member) for member in results[-2]}
        if count > self._max:
            popped = cast(
                "list[tuple[bytes, float]]",
                await self._redis.zpopmin(self._order, count - self._max),
            )
            gone |= {_text(member) for member, _ in popped}
        if gone:
            await self._forget(sorted(gone))

    async def _forget(self, members: list[str]) -> None:
        pipe = self._redis.pipeline(transaction=False)
        pipe.zrem(self._order, *members)
        for member in members:
            scope, digest = member.rsplit(":", 1)
            pipe.delete(self._answer(scope, digest))
            pipe.hdel(self._vectors(scope), digest)
        await pipe.execute()

    async def aclose(self) -> None:
        await self._redis.aclose()


def _text(value: bytes | str) -> str:
    """The client returns bytes (no `decode_responses`: vectors are binary)."""
    return value.decode() if isinstance(value, bytes) else value
