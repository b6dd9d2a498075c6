"""No container runtime here: hadolint (the Dockerfile linter, from the dev extra) parses and
lints the Dockerfile, and its structure is checked against what the deployment relies on."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from .tools import REPO, run, tool

DOCKERFILE = REPO / "Dockerfile"


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", text)
    lines = [line.strip() for line in joined.splitlines()]
    return [
        (line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
        for line in lines
        if line and not line.startswith("#")
    ]


def _stages() -> list[list[tuple[str, str]]]:
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions(DOCKERFILE.read_text()):
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def test_hadolint_passes() -> None:
    result = run([tool("hadolint"), "--no-color", str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_catches_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:3.11\nRUN pip install torch\nRUN cd /opt\n")
    result = run([tool("hadolint"), "--no-color", str(bad)])
    assert result.returncode != 0
    assert "DL3013" in result.stdout


def test_models_are_built_in_a_build_stage_and_copied_out() -> None:
    build, runtime = _stages()
    assert "AS build" in build[0][1]
    commands = " ".join(args for name, args in build if name == "RUN")
    assert "extproc-router export-model" in commands
    assert "extproc-router train" in commands
    assert "extproc-router train-jailbreak" in commands
    assert "protoc" in commands
    copies = [args for name, args in runtime if name == "COPY"]
    assert any(a.startswith("--from=build") and "/build/models" in a for a in copies)
    assert any(a.startswith("--from=build") and "/opt/venv" in a for a in copies)
    runtime_runs = " ".join(args for name, args in runtime if name == "RUN")
    assert "torch" not in runtime_runs
    assert "pip install" not in runtime_runs


def test_runtime_runs_as_a_non_root_user_with_a_grpc_health_check() -> None:
    runtime = _stages()[-1]
    users = [args for name, args in runtime if name == "USER"]
    assert users, "the runtime stage sets a user"
    uid = users[-1].split(":")[0]
    assert uid.isdigit()
    assert int(uid) != 0
    (healthcheck,) = [args for name, args in runtime if name == "HEALTHCHECK"]
    assert '"extproc-router", "health"' in healthcheck
    # The Kubernetes manifests run the same uid and a writable route cache.
    deployment = (REPO / "deploy/kubernetes/base/deployment.yaml").read_text()
    assert f"runAsUser: {uid}" in deployment
    workdir = [args for name, args in runtime if name == "WORKDIR"][-1]
    assert f"mountPath: {workdir}/models/heads/cache" in deployment


def test_default_command_serves_the_config_the_image_carries() -> None:
    runtime = _stages()[-1]
    (cmd,) = [args for name, args in runtime if name == "CMD"]
    config = shlex.split(cmd.strip("[]").replace(",", " "))[-1]
    copies = [args for name, args in runtime if name == "COPY" and args.endswith(config)]
    assert copies, f"{config} is not copied into the image"
    source = copies[0].split()[-2]
    assert (REPO / source).is_file()


def test_dockerignore_keeps_local_models_and_venv_out() -> None:
    ignored = (REPO / ".dockerignore").read_text().split()
    assert {"models", ".venv", ".git"} <= set(ignored)
    for needed in ("src", "proto", "data", "config", "pyproject.toml", "README.md"):
        assert needed not in ignored
