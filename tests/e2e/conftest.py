from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from extproc_router.stack import Stack, start_stack
from tests.helpers import free_port_settings


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.path):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """Envoy + router + demo pools, as `make run` starts them, on free loopback ports."""
    running = start_stack(free_port_settings(), tmp_path_factory.mktemp("stack"), log_to_files=True)
    yield running
    running.stop_all()


def own_stack(tmp_path: Path, values: dict[str, object]) -> Stack:
    return start_stack(free_port_settings(values), tmp_path, log_to_files=True)
