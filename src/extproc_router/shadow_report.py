"""`extproc-router shadow-report`: what the shadow pool would have meant, per route.

Joins the shadow log's two lines per mirrored request (the primary's answer and the shadow's)
and summarises them per primary pool (the route the router chose) and its tier: how many were
compared, mean latency, mean tokens and cost per request on each side, how many shadow answers
failed, and an agreement score — the mean cosine similarity of the two answers' embeddings
(1.0: the same meaning; it reads the opening of each answer, as far as the encoder reads).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from extproc_router.settings import Settings
from extproc_router.usage import Usage, cost_usd

__all__ = ["RouteSummary", "format_report", "read_pairs", "summarise"]


@dataclass(slots=True)
class RouteSummary:
    pool: str
    tier: str
    shadow_pool: str
    mirrored: int = 0
    # Both sides logged an answer (the rest: the shadow's copy failed or is still running).
    compared: int = 0
    shadow_errors: int = 0
    primary_latency_s: list[float] = field(default_factory=list)
    shadow_latency_s: list[float] = field(default_factory=list)
    primary_tokens: list[int] = field(default_factory=list)
    shadow_tokens: list[int] = field(default_factory=list)
    primary_cost_usd: list[float] = field(default_factory=list)
    shadow_cost_usd: list[float] = field(default_factory=list)
    agreement: list[float] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "pool": self.pool,
            "tier": self.tier,
            "shadow_pool": self.shadow_pool,
            "mirrored": self.mirrored,
            "compared": self.compared,
            "shadow_errors": self.shadow_errors,
            "latency_s": {"primary": _mean(self.primary_latency_s),
                          "shadow": _mean(self.shadow_latency_s)},
            "output_tokens": {"primary": _mean(self.primary_tokens),
                              "shadow": _mean(self.shadow_tokens)},
            "cost_usd": {"primary": _mean(self.primary_cost_usd),
                         "shadow": _mean(self.shadow_cost_usd)},
            "agreement": _mean(self.agreement),
        }  # fmt: skip


def _mean(values: list[float] | list[int]) -> float | None:
    return round(float(np.mean(values)), 6) if values else None


def read_pairs(lines: Iterable[str]) -> dict[str, dict[str, dict[str, Any]]]:
    """decision id -> side ("primary", "shadow") -> its log line."""
    pairs: dict[str, dict[str, dict[str, Any]]] = {}
    for line in lines:
        if line.strip():
            entry = json.loads(line)
            pairs.setdefault(entry["decision_id"], {})[entry["side"]] = entry
    return pairs


def _vector(entry: dict[str, Any]) -> np.ndarray[Any, np.dtype[np.float32]] | None:
    encoded = entry.get("embedding")
    if not encoded:
        return None
    return np.frombuffer(base64.b64decode(encoded), dtype=np.float16).astype(np.float32)


def _usage(entry: dict[str, Any]) -> Usage | None:
    if entry.get("prompt_tokens") is None:
        return None
    return Usage(int(entry["prompt_tokens"]), int(entry.get("completion_tokens") or 0))


def summarise(
    pairs: dict[str, dict[str, dict[str, Any]]], settings: Settings
) -> list[RouteSummary]:
    prices = {pool.name: pool.price for pool in settings.pools}
    routes: dict[tuple[str, str], RouteSummary] = {}
    for sides in pairs.values():
        primary, shadow = sides.get("primary"), sides.get("shadow")
        if primary is None:
            continue
        key = (primary["pool"], primary.get("shadow_pool", ""))
        route = routes.setdefault(key, RouteSummary(key[0], primary.get("tier", ""), key[1]))
        route.mirrored += 1
        if shadow is None:
            continue
        if int(shadow.get("status", 0)) >= 400:
            route.shadow_errors += 1
            continue
        route.compared += 1
        route.primary_latency_s.append(float(primary["latency_s"]))
        route.shadow_latency_s.append(float(shadow["latency_s"]))
        for entry, tokens, costs in (
            (primary, route.primary_tokens, route.primary_cost_usd),
            (shadow, route.shadow_tokens, route.shadow_cost_usd),
        ):
            usage = _usage(entry)
            if usage is not None and entry["pool"] in prices:
                tokens.append(usage.completion_tokens)
                costs.append(cost_usd(usage, prices[entry["pool"]]))
        one, two = _vector(primary), _vector(shadow)
        if one is not None and two is not None and one.shape == two.shape:
            norms = float(np.linalg.norm(one) * np.linalg.norm(two)) or 1.0
            route.agreement.append(float(one @ two) / norms)
    return sorted(routes.values(), key=lambda r: (r.pool, r.shadow_pool))


def format_report(routes: list[RouteSummary], source: str) -> str:
    def number(value: float | None, form: str) -> str:
        return "-" if value is None else format(value, form)

    rows = [("route", "tier", "shadow", "mirrored", "compared", "errors", "latency s",
             "out tokens", "cost/request $", "agreement")]  # fmt: skip
    for route in routes:
        data = route.as_dict()
        rows.append(
            (
                route.pool,
                route.tier,
                route.shadow_pool,
                str(route.mirrored),
                str(route.compared),
                str(route.shadow_errors),
                " -> ".join(number(data["latency_s"][s], ".3f") for s in ("primary", "shadow")),
                " -> ".join(number(data["output_tokens"][s], ".1f") for s in ("primary", "shadow")),
                " -> ".join(number(data["cost_usd"][s], ".6f") for s in ("primary", "shadow")),
                number(data["agreement"], ".3f"),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [f"{source}: {sum(r.mirrored for r in routes)} mirrored requests", ""]
    lines += ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()
              for row in rows]  # fmt: skip
    return "\n".join(lines) + "\n"


def load_report(path: Path, settings: Settings) -> list[RouteSummary]:
    with path.open(encoding="utf-8") as file:
        return summarise(read_pairs(file), settings)
