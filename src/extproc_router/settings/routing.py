"""The models and signals a routing decision reads, and how they vote."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from extproc_router.settings.base import (
    DOMAINS,
    PREFERENCES,
    SIGNALS,
    Frozen,
    ModelName,
    Name,
    Phrase,
    Unit,
    check_regexes,
)

__all__ = [
    "ComplexitySettings",
    "DomainSettings",
    "EmbeddingRoute",
    "KeywordRule",
    "ModelSettings",
    "RoutingSettings",
]


class ModelSettings(Frozen):
    """The sentence encoder every model-based signal shares (one embedding per request)."""

    path: Path = Path("models/all-MiniLM-L6-v2")
    variant: Literal["fp32", "int8"] = "int8"
    # Intra-op threads per model run while the router decides one request, and while it
    # decides several at once (more threads then only fight the event loop for the cores:
    # 1 sustained ~12% more mixed traffic at concurrency 32 on 2 cores; see occupancy.py).
    threads: int = Field(default=2, ge=1, le=64)
    busy_threads: int = Field(default=1, ge=1, le=64)
    # The jailbreak transformer has one session (a second would cost ~36 MB): it reads long or
    # suspicious text, mostly while other requests are decided. 1 thread sustained ~6% more
    # mixed traffic at concurrency 32 than 2, for ~5 ms more on a lone 1,500-token prompt.
    jailbreak_threads: int = Field(default=1, ge=1, le=64)
    # The classification input: the last user turn, cut to this many tokens.
    # 64: half the transformer time of 128 at the same held-out accuracy (docs/EVALUATION.md;
    # those prompts are mostly shorter than 64 tokens, and a long prompt's opening names its
    # topic). Complexity still counts every token, and the jailbreak n-grams read all of it.
    max_tokens: int = Field(default=64, ge=8, le=512)
    # Concurrent requests waiting for the encoder share one run of up to this many texts (1:
    # each runs alone). Dynamic int8 quantises a batch's activations together, so a text's
    # embedding moves slightly with its batch-mates (cosine ~0.995): fp32 does not.
    max_batch: int = Field(default=16, ge=1, le=256)
    # Trained heads (`make train`) and the route-centroid cache.
    heads: Path = Path("models/heads")
    # The jailbreak classifier fine-tuned from the same MiniLM at set-up (`make setup`).
    jailbreak: Path = Path("models/jailbreak")
    # The static embedding distilled from the same MiniLM (`make setup`), and the cascade: a
    # vote from the static heads at or above this confidence decides without the transformer.
    # None turns the cascade off (every routed request runs the transformer).
    static: Path = Path("models/all-MiniLM-L6-v2/static")
    cascade_confidence: Unit | None = 0.8


class KeywordRule(Frozen):
    """A prompt containing any keyword (whole words, case- and width-folded) or matching any
    pattern (a regular expression) votes for `target`, a pool name or a tier."""

    name: Name
    target: Name
    keywords: tuple[Phrase, ...] = ()
    patterns: tuple[Phrase, ...] = ()
    # A match decides at once; the model-based signals are skipped (the fast path).
    short_circuit: bool = False

    @model_validator(mode="after")
    def _something_to_match(self) -> KeywordRule:
        if not self.keywords and not self.patterns:
            raise ValueError("a keyword rule needs keywords or patterns")
        check_regexes(enumerate(self.patterns), "patterns")
        return self


class EmbeddingRoute(Frozen):
    """Prompts similar to these utterances (cosine to their centroid) vote for `target`."""

    name: Name
    target: Name
    utterances: tuple[Phrase, ...] = Field(min_length=1)
    # Default: 0.85 for routes to the simple tier, 0.80 otherwise (the reference design's).
    threshold: Unit | None = None


class DomainSettings(Frozen):
    # Capability of each pool per domain, in [0, 1]; `default` covers unlisted domains.
    capabilities: dict[Name, dict[str, Unit]] = {}
    # A pool below this capability for a confidently predicted domain is never chosen.
    floor: Unit = 0.0
    floor_min_probability: Unit = 0.5

    @field_validator("capabilities")
    @classmethod
    def _known_domains(cls, value: dict[str, dict[str, float]]) -> dict[str, dict[str, float]]:
        for pool, table in value.items():
            for domain in table:
                if domain != "default" and domain not in DOMAINS:
                    raise ValueError(
                        f"{pool}: unknown domain {domain!r}; domains are {', '.join(DOMAINS)}"
                    )
        return value


class ComplexitySettings(Frozen):
    # Below the first: simple; below the second: moderate; else complex.
    token_thresholds: tuple[int, int] = (50, 150)
    depth_thresholds: tuple[int, int] = (2, 4)


class RoutingSettings(Frozen):
    # Where the router sends what it does not route (other paths, and fail-open traffic).
    default_pool: Name
    # The best general pool: low confidence, or no signal voted.
    fallback_pool: Name | None = None
    # Model names meaning "let the router choose".
    auto_models: tuple[ModelName, ...] = ("auto",)
    confidence_threshold: Unit = 0.6
    weights: dict[str, Annotated[float, Field(ge=0)]] = {
        "keyword": 0.10,
        "embedding": 0.40,
        "domain": 0.30,
        "complexity": 0.20,
        "preference": 0.15,
    }
    # Whether the system prompt is part of what the signals read; off by default, because it
    # is the operator's framing, not the user's task.
    include_system_prompt: bool = False
    # Characters of the earlier turns (the most recent ones) the signals read after the last
    # user turn; 0 reads the last user turn alone. Bounded: at most 4000.
    context_chars: int = Field(default=0, ge=0, le=4000)
    keyword_rules: tuple[KeywordRule, ...] = ()
    embedding_routes: tuple[EmbeddingRoute, ...] = ()
    domains: DomainSettings = DomainSettings()
    complexity: ComplexitySettings = ComplexitySettings()
    # Which pool or tier each kind of work goes to.
    preferences: dict[str, Name] = {}

    @field_validator("weights", "preferences")
    @classmethod
    def _known_keys(cls, value: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        known = SIGNALS if info.field_name == "weights" else PREFERENCES
        what = "signals" if info.field_name == "weights" else "preferences"
        unknown = sorted(set(value) - set(known))
        if unknown:
            raise ValueError(f"unknown {what} {unknown}; {what} are {', '.join(known)}")
        return value
