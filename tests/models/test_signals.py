"""Each signal on the real encoder and heads, on prompts written for these tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from extproc_router.encoder import Encoder
from extproc_router.models import Models, encoder_id
from extproc_router.settings import EmbeddingRoute, Settings
from extproc_router.signals import complexity
from extproc_router.signals.embedding import EmbeddingRoutes, default_threshold


@pytest.mark.parametrize(
    ("text", "depth"),
    [
        ("What is photosynthesis?", 1),
        ("What is photosynthesis and how does it differ from respiration?", 2),
    ],
)
def test_depth_of_simple_and_two_part_questions(text: str, depth: int) -> None:
    assert complexity.measure_depth(text).depth == depth


def test_multi_part_tasks_are_deep() -> None:
    task = (
        "Design a rate limiter for our API. First, list the requirements; then compare token "
        "bucket and sliding window; if we run several replicas, explain how they share state; "
        "finally write the Python code and its tests.\n```python\n# existing code\n```"
    )
    assert complexity.measure_depth(task).depth >= 4


def test_complexity_tiers(models: Models, settings: Settings) -> None:
    def tier(text: str) -> str:
        result = complexity.evaluate(
            text, settings.pools, settings.routing.complexity, models.encoder.count_tokens
        )
        return str(result.evidence["tier"])

    assert tier("What is the capital of France?") == "simple"
    assert tier("Summarise this for me: " + "the committee met and agreed. " * 60) == "moderate"
    assert tier(
        "Prove the claim, then derive the bound, compare the two, and list edge cases."
    ) == ("complex")


class CountingEncoder:
    def __init__(self, encoder: Encoder) -> None:
        self.encoder = encoder
        self.dimensions = encoder.dimensions
        self.calls = 0

    def embed(self, texts: list[str]) -> np.ndarray:
        self.calls += 1
        return self.encoder.embed(texts)


def test_route_centroids_are_cached_on_disk(models: Models, tmp_path: Path) -> None:
    routes = [EmbeddingRoute(name="facts", target="simple", utterances=("Who wrote Hamlet?",))]
    counting = CountingEncoder(models.encoder)
    ident = encoder_id(models.settings)
    first = EmbeddingRoutes(routes, counting, ident, tmp_path)
    again = EmbeddingRoutes(routes, counting, ident, tmp_path)
    assert counting.calls == 1
    assert np.array_equal(first.centroids, again.centroids)
    assert len(list(tmp_path.glob("routes-*.npy"))) == 1
    changed = [routes[0].model_copy(update={"utterances": ("Who painted the Mona Lisa?",)})]
    EmbeddingRoutes(changed, counting, ident, tmp_path)
    assert counting.calls == 2


def test_default_route_thresholds() -> None:
    simple = EmbeddingRoute(name="a", target="simple", utterances=("x",))
    complex_ = EmbeddingRoute(name="b", target="complex", utterances=("x",))
    assert (default_threshold(simple), default_threshold(complex_)) == (0.85, 0.80)


def test_embedding_route_votes_only_above_threshold(models: Models, settings: Settings) -> None:
    routes = models.signals(settings).routes
    assert routes is not None  # the transformer's signals have routes; the static ones do not
    near = routes.evaluate(models.encoder.embed(["hey, how's it going?"])[0], settings.pools)
    assert near.evidence["route"] == "chit_chat"
    assert not near.abstained
    assert max(near.scores, key=lambda k: near.scores[k]) == "small"
    far = routes.evaluate(models.encoder.embed(["asdf qwerty zxcv"])[0], settings.pools)
    assert far.abstained


def test_domain_signal_and_capability_floor(models: Models, settings: Settings) -> None:
    domain = models.signals(settings).domain
    math = domain.evaluate(
        models.encoder.embed(["Solve for x: 3x^2 - 12x + 9 = 0, and factor the polynomial."])[0],
        settings.pools,
    )
    assert math.evidence["top"][0][0] == "math"
    assert math.scores["large"] == 1.0 > math.scores["small"]
    health = domain.evaluate(
        models.encoder.embed(
            ["What dose of ibuprofen is safe for an adult with mild kidney disease?"]
        )[0],
        settings.pools,
    )
    assert health.evidence["top"][0][0] == "health"
    assert "small" in health.excluded  # rated 0.59 for health, floor 0.6


@pytest.mark.parametrize(
    ("text", "preference"),
    [
        ("Write a short poem about the sea at night.", "creative"),
        ("```js\nconst x = [1,2,3].map(y => y * 2)\n```\nwhy does this print undefined?", "code"),
        ("In what year did the Titanic sink?", "factual"),
    ],
)
def test_preference_signal(models: Models, settings: Settings, text: str, preference: str) -> None:
    signal = models.signals(settings).preference
    result = signal.evaluate(models.encoder.embed([text])[0], text, settings.pools)
    assert result.evidence["preference"] == preference
