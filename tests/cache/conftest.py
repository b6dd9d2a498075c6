"""A real redis-server (Debian's package) per test module, on a free port, logging to a file."""

from tests.helpers import redis_url

__all__ = ["redis_url"]
