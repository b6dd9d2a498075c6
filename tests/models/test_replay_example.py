"""examples/reference: the reference design's table, from prompts the real router decides."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from extproc_router.cli import run

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "reference"
ARGS = [
    "replay",
    str(EXAMPLE / "traffic.jsonl"),
    "--config",
    str(REPO / "config" / "example.yaml"),
    "--scale-to",
    "300000",
]


def test_table_and_plot(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    plot = tmp_path / "replay.png"
    assert run([*ARGS, "--plot", str(plot)]) == 0
    table = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in table.splitlines() if line.strip()}
    # The router sends 60% / 25% / 15% of the prompts to small / medium / large.
    assert rows["small"][2:4] == ["180,000", "60.0%"]
    assert rows["medium"][2:4] == ["75,000", "25.0%"]
    assert rows["large"][2:4] == ["45,000", "15.0%"]
    assert rows["routed"][-3:] == ["$2,988.60", "1.14", "s"]
    assert rows["all"][-3:] == ["$8,145.00", "2.40", "s"]
    assert plot.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert plot.stat().st_size > 10_000


def test_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert run([*ARGS, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["routed"] == {"cost_usd": 2988.6, "latency_s": 1.14}
    assert report["baseline"] == {"model": "gpt-5.2", "cost_usd": 8145.0, "latency_s": 2.4}
    assert report["requests"] == 300_000
    assert report["estimated_token_lines"] == 0
