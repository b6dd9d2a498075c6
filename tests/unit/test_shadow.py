"""Which requests are mirrored, how copies are signed, what Envoy gets, and the report."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from extproc_router.envoy_config import render_envoy
from extproc_router.exceptions import ConfigError
from extproc_router.pipeline import Outcome
from extproc_router.routing import Decision
from extproc_router.safety.gate import JailbreakVerdict, PIIVerdict
from extproc_router.settings import Settings, load_settings, override
from extproc_router.shadow import SHADOW_CLUSTER, SHADOW_OF, SHADOW_TOKEN, Shadow
from extproc_router.shadow_report import format_report, read_pairs, summarise


def shadow_settings(tmp_path: Path, **values: object) -> Settings:
    base = {"shadow.pool": "large", "shadow.log_path": str(tmp_path / "shadow.jsonl")}
    return override(load_settings(), {**base, **{f"shadow.{k}": v for k, v in values.items()}})


def outcome(settings: Settings, pool: str, pii: dict[str, int] | None = None) -> Outcome:
    decision = Decision(settings.pool(pool), "vote", "test")
    return Outcome(decision, False, JailbreakVerdict(0.0, "allow"), PIIVerdict(pii or {}, "allow"))


async def test_a_fraction_of_requests_is_mirrored_always_the_same_ones(tmp_path: Path) -> None:
    settings = shadow_settings(tmp_path, fraction=0.25)
    shadow = Shadow(settings.shadow, settings.pools)
    picked = [bool(shadow.plan(f"id-{i}", outcome(settings, "small"))) for i in range(4000)]
    assert 0.22 < sum(picked) / len(picked) < 0.28
    again = [bool(shadow.plan(f"id-{i}", outcome(settings, "small"))) for i in range(4000)]
    assert picked == again
    await shadow.aclose()


async def test_what_is_never_mirrored(tmp_path: Path) -> None:
    settings = shadow_settings(tmp_path, fraction=1.0, from_pools=["small"])
    shadow = Shadow(settings.shadow, settings.pools)
    headers = shadow.plan("id", outcome(settings, "small"))
    assert headers["x-router-shadow-cluster"] == SHADOW_CLUSTER
    assert shadow.plan("id", outcome(settings, "medium")) == {}  # not in from_pools
    assert shadow.plan("id", outcome(settings, "small", {"email": 1})) == {}  # PII
    everything = Shadow(shadow_settings(tmp_path, fraction=1.0).shadow, settings.pools)
    assert everything.plan("id", outcome(settings, "large")) == {}  # already the shadow pool
    await shadow.aclose()
    await everything.aclose()


async def test_copies_carry_a_token_routers_sharing_a_key_accept(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_bytes(b"a shared secret\n")
    settings = shadow_settings(tmp_path, fraction=1.0, key_file=str(key))
    one, two = Shadow(settings.shadow, settings.pools), Shadow(settings.shadow, settings.pools)
    headers = one.plan("decision-1", outcome(settings, "small"))
    assert two.verify(headers) == "decision-1"
    assert two.verify({**headers, SHADOW_OF: "decision-2"}) is None
    assert two.verify({**headers, SHADOW_TOKEN: "0" * 32}) is None
    assert two.verify({}) is None
    stranger = Shadow(shadow_settings(tmp_path, fraction=1.0).shadow, settings.pools)
    assert stranger.verify(headers) is None  # a random key of its own
    for shadow in (one, two, stranger):
        await shadow.aclose()


def test_envoy_mirrors_routed_requests_through_the_shadow_listener(tmp_path: Path) -> None:
    plain = render_envoy(load_settings())
    assert len(plain["static_resources"]["listeners"]) == 1
    assert "request_mirror_policies" not in json.dumps(plain)
    config = render_envoy(shadow_settings(tmp_path, fraction=0.1))
    main, shadow = config["static_resources"]["listeners"]
    routes = main["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
    mirrored = {
        r["name"]: r["route"].get("request_mirror_policies")
        for r in routes["virtual_hosts"][0]["routes"]
    }
    assert mirrored["routed"] == [
        {"cluster_header": "x-router-shadow-cluster", "disable_shadow_host_suffix_append": True}
    ]
    assert mirrored["default"] is None  # fail-open traffic was never decided: never mirrored
    assert shadow["address"]["socket_address"] == {"address": "127.0.0.1", "port_value": 8091}
    hcm = shadow["filter_chains"][0]["filters"][0]["typed_config"]
    assert hcm["http_filters"][0]["name"] == "envoy.filters.http.ext_proc"
    mutation = hcm["early_header_mutation_extensions"][0]["typed_config"]["mutations"]
    assert mutation == [{"remove": "x-router-cluster"}]  # the copy keeps x-router-shadow-*
    clusters = {c["name"] for c in config["static_resources"]["clusters"]}
    assert SHADOW_CLUSTER in clusters


def test_shadow_settings_are_checked() -> None:
    with pytest.raises(ConfigError) as caught:
        override(
            load_settings(),
            {"shadow.pool": "xl", "shadow.from_pools": ["tiny"], "shadow.listen.port": 8080},
        )
    problems = "\n".join(caught.value.problems)
    assert "shadow.pool: no pool named 'xl'" in problems
    assert "shadow.from_pools: no pool named 'tiny'" in problems
    assert "shadow.listen: the port is one of Envoy's own" in problems


def line(decision_id: str, side: str, pool: str, **values: object) -> str:
    vector = values.pop("vector", None)
    entry = {"decision_id": decision_id, "side": side, "pool": pool, "tier": "simple",
             "status": 200, "latency_s": 1.0, "prompt_tokens": 100, "completion_tokens": 50,
             "embedding": None if vector is None else base64.b64encode(
                 np.asarray(vector, dtype=np.float16).tobytes()).decode(),
             **values}  # fmt: skip
    if side == "primary":
        entry["shadow_pool"] = "large"
    return json.dumps(entry)


def test_report_joins_both_sides_per_route() -> None:
    lines = [
        line("a", "primary", "small", latency_s=0.5, vector=[1, 0]),
        line("a", "shadow", "large", latency_s=2.0, completion_tokens=70, vector=[1, 0]),
        line("b", "primary", "small", latency_s=0.7, vector=[1, 0]),
        line("b", "shadow", "large", latency_s=2.2, completion_tokens=90, vector=[0, 1]),
        line("c", "primary", "small"),  # its copy never answered
        line("d", "primary", "small"),
        line("d", "shadow", "large", status=503),
        line("e", "shadow", "large"),  # no primary line: ignored
    ]
    (route,) = summarise(read_pairs(lines), load_settings())
    data = route.as_dict()
    assert (data["pool"], data["shadow_pool"], data["tier"]) == ("small", "large", "simple")
    assert (data["mirrored"], data["compared"], data["shadow_errors"]) == (4, 2, 1)
    assert data["latency_s"] == {"primary": 0.6, "shadow": 2.1}
    assert data["output_tokens"] == {"primary": 50.0, "shadow": 80.0}
    # small: 150 tokens at $0.0008/1K; large: 100 in at $0.015/1K + 80 out at $0.06/1K.
    assert data["cost_usd"]["primary"] == pytest.approx(0.00012)
    assert data["cost_usd"]["shadow"] == pytest.approx(0.0063)
    assert data["agreement"] == pytest.approx(0.5)
    table = format_report([route], "shadow.jsonl")
    assert "4 mirrored requests" in table
    assert "0.600 -> 2.100" in table


def test_reference_config_documents_every_shadow_key() -> None:
    path = Path(__file__).resolve().parents[2] / "config" / "reference.yaml"
    settings = load_settings(path)
    documented = yaml.safe_load(path.read_text())["shadow"]
    assert set(documented) == set(type(settings.shadow).model_fields)
    assert settings.shadow == type(settings.shadow)()  # the documented values are the defaults
