"""The tools the deploy tests drive, all installed by the project itself (the `dev` extra, and
the Makefile's apt packages): kubectl with its built-in kustomize, kubernetes-validate's
schemas, Helm's Go SDK, hadolint, promtool and Envoy. A missing tool fails the test that needs
it, naming the install step, rather than skipping it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import yaml

from tests.helpers import envoy_validate as validate_file

REPO = Path(__file__).resolve().parents[2]
KUBERNETES_VERSION = "1.30.0"  # the oldest release the manifests claim (native sidecars et al.)
_BIN = Path(sys.executable).parent

Object = dict[str, Any]


class ToolMissing(AssertionError):
    pass


def tool(name: str) -> str:
    """A binary from the venv (the dev extra), else from PATH (the Makefile's apt packages)."""
    for candidate in (_BIN / name, shutil.which(name)):
        if candidate is not None and Path(candidate).is_file():
            return str(candidate)
    raise ToolMissing(f"{name} is not installed: run `make setup`")


def run(args: list[str], *, cwd: Path = REPO) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, cwd=cwd, check=False)


def kustomize(path: Path) -> list[Object]:
    result = run([tool("kubectl"), "kustomize", str(path)])
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def validate_kubernetes(obj: Object) -> None:
    """Strict: a field the schema does not know fails, as `kubectl apply --validate=strict`."""
    kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def envoy_validate(config: Object | str, tmp_path: Path, name: str = "envoy.yaml") -> None:
    path = tmp_path / name
    path.write_text(config if isinstance(config, str) else yaml.safe_dump(config))
    result = validate_file(path)
    assert result.returncode == 0, result.stdout + result.stderr


def by_kind(objects: list[Object], kind: str) -> dict[str, Object]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}
