"""The replay simulator: what a config would have done with a log of requests, and what it costs.

`extproc-router replay TRAFFIC.jsonl --config FILE` runs each logged request through the same
`Pipeline` the ext_proc path runs (safety, decision, PII policy; nothing is forwarded and no
audit line is written), then prices the tokens at the chosen pool's price and at the baseline
model's (`telemetry.baseline`, else the priciest pool), and weighs each pool's `latency_s` by
its share of the traffic. So a user checks the savings a routing policy claims on their own
traffic before any request is routed by it.

A line of the log is one of:

- an OpenAI request body (`{"model": "auto", "messages": [...]}` or `{"prompt": ...}`);
- a wrapper `{"request": BODY, "usage": USAGE}` (or `"response": {..., "usage": USAGE}`), from a
  proxy that logged the answer's token counts too;
- a line of the router's own audit log: re-decided when it carries the prompt
  (`safety.audit.include_prompt`), otherwise counted for the pool it recorded.

Token counts come from `usage` when a line has it; otherwise they are estimated (input: the
messages' tokens, or `input_tokens` when the text is unknown; output: `output_tokens`), and the
report says how many lines were estimated.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from extproc_router.exceptions import RequestError, RouterError
from extproc_router.pipeline import Pipeline
from extproc_router.request import API_PATHS, Api, parse_body
from extproc_router.settings import Settings
from extproc_router.usage import Usage, cost_usd

__all__ = ["PoolLine", "Record", "Report", "TrafficError", "read_traffic", "replay"]

_APIS: frozenset[str] = frozenset(API_PATHS.values())


class TrafficError(RouterError):
    """A traffic log line the simulator cannot read; names the file and line."""


@dataclass(frozen=True, slots=True)
class Record:
    """One logged request: a body to decide again, or a decision the audit log recorded."""

    api: Api
    body: dict[str, Any] | None = None
    # The audit log's decision (when it did not keep the prompt) and its outcome.
    pool: str | None = None
    outcome: str = "forwarded"
    usage: Usage | None = None


@dataclass(slots=True)
class PoolLine:
    pool: str
    model: str
    requests: float = 0.0
    input_tokens: float = 0.0
    output_tokens: float = 0.0
    cost_usd: float = 0.0
    # What the same requests would cost at the baseline model's price.
    baseline_cost_usd: float = 0.0
    latency_s: float | None = None


@dataclass(slots=True)
class Report:
    source: str
    lines: int
    # Each logged request stands for this many (e.g. a sample scaled to a month's volume).
    scale: float
    baseline_model: str
    baseline_latency_s: float | None
    pools: list[PoolLine]
    blocked: dict[str, float] = field(default_factory=dict)
    estimated: int = 0

    @property
    def routed_requests(self) -> float:
        return sum(line.requests for line in self.pools)

    @property
    def cost_usd(self) -> float:
        return sum(line.cost_usd for line in self.pools)

    @property
    def baseline_cost_usd(self) -> float:
        return sum(line.baseline_cost_usd for line in self.pools)

    @property
    def latency_s(self) -> float | None:
        """Expected mean time to an answer: each pool's latency weighed by its share; None when
        a pool that received traffic has no `latency_s`."""
        total = self.routed_requests
        used = [line for line in self.pools if line.requests]
        if not total or any(line.latency_s is None for line in used):
            return None
        return sum(line.requests * (line.latency_s or 0.0) for line in used) / total

    def as_dict(self) -> dict[str, Any]:
        total = self.routed_requests
        latency, baseline_latency = self.latency_s, self.baseline_latency_s
        saved = self.baseline_cost_usd - self.cost_usd
        return {
            "source": self.source,
            "lines": self.lines,
            "scale": self.scale,
            "requests": _round(total + sum(self.blocked.values())),
            "estimated_token_lines": self.estimated,
            "pools": [
                {
                    "pool": line.pool,
                    "model": line.model,
                    "requests": _round(line.requests),
                    "share": _round(line.requests / total if total else 0.0),
                    "input_tokens": _round(line.input_tokens),
                    "output_tokens": _round(line.output_tokens),
                    "cost_usd": _round(line.cost_usd),
                    "baseline_cost_usd": _round(line.baseline_cost_usd),
                    "latency_s": line.latency_s,
                }
                for line in self.pools
            ],
            "blocked": {code: _round(count) for code, count in self.blocked.items()},
            "routed": {"cost_usd": _round(self.cost_usd), "latency_s": _round(latency)},
            "baseline": {
                "model": self.baseline_model,
                "cost_usd": _round(self.baseline_cost_usd),
                "latency_s": baseline_latency,
            },
            "savings": {
                "cost_usd": _round(saved),
                "cost_fraction": _round(saved / self.baseline_cost_usd)
                if self.baseline_cost_usd
                else None,
                "latency_s": _round(baseline_latency - latency)
                if latency is not None and baseline_latency is not None
                else None,
                "latency_fraction": _round(1 - latency / baseline_latency)
                if latency is not None and baseline_latency
                else None,
            },
        }


def _round(value: float | None) -> float | None:
    """Cents are what a person reads; 6 places keep sums of small per-request costs exact."""
    return None if value is None else round(value, 6)


def read_traffic(lines: Iterable[str], *, source: str = "<traffic>") -> list[Record]:
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            records.append(_record(item))
        except (ValueError, KeyError, TypeError) as error:
            raise TrafficError(f"{source}:{number}: {error}") from None
    if not records:
        raise TrafficError(f"{source}: no requests in the file")
    return records


def _record(item: Any) -> Record:
    if not isinstance(item, dict):
        raise ValueError("expected a JSON object (a request body, a wrapper or an audit line)")
    if "decision_id" in item and "outcome" in item:
        return _audit_record(item)
    if isinstance(item.get("request"), dict):
        response = item.get("response")
        usage = item.get("usage", response.get("usage") if isinstance(response, dict) else None)
        body = item["request"]
        return Record(_api(body, item.get("api")), body, usage=Usage.from_json(usage))
    if "messages" in item or "prompt" in item:
        return Record(_api(item, None), item)
    raise ValueError("a line needs `messages` or `prompt`, a `request`, or an audit record")


def _api(body: dict[str, Any], named: object) -> Api:
    if isinstance(named, str):
        if named not in _APIS:
            raise ValueError(f"unknown api {named!r}; known: {', '.join(sorted(_APIS))}")
        return named  # type: ignore[return-value]
    return "chat_completions" if "messages" in body else "completions"


def _audit_record(entry: dict[str, Any]) -> Record:
    api = _api({}, entry.get("api", "chat_completions"))
    outcome = str(entry["outcome"])
    prompt = entry.get("prompt")
    if isinstance(prompt, str):
        body: dict[str, Any] = (
            {"messages": [{"role": "user", "content": prompt}]}
            if api == "chat_completions"
            else {"prompt": prompt}
        )
        if entry.get("requested_model"):
            body["model"] = entry["requested_model"]
        return Record(api, body)
    pool = entry.get("pool")
    if outcome == "forwarded" and not isinstance(pool, str):
        raise ValueError("a forwarded audit record without a pool")
    return Record(api, pool=pool if isinstance(pool, str) else None, outcome=outcome)


def _text_tokens(body: dict[str, Any], count: Any) -> int:
    texts: list[str] = []
    for message in body.get("messages") or ():
        content = message.get("content") if isinstance(message, dict) else None
        if isinstance(content, str):
            texts.append(content)
        elif isinstance(content, list):
            texts.extend(p["text"] for p in content if isinstance(p, dict) and "text" in p)
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        texts.append(prompt)
    return int(sum(count(text) for text in texts))


async def replay(
    records: list[Record],
    pipeline: Pipeline,
    *,
    source: str = "<traffic>",
    scale: float = 1.0,
    input_tokens: int = 500,
    output_tokens: int = 256,
) -> Report:
    """Decide every record with `pipeline` (a dry run) and total the cost per pool."""
    settings: Settings = pipeline.router.settings
    models = pipeline.router.models
    count = models.encoder.count_tokens if models is not None else _word_tokens
    baseline = settings.baseline_price
    lines = {
        pool.name: PoolLine(pool.name, pool.model, latency_s=pool.latency_s)
        for pool in settings.pools
    }
    report = Report(source, len(records), scale, baseline.model, _baseline_latency(settings), [])
    for record in records:
        pool_name, outcome = record.pool, record.outcome
        if record.body is not None:
            try:
                raw = json.dumps(record.body).encode()
                outcome_ = await pipeline.run(parse_body(record.api, raw), _ident(), dry_run=True)
                pool_name, outcome = outcome_.decision.pool.name, "forwarded"
            except RequestError as error:
                outcome = error.code
        if outcome != "forwarded" or pool_name is None:
            report.blocked[outcome] = report.blocked.get(outcome, 0.0) + scale
            continue
        if pool_name not in lines:
            raise TrafficError(f"{source}: the log names pool {pool_name!r}, not in the config")
        usage = record.usage
        if usage is None:
            report.estimated += 1
            known = _text_tokens(record.body, count) if record.body is not None else input_tokens
            usage = Usage(known, output_tokens)
        line = lines[pool_name]
        line.requests += scale
        line.input_tokens += usage.prompt_tokens * scale
        line.output_tokens += usage.completion_tokens * scale
        line.cost_usd += cost_usd(usage, settings.pool(pool_name).price) * scale
        line.baseline_cost_usd += cost_usd(usage, baseline) * scale
    report.pools = list(lines.values())
    return report


def _word_tokens(text: str) -> int:
    """Without the tokenizer: about four tokens for every three English words."""
    return round(len(text.split()) * 4 / 3)


def _ident() -> str:
    return f"replay-{uuid.uuid4().hex[:12]}"


def _baseline_latency(settings: Settings) -> float | None:
    baseline = settings.baseline_price
    if baseline.latency_s is not None:
        return baseline.latency_s
    for pool in settings.pools:
        if baseline.model in pool.served_models:
            return pool.latency_s
    return None


def load_traffic(path: Path) -> list[Record]:
    try:
        with path.open(encoding="utf-8") as file:
            return read_traffic(file, source=str(path))
    except OSError as error:
        raise TrafficError(f"{path}: cannot read: {error}") from None


def _money(value: float) -> str:
    return f"${value:,.2f}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def _count(value: float) -> str:
    return f"{value:,.0f}"


def format_table(report: Report) -> str:
    """The report as a person reads it: one row per pool, then routed vs baseline."""
    total = report.routed_requests
    scale = f" x {report.scale:,.6g}" if report.scale != 1 else ""
    head = f"{report.source}: {report.lines} lines{scale} = {_count(total)} routed requests"
    rows = [("pool", "model", "requests", "share", "tokens in", "tokens out", "cost", "latency")]
    for line in report.pools:
        share = f"{line.requests / total:.1%}" if total else "-"
        rows.append(
            (
                line.pool,
                line.model,
                _count(line.requests),
                share,
                _count(line.input_tokens),
                _count(line.output_tokens),
                _money(line.cost_usd),
                _seconds(line.latency_s),
            )
        )
    latency, baseline_latency = report.latency_s, report.baseline_latency_s
    saved = report.baseline_cost_usd - report.cost_usd
    saved_latency = (
        baseline_latency - latency if latency is not None and baseline_latency is not None else None
    )
    rows += [
        ("routed", "", _count(total), "", "", "", _money(report.cost_usd), _seconds(latency)),
        (
            f"all {report.baseline_model}",
            "",
            _count(total),
            "",
            "",
            "",
            _money(report.baseline_cost_usd),
            _seconds(baseline_latency),
        ),
        ("saved", "", "", "", "", "", _money(saved), _seconds(saved_latency)),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    text = [head, ""]
    for row in rows:
        cells = [
            cell.ljust(width) if i < 2 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        text.append("  ".join(cells).rstrip())
    if report.baseline_cost_usd:
        percent = f"{saved / report.baseline_cost_usd:.1%} of the cost"
        if saved_latency is not None and baseline_latency:
            percent += f", {saved_latency / baseline_latency:.1%} of the latency"
        text.append(f"saved {percent}")
    for code, count in sorted(report.blocked.items()):
        text.append(f"not forwarded ({code}): {_count(count)}")
    if report.estimated:
        text.append(f"token counts estimated for {report.estimated} of {report.lines} lines")
    return "\n".join(text) + "\n"
