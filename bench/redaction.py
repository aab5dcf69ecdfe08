"""Time PII redaction of a chat body (parse, redact, re-serialise) at 2 KB and 1 MB,
with and without PII in it, and on digit-free text. The figures in docs/pii.md.

    .venv/bin/python -m bench.redaction
"""

from __future__ import annotations

import json
import statistics
import time

from gateway.redaction import Redactor

PARA = (
    "Hello, I am writing about my order #20240115-0042 placed on 2024-01-15. The total was "
    "$1,234.56 and version 3.11.7 of the app shows an error at line 4111. "
)
PII = "Reach me at jane.doe@example.com or +44 20 7946 0958; my card is 4111 1111 1111 1111. "
WORDS = "The quick brown fox jumps over the lazy dog while the gateway relays tokens. "


def _body(text: str, size: int) -> bytes:
    content = (text * (size // len(text) + 1))[:size]
    return json.dumps({"model": "m", "messages": [{"role": "user", "content": content}]}).encode()


def main() -> None:
    redactor = Redactor()
    cases = {"with PII": PARA * 4 + PII, "digits, no PII": PARA, "no digits, no @": WORDS}
    print("| prompt | content | median | min | matches |\n| --- | --- | --- | --- | --- |")
    for size, repeats in ((2048, 2000), (1_000_000, 7)):
        for name, text in cases.items():
            body = _body(text, size)
            times, matches = [], 0
            for _ in range(repeats):
                started = time.perf_counter()
                _, counts = redactor.body(body, "/v1/chat/completions")
                times.append(time.perf_counter() - started)
                matches = sum(counts.values())
            median, low = statistics.median(times) * 1000, min(times) * 1000
            label = "2 KB" if size < 10_000 else "1 MB"
            print(f"| {label} | {name} | {median:.2f} ms | {low:.2f} ms | {matches} |")


if __name__ == "__main__":
    main()
