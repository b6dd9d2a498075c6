"""Load-aware choice: spill to the next-best allowed pool, penalise before the hard limit, say
so, and refuse with a 503 rather than widen the policy."""

from __future__ import annotations

import json
import time

import pytest

from extproc_router import metrics
from extproc_router.audit import AuditLog
from extproc_router.exceptions import RequestError
from extproc_router.pipeline import Pipeline
from extproc_router.pool_load import EndpointReading, LoadBoard, PoolLoad
from extproc_router.request import parse_body
from extproc_router.routing import Decision, Router
from extproc_router.safety.gate import Safety
from extproc_router.settings import LoadSettings, Settings, load_settings, override
from extproc_router.signals.base import SignalResult
from extproc_router.spillover import allowed_pools, apply_load

SETTINGS = load_settings()
LOAD = LoadSettings(enabled=True, penalty=0.5)
SCORES = {"small": 0.7, "medium": 0.5, "large": 0.3}


def decision(pool: str = "small", excluded: frozenset[str] = frozenset()) -> Decision:
    evidence = {"top": [("history", 0.9)]}
    signal = SignalResult("domain", dict(SCORES), evidence, excluded=excluded)
    return Decision(SETTINGS.pool(pool), "vote", "vote: small 0.70", 0.8, SCORES, (signal,))


def view(**states: PoolLoad) -> dict[str, PoolLoad]:
    base = {name: PoolLoad(name, "ok", 0.0) for name in SCORES}
    return {**base, **states}


def test_an_idle_pool_keeps_the_request_and_the_load_is_evidence() -> None:
    result = apply_load(decision(), SETTINGS.pools, view(), LOAD)
    assert result.pool.name == "small"
    assert result.spillover is None
    assert result.load["small"]["state"] == "ok"
    assert "spillover" not in result.header()


def test_a_full_pool_spills_to_the_next_best_and_says_so() -> None:
    full = PoolLoad("small", "full", 37.0, pressure=1.0)
    result = apply_load(decision(), SETTINGS.pools, view(small=full), LOAD)
    assert result.pool.name == "medium"
    assert result.method == "vote"
    assert result.reason.endswith("; spillover: small\u2192medium, waiting=37")
    assert result.explanation()["spillover"] == "spillover: small\u2192medium, waiting=37"
    assert result.explanation()["load"]["small"]["waiting"] == 37.0
    header = result.header()
    assert header.startswith("pool=medium; method=vote; confidence=0.80; ")
    assert "spillover=small->medium,waiting=37" in header
    assert header.isascii()


@pytest.mark.parametrize(("pressure", "pool"), [(0.2, "small"), (0.39, "small"), (0.5, "medium")])
def test_above_the_soft_limit_the_score_is_penalised(pressure: float, pool: str) -> None:
    # small 0.70 - 0.5 x pressure against medium 0.50: the lead lasts up to pressure 0.4.
    busy = PoolLoad("small", "busy", 10.0, pressure=pressure)
    assert apply_load(decision(), SETTINGS.pools, view(small=busy), LOAD).pool.name == pool


def test_a_down_pool_is_skipped_and_an_unknown_one_penalised_not_skipped() -> None:
    down = PoolLoad("small", "down", pressure=1.0)
    result = apply_load(decision(), SETTINGS.pools, view(small=down), LOAD)
    assert (result.pool.name, result.spillover.cause if result.spillover else "") == (
        "medium",
        "down",
    )
    unknown = PoolLoad("medium", "unknown", pressure=0.5)
    full = PoolLoad("small", "full", 40.0, pressure=1.0)
    # medium (0.5 - 0.25) loses to an idle large (0.3): unknown is never taken for idle.
    chosen = apply_load(decision(), SETTINGS.pools, view(small=full, medium=unknown), LOAD)
    assert chosen.pool.name == "large"
    only_unknown = view(small=full, medium=unknown, large=PoolLoad("large", "down", pressure=1))
    assert apply_load(decision(), SETTINGS.pools, only_unknown, LOAD).pool.name == "medium"


def test_never_below_the_domain_floor() -> None:
    floored = decision(excluded=frozenset({"medium"}))
    full = PoolLoad("small", "full", 37.0, pressure=1.0)
    candidates = allowed_pools(floored, SETTINGS.pools)
    assert [p.name for p in candidates] == ["small", "large"]
    assert apply_load(floored, candidates, view(small=full), LOAD).pool.name == "large"


def test_nothing_allowed_left_is_a_503_with_retry_after() -> None:
    full = PoolLoad("small", "full", 37.0, pressure=1.0)
    down = PoolLoad("large", "down", pressure=1.0)
    candidates = [SETTINGS.pool("small"), SETTINGS.pool("large")]
    with pytest.raises(RequestError) as caught:
        apply_load(decision(), candidates, view(small=full, large=down), LOAD)
    error = caught.value
    assert (error.status, error.code, error.error_type) == (
        503,
        "pools_unavailable",
        "server_error",
    )
    assert error.headers == {"retry-after": "2"}
    assert "small: waiting=37, large: down" in error.message
    assert "medium" not in error.message  # not allowed, so not offered


def test_the_spillover_metric_counts_pool_pairs() -> None:
    full = PoolLoad("small", "full", 37.0, pressure=1.0)
    spilled = apply_load(decision(), SETTINGS.pools, view(small=full), LOAD)
    counter = metrics.SPILLOVERS.labels(from_pool="small", to_pool="medium")
    before = counter._value.get()
    metrics.observe_decision(spilled, 0.001, {})
    metrics.observe_decision(decision(), 0.001, {})
    assert counter._value.get() == before + 1


# The pipeline, without model files: keyword and complexity signals only.


def settings_with(values: dict[str, object] | None = None) -> Settings:
    return override(
        load_settings(), {"safety.audit.enabled": False, "load.enabled": True, **(values or {})}
    )


def pipeline(settings: Settings, board: LoadBoard) -> Pipeline:
    safety = Safety(settings.safety, None)
    return Pipeline(Router(settings), safety, AuditLog(settings.safety.audit), board)


def fill(board: LoadBoard, settings: Settings, pool: str, waiting: float) -> None:
    endpoint = settings.pool(pool).endpoints[0]
    board.record(pool, endpoint, EndpointReading(waiting=waiting, read_at=time.monotonic()))


def idle(board: LoadBoard, settings: Settings) -> None:
    for pool in settings.pools:
        fill(board, settings, pool.name, 0)


def body(prompt: str, model: str = "auto") -> bytes:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}]}).encode()


SIMPLE = "What is the capital of France?"


async def test_a_simple_request_spills_while_small_is_full_and_comes_back() -> None:
    settings = settings_with()
    board = LoadBoard()
    idle(board, settings)
    run = pipeline(settings, board).run
    assert (await run(parse_body("chat_completions", body(SIMPLE)), "a")).decision.pool.name == (
        "small"
    )
    fill(board, settings, "small", 37)
    outcome = await run(parse_body("chat_completions", body(SIMPLE)), "b")
    assert outcome.decision.pool.name == "medium"
    assert outcome.decision.spillover is not None
    assert outcome.decision.spillover.text() == "spillover: small\u2192medium, waiting=37"
    assert outcome.body_changed  # the body now names medium's model
    assert outcome.decision.model == "gemini-flash"
    fill(board, settings, "small", 0)
    back = await run(parse_body("chat_completions", body(SIMPLE)), "c")
    assert back.decision.pool.name == "small"


async def test_off_or_named_model_is_never_moved() -> None:
    board = LoadBoard()
    on = settings_with()
    idle(board, on)
    fill(board, on, "small", 100)
    named = await pipeline(on, board).run(
        parse_body("chat_completions", body(SIMPLE, "llama3-8b")), "a"
    )
    assert named.decision.pool.name == "small"
    off = settings_with({"load.enabled": False})
    auto = await pipeline(off, board).run(parse_body("chat_completions", body(SIMPLE)), "b")
    assert auto.decision.pool.name == "small"


PII = "What is the capital of France? Write back to ann.smith@example.org"


async def test_pii_is_never_spilled_to_a_non_compliant_pool() -> None:
    pools = [p.model_dump(mode="json") for p in SETTINGS.pools]
    pools[0]["compliant"] = True  # small only
    settings = settings_with({"pools": pools, "safety.pii.actions": {"email": "route"}})
    board = LoadBoard()
    idle(board, settings)
    run = pipeline(settings, board).run
    placed = await run(parse_body("chat_completions", body(PII)), "a")
    assert placed.decision.pool.name == "small"
    fill(board, settings, "small", 37)
    # Without PII the request spills to medium; with it, medium is not allowed.
    plain = await run(parse_body("chat_completions", body(SIMPLE)), "b")
    assert plain.decision.pool.name == "medium"
    with pytest.raises(RequestError) as caught:
        await run(parse_body("chat_completions", body(PII)), "c")
    assert caught.value.code == "pools_unavailable"
    assert caught.value.headers["retry-after"] == "2"
    # A second compliant pool takes it instead.
    pools[2]["compliant"] = True
    wider = settings_with({"pools": pools, "safety.pii.actions": {"email": "route"}})
    moved = await pipeline(wider, board).run(parse_body("chat_completions", body(PII)), "d")
    assert moved.decision.pool.name == "large"
    assert moved.decision.method == "pii"
    assert moved.decision.pool.compliant
