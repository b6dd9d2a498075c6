"""Structured logs: one JSON object a line, each carrying the request's decision id and trace
id, so a log line, the audit record and the trace of one request find each other.

The ids live in context variables that the ext_proc adapter sets once per stream; every log call
made while that stream is handled (threads started with `asyncio.to_thread` included) gets them
without passing them around.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from contextvars import ContextVar
from typing import Any, Literal

__all__ = [
    "DECISION_ID",
    "TRACE_ID",
    "JSONFormatter",
    "configure_logging",
    "stamped",
    "trace_id_from",
]

DECISION_ID: ContextVar[str] = ContextVar("decision_id", default="")
TRACE_ID: ContextVar[str] = ContextVar("trace_id", default="")

# Attributes every LogRecord has; anything else was passed with `extra=` and is logged as is.
_STANDARD = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def stamped(decision_id: str, **fields: Any) -> dict[str, Any]:
    """A line of our JSON-lines files (audit, shadow): written when (UTC, to the second) and for
    which decision first, so one request's lines join across the files and the logs."""
    return {
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "decision_id": decision_id,
        **fields,
    }


def trace_id_from(traceparent: str) -> str:
    """The trace id of a W3C `traceparent` (00-<32 hex>-<16 hex>-<2 hex>), or ""."""
    parts = traceparent.strip().split("-")
    if len(parts) == 4 and len(parts[1]) == 32 and parts[1] != "0" * 32:
        try:
            int(parts[1], 16)
        except ValueError:
            return ""
        return parts[1].lower()
    return ""


class JSONFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        decision_id, trace_id = DECISION_ID.get(), TRACE_ID.get()
        if decision_id:
            entry["decision_id"] = decision_id
        if trace_id:
            entry["trace_id"] = trace_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False, default=str)


class _TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        decision_id = DECISION_ID.get()
        return f"{line} [decision_id={decision_id}]" if decision_id else line


def configure_logging(level: str, log_format: Literal["json", "text"] = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(_TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
