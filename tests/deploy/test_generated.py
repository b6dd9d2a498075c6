"""The committed files under deploy/ are what `render-manifests` writes from the router configs
beside them: none can drift from its source."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from extproc_router.cli import run as cli
from extproc_router.exceptions import ConfigError
from extproc_router.manifests import SOURCES, render_manifests
from extproc_router.settings import load_settings

from .tools import REPO

RENDERED = render_manifests(REPO)


@pytest.mark.parametrize("path", sorted(RENDERED), ids=str)
def test_committed_file_is_a_fresh_render(path: Path) -> None:
    assert (REPO / path).read_text() == RENDERED[path], "run `make render-manifests`"


@pytest.mark.parametrize("source", SOURCES, ids=str)
def test_every_source_is_a_valid_router_config(source: Path) -> None:
    load_settings(REPO / source)


def _copy_sources(tmp_path: Path) -> Path:
    for path in [*SOURCES, *RENDERED]:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / path, tmp_path / path)
    return tmp_path


def test_check_reports_a_stale_file_and_render_fixes_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = _copy_sources(tmp_path)
    assert cli(["render-manifests", "--root", str(root), "--check"]) == 0
    source = root / SOURCES[0]
    source.write_text(
        source.read_text().replace("message_timeout_ms: 2000", "message_timeout_ms: 3000")
    )
    assert cli(["render-manifests", "--root", str(root), "--check"]) == 1
    stale = capsys.readouterr().err
    assert "deploy/kubernetes/base/envoy.yaml" in stale
    assert "deploy/helm/extproc-router/files/envoy.yaml" in stale
    assert cli(["render-manifests", "--root", str(root)]) == 0
    assert "message_timeout: 3s" in (root / "deploy/kubernetes/base/envoy.yaml").read_text()
    assert cli(["render-manifests", "--root", str(root), "--check"]) == 0


def test_a_bad_source_fails_naming_the_file_and_key(tmp_path: Path) -> None:
    root = _copy_sources(tmp_path)
    source = root / SOURCES[2]
    source.write_text(source.read_text().replace("cluster_header:", "cluster_headr:"))
    with pytest.raises(ConfigError) as caught:
        render_manifests(root)
    assert str(source) in str(caught.value)
    assert "cluster_headr" in str(caught.value)
    assert cli(["render-manifests", "--root", str(root), "--check"]) == 2
