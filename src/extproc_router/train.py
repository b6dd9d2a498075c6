"""`make train` and `make eval`: fit the classifier heads on data/, and measure them on the
held-out split, never on what they were trained on.

Data: `data/domain/<label>.jsonl` and `data/preference/<label>.jsonl` with lines
`{"text": ..., "split": "train" | "test"}`; `data/complexity/eval.jsonl` with lines
`{"text": ..., "tier": ...}`. File names are labels (underscores for spaces).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from extproc_router.encoder import Encoder, TextEncoder
from extproc_router.heads import LinearHead, train_head
from extproc_router.models import StaticModels, encoder_id, static_id
from extproc_router.safety.classifier import JailbreakClassifier, train_classifier
from extproc_router.settings import ModelSettings
from extproc_router.static import StaticEncoder

__all__ = [
    "HEADS",
    "Example",
    "Fitted",
    "accuracy",
    "fit_heads",
    "fit_static",
    "load_examples",
    "shared_runs",
    "static_models",
    "train",
    "train_jailbreak_model",
]

HEADS = ("domain", "preference")


@dataclass(frozen=True, slots=True)
class Example:
    text: str
    label: str
    split: str
    family: str = ""


def load_examples(folder: Path) -> list[Example]:
    examples = []
    for path in sorted(folder.glob("*.jsonl")):
        label = path.stem.replace("_", " ")
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                examples.append(
                    Example(row["text"], label, row.get("split", "train"), row.get("family", ""))
                )
    if not examples:
        raise SystemExit(f"no labelled examples in {folder}")
    return examples


_NOT_WORD = re.compile(r"[\W_]+")


def shared_runs(
    train: Iterable[str], held_out: Iterable[str], length: int = 30
) -> list[tuple[str, str]]:
    """Training texts that share a run of `length` characters (case and punctuation folded)
    with a held-out text, each with that text. Near-copies in the training data make held-out
    figures flatter than unseen prompts would; a 5-gram Jaccard misses a copied sentence
    inside a longer prompt, a shared run does not."""
    runs: dict[str, str] = {}
    for text in held_out:
        for run in _runs(text, length):
            runs.setdefault(run, text)
    pairs = []
    for text in train:
        match = next((runs[run] for run in _runs(text, length) if run in runs), None)
        if match is not None:
            pairs.append((text, match))
    return pairs


def _runs(text: str, length: int) -> Iterator[str]:
    folded = _NOT_WORD.sub(" ", text.lower())
    return (folded[start : start + length] for start in range(len(folded) - length + 1))


def _fit(encoder: TextEncoder, ident: str, examples: list[Example]) -> LinearHead:
    train_rows = [e for e in examples if e.split == "train"]
    embeddings = encoder.embed([e.text for e in train_rows])
    return train_head(embeddings, [e.label for e in train_rows], encoder=ident)


def _encoder(settings: ModelSettings) -> Encoder:
    return Encoder(
        settings.path,
        variant=settings.variant,
        threads=settings.threads,
        max_tokens=settings.max_tokens,
    )


def head_examples(name: str, data: Path) -> list[Example]:
    """A head's labelled data. The jailbreak head also learns from every ordinary training
    prompt (labelled benign): attacks are rare, and a head that has only seen hard negatives
    is overconfident on everyday text it has never seen."""
    examples = load_examples(data / name)
    if name == "jailbreak":
        examples += [
            Example(e.text, "benign", "train")
            for folder in ("domain", "preference")
            for e in load_examples(data / folder)
            if e.split == "train"
        ]
    return examples


Fitted = dict[str, tuple[LinearHead, list[Example]]]


def _fit_screen(encoder: Encoder, ident: str, data: Path) -> JailbreakClassifier:
    """The n-gram screen: character n-grams of the text alone (no embedding), trained on the
    jailbreak train split and every everyday routing prompt."""
    rows = [e for e in head_examples("jailbreak", data) if e.split == "train"]
    texts, labels = [e.text for e in rows], [e.label == "attack" for e in rows]
    return train_classifier(texts, np.zeros((len(texts), 0), np.float32), labels, encoder=ident)


def train_jailbreak_model(settings: ModelSettings, data: Path) -> dict[str, Any]:
    """Fine-tune the jailbreak transformer (build time: needs the `model` extra)."""
    from extproc_router.safety.finetune import finetune_jailbreak, jailbreak_training

    texts, labels = jailbreak_training(data)
    return finetune_jailbreak(texts, labels, settings.jailbreak, threads=settings.threads)


def _fit_all(encoder: TextEncoder, ident: str, data: Path) -> Fitted:
    return {
        name: (_fit(encoder, ident, examples), examples)
        for name in HEADS
        for examples in [head_examples(name, data)]
    }


def fit_heads(settings: ModelSettings, data: Path) -> tuple[Encoder, Fitted, JailbreakClassifier]:
    encoder = _encoder(settings)
    ident = encoder_id(settings)
    return encoder, _fit_all(encoder, ident, data), _fit_screen(encoder, ident, data)


def fit_static(settings: ModelSettings, data: Path) -> tuple[StaticEncoder, Fitted] | None:
    """The cascade's heads, on the static embedding (none when the cascade is off)."""
    if settings.cascade_confidence is None:
        return None
    encoder = StaticEncoder(settings.static)
    return encoder, _fit_all(encoder, static_id(settings), data)


def static_models(fitted: tuple[StaticEncoder, Fitted] | None) -> StaticModels | None:
    if fitted is None:
        return None
    encoder, heads = fitted
    return StaticModels(encoder, heads["domain"][0], heads["preference"][0])


def train(settings: ModelSettings, data: Path) -> dict[str, float]:
    """Fit and save every head; returns their held-out accuracy."""
    encoder, heads, screen = fit_heads(settings, data)
    scores = {}
    for name, (head, examples) in heads.items():
        head.save(settings.heads / f"{name}.npz")
        scores[name] = accuracy(encoder, head, examples)[0]
    static = fit_static(settings, data)
    if static is not None:
        for name, (head, examples) in static[1].items():
            head.save(settings.heads / f"{name}_static.npz")
            scores[f"{name} (static embedding)"] = accuracy(static[0], head, examples)[0]
    screen.save(settings.heads / "jailbreak_text.npz")
    test = [e for e in load_examples(data / "jailbreak") if e.split == "test"]
    right = [(screen.score([e.text], None) >= 0.5) == (e.label == "attack") for e in test]
    scores["jailbreak screen"] = sum(right) / len(right)
    return scores


def accuracy(
    encoder: TextEncoder, head: LinearHead, examples: list[Example]
) -> tuple[float, list[tuple[str, str]]]:
    test = [e for e in examples if e.split == "test"]
    probabilities = head.probabilities(encoder.embed([e.text for e in test]))
    predicted = [head.labels[int(i)] for i in np.argmax(probabilities, axis=1)]
    pairs = [(e.label, p) for e, p in zip(test, predicted, strict=True)]
    return sum(t == p for t, p in pairs) / len(pairs), pairs
