"""all-MiniLM-L6-v2 on onnxruntime: one sentence embedding per request, shared by every signal.

Only onnxruntime, tokenizers and numpy at run time (no torch). `embed` is synchronous and
thread-safe (an onnxruntime session may run from several threads at once); callers on the event
loop go through `asyncio.to_thread` so a slow model never stalls other streams.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, Protocol

import numpy as np
import numpy.typing as npt

from extproc_router import metrics
from extproc_router.exceptions import ModelError

__all__ = ["Embeddings", "Encoder", "TextEncoder"]

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
        max_tokens: int = 128,
    ) -> None:
        import onnxruntime
        from tokenizers import Tokenizer

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
        # The shipped tokenizer.json pads every input to 128 tokens: pad to the longest instead.
        fix = f"run `make setup` (or `extproc-router export-model --output {model_dir}`) again"
        try:
            self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
            self._counter = Tokenizer.from_file(str(tokenizer_file))
        except Exception as error:  # tokenizers raises untyped errors too
            raise ModelError(f"cannot read {tokenizer_file} ({error}): {fix}") from None
        self._tokenizer.enable_truncation(max_tokens)
        self._tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
        self._counter.no_truncation()
        self._counter.no_padding()
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Spinning worker threads burn the cores Envoy and the event loop need between requests.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self._session = onnxruntime.InferenceSession(
                str(model_file), options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own untyped errors
            raise ModelError(f"cannot load {model_file} ({error}): {fix}") from None
        self.dimensions = int(self._session.get_outputs()[0].shape[-1] or 384)

    def count_tokens(self, text: str) -> int:
        """Word-piece tokens, without the [CLS]/[SEP] markers."""
        return len(self._counter.encode(text, add_special_tokens=False).ids)

    def embed(self, texts: list[str]) -> Embeddings:
        """L2-normalised mean-pooled embeddings, one row per text; input cut at max_tokens."""
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        metrics.BATCH_SIZE.observe(len(texts))
        # Tokenising a megabyte to keep 128 tokens wastes milliseconds: cut the text first.
        limit = self.max_tokens * 16
        encodings = self._tokenizer.encode_batch([text[:limit] for text in texts])
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        try:
            (hidden,) = self._session.run(
                None,
                {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)},
            )
        except Exception as error:
            raise ModelError(f"inference failed: {error}") from error
        weights = mask[:, :, None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        embeddings: Embeddings = (pooled / np.maximum(norms, 1e-12)).astype(np.float32)
        return embeddings
