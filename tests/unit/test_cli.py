from pathlib import Path

import pytest
import yaml

from extproc_router import __version__
from extproc_router.cli import run
from extproc_router.settings import EXAMPLE_CONFIG


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        run(["--version"])
    assert caught.value.code == 0
    assert __version__ in capsys.readouterr().out


def test_check_config_ok(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["check-config", str(EXAMPLE_CONFIG)]) == 0
    assert "OK" in capsys.readouterr().out


def test_check_config_names_file_and_key(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = yaml.safe_load(EXAMPLE_CONFIG.read_text())
    data["pools"][0]["endpoints"] = []
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    assert run(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err
    assert "pools.0.endpoints" in err


def test_render_envoy_with_port_overrides(tmp_path: Path) -> None:
    out = tmp_path / "envoy.yaml"
    assert (
        run(["render-envoy", "--listen-port", "18080", "--grpc-port", "15051", "-o", str(out)]) == 0
    )
    config = yaml.safe_load(out.read_text())
    listener = config["static_resources"]["listeners"][0]
    assert listener["address"]["socket_address"]["port_value"] == 18080
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    endpoint = clusters["extproc_router"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]
    assert endpoint["endpoint"]["address"]["socket_address"]["port_value"] == 15051


def test_port_override_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EXTPROC_ROUTER_LISTEN_PORT", "18181")
    out = tmp_path / "envoy.yaml"
    assert run(["render-envoy", "-o", str(out)]) == 0
    assert "port_value: 18181" in out.read_text()


def test_bad_port_override_is_a_config_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["render-envoy", "--listen-port", "99999"]) == 2
    assert "envoy.listen.port" in capsys.readouterr().err


def test_classify_one_prompt_and_jsonl(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import io
    import json

    assert run(["classify", "--model", "gemini-flash", "anything"]) == 0
    assert capsys.readouterr().out.startswith("medium\tgemini-flash\t")
    lines = [
        json.dumps("plain text prompt"),
        json.dumps({"prompt": "x", "model": "gpt-5.2"}),
        json.dumps({"model": "gpt-9", "messages": [{"role": "user", "content": "x"}]}),
    ]
    monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(lines) + "\n"))
    assert run(["classify", "--json"]) == 1  # one of them was rejected
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert out[1]["pool"] == "large"
    assert out[1]["method"] == "model"
    assert out[2]["error"]["code"] == "model_not_found"
