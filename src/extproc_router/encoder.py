"""all-MiniLM-L6-v2 on onnxruntime: one sentence embedding per request, shared by every signal.

Only onnxruntime, tokenizers and numpy at run time (no torch). `embed` is synchronous and
thread-safe (an onnxruntime session may run from several threads at once); callers on the event
loop go through `asyncio.to_thread` so a slow model never stalls other streams.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import numpy.typing as npt

from extproc_router import metrics
from extproc_router.exceptions import ModelError
from extproc_router.occupancy import busy

__all__ = [
    "Embeddings",
    "Encoder",
    "Sessions",
    "TextEncoder",
    "length_groups",
    "load_tokenizer",
    "open_sessions",
    "run_bert",
]

Embeddings = npt.NDArray[np.float32]

_FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx"}


class TextEncoder(Protocol):
    """What the embedding routes need of an encoder: the transformer or the static one."""

    dimensions: int

    def embed(self, texts: list[str]) -> Embeddings: ...


class Encoder:
    def __init__(
        self,
        model_dir: Path,
        *,
        variant: Literal["fp32", "int8"] = "int8",
        threads: int = 2,
        busy_threads: int = 1,
        max_tokens: int = 128,
    ) -> None:
        model_file = model_dir / _FILES[variant]
        tokenizer_file = model_dir / "tokenizer.json"
        for path in (model_file, tokenizer_file):
            if not path.is_file():
                raise ModelError(
                    f"model file {path} is missing: run `make setup` (or "
                    f"`extproc-router export-model --output {model_dir}`) to export it"
                )
        self.model_dir = model_dir
        self.variant = variant
        self.max_tokens = max_tokens
        fix = f"run `make setup` (or `extproc-router export-model --output {model_dir}`) again"
        self._tokenizer = load_tokenizer(tokenizer_file, max_tokens, fix)
        self._counter = load_tokenizer(tokenizer_file, None, fix)
        self._sessions = open_sessions(model_file, threads, busy_threads, fix)
        self.dimensions = int(self._sessions.solo.get_outputs()[0].shape[-1] or 384)

    def count_tokens(self, text: str) -> int:
        """Word-piece tokens, without the [CLS]/[SEP] markers."""
        return len(self._counter.encode(text, add_special_tokens=False).ids)

    def embed(self, texts: list[str]) -> Embeddings:
        """L2-normalised mean-pooled embeddings, one row per text; input cut at max_tokens."""
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        metrics.BATCH_SIZE.observe(len(texts))
        return run_bert(self._tokenizer, self._sessions, texts, self.max_tokens, _mean_pooled)


def _mean_pooled(hidden: Embeddings, mask: npt.NDArray[np.int64]) -> Embeddings:
    weights = mask[:, :, None].astype(np.float32)
    pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    embeddings: Embeddings = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
    return embeddings


def load_tokenizer(path: Path, max_tokens: int | None, fix: str) -> Any:
    """The shipped tokenizer.json pads every input to 128 tokens: pad to the longest in the
    batch instead, and cut at `max_tokens` (None: neither, for counting tokens)."""
    from tokenizers import Tokenizer

    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as error:  # tokenizers raises untyped errors too
        raise ModelError(f"cannot read {path} ({error}): {fix}") from None
    if max_tokens is None:
        tokenizer.no_truncation()
        tokenizer.no_padding()
    else:
        tokenizer.enable_truncation(max_tokens)
        tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    return tokenizer


def open_session(path: Path, threads: int, fix: str) -> Any:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    # Spinning worker threads burn the cores Envoy and the event loop need between requests.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # onnxruntime raises its own untyped errors
        raise ModelError(f"cannot load {path} ({error}): {fix}") from None


@dataclass(frozen=True)
class Sessions:
    """One ONNX model opened twice: with `threads` intra-op threads for a request the router
    is deciding alone, and with `busy_threads` while it decides others too (see occupancy)."""

    solo: Any
    shared: Any

    def pick(self) -> Any:
        return self.shared if busy() else self.solo


def open_sessions(path: Path, threads: int, busy_threads: int, fix: str) -> Sessions:
    solo = open_session(path, threads, fix)
    shared = solo if busy_threads == threads else open_session(path, busy_threads, fix)
    return Sessions(solo, shared)


def run_bert(
    tokenizer: Any,
    sessions: Sessions,
    texts: list[str],
    max_tokens: int,
    finish: Callable[[npt.NDArray[np.float32], npt.NDArray[np.int64]], npt.NDArray[np.float32]],
) -> npt.NDArray[np.float32]:
    """Tokenise (cut at `max_tokens`) and run a BERT-shaped ONNX model; `finish` turns a run's
    output and attention mask into one row per text. Rows come back in the order of `texts`.

    Texts of very different lengths run separately (see `length_groups`): a batch costs its
    size times its longest text, so one 40-token prompt padded seven 10-token ones to four times
    their cost, and batching was slower than running each alone."""
    # Tokenising a megabyte to keep 128 tokens wastes milliseconds: cut the text first.
    limit = max_tokens * 16
    encodings = tokenizer.encode_batch([text[:limit] for text in texts])
    ids = np.array([e.ids for e in encodings], dtype=np.int64)
    mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
    lengths = mask.sum(axis=1)
    session = sessions.pick()
    rows: npt.NDArray[np.float32] | None = None
    for group in length_groups(lengths.tolist()):
        width = int(lengths[group].max())
        group_ids, group_mask = ids[group, :width], mask[group, :width]
        try:
            (output,) = session.run(
                None,
                {
                    "input_ids": group_ids,
                    "attention_mask": group_mask,
                    "token_type_ids": np.zeros_like(group_ids),
                },
            )
        except Exception as error:
            raise ModelError(f"inference failed: {error}") from error
        finished = finish(output, group_mask)
        if rows is None:
            rows = np.empty((len(texts), *finished.shape[1:]), dtype=np.float32)
        rows[group] = finished
    assert rows is not None  # texts is never empty: callers return early
    return rows


def length_groups(lengths: list[int], slack: float = 1.25) -> list[list[int]]:
    """Indices of `lengths` in groups that pad to at most `slack` times their real tokens:
    sorted by length, each group grows while padding every member to the newcomer's length
    stays within the bound."""
    order = sorted(range(len(lengths)), key=lengths.__getitem__)
    groups: list[list[int]] = []
    total = 0
    for index in order:
        length = lengths[index]
        if groups and (len(groups[-1]) + 1) * length <= slack * (total + length):
            groups[-1].append(index)
            total += length
        else:
            groups.append([index])
            total = length
    return groups
