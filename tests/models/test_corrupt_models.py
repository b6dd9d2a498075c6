"""A corrupt or truncated model file stops start-up with a message that says how to fix it,
never with a traceback from numpy, onnxruntime or tokenizers."""

from __future__ import annotations

from pathlib import Path

import pytest

from extproc_router.exceptions import ModelError
from extproc_router.models import load_models
from extproc_router.settings import Settings


def _copy_tree(source: Path, target: Path) -> None:
    """Symlinks to every file, so one can be replaced without copying 120 MB."""
    for path in source.rglob("*"):
        if path.is_file():
            link = target / path.relative_to(source)
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(path.resolve())


@pytest.mark.parametrize(
    "broken",
    [
        "model/model.int8.onnx",
        "model/tokenizer.json",
        "model/static/vectors.npy",
        "heads/domain.npz",
        "heads/jailbreak_text.npz",
        "jailbreak/model.int8.onnx",
        "jailbreak/tokenizer.json",
        "jailbreak/manifest.json",
    ],
)
def test_a_corrupt_file_names_itself_and_the_fix(
    settings: Settings, tmp_path: Path, broken: str
) -> None:
    model, heads, jailbreak = tmp_path / "model", tmp_path / "heads", tmp_path / "jailbreak"
    _copy_tree(settings.model.path, model)
    _copy_tree(settings.model.heads, heads)
    _copy_tree(settings.model.jailbreak, jailbreak)
    target = tmp_path / broken
    original = target.resolve().read_bytes()
    target.unlink()
    target.write_bytes(original[: len(original) // 3])  # truncated mid-write
    config = settings.model.model_copy(
        update={"path": model, "heads": heads, "static": model / "static", "jailbreak": jailbreak}
    )
    with pytest.raises(ModelError) as caught:
        load_models(config)
    message = str(caught.value)
    assert target.name in message
    assert "make setup" in message or "make train" in message
