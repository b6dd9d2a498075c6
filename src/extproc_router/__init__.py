"""extproc-router: an Envoy ext_proc sidecar that routes OpenAI-style requests to model pools."""

from extproc_router.exceptions import ConfigError, RequestError, RouterError
from extproc_router.routing import Decision, Router
from extproc_router.settings import Settings, load_settings

__all__ = [
    "ConfigError",
    "Decision",
    "RequestError",
    "Router",
    "RouterError",
    "Settings",
    "__version__",
    "load_settings",
]

__version__ = "0.1.0"
