"""The decision engine without model files: explicit models, keyword rules, the vote."""

import json

import pytest

from extproc_router.exceptions import RequestError
from extproc_router.request import parse_body
from extproc_router.routing import Decision, Router, vote
from extproc_router.settings import KeywordRule, Settings, load_settings, override
from extproc_router.signals.base import SignalResult, target_scores, tier_scores
from extproc_router.signals.keyword import KeywordMatcher


def chat(prompt: str, model: str | None = "auto") -> bytes:
    body: dict[str, object] = {"messages": [{"role": "user", "content": prompt}]}
    if model is not None:
        body["model"] = model
    return json.dumps(body).encode()


@pytest.fixture
def settings() -> Settings:
    return load_settings()


@pytest.fixture
def router(settings: Settings) -> Router:
    return Router(settings)  # no models: keyword and complexity only


@pytest.mark.parametrize(
    ("model", "pool"),
    [
        ("llama3-8b", "small"),
        ("meta-llama/Meta-Llama-3-8B-Instruct", "small"),
        ("gemini-flash", "medium"),
        ("gpt-5.2", "large"),
    ],
)
async def test_explicit_model_goes_to_its_pool(router: Router, model: str, pool: str) -> None:
    decision = await router.decide(parse_body("chat_completions", chat("prove it", model)))
    assert decision.pool.name == pool
    assert decision.method == "model"
    assert decision.signals == ()  # nothing else ran


async def test_short_circuit_rule_decides_before_any_model(router: Router) -> None:
    trace = "Traceback (most recent call last):\n  File 'x.py', line 1\nKeyError: 'a'"
    decision = await router.decide(parse_body("chat_completions", chat(trace)))
    assert (decision.pool.name, decision.method) == ("medium", "keyword")
    assert [s.name for s in decision.signals] == ["keyword"]
    assert "stack_traces" in decision.reason


async def test_vote_without_models(router: Router) -> None:
    proof = await router.decide(
        parse_body(
            "chat_completions",
            chat("Prove the lemma, then derive the bound and compare it with the known one."),
        )
    )
    assert (proof.pool.name, proof.method) == ("large", "vote")
    assert proof.confidence is not None
    assert proof.confidence >= 0.6
    simple = await router.decide(parse_body("chat_completions", chat("hello there")))
    assert simple.pool.name == "small"
    assert "complexity=simple" in simple.header()


async def test_unknown_model_lists_the_known_ones(router: Router) -> None:
    with pytest.raises(RequestError) as caught:
        await router.decide(parse_body("chat_completions", chat("hi", "gpt-9")))
    assert caught.value.status == 404
    assert caught.value.code == "model_not_found"
    assert "gpt-5.2" in caught.value.message
    assert "auto" in caught.value.message


async def test_empty_prompt_falls_back(router: Router, settings: Settings) -> None:
    decision = await router.decide(parse_body("completions", b'{"model": "auto", "prompt": [1]}'))
    assert decision.method == "fallback"
    assert decision.pool.name == settings.fallback_pool.name
    assert "no signal voted" in decision.reason


async def test_system_prompt_is_read_only_when_configured(settings: Settings) -> None:
    body = json.dumps(
        {
            "model": "auto",
            "messages": [
                {"role": "system", "content": "Traceback (most recent call last):"},
                {"role": "user", "content": "hello"},
            ],
        }
    ).encode()
    request = parse_body("chat_completions", body)
    assert (await Router(settings).decide(request)).method != "keyword"
    reading = override(settings, {"routing.include_system_prompt": True})
    assert (await Router(reading).decide(request)).method == "keyword"


def result(
    name: str, scores: dict[str, float], excluded: frozenset[str] = frozenset()
) -> SignalResult:
    return SignalResult(name, scores, {}, 0.0, excluded)


def test_vote_renormalises_over_the_signals_that_voted(settings: Settings) -> None:
    pools = settings.pools
    scores, excluded = vote(
        [result("keyword", {}), result("complexity", {"small": 1.0, "medium": 0.5, "large": 0.0})],
        {"keyword": 0.5, "complexity": 0.2},
        pools,
    )
    # The abstaining keyword signal does not pull every pool towards 0.
    assert scores == {"small": 1.0, "medium": 0.5, "large": 0.0}
    assert excluded == set()


def test_vote_weights_and_exclusions(settings: Settings) -> None:
    scores, excluded = vote(
        [
            result("domain", {"small": 0.0, "medium": 0.0, "large": 1.0}, frozenset({"small"})),
            result("complexity", {"small": 1.0, "medium": 0.0, "large": 0.0}),
            result("unknown", {"small": 1.0, "medium": 1.0, "large": 1.0}),
        ],
        {"domain": 0.3, "complexity": 0.1},
        settings.pools,
    )
    assert scores == {"small": 0.25, "medium": 0.0, "large": 0.75}
    assert excluded == {"small"}
    assert vote([result("keyword", {})], {"keyword": 1.0}, settings.pools) == ({}, set())


def test_tier_and_target_scores(settings: Settings) -> None:
    assert tier_scores(settings.pools, "simple") == {"small": 1.0, "medium": 0.6, "large": 0.35}
    assert tier_scores(settings.pools, "complex") == {"small": 0.05, "medium": 0.25, "large": 1.0}
    named = target_scores(settings.pools, "medium")
    assert named["medium"] == 1.0
    assert max(v for k, v in named.items() if k != "medium") < 1.0


def test_header_is_compact_ascii(settings: Settings) -> None:
    decision = Decision(
        settings.pool("large"),
        "vote",
        "vote",
        0.8123,
        {"large": 0.9},
        (
            SignalResult("keyword", {}, {"abstained": "x"}),
            SignalResult("domain", {"large": 1.0}, {"top": [["math", 0.91], ["physics", 0.05]]}),
            SignalResult(
                "complexity", {"large": 1.0}, {"tier": "complex", "tokens": 212, "depth": 5}
            ),
        ),
    )
    assert decision.header() == (
        "pool=large; method=vote; confidence=0.81; keyword=-; domain=math:0.91; "
        "complexity=complex(212t,d5)"
    )
    assert decision.explanation()["signals"]["domain"]["evidence"]["top"][0] == ["math", 0.91]


def rules() -> list[KeywordRule]:
    return [
        KeywordRule(name="first", target="large", keywords=("stack trace",)),
        KeywordRule(name="second", target="small", keywords=("python", "c++")),
        KeywordRule(name="third", target="medium", patterns=(r"\bSELECT\b.+\bFROM\b",)),
    ]


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ("my PYTHON code", "second"),
        ("\uff50\uff59\uff54\uff48\uff4f\uff4e in full width", "second"),
        ("python with a stack   trace", "first"),  # rule order beats text order
        ("pythonic idioms", None),  # whole words only
        ("I like c++ a lot", "second"),
        ("stacktrace", None),
        ("why is select * from users slow", "third"),
        ("", None),
    ],
)
def test_keyword_matcher(text: str, rule: str | None) -> None:
    found = KeywordMatcher(rules()).match(text)
    assert (found.rule.name if found else None) == rule


def test_no_rules_never_match() -> None:
    assert KeywordMatcher([]).match("anything") is None


async def test_context_window_is_read_only_when_configured(settings: Settings) -> None:
    body = {
        "model": "auto",
        "messages": [
            {"role": "user", "content": "Traceback (most recent call last): boom"},
            {"role": "assistant", "content": "Which line?"},
            {"role": "user", "content": "line 3"},
        ],
    }
    request = parse_body("chat_completions", json.dumps(body).encode())
    assert (await Router(settings).decide(request)).method != "keyword"
    windowed = override(settings, {"routing.context_chars": 200})
    assert Router(windowed).classification_text(request).startswith("line 3\n")
    assert (await Router(windowed).decide(request)).method == "keyword"
