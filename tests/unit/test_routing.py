import json

import pytest

from extproc_router.exceptions import RequestError
from extproc_router.request import parse_body
from extproc_router.routing import Router
from extproc_router.settings import KeywordRule, load_settings
from extproc_router.signals.keyword import KeywordMatcher


def chat(prompt: str, model: str | None = "auto") -> bytes:
    body: dict[str, object] = {"messages": [{"role": "user", "content": prompt}]}
    if model is not None:
        body["model"] = model
    return json.dumps(body).encode()


@pytest.fixture
def router() -> Router:
    return Router(load_settings())


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
    # A prompt that would match a keyword rule: an explicit model still wins.
    decision = await router.decide(parse_body("chat_completions", chat("prove it", model)))
    assert decision.pool.name == pool
    assert decision.method == "model"


async def test_auto_uses_keyword_rules_then_default(router: Router) -> None:
    proof = await router.decide(parse_body("chat_completions", chat("Prove Fermat's theorem")))
    assert (proof.pool.name, proof.method) == ("large", "keyword:proofs")
    assert proof.model == "gpt-5.2"
    code = await router.decide(parse_body("chat_completions", chat("a Python script")))
    assert code.pool.name == "medium"
    plain = await router.decide(parse_body("chat_completions", chat("hello there")))
    assert (plain.pool.name, plain.method) == ("small", "default")
    missing = await router.decide(parse_body("chat_completions", chat("prove it", None)))
    assert missing.pool.name == "large"


async def test_unknown_model_lists_the_known_ones(router: Router) -> None:
    with pytest.raises(RequestError) as caught:
        await router.decide(parse_body("chat_completions", chat("hi", "gpt-9")))
    assert caught.value.status == 404
    assert caught.value.code == "model_not_found"
    assert "gpt-5.2" in caught.value.message
    assert "auto" in caught.value.message


def rules() -> list[KeywordRule]:
    return [
        KeywordRule(name="first", pool="large", keywords=("stack trace",)),
        KeywordRule(name="second", pool="small", keywords=("python", "c++")),
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
        ("", None),
    ],
)
def test_keyword_matcher(text: str, rule: str | None) -> None:
    found = KeywordMatcher(rules()).match(text)
    assert (found.rule.name if found else None) == rule


def test_no_rules_never_match() -> None:
    assert KeywordMatcher([]).match("anything") is None
