"""The safety stage: jailbreak verdicts before routing, PII policy after it.

Jailbreak detection reads every message role that reaches the model (tool results included,
where indirect injection hides), newest first, within `max_scan_chars`. PII policy depends on
the pool the request would reach: a type may be allowed for one pool and redacted or blocked
for another, and `route` moves a request carrying PII to a pool marked `compliant`.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from extproc_router.exceptions import RequestError
from extproc_router.request import ParsedRequest
from extproc_router.safety.classifier import JailbreakClassifier
from extproc_router.safety.jailbreak import compile_patterns, match_patterns
from extproc_router.safety.pii import PIIScanner, Redactor, ScanBudgetExceeded
from extproc_router.safety.transformer import JailbreakModel
from extproc_router.settings import PIISettings, SafetySettings

__all__ = ["JailbreakVerdict", "PIIVerdict", "Safety", "message_texts", "same_pii_policy"]


@dataclass(frozen=True, slots=True)
class JailbreakVerdict:
    score: float
    # "block", "route", "flag" or "allow".
    action: str
    family: str | None = None
    matched: str | None = None
    latency_ms: float = 0.0

    def evidence(self) -> dict[str, Any]:
        return {
            "score": round(self.score, 3),
            "action": self.action,
            **({"family": self.family} if self.family else {}),
            "latency_ms": round(self.latency_ms, 3),
        }


@dataclass(frozen=True, slots=True)
class PIIVerdict:
    counts: dict[str, int]
    # "allow", "redact", "block" or "route".
    action: str
    # Types per action actually taken (e.g. {"redact": ["email"], "allow": ["ip_address"]}).
    by_action: dict[str, list[str]] = field(default_factory=dict)
    latency_ms: float = 0.0

    def evidence(self) -> dict[str, Any]:
        return {
            "types": dict(self.counts),
            "action": self.action,
            "latency_ms": round(self.latency_ms, 3),
        }


# Where a string that reaches the model lives in the body: its container and its key.
Slot = tuple[dict[str, Any] | list[Any], Any]


def text_slots(body: dict[str, Any], roles: tuple[str, ...] | None = None) -> Iterator[Slot]:
    """Every string in the request that reaches the model, in body order: message contents and
    their text parts, the arguments of earlier tool calls (JSON text the model reads back), and
    completion prompts."""
    messages = body.get("messages")
    if isinstance(messages, list):
        for message in messages:
            if not isinstance(message, dict) or (
                roles is not None and message.get("role") not in roles
            ):
                continue
            content = message.get("content")
            if isinstance(content, str):
                yield message, "content"
            elif isinstance(content, list):
                for part in content:
                    if isinstance(part, dict) and isinstance(part.get("text"), str):
                        yield part, "text"
            yield from _call_arguments(message)
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        yield body, "prompt"
    elif isinstance(prompt, list):
        yield from ((prompt, index) for index, item in enumerate(prompt) if isinstance(item, str))


def _call_arguments(message: dict[str, Any]) -> Iterator[Slot]:
    calls = message.get("tool_calls")
    functions = (
        [call.get("function") for call in calls if isinstance(call, dict)]
        if isinstance(calls, list)
        else []
    )
    functions.append(message.get("function_call"))  # the deprecated single-call form
    for function in functions:
        if isinstance(function, dict) and isinstance(function.get("arguments"), str):
            yield function, "arguments"


def message_texts(body: dict[str, Any], roles: tuple[str, ...] | None = None) -> Iterator[str]:
    """Every text in the request that reaches the model, newest first."""
    for holder, key in reversed(list(text_slots(body, roles))):
        yield holder[key]


def _bounded(texts: Iterator[str], budget: int) -> list[str]:
    kept = []
    for text in texts:
        if budget <= 0:
            break
        kept.append(text[:budget])
        budget -= len(kept[-1])
    return kept


class Safety:
    def __init__(
        self,
        settings: SafetySettings,
        screen: JailbreakClassifier | None,
        model: JailbreakModel | None = None,
    ) -> None:
        """`screen`: the n-gram classifier, a cheap first look at every request; `model`: the
        fine-tuned transformer, asked only when the screen is unsure."""
        self.settings = settings
        self._screen = screen
        self._model = model
        self._patterns = compile_patterns(settings.jailbreak.patterns.items())
        self._last_screened: tuple[ParsedRequest, list[str], float] | None = None
        pii = settings.pii
        self._scanner = PIIScanner(pii.types, dict(pii.custom))

    def jailbreak(self, request: ParsedRequest, *, screened: bool = False) -> JailbreakVerdict:
        """Patterns, then the transformer on the windows most worth its time. Synchronous and
        CPU-bound (tens of milliseconds): callers on the event loop run it in a thread.
        `screened`: the request has been through `jailbreak_screen` already, so its patterns
        are known not to match."""
        started = time.perf_counter()
        last = self._last_screened
        screen: float | None
        if screened and last is not None and last[0] is request:
            _, texts, screen = last  # what `jailbreak_screen` just read and scored
            if self._last_screened is last:
                self._last_screened = None  # not holding on to a large body
        elif screened:
            texts = self._scanned_texts(request)
            screen = self._screen_score(texts)
        else:
            texts, found = self._patterns_in(request)
            if found is not None:
                return found
            screen = self._screen_score(texts)
        windows = self._model_windows(texts) if self._model is not None else []
        if self._model is None or not windows:
            return self._verdict(screen or 0.0, started)
        model = float(self._model.probabilities(windows).max())
        return self._verdict(model if screen is None else _agree(model, screen), started)

    def jailbreak_screen(self, request: ParsedRequest) -> JailbreakVerdict | None:
        """The check without the transformer: patterns, then the n-gram classifier. None when
        that classifier is not sure enough the request is benign (at or above
        `screen_threshold`, or `short_screen_threshold` for text that fits one transformer
        window): then the caller asks `jailbreak`."""
        started = time.perf_counter()
        texts, found = self._patterns_in(request)
        if found is not None:
            return found
        if self._screen is None or self._model is None:
            return self.jailbreak(request, screened=True)
        score = self._screen.score(texts, None)
        config = self.settings.jailbreak
        short = sum(map(len, texts)) <= config.model_window_chars
        if score >= (config.short_screen_threshold if short else config.screen_threshold):
            # For the `jailbreak` call that follows (in a worker thread): replacing the tuple
            # is atomic, and another request's screen in between only costs a recomputation.
            self._last_screened = (request, texts, score)
            return None
        return self._verdict(score, started)

    def _screen_score(self, texts: list[str]) -> float | None:
        return self._screen.score(texts, None) if self._screen is not None else None

    def _model_windows(self, texts: list[str]) -> list[str]:
        """The windows the transformer reads (`model_window_chars` each): the start of the
        newest text (where an attack with harmless text appended sits), and of the rest those
        the n-gram screen scores at or above `screen_threshold`, most suspicious first, at most
        `model_windows` in all. A long prompt that only brushed the threshold costs one window,
        not a pass over all of it."""
        config = self.settings.jailbreak
        size = config.model_window_chars
        step = size * 3 // 4
        windows = [
            text[begin : begin + size]
            for text in texts
            if text.strip()
            for start in range(0, max(len(text) - size + step, 1), step)
            for begin in (_word_start(text, start),)
        ]
        if len(windows) <= 1 or self._screen is None:
            return windows[: config.model_windows]
        rest = windows[1:]
        scores = self._screen.window_scores(rest)
        order = sorted(range(len(rest)), key=lambda i: scores[i], reverse=True)
        suspect = [rest[i] for i in order if scores[i] >= config.screen_threshold]
        return [windows[0], *suspect[: config.model_windows - 1]]

    def _patterns_in(self, request: ParsedRequest) -> tuple[list[str], JailbreakVerdict | None]:
        config = self.settings.jailbreak
        started = time.perf_counter()
        if not config.enabled:
            return [], JailbreakVerdict(0.0, "allow")
        texts = self._scanned_texts(request)
        for text in texts:
            found = match_patterns(text, self._patterns)
            if found is not None:
                verdict = self._verdict(1.0, started)
                return texts, dataclasses.replace(
                    verdict, family=found.family, matched=found.matched
                )
        return texts, None

    def _scanned_texts(self, request: ParsedRequest) -> list[str]:
        """What the jailbreak check reads: the configured roles, newest first, within budget."""
        config = self.settings.jailbreak
        return _bounded(message_texts(request.body, config.roles), config.max_scan_chars)

    def _verdict(self, score: float, started: float) -> JailbreakVerdict:
        config = self.settings.jailbreak
        action = "allow"
        if score >= config.block_threshold:
            action = "block"
        elif config.route_threshold is not None and score >= config.route_threshold:
            action = "route"
        elif score >= config.flag_threshold:
            action = "flag"
        family = "classifier" if score >= config.flag_threshold else None
        return JailbreakVerdict(score, action, family, None, (time.perf_counter() - started) * 1000)

    def pii(
        self, body: dict[str, Any], pool: str, compliant: bool, deadline: float | None = None
    ) -> tuple[PIIVerdict, bool]:
        """Scans and, where the policy says redact, rewrites `body` in place; returns the
        verdict and whether the body changed. A scan that cannot finish by `deadline`
        (`time.monotonic()`) refuses the request: past it, Envoy would give up on the router
        and, failing open, forward the body unscanned."""
        config = self.settings.pii
        started = time.perf_counter()
        if not config.enabled:
            return PIIVerdict({}, "allow"), False
        slots = list(text_slots(body))
        if sum(len(holder[key]) for holder, key in slots) > config.max_scan_chars:
            # Unscanned text could carry anything: refuse rather than forward it unchecked.
            raise RequestError(
                f"the request has more text than the PII scan covers "
                f"({config.max_scan_chars} characters)",
                status=413,
                code="pii_scan_limit",
            )
        counts: Counter[str] = Counter()
        scanned = []
        for holder, key in slots:
            try:
                findings = self._scanner.scan(holder[key], deadline)
            except ScanBudgetExceeded:
                raise RequestError(
                    "the router could not scan this request for personal data within its time "
                    "budget; it was not forwarded (send less text, or retry later)",
                    status=503,
                    code="request_budget_exceeded",
                ) from None
            if findings:
                counts.update(finding.kind for finding in findings)
                scanned.append((holder, key, findings))
        if not counts:
            return PIIVerdict({}, "allow", latency_ms=(time.perf_counter() - started) * 1000), False
        by_action: dict[str, list[str]] = {}
        for kind in sorted(counts):
            by_action.setdefault(_action(config, pool, kind), []).append(kind)
        if "block" in by_action:
            overall = "block"
        elif "route" in by_action and not compliant:
            overall = "route"
        elif "redact" in by_action:
            overall = "redact"
        else:
            overall = "allow"
        changed = False
        if overall == "redact":
            # In body order, so [EMAIL_1] is the first address in the conversation.
            redactor = Redactor()
            kinds = set(by_action["redact"])
            for holder, key, findings in scanned:
                kept = [finding for finding in findings if finding.kind in kinds]
                if kept:
                    holder[key] = redactor.redact(holder[key], kept)
                    changed = True
        elapsed = (time.perf_counter() - started) * 1000
        return PIIVerdict(dict(counts), overall, by_action, elapsed), changed


def _agree(model: float, screen: float) -> float:
    """The mean of the two classifiers' log-odds: both must find the text suspicious to block
    it. Either alone is overconfident somewhere — the transformer on short text unlike anything
    it was trained on (a line of symbols and digits), the n-gram screen on wording. On the
    development split, at <= 3% false positives, asking both kept one more point of recall
    than the transformer alone, with fewer false positives."""
    low, high = 1e-6, 1 - 1e-6
    model, screen = min(max(model, low), high), min(max(screen, low), high)
    logit = (math.log(model / (1 - model)) + math.log(screen / (1 - screen))) / 2
    return 1.0 / (1.0 + math.exp(-logit))


def _word_start(text: str, start: int) -> int:
    """`start`, moved to the beginning of the next word: a window that opens mid-word reads
    as noise to the transformer."""
    if start == 0:
        return 0
    space = text.find(" ", start, start + 64)
    return space + 1 if space >= 0 else start


def same_pii_policy(config: PIISettings, kinds: Iterable[str], pool: str, other: str) -> bool:
    """Whether `other` treats each of these PII types as `pool` does: only then may a body
    prepared (redacted, or left alone) for `pool` reach `other` instead."""
    return all(_action(config, pool, kind) == _action(config, other, kind) for kind in kinds)


def _action(config: PIISettings, pool: str, kind: str) -> str:
    pool_rules = config.pool_actions.get(pool, {})
    return pool_rules.get(kind) or config.actions.get(kind) or config.default_action
