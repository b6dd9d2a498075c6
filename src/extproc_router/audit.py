"""The audit log: one JSON line per decision, for compliance reviews and incident timelines.

Records who went where and which safety detectors fired, with PII types and counts; never the
PII values, and never the prompt unless `safety.audit.include_prompt` says so.
"""

from __future__ import annotations

import json
import sys
from typing import IO, TYPE_CHECKING

from extproc_router import metrics
from extproc_router.logs import TRACE_ID, stamped

if TYPE_CHECKING:
    from extproc_router.request import ParsedRequest
    from extproc_router.routing import Decision
    from extproc_router.safety.gate import JailbreakVerdict, PIIVerdict
    from extproc_router.settings import AuditSettings

__all__ = ["AuditLog"]


class AuditLog:
    def __init__(self, settings: AuditSettings) -> None:
        self._settings = settings
        self._stream: IO[str] | None = None
        if settings.enabled:
            self._stream = (
                sys.stdout if settings.path == "-" else open(settings.path, "a", encoding="utf-8")  # noqa: SIM115
            )

    def record(
        self,
        decision_id: str,
        outcome: str,
        *,
        request: ParsedRequest,
        jailbreak: JailbreakVerdict,
        decision: Decision | None = None,
        pii: PIIVerdict | None = None,
    ) -> None:
        if jailbreak.action != "allow":
            metrics.JAILBREAKS.labels(action=jailbreak.action).inc()
        if pii is not None:
            for kind, count in pii.counts.items():
                metrics.PII_DETECTIONS.labels(type=kind, action=pii.action).inc(count)
        if self._stream is None:
            return
        entry = stamped(
            decision_id,
            outcome=outcome,
            api=request.api,
            requested_model=request.model,
            pool=decision.pool.name if decision else None,
            method=decision.method if decision else None,
            jailbreak={
                "score": round(jailbreak.score, 3),
                "action": jailbreak.action,
                "family": jailbreak.family,
            },
            pii={"types": pii.counts, "action": pii.action} if pii else None,
        )
        trace_id = TRACE_ID.get()
        if trace_id:
            entry["trace_id"] = trace_id
        if self._settings.include_prompt:
            entry["prompt"] = request.prompt
        self._stream.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._stream.flush()
