"""Load the encoder and the trained heads once; build the model-based signals from them.

Loading is the slow part (an ONNX session, two heads), so a config reload that leaves the
`model:` section alone keeps the loaded `Models` and only rebuilds the signals.
"""

from __future__ import annotations

from dataclasses import dataclass

from extproc_router.encoder import Encoder
from extproc_router.heads import LinearHead
from extproc_router.safety.classifier import JailbreakClassifier
from extproc_router.safety.transformer import JailbreakModel
from extproc_router.settings import ModelSettings, Settings
from extproc_router.signals.domain import DomainSignal
from extproc_router.signals.embedding import EmbeddingRoutes
from extproc_router.signals.preference import PreferenceSignal
from extproc_router.static import StaticEncoder

__all__ = ["ModelSignals", "Models", "StaticModels", "encoder_id", "load_models", "static_id"]

MODEL_NAME = "all-MiniLM-L6-v2"


def encoder_id(settings: ModelSettings) -> str:
    return f"{MODEL_NAME}/{settings.variant}/{settings.max_tokens}"


def static_id(settings: ModelSettings) -> str:
    return f"model2vec/{MODEL_NAME}"


@dataclass(frozen=True)
class ModelSignals:
    # None on the static embedding: its similarities run high and unevenly (a biology question
    # scores 0.5 against proof utterances), so route thresholds set on the transformer's scale
    # would fire at random there.
    routes: EmbeddingRoutes | None
    domain: DomainSignal
    preference: PreferenceSignal


@dataclass(frozen=True)
class StaticModels:
    """The cascade's first stage: the static embedding and the heads trained on it."""

    encoder: StaticEncoder
    domain_head: LinearHead
    preference_head: LinearHead


@dataclass(frozen=True)
class Models:
    settings: ModelSettings
    encoder: Encoder
    domain_head: LinearHead
    preference_head: LinearHead
    # The n-gram classifier: a first look at every request, and the fine-tuned transformer
    # for the text it is unsure of.
    jailbreak_screen: JailbreakClassifier
    jailbreak_model: JailbreakModel
    static: StaticModels | None = None

    def signals(self, settings: Settings) -> ModelSignals:
        routes = EmbeddingRoutes(
            settings.routing.embedding_routes,
            self.encoder,
            encoder_id(self.settings),
            self.settings.heads / "cache",
        )
        return _signals(settings, self.domain_head, self.preference_head, routes)

    def static_signals(self, settings: Settings) -> ModelSignals | None:
        if self.static is None:
            return None
        return _signals(settings, self.static.domain_head, self.static.preference_head, None)


def _signals(
    settings: Settings,
    domain_head: LinearHead,
    preference_head: LinearHead,
    routes: EmbeddingRoutes | None,
) -> ModelSignals:
    routing = settings.routing
    return ModelSignals(
        routes=routes,
        domain=DomainSignal(domain_head, routing.domains, settings.pools),
        preference=PreferenceSignal(preference_head, routing.preferences),
    )


def load_models(settings: ModelSettings) -> Models:
    """Raises `ModelError` with the command that fixes it when a file is missing."""
    encoder = Encoder(
        settings.path,
        variant=settings.variant,
        threads=settings.threads,
        busy_threads=settings.busy_threads,
        max_tokens=settings.max_tokens,
    )
    ident = encoder_id(settings)
    static = None
    if settings.cascade_confidence is not None:
        static_ident = static_id(settings)
        static = StaticModels(
            StaticEncoder(settings.static),
            LinearHead.load(settings.heads / "domain_static.npz", encoder=static_ident),
            LinearHead.load(settings.heads / "preference_static.npz", encoder=static_ident),
        )
    return Models(
        settings,
        encoder,
        LinearHead.load(settings.heads / "domain.npz", encoder=ident),
        LinearHead.load(settings.heads / "preference.npz", encoder=ident),
        JailbreakClassifier.load(settings.heads / "jailbreak_text.npz", encoder=ident),
        JailbreakModel(settings.jailbreak, threads=settings.jailbreak_threads),
        static,
    )
