"""PII detection with validation, and redaction to stable typed placeholders.

A regex finds candidates; a validator decides. Card numbers pass Luhn and a known issuer's
prefix and length; SSNs are refused where the SSA never issues them (area 000, 666, 900-999,
group 00, serial 0000); IBANs pass mod-97 with their country's length; IP addresses parse; phone
numbers need a plausible shape (a + country code, or NANP area and exchange codes). The hard
negatives (dates, versions, order numbers, prices, ISBNs, UUIDs, timestamps, Luhn-invalid
16-digit numbers) fail those checks or never match, and are tested as such.
"""

from __future__ import annotations

import bisect
import ipaddress
import re
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

__all__ = ["PII_TYPES", "Finding", "PIIScanner", "Redaction", "ScanBudgetExceeded", "luhn_valid"]

PII_TYPES = ("email", "phone", "ssn", "credit_card", "iban", "ip_address")


@dataclass(frozen=True, slots=True)
class Finding:
    kind: str
    start: int
    end: int
    value: str


def luhn_valid(digits: str) -> bool:
    total = 0
    for index, char in enumerate(reversed(digits)):
        value = int(char)
        if index % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


# Issuer prefixes (inclusive ranges on the first digits) and the lengths each issues.
_CARD_ISSUERS: tuple[tuple[int, int, int, frozenset[int]], ...] = (
    (4, 4, 1, frozenset({13, 16, 19})),  # Visa
    (51, 55, 2, frozenset({16})),  # Mastercard
    (2221, 2720, 4, frozenset({16})),  # Mastercard 2-series
    (34, 34, 2, frozenset({15})),  # American Express
    (37, 37, 2, frozenset({15})),
    (6011, 6011, 4, frozenset({16, 19})),  # Discover
    (644, 649, 3, frozenset({16, 19})),
    (65, 65, 2, frozenset({16, 19})),
    (3528, 3589, 4, frozenset({16, 17, 18, 19})),  # JCB
    (300, 305, 3, frozenset({14})),  # Diners Club
    (36, 36, 2, frozenset({14})),
    (38, 39, 2, frozenset({14})),
    (62, 62, 2, frozenset({16, 17, 18, 19})),  # UnionPay
)


def _card_valid(raw: str) -> bool:
    digits = re.sub(r"[ -]", "", raw)
    if not 13 <= len(digits) <= 19 or len(set(digits)) == 1:
        return False
    issued = any(
        low <= int(digits[:width]) <= high and len(digits) in lengths
        for low, high, width, lengths in _CARD_ISSUERS
    )
    return issued and luhn_valid(digits)


def _ssn_valid(raw: str) -> bool:
    digits = re.sub(r"[ -]", "", raw)
    area, group, serial = int(digits[:3]), int(digits[3:5]), int(digits[5:])
    return not (area in {0, 666} or area >= 900 or group == 0 or serial == 0)


_IBAN_LENGTHS = {
    "AD": 24, "AE": 23, "AT": 20, "AZ": 28, "BA": 20, "BE": 16, "BG": 22, "BH": 22, "BR": 29,
    "CH": 21, "CR": 22, "CY": 28, "CZ": 24, "DE": 22, "DK": 18, "DO": 28, "EE": 20, "EG": 29,
    "ES": 24, "FI": 18, "FO": 18, "FR": 27, "GB": 22, "GE": 22, "GI": 23, "GL": 18, "GR": 27,
    "GT": 28, "HR": 21, "HU": 28, "IE": 22, "IL": 23, "IS": 26, "IT": 27, "JO": 30, "KW": 30,
    "KZ": 20, "LB": 28, "LI": 21, "LT": 20, "LU": 20, "LV": 21, "MC": 27, "MD": 24, "ME": 22,
    "MK": 19, "MR": 27, "MT": 31, "MU": 30, "NL": 18, "NO": 15, "PK": 24, "PL": 28, "PS": 29,
    "PT": 25, "QA": 29, "RO": 24, "RS": 22, "SA": 24, "SE": 24, "SI": 19, "SK": 24, "SM": 27,
    "TN": 24, "TR": 26, "UA": 29, "VG": 24, "XK": 20,
}  # fmt: skip


def _iban_valid(raw: str) -> bool:
    iban = re.sub(r"\s", "", raw).upper()
    if _IBAN_LENGTHS.get(iban[:2]) != len(iban):
        return False
    rearranged = iban[4:] + iban[:4]
    number = "".join(str(int(char, 36)) for char in rearranged)
    return int(number) % 97 == 1


def _ipv4_valid(raw: str) -> bool:
    parts = raw.split(".")
    return all(part == "0" or not part.startswith("0") for part in parts) and all(
        int(part) <= 255 for part in parts
    )


def _ipv6_valid(raw: str) -> bool:
    if raw.count(":") < 2:
        return False
    try:
        ipaddress.IPv6Address(raw)
    except ValueError:
        return False
    # "12:30:45"-style times never parse; a bare "::" says nothing about anyone.
    return raw != "::"


# An extension after the number ("x204", "ext. 12") belongs to it; then no digit or letter.
_EXTENSION = r"(?:\s?(?:x|ext\.?|extension)\s?\d{1,6})?(?!\w|[.-]\d)"
_NANP = re.compile(r"^(?:\+?1[ .-]?)?\(?\d{3}\)?[ .-]?\d{3}[ .-]?\d{4}$")
_EXTENSION_TAIL = re.compile(r"\s?(?:x|ext\.?|extension)\s?\d{1,6}$", re.IGNORECASE)


def _phone_valid(raw: str) -> bool:
    # The North American shape with separators is a phone number whatever its digits (made-up
    # 555-123-4567 numbers included): nothing else is written 3-3-4.
    number = raw.strip()
    if _NANP.match(number):
        return True
    number = _EXTENSION_TAIL.sub("", number)
    if _NANP.match(number):
        return True
    # International: "+" or "00" and a country code; E.164 allows 8 to 15 digits.
    digits = re.sub(r"\D", "", number)
    if number.startswith("00"):
        digits = digits[2:]
    return 8 <= len(digits) <= 15 and digits[0] != "0"


# Candidates. Digits glued to letters or other digits are never PII here (order numbers like
# "ORD-4111111111111111" are), hence the look-arounds. Every pattern starts with a character
# class and checks what precedes it with a lookbehind placed after that first character: Python's
# `re` then skips ahead to the next possible first character at C speed, where a leading
# lookbehind makes it try every position (about 3x slower on text with few numbers, and a body
# may carry megabytes).
_NOT_AFTER = r"(?<![\w@/.:+-]\d)"  # after the first digit: nothing glued on before it
_BOUNDARY_END = r"(?![\w@/-]|\.\d)"

_EMAIL = re.compile(
    r"(?<![\w.+-])[A-Za-z0-9](?:[A-Za-z0-9._%+-]{0,62}[A-Za-z0-9])?@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,24}(?![\w-])"
)
# An address has a local part of at most 64 characters and a domain of at most 253.
_EMAIL_BEFORE, _EMAIL_AFTER = 64, 260


Finder = Callable[[str, bool], Iterator[re.Match[str]]]


def _emails(text: str, has_digit: bool) -> Iterator[re.Match[str]]:
    """Anchored on each "@": a local part starts at any letter, so a plain scan would try to
    match at nearly every position of the text."""
    cursor = 0
    at = text.find("@")
    while at != -1:
        match = _EMAIL.search(text, max(cursor, at - _EMAIL_BEFORE), at + _EMAIL_AFTER)
        if match is not None:
            yield match
            cursor = match.end()
        at = text.find("@", max(at + 1, cursor))


def _finder(*patterns: str, flags: int = 0, digits: bool = True, hint: str | None = None) -> Finder:
    """Matches of `patterns`; skipped at once when the text has no digit though every match
    needs one, or lacks `hint`, a cheap pattern every match contains."""
    compiled = [re.compile(pattern, flags) for pattern in patterns]
    hinted = re.compile(hint) if hint is not None else None

    def find(text: str, has_digit: bool) -> Iterator[re.Match[str]]:
        if (digits and not has_digit) or (hinted is not None and hinted.search(text) is None):
            return
        for pattern in compiled:
            yield from pattern.finditer(text)

    return find


def _chain(*finders: Finder) -> Finder:
    def find(text: str, has_digit: bool) -> Iterator[re.Match[str]]:
        for finder in finders:
            yield from finder(text, has_digit)

    return find


def _has_digit(text: str) -> bool:
    # Ten substring searches (memchr) beat one `\d` scan by an order of magnitude.
    return any(digit in text for digit in "0123456789")


_DETECTORS: dict[str, tuple[Finder, Callable[[str], bool]]] = {
    "email": (_emails, lambda raw: ".." not in raw),
    "iban": (
        _finder(r"[A-Z](?<![\w][A-Z])[A-Z]\d{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,4})?(?![\w])"),
        _iban_valid,
    ),
    "credit_card": (
        _finder(r"\d" + _NOT_AFTER + r"(?:[ -]?\d){12,18}" + _BOUNDARY_END),
        _card_valid,
    ),
    "ssn": (
        _finder(
            r"\d" + _NOT_AFTER + r"\d{2}([ -])\d{2}\1\d{4}" + _BOUNDARY_END,
            # Nine bare digits only where the text says it is a social security number.
            r"[sS](?<![\w][sS])(?:sn|ocial security(?: number| no\.?)?)\s*(?:is|:|#|=)?\s*"
            r"(?P<v>\d{9})\b",
            flags=re.IGNORECASE,
        ),
        _ssn_valid,
    ),
    "ip_address": (
        _chain(
            _finder(r"\d(?<![\w.:]\d)\d{0,2}(?:\.\d{1,3}){3}(?![\w:]|\.\d)"),
            # IPv6: at least two colons; hex groups of up to four digits, "::" for zeros.
            _finder(
                r"(?:[0-9A-Fa-f](?<![\w.:][0-9A-Fa-f])[0-9A-Fa-f]{0,3}(?::[0-9A-Fa-f]{0,4}){2,7}"
                r"|:(?<![\w.:]:)[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){1,6})(?![\w:]|\.\d)",
                digits=False,
                hint=r":[0-9A-Fa-f]{0,4}:",
            ),
        ),
        lambda raw: _ipv4_valid(raw) if "." in raw else _ipv6_valid(raw),
    ),
    "phone": (
        _chain(
            # International, "+" or "00" and a country code first: groups of 1 to 7 digits.
            _finder(
                r"(?:\+(?<![\w+]\+)(?<!\d[ .-]\+)|0(?<![\w+]0)(?<!\d[ .-]0)0)\d{1,3}"
                r"(?:[ .-]?(?:\(\d{1,7}\)|\d{1,7})){1,6}" + _EXTENSION,
                hint=r"\+\d|00",
            ),
            # North American: (415) 555-2671, 415-555-2671, 415.555.2671, with an extension.
            _finder(
                r"(?:\((?<![\w+]\()(?<!\d[ .-]\()\d{3}\)[ .-]?"
                r"|\d(?<![\w+]\d)(?<!\d[ .-]\d)\d{2}[ .-])\d{3}[ .-]\d{4}" + _EXTENSION
            ),
        ),
        _phone_valid,
    ),
}

# Words right before a number that say it is something else (a version, an order, a date).
_CONTEXT_WORDS = (
    "version", "ver", "ver.", "v", "release", "build", "order", "invoice", "ticket", "isbn",
    "ref", "reference", "tracking", "sku", "part", "model", "serial no", "serial no.",
)  # fmt: skip
_NOT_PII_CONTEXT = re.compile(
    r"\b(?:" + "|".join(map(re.escape, _CONTEXT_WORDS)) + r")\s*[#:]?\s*$", re.IGNORECASE
)


def _says_not_pii(text: str, start: int) -> bool:
    window = text[max(0, start - 24) : start]
    # A plain suffix test first: the regex costs microseconds, and a text may have 100k numbers.
    if not window.rstrip().rstrip("#:").rstrip().lower().endswith(_CONTEXT_WORDS):
        return False
    return _NOT_PII_CONTEXT.search(window) is not None


_CONTEXT_KINDS = frozenset({"phone", "ip_address", "credit_card"})


@dataclass(frozen=True, slots=True)
class Redaction:
    text: str
    # Placeholder -> original value, for an optional restore on the way back.
    mapping: dict[str, str]


class PIIScanner:
    """Finds PII of the enabled types plus user-defined patterns (name -> regex)."""

    def __init__(
        self, kinds: Iterable[str] = PII_TYPES, custom: dict[str, str] | None = None
    ) -> None:
        # In _DETECTORS order: the more specific shapes claim their digits first.
        enabled = set(kinds)
        self._detectors = [
            (kind, find, valid) for kind, (find, valid) in _DETECTORS.items() if kind in enabled
        ]
        for name, pattern in (custom or {}).items():
            self._detectors.append((name, _finder(pattern, digits=False), lambda _raw: True))

    def scan(self, text: str, deadline: float | None = None) -> list[Finding]:
        """Non-overlapping findings in text order; earlier detectors win overlaps (an SSN is
        not also a phone number). Past `deadline` (`time.monotonic()`), raises
        `ScanBudgetExceeded`: megabytes of digits have hundreds of thousands of candidates."""
        found: list[Finding] = []
        starts: list[int] = []  # sorted starts of the spans taken so far, ends beside them
        ends: list[int] = []
        has_digit = _has_digit(text)
        for kind, find, valid in self._detectors:
            for count, match in enumerate(find(text, has_digit)):
                if deadline is not None and count % _DEADLINE_EVERY == 0:
                    _check(deadline)  # at the first match, then every so many
                # A detector that needs context around the value captures the value as "v".
                group = "v" if "v" in match.re.groupindex and match.group("v") else 0
                start, end = match.span(group)
                index = bisect.bisect_right(starts, start)
                if (index and ends[index - 1] > start) or (
                    index < len(starts) and starts[index] < end
                ):
                    continue
                if kind in _CONTEXT_KINDS and _says_not_pii(text, start):
                    continue
                raw = match.group(group)
                if valid(raw):
                    found.append(Finding(kind, start, end, raw))
                    starts.insert(index, start)
                    ends.insert(index, end)
            if deadline is not None:
                _check(deadline)  # after each detector's scan of the whole text
        return sorted(found, key=lambda f: f.start)


class ScanBudgetExceeded(Exception):
    """The scan ran past its deadline; what it found so far is not all there is."""


# Candidates between two looks at the clock (about a millisecond of validation).
_DEADLINE_EVERY = 256


def _check(deadline: float) -> None:
    if time.monotonic() > deadline:
        raise ScanBudgetExceeded


class Redactor:
    """Replaces findings with `[KIND_n]`; the same value gets the same placeholder across every
    message of one request, so the model can still refer to it."""

    def __init__(self) -> None:
        self.mapping: dict[str, str] = {}
        self._by_value: dict[tuple[str, str], str] = {}
        self._counts: dict[str, int] = {}

    def redact(self, text: str, findings: Sequence[Finding]) -> str:
        parts = []
        cursor = 0
        for finding in findings:
            key = (finding.kind, finding.value)
            placeholder = self._by_value.get(key)
            if placeholder is None:
                self._counts[finding.kind] = self._counts.get(finding.kind, 0) + 1
                placeholder = f"[{finding.kind.upper()}_{self._counts[finding.kind]}]"
                self._by_value[key] = placeholder
                self.mapping[placeholder] = finding.value
            parts.append(text[cursor : finding.start])
            parts.append(placeholder)
            cursor = finding.end
        parts.append(text[cursor:])
        return "".join(parts)
