"""The fine-tuned jailbreak transformer at run time: onnxruntime, tokenizers and numpy only.

It reads at most `max_tokens` word pieces per window, so the caller picks which windows of a
long prompt it reads (see `Safety.jailbreak`): the start of the newest text, and the other windows
the n-gram classifier suspects.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import numpy.typing as npt

from extproc_router.encoder import load_tokenizer, open_sessions, run_bert
from extproc_router.exceptions import ModelError

__all__ = ["JailbreakModel"]

_MODEL_FILE = "model.int8.onnx"


class JailbreakModel:
    def __init__(self, folder: Path, *, threads: int = 1, max_tokens: int = 128) -> None:
        fix = "run `make setup` (or `extproc-router train`) to fine-tune it"
        model_file, tokenizer_file = folder / _MODEL_FILE, folder / "tokenizer.json"
        for path in (model_file, tokenizer_file, folder / "manifest.json"):
            if not path.is_file():
                raise ModelError(f"jailbreak model file {path} is missing: {fix}")
        try:
            self.manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        except ValueError as error:
            raise ModelError(f"cannot read {folder / 'manifest.json'} ({error}): {fix}") from None
        self.max_tokens = max_tokens
        self._tokenizer = load_tokenizer(tokenizer_file, max_tokens, fix)
        self._sessions = open_sessions(model_file, threads, threads, fix)

    def probabilities(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """Probability of an attack for each text, read up to `max_tokens`."""
        if not texts:
            return np.zeros(0, dtype=np.float32)
        return run_bert(self._tokenizer, self._sessions, texts, self.max_tokens, _sigmoid)


def _sigmoid(logits: npt.NDArray[np.float32], _: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
    probabilities: npt.NDArray[np.float32] = (1.0 / (1.0 + np.exp(-logits))).astype(np.float32)
    return probabilities
