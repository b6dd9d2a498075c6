"""The config in force, and how it changes while the router serves: SIGHUP, a changed file, or
the ReloadConfig RPC. A new file is validated and its router built before anything switches;
a bad file is rejected with every bad key named, and the old config keeps serving.

Streams read `LiveConfig.pipeline` once, at their start, so one config decides a request.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from pathlib import Path

from extproc_router import metrics
from extproc_router.audit import AuditLog
from extproc_router.cache import SemanticCache
from extproc_router.exceptions import ConfigError, ModelError
from extproc_router.experiments import Experiments
from extproc_router.models import Models, load_models
from extproc_router.pipeline import Pipeline
from extproc_router.pool_load import LoadBoard
from extproc_router.routing import Router
from extproc_router.safety.gate import Safety
from extproc_router.settings import Settings, load_settings
from extproc_router.shadow import Shadow

__all__ = ["LiveConfig"]

logger = logging.getLogger(__name__)

# Sections a running router cannot change: they shape the listening sockets and Envoy's config.
_RESTART_ONLY = ("server", "envoy")


class LiveConfig:
    def __init__(self, settings: Settings, models: Models | None, source: Path | None) -> None:
        self.settings = settings
        self.models = models
        # Outlives reloads: the readings stay while the config that judges them changes.
        self.load = LoadBoard()
        # Outlives reloads that leave `cache` as it was: a reload keeps what it holds.
        self.cache = _cache(settings)
        self.shadow = _shadow(settings)
        self.pipeline = _pipeline(settings, models, self.load, self.cache, self.shadow)
        self.experiments = Experiments(settings, models, self.pipeline)
        self.source = source
        self.loaded_at = time.time()
        self._mtime = _mtime(source)
        self._lock = asyncio.Lock()

    @classmethod
    async def start(cls, settings: Settings, source: Path | None) -> LiveConfig:
        """Loads the models off the event loop; raises ModelError if a file is missing."""
        models = await asyncio.to_thread(load_models, settings.model)
        return await asyncio.to_thread(cls, settings, models, source)

    async def reload(self) -> list[str]:
        """Returns the problems that stopped the reload; empty when the new config is in force."""
        if self.source is None:
            return ["the router runs on the embedded config: there is no file to reload"]
        async with self._lock:
            self._mtime = _mtime(self.source)
            try:
                settings = await asyncio.to_thread(load_settings, self.source)
                models = self.models
                if models is None or settings.model != self.settings.model:
                    models = await asyncio.to_thread(load_models, settings.model)
                cache = self.cache if settings.cache == self.settings.cache else _cache(settings)
                same = (
                    settings.shadow == self.settings.shadow
                    and settings.pools == self.settings.pools
                )
                shadow = self.shadow if same else _shadow(settings)
                pipeline = await asyncio.to_thread(
                    _pipeline, settings, models, self.load, cache, shadow
                )
                experiments = await asyncio.to_thread(Experiments, settings, models, pipeline)
            except (ConfigError, ModelError) as error:
                metrics.RELOADS.labels(result="failed").inc()
                logger.error("config reload rejected, old config keeps serving: %s", error)
                if isinstance(error, ConfigError):
                    return error.problems
                return [f"model: {error}"]
            for section in _RESTART_ONLY:
                if getattr(settings, section) != getattr(self.settings, section):
                    logger.warning("config section %r changed: it takes effect on restart", section)
            # The old pipeline's audit file closes when its last stream lets go of it; closing
            # it here would fail a request still being decided with it.
            self.settings, self.models, self.pipeline = settings, models, pipeline
            self.experiments = experiments
            if cache is not self.cache:
                old, self.cache = self.cache, cache
                if old is not None:
                    await old.aclose()
            if shadow is not self.shadow:
                old_shadow, self.shadow = self.shadow, shadow
                if old_shadow is not None:
                    await old_shadow.aclose()
            self.loaded_at = time.time()
            metrics.RELOADS.labels(result="ok").inc()
            logger.info("config reloaded from %s", self.source)
            return []

    async def watch(self, interval: float = 2.0) -> None:
        """Reload when the file's modification time changes; runs until cancelled."""
        if self.source is None:
            return
        while True:
            await asyncio.sleep(interval)
            if _mtime(self.source) != self._mtime:
                await self.reload()

    def pipeline_for(self, headers: Mapping[str, str]) -> tuple[str, Pipeline]:
        """The A/B policy a request's user is on, and its pipeline ("" and the config's own
        when no experiment runs)."""
        return self.experiments.pipeline_for(headers)

    async def aclose(self) -> None:
        if self.cache is not None:
            await self.cache.aclose()
        if self.shadow is not None:
            await self.shadow.aclose()


def _cache(settings: Settings) -> SemanticCache | None:
    return SemanticCache(settings.cache) if settings.cache.routes else None


def _shadow(settings: Settings) -> Shadow | None:
    return Shadow(settings.shadow, settings.pools) if settings.shadow.pool is not None else None


def _pipeline(
    settings: Settings,
    models: Models | None,
    load: LoadBoard | None = None,
    cache: SemanticCache | None = None,
    shadow: Shadow | None = None,
) -> Pipeline:
    safety = (
        Safety(settings.safety, models.jailbreak_screen, models.jailbreak_model)
        if models
        else Safety(settings.safety, None)
    )
    audit = AuditLog(settings.safety.audit)
    return Pipeline(Router(settings, models), safety, audit, load, cache=cache, shadow=shadow)


def _mtime(path: Path | None) -> float | None:
    try:
        return path.stat().st_mtime if path is not None else None
    except OSError:
        return None
