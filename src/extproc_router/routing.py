"""The routing decision: which pool answers a parsed request, and a reason a person can read.

Knows nothing of Envoy or protobuf; the adapter turns a `Decision` into header and body
mutations.
"""

from __future__ import annotations

from dataclasses import dataclass

from extproc_router.exceptions import RequestError
from extproc_router.request import ParsedRequest
from extproc_router.settings import PoolSettings, Settings
from extproc_router.signals.keyword import KeywordMatcher

__all__ = ["Decision", "Router"]


@dataclass(frozen=True, slots=True)
class Decision:
    pool: PoolSettings
    # How the pool was chosen: "model", "default" or "keyword:<rule>".
    method: str
    reason: str

    @property
    def model(self) -> str:
        """The model name the chosen pool serves, written into the forwarded body."""
        return self.pool.model


class Router:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._auto = frozenset(settings.routing.auto_models)
        self._by_model = {model: pool for pool in settings.pools for model in pool.served_models}
        self._default = settings.pool(settings.routing.default_pool)
        self._keywords = KeywordMatcher(settings.routing.keyword_rules)

    @property
    def known_models(self) -> list[str]:
        return sorted([*self._auto, *self._by_model])

    async def decide(self, request: ParsedRequest) -> Decision:
        if request.model is not None and request.model not in self._auto:
            pool = self._by_model.get(request.model)
            if pool is None:
                raise RequestError(
                    f"the model {request.model!r} does not exist; available models: "
                    + ", ".join(self.known_models),
                    status=404,
                    code="model_not_found",
                    param="model",
                )
            return Decision(pool, "model", f"model {request.model!r} is served by {pool.name}")
        match = self._keywords.match(request.prompt)
        if match is not None:
            pool = self._settings.pool(match.rule.pool)
            return Decision(
                pool,
                f"keyword:{match.rule.name}",
                f"keyword rule {match.rule.name!r} matched {match.keyword!r}",
            )
        return Decision(self._default, "default", "no rule matched; default pool")
