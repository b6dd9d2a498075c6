"""The cheap first look: a static embedding distilled from the same MiniLM with model2vec at
set-up (`make setup`), served here with tokenizers and numpy alone.

A sentence is the mean of its tokens' vectors: ~0.1 ms where the transformer takes 3-13 ms. It
separates domains less well, so the router trusts it only when the vote it feeds is confident,
and runs the transformer for the rest (`model.cascade_confidence`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from extproc_router.exceptions import ModelError

__all__ = ["STATIC_DIR", "StaticEncoder"]

STATIC_DIR = "static"
# model2vec's own default: longer texts are cut here.
_MAX_TOKENS = 512


class StaticEncoder:
    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        vectors, tokenizer = path / "vectors.npy", path / "tokenizer.json"
        for required in (vectors, tokenizer):
            if not required.exists():
                raise ModelError(
                    f"{required} is missing: run `make setup` (it distils the static embedding)"
                )
        reading = vectors
        try:
            self._vectors = np.load(vectors).astype(np.float32)
            reading = tokenizer
            self._tokenizer = Tokenizer.from_file(str(tokenizer))
        except Exception as error:  # numpy and tokenizers errors alike
            raise ModelError(f"cannot read {reading} ({error}): run `make setup` again") from None
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self._unk = self._tokenizer.token_to_id("[UNK]")
        self.dimensions = int(self._vectors.shape[1])

    def embed(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """L2-normalised mean token vectors, one row per text (zeros for a text with none)."""
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        # Characters beyond what 512 tokens can hold only cost tokenising time.
        encodings = self._tokenizer.encode_batch(
            [text[: _MAX_TOKENS * 16] for text in texts], add_special_tokens=False
        )
        for row, encoding in enumerate(encodings):
            ids = [i for i in encoding.ids[:_MAX_TOKENS] if i != self._unk]
            if ids:
                mean = self._vectors[ids].mean(axis=0)
                norm = float(np.linalg.norm(mean))
                out[row] = mean / norm if norm > 0 else mean
        return out
