"""The replay simulator's reading of logs and its arithmetic, decided without model files."""

from __future__ import annotations

import json

import pytest

from extproc_router.live import LiveConfig
from extproc_router.pipeline import Pipeline
from extproc_router.replay import Record, TrafficError, format_table, read_traffic, replay
from extproc_router.settings import load_settings, override
from extproc_router.usage import Usage

# The reference design's traffic: share, model named, tokens in and out.
REFERENCE = (
    (60, "llama3-8b", 500, 150),
    (25, "gemini-flash", 1000, 300),
    (15, "gpt-5.2", 2000, 500),
)


def pipeline() -> Pipeline:
    return LiveConfig(load_settings(), None, None).pipeline


def reference_records() -> list[Record]:
    return [
        Record(
            "chat_completions",
            {"model": model, "messages": [{"role": "user", "content": "hello"}]},
            usage=Usage(tokens_in, tokens_out),
        )
        for share, model, tokens_in, tokens_out in REFERENCE
        for _ in range(share)
    ]


async def test_reference_table_is_reproduced_exactly() -> None:
    report = await replay(reference_records(), pipeline(), scale=3000)
    assert [line.requests for line in report.pools] == [180_000, 75_000, 45_000]
    assert report.cost_usd == pytest.approx(2988.60)
    assert report.baseline_cost_usd == pytest.approx(8145.00)
    assert report.latency_s == pytest.approx(1.14)
    assert report.baseline_latency_s == 2.4
    table = format_table(report)
    assert "$2,988.60" in table
    assert "$8,145.00" in table
    assert "1.14 s" in table
    assert "2.40 s" in table
    assert "180,000" in table
    data = report.as_dict()
    assert data["routed"] == {"cost_usd": 2988.6, "latency_s": 1.14}
    assert data["baseline"] == {"model": "gpt-5.2", "cost_usd": 8145.0, "latency_s": 2.4}
    assert data["savings"]["cost_usd"] == 5156.4
    assert [p["share"] for p in data["pools"]] == [0.6, 0.25, 0.15]
    json.dumps(data)  # serialisable as it is


def test_every_log_shape_is_read() -> None:
    lines = [
        json.dumps({"model": "auto", "messages": [{"role": "user", "content": "hi"}]}),
        json.dumps({"prompt": "Once upon a time"}),
        json.dumps(
            {
                "request": {"messages": [{"role": "user", "content": "hi"}]},
                "response": {"usage": {"prompt_tokens": 7, "completion_tokens": 3}},
            }
        ),
        "",
        json.dumps(
            {"decision_id": "a", "outcome": "forwarded", "pool": "large", "api": "completions"}
        ),
        json.dumps({"decision_id": "b", "outcome": "blocked_pii", "pool": "small"}),
        json.dumps(
            {
                "decision_id": "c",
                "outcome": "forwarded",
                "prompt": "hi",
                "requested_model": "gpt-5.2",
            }
        ),
    ]
    records = read_traffic(lines)
    assert [r.api for r in records] == [
        "chat_completions",
        "completions",
        "chat_completions",
        "completions",
        "chat_completions",
        "chat_completions",
    ]
    assert records[2].usage == Usage(7, 3)
    assert records[3] == Record("completions", pool="large")
    assert records[4].outcome == "blocked_pii"
    assert records[5].body == {"messages": [{"role": "user", "content": "hi"}], "model": "gpt-5.2"}


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("not json", "<traffic>:2:"),
        ("[1, 2]", "expected a JSON object"),
        ('{"temperature": 0}', "needs `messages` or `prompt`"),
        ('{"decision_id": "x", "outcome": "forwarded"}', "without a pool"),
        ('{"request": {"prompt": "x"}, "api": "embeddings"}', "unknown api 'embeddings'"),
    ],
)
def test_unreadable_lines_are_named(line: str, message: str) -> None:
    with pytest.raises(TrafficError, match=message):
        read_traffic(['{"prompt": "fine"}', line])


def test_an_empty_log_is_an_error() -> None:
    with pytest.raises(TrafficError, match="no requests"):
        read_traffic(["", "  "])


async def test_audit_decisions_blocks_and_estimates() -> None:
    records = [
        Record("chat_completions", pool="large"),
        Record("chat_completions", outcome="blocked_jailbreak"),
        # Refused again on replay: a model no pool serves.
        Record(
            "chat_completions", {"model": "nope", "messages": [{"role": "user", "content": "x"}]}
        ),
        Record("completions", {"model": "llama3-8b", "prompt": "one two three four five six"}),
    ]
    report = await replay(records, pipeline(), input_tokens=100, output_tokens=10)
    assert report.blocked == {"blocked_jailbreak": 1, "model_not_found": 1}
    assert report.estimated == 2
    by_pool = {line.pool: line for line in report.pools}
    assert by_pool["large"].input_tokens == 100  # no text: the default
    assert by_pool["large"].output_tokens == 10
    assert by_pool["small"].input_tokens == 8  # six words, without the tokenizer
    assert by_pool["medium"].requests == 0
    table = format_table(report)
    assert "not forwarded (model_not_found): 1" in table
    assert "token counts estimated for 2 of 4 lines" in table


async def test_a_pool_the_config_lacks_is_an_error() -> None:
    with pytest.raises(TrafficError, match="pool 'xl'"):
        await replay([Record("chat_completions", pool="xl")], pipeline())


async def test_latency_is_unknown_when_a_used_pool_has_none() -> None:
    settings = load_settings()
    pools = [{**p.model_dump(mode="json"), "latency_s": None} for p in settings.pools]
    live = LiveConfig(override(settings, {"pools": pools}), None, None)
    report = await replay(reference_records(), live.pipeline)
    assert report.latency_s is None
    assert report.baseline_latency_s is None
    assert "saved 63.3% of the cost\n" in format_table(report)
