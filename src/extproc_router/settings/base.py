"""Shared pieces of the configuration's sections: the frozen base model and the constrained
string and number types every section uses, so a bad value is named by its key."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
)

__all__ = [
    "DOMAINS",
    "ENDPOINT",
    "PREFERENCES",
    "SIGNALS",
    "TIERS",
    "Frozen",
    "ModelName",
    "Name",
    "Phrase",
    "Port",
    "Tier",
    "Unit",
    "check_regexes",
    "header_name",
    "host_ports",
]


_HEADER_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
ENDPOINT = re.compile(r"^(?P<host>[A-Za-z0-9.\-]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})$")

Name = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]
ModelName = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Port = Annotated[int, Field(ge=0, le=65535)]


def check_regexes(patterns: Iterable[tuple[object, str]], key: str) -> None:
    for name, pattern in patterns:
        try:
            re.compile(pattern)
        except re.error as error:
            raise ValueError(
                f"{key}.{name}: {pattern!r} is not a regular expression: {error}"
            ) from None


def header_name(value: str, example: str) -> str:
    """`value` if it is a lowercase HTTP header name (Envoy matches header names lowercased)."""
    if not _HEADER_NAME.match(value):
        raise ValueError(f"must be a lowercase HTTP header name, e.g. {example}")
    return value


def host_ports(endpoints: tuple[str, ...]) -> tuple[str, ...]:
    for endpoint in endpoints:
        match = ENDPOINT.match(endpoint)
        if match is None or not 0 < int(match["port"]) < 65536:
            raise ValueError(f"{endpoint!r} is not HOST:PORT")
    return endpoints


class Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


Tier = Literal["simple", "moderate", "complex"]
TIERS: tuple[Tier, ...] = ("simple", "moderate", "complex")

# The 14 MMLU-Pro subject categories the domain head predicts.
DOMAINS = (
    "biology",
    "business",
    "chemistry",
    "computer science",
    "economics",
    "engineering",
    "health",
    "history",
    "law",
    "math",
    "other",
    "philosophy",
    "physics",
    "psychology",
)
PREFERENCES = ("analytical", "code", "creative", "factual")
SIGNALS = ("keyword", "embedding", "domain", "complexity", "preference")

Phrase = Annotated[str, StringConstraints(min_length=1)]
Unit = Annotated[float, Field(ge=0, le=1)]
