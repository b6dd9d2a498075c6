"""JSON log lines carry the request's ids; W3C trace ids are read strictly."""

from __future__ import annotations

import json
import logging

import pytest

from extproc_router.logs import DECISION_ID, TRACE_ID, JSONFormatter, trace_id_from

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


def test_a_line_has_the_ids_and_the_extras() -> None:
    record = logging.makeLogRecord(
        {"name": "x", "levelname": "INFO", "msg": "decision %s", "args": ("a",), "pool": "small"}
    )
    decision, trace = DECISION_ID.set("req-9"), TRACE_ID.set(TRACE)
    try:
        entry = json.loads(JSONFormatter().format(record))
    finally:
        DECISION_ID.reset(decision)
        TRACE_ID.reset(trace)
    assert entry["message"] == "decision a"
    assert entry["decision_id"] == "req-9"
    assert entry["trace_id"] == TRACE
    assert entry["pool"] == "small"
    assert entry["level"] == "info"


def test_outside_a_request_there_are_no_ids() -> None:
    record = logging.makeLogRecord({"name": "x", "levelname": "WARNING", "msg": "started"})
    entry = json.loads(JSONFormatter().format(record))
    assert "decision_id" not in entry
    assert "trace_id" not in entry


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (f"00-{TRACE}-00f067aa0ba902b7-01", TRACE),
        (f"00-{TRACE.upper()}-00f067aa0ba902b7-01", TRACE),
        ("00-" + "0" * 32 + "-00f067aa0ba902b7-01", ""),
        ("00-nothex" + "x" * 24 + "-00f067aa0ba902b7-01", ""),
        ("garbage", ""),
        ("", ""),
    ],
)
def test_trace_id_from_traceparent(header: str, expected: str) -> None:
    assert trace_id_from(header) == expected
