"""Reloading the config in process: bad files are refused whole, good ones swap the router."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from extproc_router.live import LiveConfig
from extproc_router.models import Models
from extproc_router.settings import EXAMPLE_CONFIG, Settings


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "router.yaml"
    path.write_text(EXAMPLE_CONFIG.read_text())
    return path


async def test_reload_keeps_the_old_config_on_errors(
    config: Path, settings: Settings, models: Models
) -> None:
    live = LiveConfig(settings, models, config)
    old_router = live.pipeline.router
    data = yaml.safe_load(config.read_text())
    data["routing"]["default_pool"] = "nowhere"
    data["routing"]["fallback_pool"] = "elsewhere"
    config.write_text(yaml.safe_dump(data))
    problems = await live.reload()
    assert any("routing.default_pool" in p for p in problems)
    assert any("routing.fallback_pool" in p for p in problems)
    assert live.pipeline.router is old_router
    data["routing"]["weights"]["vibes"] = 1
    config.write_text(yaml.safe_dump(data))
    assert any("vibes" in p for p in await live.reload())
    assert live.pipeline.router is old_router
    config.write_text("pools: [")
    assert any("invalid YAML" in p for p in await live.reload())
    assert live.pipeline.router is old_router


async def test_good_reload_swaps_router_and_keeps_models(
    config: Path, settings: Settings, models: Models
) -> None:
    live = LiveConfig(settings, models, config)
    data = yaml.safe_load(config.read_text())
    data["routing"]["confidence_threshold"] = 0.9
    config.write_text(yaml.safe_dump(data))
    assert await live.reload() == []
    assert live.settings.routing.confidence_threshold == 0.9
    assert live.models is models  # the model section did not change: nothing reloaded


async def test_missing_model_in_new_config_is_refused(
    config: Path, settings: Settings, models: Models, tmp_path: Path
) -> None:
    live = LiveConfig(settings, models, config)
    data = yaml.safe_load(config.read_text())
    data["model"]["path"] = str(tmp_path / "nothing-here")
    config.write_text(yaml.safe_dump(data))
    problems = await live.reload()
    assert problems
    assert "make setup" in problems[0]
    assert live.settings is settings


async def test_embedded_config_cannot_reload(settings: Settings, models: Models) -> None:
    live = LiveConfig(settings, models, None)
    assert "no file" in (await live.reload())[0]
