"""PII detectors: validated shapes found, look-alikes not."""

from __future__ import annotations

from collections import Counter

import pytest

from extproc_router.safety.pii import PII_TYPES, PIIScanner, Redactor, luhn_valid
from extproc_router.safety.pii_corpus import generate

SCANNER = PIIScanner()


def found(text: str) -> list[tuple[str, str]]:
    return [(f.kind, f.value) for f in SCANNER.scan(text)]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail jane.doe+work@example.co.uk now", [("email", "jane.doe+work@example.co.uk")]),
        ("call (415) 555-2671 tomorrow", [("phone", "(415) 555-2671")]),
        ("call 415.555.2671", [("phone", "415.555.2671")]),
        ("my number is +44 20 7946 0958", [("phone", "+44 20 7946 0958")]),
        ("+1 (650) 253-0000 is the office", [("phone", "+1 (650) 253-0000")]),
        ("call 555-123-4567x204 today", [("phone", "555-123-4567x204")]),
        ("dial 001-415-555-2671 from abroad", [("phone", "001-415-555-2671")]),
        ("fax (234)567-8901 ext. 12", [("phone", "(234)567-8901 ext. 12")]),
        ("SSN 219-09-9999 on file", [("ssn", "219-09-9999")]),
        ("my ssn is 219099999", [("ssn", "219099999")]),
        ("card 4111 1111 1111 1111 exp 12/29", [("credit_card", "4111 1111 1111 1111")]),
        ("amex 3782-822463-10005", [("credit_card", "3782-822463-10005")]),
        ("IBAN GB82 WEST 1234 5698 7654 32.", [("iban", "GB82 WEST 1234 5698 7654 32")]),
        ("to DE89370400440532013000 please", [("iban", "DE89370400440532013000")]),
        ("server 192.168.1.20.", [("ip_address", "192.168.1.20")]),
        ("v6 2001:db8::8a2e:370:7334 up", [("ip_address", "2001:db8::8a2e:370:7334")]),
    ],
)
def test_finds_validated_pii(text: str, expected: list[tuple[str, str]]) -> None:
    assert found(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "we met on 2024-01-15 and again 03/04/2025",
        "released version 1.2.3.4 and v2.10.3",
        "Chrome 120.0.6099.109",
        "order #123456789012 shipped; ORD-4111111111111111",
        "it costs $1,234.56 or 1.234,56 EUR",
        "ISBN 978-3-16-148410-0",
        "id 123e4567-e89b-12d3-a456-426614174000",
        "at 12:30:45 UTC, 2024-01-15T12:30:45Z",
        "card 4111 1111 1111 1112 (Luhn fails)",
        "SSNs 000-12-3456, 666-12-3456, 912-34-5678, 123-00-4567 and 123-45-0000 are never issued",
        "call extension 1234 or dial 555-0100",
        "pi is 3.14159, the answer 42, the year 1999",
        "IBAN GB00 WEST 1234 5698 7654 32 has a bad check",
        "the id 123456789 alone is not an ssn",
    ],
)
def test_hard_negatives_are_not_pii(text: str) -> None:
    assert found(text) == []


def test_luhn() -> None:
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")


def test_redaction_is_typed_and_stable_across_messages() -> None:
    redactor = Redactor()
    first = "mail a@example.com or b@example.com, then a@example.com again"
    second = "as I said: a@example.com; card 4111 1111 1111 1111"
    out1 = redactor.redact(first, SCANNER.scan(first))
    out2 = redactor.redact(second, SCANNER.scan(second))
    assert out1 == "mail [EMAIL_1] or [EMAIL_2], then [EMAIL_1] again"
    assert out2 == "as I said: [EMAIL_1]; card [CREDIT_CARD_1]"
    assert redactor.mapping["[EMAIL_2]"] == "b@example.com"


def test_custom_patterns() -> None:
    scanner = PIIScanner(custom={"employee_id": r"\bEMP-\d{6}\b"})
    assert [(f.kind, f.value) for f in scanner.scan("ask EMP-004211 today")] == [
        ("employee_id", "EMP-004211")
    ]


def test_disabled_types_are_not_scanned() -> None:
    assert PIIScanner(kinds=["email"]).scan("call (415) 555-2671") == []


@pytest.mark.parametrize("seed", [11, 12])
def test_generated_corpus_recall_and_precision(seed: int) -> None:
    true_positive, missed, false_positive = Counter[str](), Counter[str](), Counter[str]()
    for sample in generate(seed=seed, per_type=150, negatives=400):
        got = found(sample.text)
        for item in sample.expected:
            (true_positive if item in got else missed)[item[0]] += 1
        for item in got:
            if item not in sample.expected:
                false_positive[item[0]] += 1
    for kind in PII_TYPES:
        assert true_positive[kind] / (true_positive[kind] + missed[kind]) >= 0.995, kind
        assert true_positive[kind] / (true_positive[kind] + false_positive[kind]) >= 0.99, kind
