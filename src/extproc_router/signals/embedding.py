"""Embedding routes: prompts that resemble a route's example utterances vote for its target.

Each route is the normalised centroid of its utterances' embeddings, computed at start-up and
cached on disk under a hash of the encoder and the utterances, so a restart or reload with the
same routes embeds nothing.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from extproc_router.encoder import Embeddings, TextEncoder
from extproc_router.settings import EmbeddingRoute, PoolSettings
from extproc_router.signals.base import SignalResult, abstain, target_scores

__all__ = ["EmbeddingRoutes", "default_threshold"]


def default_threshold(route: EmbeddingRoute) -> float:
    """The reference design's defaults: stricter for routes to the cheap tier."""
    if route.threshold is not None:
        return route.threshold
    return 0.85 if route.target == "simple" else 0.80


class EmbeddingRoutes:
    def __init__(
        self, routes: Sequence[EmbeddingRoute], encoder: TextEncoder, encoder_id: str, cache: Path
    ) -> None:
        self._routes = tuple(routes)
        self._thresholds = np.array([default_threshold(r) for r in self._routes], np.float32)
        self.centroids = self._centroids(encoder, encoder_id, cache)

    def _centroids(self, encoder: TextEncoder, encoder_id: str, cache: Path) -> Embeddings:
        if not self._routes:
            return np.zeros((0, encoder.dimensions), np.float32)
        key = json.dumps([encoder_id, [list(r.utterances) for r in self._routes]])
        path = cache / f"routes-{hashlib.sha256(key.encode()).hexdigest()[:16]}.npy"
        if path.is_file():
            return np.asarray(np.load(path), dtype=np.float32)
        rows = []
        for route in self._routes:
            centroid = encoder.embed(list(route.utterances)).mean(axis=0)
            rows.append(centroid / max(float(np.linalg.norm(centroid)), 1e-12))
        centroids = np.stack(rows).astype(np.float32)
        cache.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp.npy")
        np.save(temporary, centroids)
        temporary.replace(path)
        return centroids

    def evaluate(self, embedding: Embeddings, pools: Sequence[PoolSettings]) -> SignalResult:
        started = time.perf_counter()
        if not self._routes:
            return abstain("embedding", "no routes configured")
        similarities = self.centroids @ embedding
        best = int(np.argmax(similarities))
        route, similarity = self._routes[best], float(similarities[best])
        evidence = {
            "route": route.name,
            "similarity": round(similarity, 3),
            "threshold": float(self._thresholds[best]),
        }
        elapsed = (time.perf_counter() - started) * 1000
        if similarity < self._thresholds[best]:
            # Abstains, but says how close it came: that is what tuning thresholds needs.
            return SignalResult(
                "embedding", {}, {**evidence, "abstained": "below threshold"}, elapsed
            )
        return SignalResult("embedding", target_scores(pools, route.target), evidence, elapsed)
