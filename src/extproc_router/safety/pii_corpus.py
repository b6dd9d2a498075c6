"""A seeded generator of PII test sentences with their expected findings, and the hard negatives
that must produce none: the PII evaluation set of `make eval` and the property tests.

Values are generated valid (Luhn, issuer prefixes, SSA ranges, IBAN mod-97) in the shapes people
write them (spaced, dashed, bracketed); negatives are the look-alikes named in the spec.
"""

from __future__ import annotations

import random
import string
from collections.abc import Callable
from dataclasses import dataclass

from extproc_router.safety.pii import luhn_valid

__all__ = ["Sample", "generate"]


@dataclass(frozen=True, slots=True)
class Sample:
    text: str
    # (kind, value) pairs a perfect detector reports; empty for a hard negative.
    expected: tuple[tuple[str, str], ...]
    negative_kind: str = ""


_FIRST = ["maria", "john", "wei", "aisha", "lukas", "sofia", "kenji", "olga", "omar", "lea"]
_LAST = ["garcia", "smith", "chen", "khan", "muller", "rossi", "tanaka", "ivanova", "haddad"]
_DOMAINS = ["example.com", "mail.example.org", "corp.example.co.uk", "uni.example.edu", "ex.io"]


def _email(r: random.Random) -> str:
    local = r.choice(["{f}.{l}", "{f}{n}", "{f}_{l}", "{f}+{t}", "{l}.{f}{n}"]).format(
        f=r.choice(_FIRST), l=r.choice(_LAST), n=r.randint(1, 99), t=r.choice(["news", "work"])
    )
    return f"{local}@{r.choice(_DOMAINS)}"


def _nanp(r: random.Random) -> tuple[str, str, str]:
    return (
        str(r.randint(2, 9)) + f"{r.randint(0, 99):02d}",
        str(r.randint(2, 9)) + (f"{r.randint(0, 99):02d}"),
        f"{r.randint(0, 9999):04d}",
    )


def _phone(r: random.Random) -> str:
    area, exchange, line = _nanp(r)
    shapes = [
        f"({area}) {exchange}-{line}",
        f"{area}-{exchange}-{line}",
        f"{area}.{exchange}.{line}",
        f"+1 {area} {exchange} {line}",
        f"+1-{area}-{exchange}-{line}",
        f"+44 20 {r.randint(1000, 9999)} {r.randint(1000, 9999)}",
        f"+49 151 {r.randint(1000000, 9999999)}",
        f"+33 6 {r.randint(10, 99)} {r.randint(10, 99)} {r.randint(10, 99)} {r.randint(10, 99)}",
        f"+81 90-{r.randint(1000, 9999)}-{r.randint(1000, 9999)}",
        f"+91 {r.randint(70000, 99999)} {r.randint(10000, 99999)}",
        f"{r.randint(100, 999)}-{r.randint(100, 999)}-{line}x{r.randint(1, 9999)}",
        f"001-{area}-{exchange}-{line}",
        f"({area}){exchange}-{line}",
    ]
    return r.choice(shapes)


def _ssn(r: random.Random) -> str:
    area = r.choice([n for n in range(1, 900) if n != 666])
    separator = r.choice(["-", "-", " "])
    return f"{area:03d}{separator}{r.randint(1, 99):02d}{separator}{r.randint(1, 9999):04d}"


def _luhn_complete(prefix: str, length: int, r: random.Random) -> str:
    body = prefix + "".join(r.choice(string.digits) for _ in range(length - len(prefix) - 1))
    for check in string.digits:
        if luhn_valid(body + check):
            return body + check
    raise AssertionError("unreachable: one check digit always fits")


def _card(r: random.Random) -> str:
    prefix, length = r.choice(
        [
            ("4", 16),
            ("51", 16),
            ("55", 16),
            ("2221", 16),
            ("34", 15),
            ("37", 15),
            ("6011", 16),
            ("65", 16),
            ("3530", 16),
            ("62", 16),
        ]
    )
    digits = _luhn_complete(prefix, length, r)
    separator = r.choice(["", " ", "-"])
    if length == 15:
        groups = [digits[:4], digits[4:10], digits[10:]]
    else:
        groups = [digits[i : i + 4] for i in range(0, length, 4)]
    return separator.join(groups)


def _iban(r: random.Random) -> str:
    country, length = r.choice([("DE", 22), ("GB", 22), ("FR", 27), ("NL", 18), ("ES", 24)])
    if country == "GB":
        bban = "".join(r.choice(string.ascii_uppercase) for _ in range(4))
        bban += "".join(r.choice(string.digits) for _ in range(14))
    elif country == "NL":
        bban = "".join(r.choice(string.ascii_uppercase) for _ in range(4))
        bban += "".join(r.choice(string.digits) for _ in range(10))
    else:
        bban = "".join(r.choice(string.digits) for _ in range(length - 4))
    numeric = "".join(str(int(c, 36)) for c in bban + country + "00")
    iban = f"{country}{98 - int(numeric) % 97:02d}{bban}"
    if r.random() < 0.5:
        return " ".join(iban[i : i + 4] for i in range(0, len(iban), 4))
    return iban


def _ip(r: random.Random) -> str:
    if r.random() < 0.7:
        return ".".join(str(r.randint(1 if i == 0 else 0, 254)) for i in range(4))
    groups = [f"{r.randint(0, 0xFFFF):x}" for _ in range(8)]
    if r.random() < 0.5:
        return ":".join(groups)
    return ":".join(groups[:3]) + "::" + ":".join(groups[6:])


_MAKERS: dict[str, Callable[[random.Random], str]] = {
    "email": _email,
    "phone": _phone,
    "ssn": _ssn,
    "credit_card": _card,
    "iban": _iban,
    "ip_address": _ip,
}

_FRAMES = [
    "Please update my record: {v}.",
    "you can reach me at {v} after 5pm",
    "{v} is the one I used last time, can you check it?",
    "Customer wrote: 'my details are {v}' — draft a polite reply.",
    "Forwarding this: contact = {v}; priority high",
    "Is {v} formatted correctly?",
    "Summarise the email below.\n\nHi team,\nThe account holder ({v}) asked us to call back.",
    "log line: user={v} action=login status=ok",
]


def _negative(r: random.Random) -> tuple[str, str]:
    year, month, day = r.randint(1990, 2030), r.randint(1, 12), r.randint(1, 28)
    digits16 = "4" + "".join(r.choice(string.digits) for _ in range(15))
    while luhn_valid(digits16):
        digits16 = digits16[:-1] + str((int(digits16[-1]) + 1) % 10)
    options = [
        ("date", f"{year}-{month:02d}-{day:02d}"),
        ("date", f"{month:02d}/{day:02d}/{year}"),
        ("timestamp", f"{year}-{month:02d}-{day:02d}T{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:"
                      f"{r.randint(0, 59):02d}Z"),
        ("timestamp", f"{r.randint(0, 23):02d}:{r.randint(0, 59):02d}:{r.randint(0, 59):02d}"),
        ("version", f"v{r.randint(0, 9)}.{r.randint(0, 30)}.{r.randint(0, 99)}"),
        ("version", f"version {r.randint(1, 9)}.{r.randint(0, 9)}.{r.randint(0, 9)}."
                    f"{r.randint(0, 9)}"),
        ("order", f"order #{r.randint(10**9, 10**12)}"),
        ("order", f"ORD-{r.randint(10**11, 10**15)}"),
        ("price", f"${r.randint(1, 99999):,}.{r.randint(0, 99):02d}"),
        ("isbn", f"ISBN 978-{r.randint(0, 9)}-{r.randint(10, 99)}-{r.randint(100000, 999999)}-"
                 f"{r.randint(0, 9)}"),
        ("uuid", f"{r.getrandbits(32):08x}-{r.getrandbits(16):04x}-4{r.getrandbits(12):03x}-"
                 f"a{r.getrandbits(12):03x}-{r.getrandbits(48):012x}"),
        ("luhn_invalid", " ".join(digits16[i : i + 4] for i in range(0, 16, 4))),
        ("luhn_invalid", digits16),
    ]  # fmt: skip
    return r.choice(options)


def generate(seed: int = 7, per_type: int = 400, negatives: int = 1200) -> list[Sample]:
    r = random.Random(seed)
    samples = []
    for kind, make in _MAKERS.items():
        for _ in range(per_type):
            value = make(r)
            samples.append(Sample(r.choice(_FRAMES).format(v=value), ((kind, value),)))
    for _ in range(negatives):
        kind, value = _negative(r)
        samples.append(Sample(r.choice(_FRAMES).format(v=value), (), kind))
    return samples
