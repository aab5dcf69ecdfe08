"""Optional PII redaction of prompt text before it reaches an engine (docs/pii.md).

A small set of patterns, compiled once, each a linear-time regex (possessive or
bounded quantifiers, lookarounds of fixed width) plus a checksum or digit-count
check where the shape alone would catch too much: Luhn for card numbers, mod-97
for IBANs. Matches become a token naming the kind (``[EMAIL]``, ``[CARD]``, ...);
the matched value is never kept, logged or counted, only its kind.

Every string the model reads is redacted, wherever vLLM takes it from (which
fields and content parts those are is :mod:`gateway.prompt_text`'s concern); a
content part of a type the gateway does not know is refused. Every other field
passes through as it came.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Literal, get_args

from gateway import prompt_text

Kind = Literal["email", "iban", "card", "ssn", "nino", "phone"]
# The order they run in: a kind whose text holds digit groups (an IBAN, a card)
# goes before the looser phone shapes that could otherwise claim part of it.
KINDS: tuple[Kind, ...] = get_args(Kind)

# Not inside a longer run of digits: no digit (or word character) right before,
# and no "digit + separator" before either ("4111 1111 ..." must not yield "1111 ...").
_NOT_AFTER = r"(?<![\w+@])(?<!\d[ .\-/])"
_NOT_BEFORE = r"(?!\w)(?![ .\-/]\d)"

_EMAIL = re.compile(
    r"(?<![\w.%+\-])[A-Za-z0-9._%+\-]{1,64}+@"
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9\-]{0,61}[A-Za-z0-9])?\.){1,8}[A-Za-z]{2,24}+(?![\w\-])"
)
_IBAN = re.compile(
    r"(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?: ?[A-Z0-9]{4}){2,7}+(?: ?[A-Z0-9]{1,4})?(?![A-Za-z0-9])"
)
_CARD = re.compile(
    f"{_NOT_AFTER}"
    r"(?:[2-6]\d{12,18}+"  # contiguous: 13 to 19 digits
    r"|[2-6]\d{3}(?P<s>[ \-])\d{4}(?P=s)\d{4}(?P=s)\d{1,4}+(?:(?P=s)\d{1,3}+)?"  # 4-4-4-4(-3)
    r"|3\d{3}(?P<a>[ \-])\d{6}(?P=a)\d{4,5}+)"  # Amex 4-6-5, Diners 4-6-4
    r"(?!\w)(?![\-.]\d)"
)
_SSN = re.compile(
    f"{_NOT_AFTER}"
    r"(?!000|666|9)\d{3}(?P<s>[ \-])(?!00)\d{2}(?P=s)(?!0000)\d{4}"
    f"{_NOT_BEFORE}"
)
# UK National Insurance number: two prefix letters (some letters and pairs are
# never issued), six digits (often in pairs), a suffix A-D.
_NINO = re.compile(
    r"(?i)(?<![A-Za-z0-9])(?!BG|GB|KN|NK|NT|TN|ZZ)[A-CEGHJ-PR-TW-Z][A-CEGHJ-NPR-TW-Z]"
    r" ?\d{2} ?\d{2} ?\d{2} ?[A-D](?![A-Za-z0-9])"
)
# International (+ and a country code), North American (NANP, separators required),
# or national with a trunk 0 (separators required): 0xx xxxx xxxx, (030) 1234 5678.
_PHONE = re.compile(
    f"{_NOT_AFTER}"
    r"(?:\+[1-9]\d{0,2}+(?:[ .\-]?\(\d{1,4}+\))?(?:[ .\-]?\d{1,6}+){1,6}+"
    r"|(?:1[ .\-]?)?(?:\([2-9]\d{2}\)[ .\-]?|[2-9]\d{2}[ .\-])[2-9]\d{2}[ .\-]\d{4}"
    r"|(?:\(0[1-9]\d{0,3}+\)[ .\-/]?|0[1-9]\d{0,3}+[ .\-/])\d{2,8}+(?:[ .\-]\d{2,4}+){0,4}+)"
    f"{_NOT_BEFORE}"
)


_DIGIT = re.compile(r"\d")
_SHORTEST = len("a@b.io")


def _digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def luhn_valid(number: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(number)):
        digit = int(char)
        if i % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


def iban_valid(text: str) -> bool:
    compact = text.replace(" ", "")
    if not 15 <= len(compact) <= 34:
        return False
    moved = compact[4:] + compact[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def _phone_valid(text: str) -> bool:
    count = len(_digits(text))
    if text.startswith("+"):
        return 9 <= count <= 15  # E.164: at most 15 digits, country code included
    if text.lstrip("(").startswith("0"):
        return 9 <= count <= 12  # trunk-prefixed national numbers
    return count in (10, 11)  # NANP, with or without the leading 1


_CHECKS: dict[Kind, tuple[re.Pattern[str], Callable[[str], bool]]] = {
    "email": (_EMAIL, lambda _: True),
    "iban": (_IBAN, iban_valid),
    "card": (_CARD, lambda text: luhn_valid(_digits(text))),
    "ssn": (_SSN, lambda _: True),
    "nino": (_NINO, lambda _: True),
    "phone": (_PHONE, _phone_valid),
}


class Redactor:
    """Replaces the configured kinds of PII in text with ``[KIND]`` tokens."""

    def __init__(self, kinds: Iterable[Kind] = KINDS) -> None:
        wanted = set(kinds)
        self._checks = [(kind, *_CHECKS[kind]) for kind in KINDS if kind in wanted]

    def text(self, text: str, counts: Counter[str]) -> str:
        """``text`` with every match replaced; adds one to ``counts[kind]`` per match."""
        # Cheap screens first, each a scan in C: a body holds many short strings (keys,
        # names, enum values) and most prompts lack most kinds. Shorter than any match
        # ("a@b.io"; the other kinds take 9 characters or more): nothing to do. Every
        # kind but e-mail needs a digit, e-mail an @. A pass runs its substitution only
        # after a search found the shape.
        if len(text) < _SHORTEST:
            return text
        has_at, has_digit = "@" in text, _DIGIT.search(text) is not None
        for kind, pattern, valid in self._checks:
            if (has_at if kind == "email" else has_digit) and pattern.search(text):
                text = pattern.sub(_replacer(kind, valid, counts), text)
        return text

    def body(self, body: bytes, route: str) -> tuple[bytes, Counter[str]]:
        """A request body with its prompt text redacted, and the count per kind. The
        same bytes come back, not re-serialised, when nothing was found.
        InvalidRequest (400) when a chat content part is of a type not known to be
        text or media: text the gateway cannot find is text it cannot redact."""
        payload = json.loads(body)
        counts: Counter[str] = Counter()
        prompt_text.rewrite(payload, route, lambda text: self.text(text, counts))
        if not counts:
            return body, counts
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode(), counts


def _replacer(
    kind: str, valid: Callable[[str], bool], counts: Counter[str]
) -> Callable[[re.Match[str]], str]:
    token = f"[{kind.upper()}]"

    def replace(match: re.Match[str]) -> str:
        if not valid(match.group()):
            return match.group()  # the right shape but not the checksum: left as written
        counts[kind] += 1
        return token

    return replace
