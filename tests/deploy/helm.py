"""Helm's own template engine, through helm-python-sdk (Helm's Go SDK built as a C library; no
helm binary, no cluster). It runs in a child process: the Go runtime then never shares a
process, its signal handlers or its threads with the rest of the test suite."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

_SCRIPT = """
import json, sys
import helm_python
request = json.load(sys.stdin)
try:
    if request["action"] == "lint":
        result = helm_python.lint(request["chart"])
    else:
        with helm_python.Chart.load(request["chart"]) as chart:
            result = chart.render(request["values"], name=request["name"], namespace="llm")
except helm_python.HelmError as error:
    print(f"{type(error).__name__}: {error}", file=sys.stderr)
    sys.exit(1)
json.dump(result, sys.stdout)
"""


class HelmFailed(Exception):
    """Helm refused the chart or the values; the message is Helm's."""


def _call(request: dict[str, Any]) -> Any:
    result = subprocess.run(
        [sys.executable, "-c", _SCRIPT],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    if result.returncode != 0:
        raise HelmFailed(result.stderr.strip())
    return json.loads(result.stdout)


def helm_render(chart: Path, values: dict[str, Any], *, name: str) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` would print them."""
    rendered: dict[str, str] = _call(
        {"action": "render", "chart": str(chart), "values": values, "name": name}
    )
    return rendered


def helm_lint(chart: Path) -> dict[str, Any]:
    report: dict[str, Any] = _call({"action": "lint", "chart": str(chart)})
    return report
