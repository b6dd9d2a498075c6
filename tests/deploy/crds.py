"""Custom resources (Istio's, prometheus-operator's) checked against models generated from their
CRDs' schemas (the cloudcoil model packages): enums and types by pydantic, and unknown fields by
a round trip, since the models themselves drop what they do not know."""

from __future__ import annotations

import importlib
from typing import Any

from pydantic import BaseModel

_MODULES = {
    "networking.istio.io": "cloudcoil.models.istio.networking",
    "monitoring.coreos.com": "cloudcoil.models.prometheus_operator",
}


def crd_model(api_version: str, kind: str) -> type[BaseModel]:
    group, version = api_version.split("/")
    if group not in _MODULES:
        raise LookupError(f"no schema for {api_version} {kind}")
    module = importlib.import_module(f"{_MODULES[group]}.{version}")
    model: type[BaseModel] = getattr(module, kind)
    return model


def _unknown(original: Any, dumped: Any, path: str) -> list[str]:
    if isinstance(original, dict):
        if not isinstance(dumped, dict):
            return [path or "(top)"]
        problems = []
        for key, value in original.items():
            if key not in dumped:
                problems.append(f"{path}.{key}".lstrip("."))
            else:
                problems += _unknown(value, dumped[key], f"{path}.{key}")
        return problems
    if isinstance(original, list) and isinstance(dumped, list):
        return [
            p
            for i, (a, b) in enumerate(zip(original, dumped, strict=False))
            for p in _unknown(a, b, f"{path}[{i}]")
        ]
    return []


def validate_custom(obj: dict[str, Any]) -> None:
    """Raises pydantic's ValidationError, or AssertionError naming fields the schema lacks."""
    model = crd_model(obj["apiVersion"], obj["kind"])
    dumped = model.model_validate(obj).model_dump(by_alias=True, exclude_none=True, mode="json")
    unknown = _unknown(obj, dumped, "")
    if unknown:
        raise AssertionError(f"{obj['kind']} {obj['metadata']['name']}: unknown fields {unknown}")
