"""The router's configuration: one YAML file, validated in one place.

Every other module receives a frozen `Settings`; none reads files or the environment. A bad file
fails with one `ConfigError` that lists every problem, each named by its dotted key and the file,
so an operator fixes them all in one pass.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from extproc_router.exceptions import ConfigError

__all__ = [
    "EXAMPLE_CONFIG",
    "EnvoySettings",
    "KeywordRule",
    "ListenAddress",
    "PoolSettings",
    "RoutingSettings",
    "ServerSettings",
    "Settings",
    "load_settings",
    "override",
    "parse_settings",
]

EXAMPLE_CONFIG = Path(__file__).with_name("example.yaml")

_HEADER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_ENDPOINT = re.compile(r"^(?P<host>[A-Za-z0-9.\-]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})$")

Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Port = Annotated[int, Field(ge=0, le=65535)]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ListenAddress(_Frozen):
    """Where a server listens. Port 0 asks the OS for a free port (used by the tests)."""

    host: str = "127.0.0.1"
    port: Port


class ServerSettings(_Frozen):
    grpc: ListenAddress = ListenAddress(port=50051)
    admin: ListenAddress = ListenAddress(port=9190)
    # Above Envoy's body buffer limit: the Python default of 4 MiB fails big prompts mid-stream.
    max_message_bytes: int = Field(default=64 * 1024 * 1024, ge=1024 * 1024)
    # Seconds to keep serving open streams after SIGTERM, while health says NOT_SERVING.
    drain_seconds: float = Field(default=5.0, ge=0, le=300)
    # Must not be larger than Envoy's keepalive interval, or the server answers GOAWAY.
    min_ping_interval_ms: int = Field(default=5_000, ge=0)


class EnvoySettings(_Frozen):
    """What `render-envoy` puts into Envoy's config; the router itself only needs the header."""

    listen: ListenAddress = ListenAddress(port=8080)
    admin: ListenAddress = ListenAddress(port=9901)
    cluster_header: str = "x-router-cluster"
    message_timeout_ms: int = Field(default=2_000, ge=1_000, le=60_000)
    failure_mode_allow: bool = True
    # 503 when the router fails and fail-open is off; Envoy's own default is 500.
    status_on_error: int = Field(default=503, ge=400, le=599)
    max_request_bytes: int = Field(default=16 * 1024 * 1024, ge=64 * 1024)
    keepalive_interval_s: int = Field(default=30, ge=1)
    # Generation routes must outlive long answers; 0 disables Envoy's 15 s route timeout.
    route_timeout_s: int = Field(default=0, ge=0)
    stream_idle_timeout_s: int = Field(default=300, ge=1)
    # One line per request on Envoy's stdout, with the chosen pool and model.
    access_log: bool = True

    @field_validator("cluster_header")
    @classmethod
    def _lowercase_header(cls, value: str) -> str:
        if not _HEADER_NAME.match(value):
            raise ValueError("must be a lowercase HTTP header name, e.g. x-router-cluster")
        return value


class PoolSettings(_Frozen):
    """A pool of identical model servers; Envoy load-balances across its endpoints."""

    name: Name
    model: ModelName
    aliases: tuple[ModelName, ...] = ()
    endpoints: tuple[str, ...] = Field(min_length=1)

    @field_validator("endpoints")
    @classmethod
    def _host_port(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for endpoint in value:
            match = _ENDPOINT.match(endpoint)
            if match is None or not 0 < int(match["port"]) < 65536:
                raise ValueError(f"{endpoint!r} is not HOST:PORT")
        return value

    @property
    def served_models(self) -> tuple[str, ...]:
        return (self.model, *self.aliases)


class KeywordRule(_Frozen):
    """Route a request whose prompt contains any of `keywords` (whole words) to `pool`."""

    name: Name
    pool: Name
    keywords: tuple[Annotated[str, StringConstraints(min_length=1)], ...] = Field(min_length=1)


class RoutingSettings(_Frozen):
    default_pool: Name
    # Model names meaning "let the router choose".
    auto_models: tuple[ModelName, ...] = ("auto",)
    keyword_rules: tuple[KeywordRule, ...] = ()


class Settings(_Frozen):
    server: ServerSettings = ServerSettings()
    envoy: EnvoySettings = EnvoySettings()
    pools: tuple[PoolSettings, ...] = Field(min_length=1)
    routing: RoutingSettings
    log_level: Literal["debug", "info", "warning", "error"] = "info"

    @model_validator(mode="after")
    def _cross_references(self) -> Settings:
        problems: list[str] = []
        names = [pool.name for pool in self.pools]
        for name in sorted({n for n in names if names.count(n) > 1}):
            problems.append(f"pools: the name {name!r} is used twice")
        owner: dict[str, str] = {}
        for pool in self.pools:
            for model in pool.served_models:
                if model in owner and owner[model] != pool.name:
                    problems.append(
                        f"pools.{pool.name}: model {model!r} is also served by {owner[model]!r}"
                    )
                owner.setdefault(model, pool.name)
        for alias in self.routing.auto_models:
            if alias in owner:
                problems.append(f"routing.auto_models: {alias!r} is a served model name")
        if self.routing.default_pool not in names:
            problems.append(f"routing.default_pool: no pool named {self.routing.default_pool!r}")
        for index, rule in enumerate(self.routing.keyword_rules):
            if rule.pool not in names:
                problems.append(f"routing.keyword_rules.{index}.pool: no pool named {rule.pool!r}")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def pool(self, name: str) -> PoolSettings:
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(name)


def _format_errors(error: ValidationError) -> list[str]:
    lines = []
    for item in error.errors():
        key = ".".join(str(part) for part in item["loc"]) or "(top level)"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{key}: {message}")
    return lines


def parse_settings(data: Any, *, source: str = "<config>") -> Settings:
    """Validate already-loaded YAML data; `source` names the file in errors."""
    if not isinstance(data, dict):
        raise ConfigError(source, ["(top level): expected a mapping of settings"])
    try:
        return Settings.model_validate(data)
    except ValidationError as error:
        raise ConfigError(source, _format_errors(error)) from None


def load_settings(path: str | Path | None = None) -> Settings:
    """Read and validate a YAML config; `None` means the embedded example config."""
    file = Path(path) if path is not None else EXAMPLE_CONFIG
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(str(file), [f"cannot read: {error}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        raise ConfigError(str(file), [f"invalid YAML: {error}"]) from None
    return parse_settings(data, source=str(file))


def override(settings: Settings, values: dict[str, Any], *, source: str = "overrides") -> Settings:
    """A copy with dotted keys replaced (`{"envoy.listen.port": 8081}`), validated again."""
    data = settings.model_dump(mode="json")
    for dotted, value in values.items():
        *parents, leaf = dotted.split(".")
        node = data
        for part in parents:
            node = node[part]
        node[leaf] = value
    return parse_settings(data, source=source)
