"""A real redis-server (Debian's package) per test module, on a free port, logging to a file."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.helpers import start_redis


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process, url = start_redis(tmp_path_factory.mktemp("redis"))
    yield url
    process.terminate()
    process.wait(10)
