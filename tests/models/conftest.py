from __future__ import annotations

import pytest

from extproc_router.models import Models, load_models
from extproc_router.settings import Settings, load_settings


@pytest.fixture(scope="session")
def settings() -> Settings:
    return load_settings()


@pytest.fixture(scope="session")
def models(settings: Settings) -> Models:
    """The real exported encoder and the heads `make train` fitted."""
    return load_models(settings.model)
