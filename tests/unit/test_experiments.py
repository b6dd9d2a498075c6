"""A/B splits: weighted, sticky per user, each policy deciding with its own routing."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
import yaml

from extproc_router.exceptions import ConfigError
from extproc_router.experiments import choose
from extproc_router.live import LiveConfig
from extproc_router.processor import LLMProcessor
from extproc_router.settings import ExperimentSettings, Settings, load_settings, override

# The candidate sends every question about capitals to the large pool at once.
CANDIDATE = {
    "keyword_rules": [
        {"name": "capitals", "target": "large", "keywords": ["capital"], "short_circuit": True}
    ]
}


def with_policies(*policies: dict[str, Any], **extra: Any) -> Settings:
    return override(load_settings(), {"experiments.policies": list(policies), **extra})


def test_weights_split_users_and_each_user_stays() -> None:
    experiments = ExperimentSettings.model_validate(
        {"policies": [{"name": "current", "weight": 9}, {"name": "candidate", "weight": 1}]}
    )
    counts = Counter(choose(experiments, f"user-{i}") for i in range(5000))
    assert 0.08 < counts["candidate"] / 5000 < 0.12
    assert all(choose(experiments, f"user-{i}") == choose(experiments, f"user-{i}")
               for i in range(200))  # fmt: skip
    salted = experiments.model_copy(update={"salt": "2"})
    moved = sum(choose(experiments, f"u{i}") != choose(salted, f"u{i}") for i in range(2000))
    assert moved > 100  # another salt, another shuffle


def test_policy_routing_is_validated_with_its_key() -> None:
    with pytest.raises(ConfigError) as caught:
        with_policies(
            {"name": "a", "weight": 1, "routing": {"confidence_threshold": 2}},
            {"name": "b", "weight": 1, "routing": {"fallback_pool": "huge"}},
            {"name": "b", "weight": 1},
        )
    problems = "\n".join(caught.value.problems)
    assert "experiments.policies.0.routing.confidence_threshold:" in problems
    assert "experiments.policies.1.routing: fallback_pool: no pool named 'huge'" in problems
    assert "experiments.policies: the name 'b' is used twice" in problems
    with pytest.raises(ConfigError, match=r"experiments\.policies\.0\.weight"):
        with_policies({"name": "c", "weight": 0})


async def decide(live: LiveConfig, user: str) -> dict[str, str]:
    policy, pipeline = live.pipeline_for({"x-user-id": user, "x-request-id": "r"})
    processor = LLMProcessor(
        "chat_completions", pipeline, cluster_header="x-router-cluster", policy=policy
    )
    await processor.on_request_headers(
        {"content-type": "application/json", "x-request-id": f"r-{user}"}, False
    )
    body = {"messages": [{"role": "user", "content": "What is the capital of France?"}]}
    response = await processor.on_request_body(json.dumps(body).encode(), True)
    mutation = response.request_body.response.header_mutation
    headers = {h.header.key: h.header.raw_value.decode() for h in mutation.set_headers}
    response = await processor.on_response_headers({":status": "200"})
    mutation = response.response_headers.response.header_mutation
    headers |= {
        "response " + h.header.key: h.header.raw_value.decode() for h in mutation.set_headers
    }
    assert processor.trace_attributes().get("router.policy", "") == policy
    return headers


async def test_each_policy_decides_with_its_own_routing() -> None:
    settings = with_policies(
        {"name": "current", "weight": 1}, {"name": "candidate", "weight": 1, "routing": CANDIDATE}
    )
    live = LiveConfig(settings, None, None)
    seen = {}
    for user in (f"user-{i}" for i in range(40)):
        headers = await decide(live, user)
        policy = headers["x-router-policy"]
        assert headers["response x-router-policy"] == policy
        seen[policy] = headers["x-router-cluster"]
        assert await decide(live, user) == headers  # sticky
    assert seen["candidate"] == "large"
    assert seen["current"] != "large"


async def test_without_experiments_no_policy_is_named() -> None:
    headers = await decide(LiveConfig(load_settings(), None, None), "user-1")
    assert "x-router-policy" not in headers
    assert "response x-router-policy" not in headers


def test_reference_config_documents_every_experiments_key() -> None:
    path = Path(__file__).resolve().parents[2] / "config" / "reference.yaml"
    documented = yaml.safe_load(path.read_text())["experiments"]
    assert set(documented) == set(ExperimentSettings.model_fields)
    assert load_settings(path).experiments == ExperimentSettings()
