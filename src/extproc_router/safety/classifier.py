"""The jailbreak classifier: logistic regression over hashed character n-grams of the
normalised text, together with the request's shared MiniLM embedding.

Why both: the embedding knows what a prompt is about but sees only its first 128 tokens and
little of any language but English; character n-grams see the wording ("…ignore … previous …"),
in any script, anywhere in the text. Long texts are scored in overlapping windows and the
highest window counts, so one planted sentence is not averaged away by pages of harmless text.

Hashing is vectorised in numpy (a polynomial hash over UTF-32 code points), so a window costs
microseconds; training is full-batch gradient descent in numpy, deterministic, in seconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from extproc_router.exceptions import ModelError
from extproc_router.safety.jailbreak import normalize_views

__all__ = ["JailbreakClassifier", "ngram_features", "train_classifier"]

Vector = npt.NDArray[np.float32]

_BITS = 18
_BUCKETS = 1 << _BITS
_ORDERS = (3, 4, 5)
_WINDOW = 1024
_STRIDE = 768
_PRIME = np.uint64(1_000_003)
_MIX = np.uint64(0x9E3779B97F4A7C15)


def _hashes(codes: npt.NDArray[np.uint64], order: int) -> npt.NDArray[np.uint64]:
    count = len(codes) - order + 1
    if count <= 0:
        return np.zeros(0, dtype=np.uint64)
    value = np.full(count, order, dtype=np.uint64)
    for offset in range(order):
        value = value * _PRIME + codes[offset : offset + count]
    # Multiplicative hashing: the top bits of the product are the well-mixed ones.
    return (value * _MIX) >> np.uint64(64 - _BITS)


def ngram_features(text: str) -> tuple[npt.NDArray[np.int64], Vector]:
    """Bucket indices and L2-normalised counts of the character 3-5-grams of the text as each
    disguise-stripping view reads it (see `normalize_views`)."""
    views = normalize_views(text)[:4]
    codes = np.frombuffer(" ".join(views).encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    buckets = np.concatenate([_hashes(codes, order) for order in _ORDERS]).astype(np.int64)
    if not len(buckets):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.float32)
    indices, counts = np.unique(buckets, return_counts=True)
    values = counts.astype(np.float32)
    values /= np.float32(np.linalg.norm(values))
    return indices, values


def _windows(text: str) -> list[str]:
    if len(text) <= _WINDOW:
        return [text]
    return [text[start : start + _WINDOW] for start in range(0, len(text) - _STRIDE, _STRIDE)]


Features = list[tuple[npt.NDArray[np.int64], Vector]]
# The text-only screen and then the full classifier read the same text: its features are
# computed once (the last text seen; features depend on nothing but the text).
_last: tuple[str, Features] = ("", [])


def _window_features(text: str) -> Features:
    global _last  # noqa: PLW0603 - a one-entry memo; replacing the tuple is atomic
    seen, features = _last
    if seen is text or seen == text:
        return features
    features = [ngram_features(window) for window in _windows(text)]
    _last = (text, features)
    return features


@dataclass(frozen=True)
class JailbreakClassifier:
    ngram_weights: Vector  # (_BUCKETS,)
    embedding_weights: Vector  # (dimensions,)
    bias: float
    encoder: str

    def score(self, texts: Sequence[str], embedding: Vector | None) -> float:
        """Probability of an attack: the highest over every window of every text."""
        base = self.bias
        if embedding is not None:
            base += float(embedding @ self.embedding_weights)
        best = -np.inf
        for text in texts:
            for indices, values in _window_features(text):
                best = max(best, float(values @ self.ngram_weights[indices]))
        if best == -np.inf:
            best = 0.0
        return float(1.0 / (1.0 + np.exp(-(base + best))))

    def window_scores(self, windows: Sequence[str]) -> list[float]:
        """Each window's probability of an attack by its n-grams alone (the embedding term,
        the same for every window of a request, is left out)."""
        margins = np.array(
            [
                float(values @ self.ngram_weights[indices])
                for indices, values in map(ngram_features, windows)
            ]
        )
        return [float(p) for p in 1.0 / (1.0 + np.exp(-(self.bias + margins)))]

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(
            path,
            ngram_weights=self.ngram_weights,
            embedding_weights=self.embedding_weights,
            bias=np.float32(self.bias),
            encoder=np.array(self.encoder),
        )

    @classmethod
    def load(cls, path: Path, *, encoder: str) -> JailbreakClassifier:
        if not path.exists():
            raise ModelError(f"{path} is missing: run `make train`")
        try:
            with path.open("rb") as handle, np.load(handle) as data:
                classifier = cls(
                    data["ngram_weights"].astype(np.float32),
                    data["embedding_weights"].astype(np.float32),
                    float(data["bias"]),
                    str(data["encoder"]),
                )
        except Exception as error:  # a truncated or foreign file: numpy, zipfile, pickle errors
            message = f"{path} is not a jailbreak classifier ({error}): run `make train`"
            raise ModelError(message) from None
        if classifier.encoder != encoder:
            raise ModelError(
                f"{path} was trained for {classifier.encoder}, not {encoder}: run `make train`"
            )
        return classifier


def train_classifier(
    texts: Sequence[str],
    embeddings: npt.NDArray[np.float32],
    attack: Sequence[bool],
    *,
    encoder: str,
    l2: float = 1e-4,
    steps: int = 1500,
    learning_rate: float = 2.0,
) -> JailbreakClassifier:
    """Class-balanced logistic regression by full-batch gradient descent with momentum."""
    rows = [ngram_features(text) for text in texts]
    lengths = np.array([len(indices) for indices, _ in rows])
    indices = np.concatenate([i for i, _ in rows])
    values = np.concatenate([v for _, v in rows])
    owner = np.repeat(np.arange(len(rows)), lengths)
    y = np.asarray(attack, dtype=np.float32)
    positives = max(float(y.sum()), 1.0)
    negatives = max(float(len(y) - y.sum()), 1.0)
    weight = np.where(y > 0, len(y) / (2 * positives), len(y) / (2 * negatives)).astype(np.float32)
    w_ngram = np.zeros(_BUCKETS, dtype=np.float32)
    w_embed = np.zeros(embeddings.shape[1], dtype=np.float32)
    bias = 0.0
    v_ngram, v_embed, v_bias = np.zeros_like(w_ngram), np.zeros_like(w_embed), 0.0
    for _ in range(steps):
        ngram_margin = np.bincount(owner, weights=values * w_ngram[indices], minlength=len(y))
        margin = ngram_margin + embeddings @ w_embed + bias
        error = (1.0 / (1.0 + np.exp(-margin)) - y) * weight / len(y)
        g_ngram = (
            np.bincount(indices, weights=values * error[owner], minlength=_BUCKETS) + l2 * w_ngram
        )
        g_embed = embeddings.T @ error + l2 * w_embed
        v_ngram = 0.9 * v_ngram - learning_rate * g_ngram.astype(np.float32)
        v_embed = 0.9 * v_embed - learning_rate * g_embed.astype(np.float32)
        v_bias = 0.9 * v_bias - learning_rate * float(error.sum())
        w_ngram += v_ngram
        w_embed += v_embed
        bias += v_bias
    return JailbreakClassifier(w_ngram, w_embed, bias, encoder)
