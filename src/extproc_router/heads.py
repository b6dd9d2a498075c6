"""Linear classifier heads on the shared sentence embedding (domain, preference).

A softmax regression is all these need: the encoder does the hard work, the head is a
(dimensions x classes) matrix, trained in numpy in seconds by `make train` and applied in
microseconds. Saved as .npz beside a fingerprint of the encoder it was trained on, so a head
never silently runs on another model's embeddings.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from extproc_router.exceptions import ModelError

__all__ = ["LinearHead", "train_head"]

Matrix = npt.NDArray[np.float32]


@dataclass(frozen=True)
class LinearHead:
    labels: tuple[str, ...]
    weights: Matrix  # (dimensions, classes)
    bias: Matrix  # (classes,)
    encoder: str  # e.g. "all-MiniLM-L6-v2/int8"

    def probabilities(self, embeddings: Matrix) -> Matrix:
        logits = embeddings @ self.weights + self.bias
        logits -= logits.max(axis=-1, keepdims=True)
        exp = np.exp(logits)
        probabilities: Matrix = (exp / exp.sum(axis=-1, keepdims=True)).astype(np.float32)
        return probabilities

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            path,
            labels=np.array(self.labels),
            weights=self.weights,
            bias=self.bias,
            encoder=np.array(self.encoder),
        )

    @classmethod
    def load(cls, path: Path, *, encoder: str) -> LinearHead:
        if not path.is_file():
            raise ModelError(f"classifier head {path} is missing: run `make train`")
        try:
            with path.open("rb") as handle, np.load(handle) as data:
                head = cls(
                    labels=tuple(str(label) for label in data["labels"]),
                    weights=data["weights"].astype(np.float32),
                    bias=data["bias"].astype(np.float32),
                    encoder=str(data["encoder"]),
                )
        except Exception as error:  # a truncated or foreign file: numpy, zipfile, pickle errors
            raise ModelError(
                f"cannot read classifier head {path} ({error}): run `make train`"
            ) from None
        if head.encoder != encoder:
            raise ModelError(
                f"{path} was trained on {head.encoder} embeddings, not {encoder}: "
                "run `make train` again"
            )
        return head


def train_head(
    embeddings: Matrix,
    labels: list[str],
    *,
    encoder: str,
    l2: float = 1e-3,
    steps: int = 600,
    learning_rate: float = 0.5,
) -> LinearHead:
    """Full-batch gradient descent with momentum on the cross-entropy; deterministic."""
    classes = tuple(sorted(set(labels)))
    index = {label: i for i, label in enumerate(classes)}
    targets = np.zeros((len(labels), len(classes)), dtype=np.float32)
    targets[np.arange(len(labels)), [index[label] for label in labels]] = 1.0
    # Balance classes, so a larger class does not pull the boundary its way.
    class_weight = len(labels) / (len(classes) * targets.sum(axis=0))
    sample_weight = (targets * class_weight).sum(axis=1, keepdims=True)
    weights = np.zeros((embeddings.shape[1], len(classes)), dtype=np.float32)
    bias = np.zeros(len(classes), dtype=np.float32)
    velocity_w, velocity_b = np.zeros_like(weights), np.zeros_like(bias)
    scale = 8.0  # embeddings are unit vectors: logits need room to grow
    x = embeddings * scale
    for _ in range(steps):
        logits = x @ weights + bias
        logits -= logits.max(axis=1, keepdims=True)
        probs = np.exp(logits)
        probs /= probs.sum(axis=1, keepdims=True)
        error = (probs - targets) * sample_weight / len(labels)
        grad_w = x.T @ error + l2 * weights
        grad_b = error.sum(axis=0)
        velocity_w = 0.9 * velocity_w - learning_rate * grad_w
        velocity_b = 0.9 * velocity_b - learning_rate * grad_b
        weights += velocity_w
        bias += velocity_b
    return LinearHead(classes, (weights * scale).astype(np.float32), bias, encoder)
