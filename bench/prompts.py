"""The requests `make bench` sends: one prompt per size, and a mix of short and long, simple and
hard, as real traffic has."""

from __future__ import annotations

from typing import Any

__all__ = ["KEYWORD", "LONGEST", "MIX", "SIZES", "body"]

TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "app.py", line 3, in <module>\n'
    "    print(user['id'])\n"
    "KeyError: 'id'\nWhy?"
)
_T30 = (
    "What is the difference between a process and a thread in an operating system, and when "
    "should I prefer one over the other?"
)
_T150 = (
    "I am preparing a workshop for new engineers on our payments service. Explain how "
    "idempotency keys prevent double charges when a client retries after a timeout, what happens "
    "if two requests with the same key arrive at the same moment on different replicas, and how "
    "we should store the keys so that they expire safely. Then compare this with relying on the "
    "database's unique constraints alone, list the failure cases we should test, and describe "
    "the metrics and alerts that would tell us in production that duplicate charges are "
    "slipping through, with one example of each."
)
_T1500 = (
    " ".join(
        f"Section {i}: our incident review found that the payment retries after a gateway timeout "
        "created duplicate ledger rows because the idempotency key was generated after the request "
        "was sent, and the reconciliation job only ran nightly, so support saw complaints first."
        for i in range(1, 31)
    )
    + " Summarise the root causes across these sections and propose a remediation plan."
)

# ~8,000 tokens: the longest prompt of the soak's mix.
_T8000 = " ".join([_T1500] * 5)

SIZES: dict[str, str] = {"~30 tokens": _T30, "~150 tokens": _T150, "~1,500 tokens": _T1500}
KEYWORD = TRACEBACK
LONGEST = _T8000

MIX: list[str] = [
    "hi!",
    "What is the capital of Australia?",
    "Translate 'good morning, how are you?' into Spanish.",
    "Write a haiku about the first snow in the city.",
    _T30,
    "Give me three name ideas for a coffee shop next to a library.",
    "Prove that there are infinitely many primes, and explain each step for a first-year student.",
    TRACEBACK,
    _T150,
    "What year did the Berlin Wall fall?",
    "Summarise the plot of Hamlet in two sentences.",
    "Explain the CAP theorem with an example of a system that chooses availability.",
    "thanks, that helped a lot",
    "Compare the monetary policy responses to the 2008 crisis and the 2020 pandemic, with their "
    "effects on inflation, employment and asset prices, and what economists disagree about.",
    "How do I reverse a list in Python?",
    _T1500[:3000],
]


def body(prompt: str, model: str = "auto") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": prompt}]}
