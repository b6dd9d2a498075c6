"""The exported ONNX encoder, run as the router runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from extproc_router.encoder import Encoder, length_groups
from extproc_router.exceptions import ModelError
from extproc_router.heads import LinearHead
from extproc_router.models import Models
from extproc_router.settings import Settings

TEXTS = [
    "What is the capital of France?",
    "Prove that there are infinitely many primes.",
    "write a limerick about a cat who loves lasagna",
    "My Kubernetes pod keeps restarting with CrashLoopBackOff; how do I debug it?",
]


def test_embeddings_are_unit_vectors_and_batching_changes_little(
    models: Models, settings: Settings
) -> None:
    batch = models.encoder.embed(TEXTS)
    assert batch.shape == (4, 384)
    assert np.allclose(np.linalg.norm(batch, axis=1), 1.0, atol=1e-5)
    # Dynamic int8 quantises each batch with its own activation scale: close, not identical.
    for row, text in zip(batch, TEXTS, strict=True):
        assert float(models.encoder.embed([text])[0] @ row) > 0.99
    fp32 = Encoder(settings.model.path, variant="fp32", threads=1)
    for row, text in zip(fp32.embed(TEXTS), TEXTS, strict=True):
        assert float(fp32.embed([text])[0] @ row) > 0.9999
    similarity = batch @ batch.T
    assert similarity[0, 1] < 0.5  # unrelated prompts are not near each other


def test_texts_of_different_lengths_come_back_in_order(settings: Settings) -> None:
    # Long and short texts run in separate groups; each row must still be its own text's.
    fp32 = Encoder(settings.model.path, variant="fp32", threads=1)
    texts = ["hi", TEXTS[3] * 3, "thanks", TEXTS[1], "ok", TEXTS[2] * 2]
    batch = fp32.embed(texts)
    for row, text in zip(batch, texts, strict=True):
        assert float(fp32.embed([text])[0] @ row) > 0.9999


def test_length_groups_bound_padding() -> None:
    lengths = [40, 3, 4, 12, 3, 41, 13, 90, 5]
    groups = length_groups(lengths)
    assert sorted(i for group in groups for i in group) == list(range(len(lengths)))
    for group in groups:
        padded = len(group) * max(lengths[i] for i in group)
        assert padded <= 1.25 * sum(lengths[i] for i in group)
    assert len(groups) < len(lengths)  # similar lengths still share a run
    assert length_groups([7] * 16) == [list(range(16))]


def test_int8_stays_close_to_fp32(settings: Settings) -> None:
    fp32 = Encoder(settings.model.path, variant="fp32", threads=1)
    int8 = Encoder(settings.model.path, variant="int8", threads=1)
    cosines = np.sum(fp32.embed(TEXTS) * int8.embed(TEXTS), axis=1)
    assert cosines.min() > 0.98


def test_export_matched_sentence_transformers(settings: Settings) -> None:
    manifest = json.loads((settings.model.path / "manifest.json").read_text())
    assert manifest["min_cosine_to_sentence_transformers"]["fp32"] >= 0.999


def test_token_count_is_not_truncated(models: Models) -> None:
    assert models.encoder.count_tokens("hello world") == 2
    assert models.encoder.count_tokens("word " * 500) == 500


def test_concurrent_inference_matches_sequential(models: Models) -> None:
    texts = [f"{text} (variant {i})" for i in range(6) for text in TEXTS]
    sequential = [models.encoder.embed([t])[0] for t in texts]
    with ThreadPoolExecutor(max_workers=6) as pool:
        concurrent = list(pool.map(lambda t: models.encoder.embed([t])[0], texts))
    for a, b in zip(sequential, concurrent, strict=True):
        assert float(a @ b) > 0.9999


def test_missing_model_says_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="make setup"):
        Encoder(tmp_path)


def test_corrupt_model_is_a_model_error(tmp_path: Path, settings: Settings) -> None:
    (tmp_path / "model.int8.onnx").write_bytes(b"not an onnx file")
    (tmp_path / "tokenizer.json").write_bytes((settings.model.path / "tokenizer.json").read_bytes())
    with pytest.raises(ModelError, match="cannot load"):
        Encoder(tmp_path)


def test_head_trained_on_other_embeddings_is_refused(settings: Settings) -> None:
    with pytest.raises(ModelError, match="make train"):
        LinearHead.load(settings.model.heads / "domain.npz", encoder="other-model/fp32/128")


def test_the_router_never_imports_torch() -> None:
    code = (
        "import sys, asyncio\n"
        "from extproc_router.settings import load_settings\n"
        "from extproc_router.server import Server\n"
        "from extproc_router.live import LiveConfig\n"
        "asyncio.run(LiveConfig.start(load_settings(), None))\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "assert 'transformers' not in sys.modules, 'transformers imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
