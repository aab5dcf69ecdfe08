"""The PII patterns against a corpus of texts that must and must not be redacted,
the request-body rewrite, and a time bound on adversarial input (the regexes must
stay linear: a prompt is attacker-controlled)."""

from __future__ import annotations

import json
import time
from collections import Counter
from typing import Any

import pytest

from gateway.errors import InvalidRequest
from gateway.redaction import KINDS, Kind, Redactor, iban_valid, luhn_valid
from tests.redaction_cases import LEAKS, MEDIA_PARTS, PII, UNKNOWN_PARTS

# Each text holds exactly one value of its kind, in a format the docs list.
POSITIVES: dict[Kind, list[str]] = {
    "email": [
        "jane.doe@example.com",
        "j+tag@example.co.uk",
        "first_last@sub.domain.org",
        "a@b.io",
        "JOHN@EXAMPLE.COM",
        "x-y.z%1@mail-server.example.net",
        "user@xn--bcher-kva.example",
        "name@example.museum",
        "123@numbers.com",
        "write to me at a@b.com.",
        "<bob@example.org>",
        "mailto:carol@example.com",
        "eve@example.travel",
        "frank.o@example.com, thanks",
        "(grace@example.de)",
        "henry@a.b.c.d.example.com",
    ],
    "phone": [
        "+1 415 555 2671",
        "+14155552671",
        "+44 20 7946 0958",
        "+44 (0)20 7946 0958",
        "+49 30 12345678",
        "+33 1 23 45 67 89",
        "+91 98765 43210",
        "+81 3-1234-5678",
        "+61 2 9876 5432",
        "(415) 555-2671",
        "415-555-2671",
        "415.555.2671",
        "415 555 2671",
        "1-800-555-0199",
        "1 (800) 555-0199",
        "020 7946 0958",
        "07700 900123",
        "06 12 34 56 78",
        "0151 23456789",
        "030/12345678",
        "(030) 1234 5678",
        "+353 1 234 5678",
        "call me on +1-415-555-2671.",
    ],
    "card": [
        "4111111111111111",
        "4111 1111 1111 1111",
        "4111-1111-1111-1111",
        "5555555555554444",
        "5555 5555 5555 4444",
        "5105105105105100",
        "378282246310005",
        "3782 822463 10005",
        "371449635398431",
        "6011111111111117",
        "6011 0009 9013 9424",
        "3530111333300000",
        "30569309025904",
        "3056 930902 5904",
        "4012888888881881",
        "2223003122003222",
        "4222222222222",
        "6200000000000005",
        "4000056655665556",
        "card: 5200-8282-8282-8210.",
    ],
    "ssn": [
        "123-45-6789",
        "078-05-1120",
        "219-09-9999",
        "123 45 6789",
        "665-12-3456",
        "667-12-3456",
        "899-99-9999",
        "001-01-0001",
        "SSN: 536-22-1234",
        "(234-56-7890)",
        "772-10-2311",
        "400-01-0001",
        "555-55-5555",
        "my ssn is 321-54-9876.",
        "456 78 9012",
        "SSN 132-11-2233",
    ],
    "nino": [
        "AB123456C",
        "AB 12 34 56 C",
        "ab123456c",
        "JG103759A",
        "CE123456D",
        "HT 65 43 21 B",
        "PA123456A",
        "SN 12 34 56 A",
        "WZ999999D",
        "ZY 00 00 00 A",
        "NA123456B",
        "MW123456C",
        "ER 99 88 77 A",
        "TS123456D",
        "LP 12 34 56 B",
    ],
    "iban": [
        "DE89 3704 0044 0532 0130 00",
        "DE89370400440532013000",
        "GB82 WEST 1234 5698 7654 32",
        "GB82WEST12345698765432",
        "FR14 2004 1010 0505 0001 3M02 606",
        "ES91 2100 0418 4502 0005 1332",
        "NL91 ABNA 0417 1643 00",
        "IT60 X054 2811 1010 0000 0123 456",
        "CH93 0076 2011 6238 5295 7",
        "BE68 5390 0754 7034",
        "AT61 1904 3002 3457 3201",
        "PL61 1090 1014 0000 0712 1981 2874",
        "SE45 5000 0000 0583 9825 7466",
        "NO93 8601 1117 947",
        "IE29 AIBK 9311 5212 3456 78",
        "DK50 0040 0440 1162 43",
        "FI21 1234 5600 0007 85",
        "PT50 0002 0123 1234 5678 9015 4",
    ],
}

# Texts of the same shape that are not that kind: checksum failures, invalid
# ranges, dates, versions, prices, ISBNs, UUIDs, IP addresses, order numbers.
NEGATIVES: dict[Kind, list[str]] = {
    "email": [
        "@handle",
        "user@",
        "user@localhost",
        "a@b",
        "twitter @jack",
        "email at example dot com",
        "x@y.z",
        "user@@example.com",
        "git@github",
        "python3.11",
        "file.txt",
        "a.b.c",
        "price@5",
        "foo@bar.1com",
        "1.2@3.4",
        "name@-example.com",
    ],
    "phone": [
        "2024",
        "2024-01-15",
        "15/01/2024",
        "01.02.2024",
        "12:30:45",
        "$1,234.56",
        "1 234 567",
        "v1.2.3",
        "10.0.0.1",
        "192.168.100.200",
        "ISBN 978-3-16-148410-0",
        "0-306-40615-2",
        "order 12345678",
        "1700000000",
        "3.14159265358979",
        "+5%",
        "+2.5 points",
        "room 101",
        "10-20 items",
        "9780306406157",
        "123e4567-e89b-12d3-a456-426614174000",
        "4111 1111 1111 1112",
        "0.5 mg",
        "05/06/2024",
        "100 200 3000",
        "123-456-7890",
        "+12 345",
        "2001:db8::ff00:42:8329",
    ],
    "card": [
        "4111111111111112",
        "4111 1111 1111 1112",
        "1234567812345678",
        "978-3-16-148410-0",
        "9780306406157",
        "123e4567-e89b-12d3-a456-426614174000",
        "192.168.100.200",
        "1700000000000",
        "order #20240115-0042",
        "$4,111.11",
        "4.1.11",
        "2024-01-15",
        "4111 1111 1111",
        "41111111111111111111",
        "4111.1111.1111.1111",
        "v4111111111111111",
        "4111111111111111x",
        "4111 11111 111 1111",
    ],
    "ssn": [
        "000-12-3456",
        "666-12-3456",
        "900-12-3456",
        "999-99-9999",
        "123-00-4567",
        "123-45-0000",
        "123456789",
        "123-456-789",
        "12-345-6789",
        "2024-01-15",
        "123-45-67890",
        "1123-45-6789",
        "123-45-6789-0",
        "123.45.6789",
        "123-45 6789",
        "v123-45-6789",
    ],
    "nino": [
        "BG123456A",
        "GB123456A",
        "NK123456A",
        "TN123456A",
        "ZZ123456A",
        "DA123456A",
        "AO123456A",
        "AB123456E",
        "AB12345C",
        "AB1234567C",
        "QQ123456C",
        "XAB123456C",
        "AB123456CX",
        "FI123456A",
        "UV123456A",
        "AB-12-34-56-C",
    ],
    "iban": [
        "DE89 3704 0044 0532 0130 01",
        "GB82 WEST 1234 5698 7654 33",
        "DE00 3704 0044 0532 0130 00",
        "AB12 CDEF",
        "ISO 9001",
        "US12 3456 7890",
        "COVID19",
        "XY12 ABCD EFGH IJKL",
        "RFC 4122 UUID",
        "DE89370400440532013001",
        "NL91ABNA041716430",
        "SHA256",
        "FR14 2004 1010 0505 0001 3M02 607",
        "ES91 2100 0418 4502 0005 1333",
        "HTTP2 TLS13",
        "DE89 3704 0044 0532 0130",
    ],
}

# Everyday technical prose with numbers: nothing in it may be redacted by any kind.
PROSE = [
    "Released 2024-01-15 as v3.11.7; see RFC 9110, section 15.5.1.",
    "The order #20240115-0042 shipped on 15/01/2024 at 12:30:45 for $1,234.56.",
    "Ping 192.168.100.200 and 10.0.0.1, then 2001:db8::ff00:42:8329.",
    "ISBN 978-3-16-148410-0 (ISBN-10 0-306-40615-2), 9780306406157.",
    "id 123e4567-e89b-12d3-a456-426614174000, sha 9f86d081884c7d659a2feaa0c55ad015",
    "Unix time 1700000000 (ms 1700000000000); pi is 3.14159265358979.",
    "Take 0.5 mg twice a day, 10-20 items per box, room 101, zip 94103.",
    "Population 1 234 567 grew +2.5 points (+5%) in Q3 2023.",
    "Call the function with @decorator or user@host in ssh, or git@github.",
    "Matrix 3x3, 1920x1080 display, 4K, HTTP/2, TLS 1.3, ISO 9001, COVID-19.",
    "Line 4111 of file.py, column 1111; 12 345 678 rows scanned in 0.25 s.",
    "Coordinates 48.8566, 2.3522; temperature -12.5 C; price 1.999,00 EUR.",
]


def _redact(text: str, kinds: tuple[Kind, ...] = KINDS) -> tuple[str, Counter[str]]:
    counts: Counter[str] = Counter()
    return Redactor(kinds).text(text, counts), counts


def test_the_corpus_is_large_enough() -> None:
    for kind in KINDS:
        assert len(POSITIVES[kind]) >= 15, kind
        assert len(NEGATIVES[kind]) >= 15, kind


@pytest.mark.parametrize(("kind", "text"), [(k, t) for k in KINDS for t in POSITIVES[k]])
def test_each_positive_is_redacted_as_its_kind(kind: Kind, text: str) -> None:
    for kinds in ((kind,), KINDS):  # alone, and with every other kind on
        out, counts = _redact(text, kinds)
        assert f"[{kind.upper()}]" in out
        assert counts == {kind: 1}


@pytest.mark.parametrize(("kind", "text"), [(k, t) for k in KINDS for t in NEGATIVES[k]])
def test_each_negative_is_left_alone(kind: Kind, text: str) -> None:
    for kinds in ((kind,), KINDS):
        assert _redact(text, kinds) == (text, Counter())


@pytest.mark.parametrize("text", PROSE)
def test_ordinary_numbers_in_prose_are_left_alone(text: str) -> None:
    assert _redact(text) == (text, Counter())


def test_only_the_value_is_replaced_and_every_occurrence_counted() -> None:
    text = (
        "Mail jane@example.com or bob@example.org, call +44 20 7946 0958, pay with "
        "4111 1111 1111 1111 to DE89 3704 0044 0532 0130 00; SSN 123-45-6789, NI AB123456C."
    )
    out, counts = _redact(text)
    assert out == (
        "Mail [EMAIL] or [EMAIL], call [PHONE], pay with [CARD] to [IBAN]; SSN [SSN], NI [NINO]."
    )
    assert counts == {"email": 2, "phone": 1, "card": 1, "iban": 1, "ssn": 1, "nino": 1}


def test_kinds_not_configured_are_left_alone() -> None:
    out, counts = _redact("jane@example.com 415-555-2671", ("phone",))
    assert out == "jane@example.com [PHONE]"
    assert counts == {"phone": 1}


def test_the_checksums() -> None:
    assert luhn_valid("4111111111111111")
    assert not luhn_valid("4111111111111112")
    assert iban_valid("GB82 WEST 1234 5698 7654 32")
    assert not iban_valid("GB82 WEST 1234 5698 7654 33")
    assert not iban_valid("GB82 WEST")  # too short for any country


def test_a_body_without_matches_comes_back_as_the_same_bytes() -> None:
    body = b'{"model": "m",  "prompt": "hello 2024-01-15", "temperature": 0}'
    out, counts = Redactor().body(body, route="/v1/completions")
    assert out is body
    assert not counts


def test_completion_prompts_string_and_list_are_redacted_other_fields_kept() -> None:
    payload = {
        "model": "m",
        "prompt": ["mail a@example.com", "no pii", "call 415-555-2671"],
        "user": "c@example.com",  # not read by the model: never turned into prompt text
        "stop": ["d@example.com"],
    }
    out, counts = Redactor().body(json.dumps(payload).encode(), route="/v1/completions")
    redacted = json.loads(out)
    assert redacted["prompt"] == ["mail [EMAIL]", "no pii", "call [PHONE]"]
    assert {k: v for k, v in redacted.items() if k != "prompt"} == {
        k: v for k, v in payload.items() if k != "prompt"
    }
    assert counts == {"email": 1, "phone": 1}
    assert b": " not in out  # re-serialised compactly
    single = Redactor().body(b'{"prompt": "x a@example.com"}', route="/v1/completions")[0]
    assert json.loads(single) == {"prompt": "x [EMAIL]"}
    tokens = b'{"prompt": [[1, 2, 3]]}'  # token ids: nothing to read
    assert Redactor().body(tokens, route="/v1/completions") == (tokens, Counter())


def test_chat_text_content_and_text_parts_are_redacted_images_and_other_fields_kept() -> None:
    image = {"type": "image_url", "image_url": {"url": "https://x.example/a@example.com.png"}}
    payload = {
        "model": "m",
        "user": "e@example.com",  # not read by the model
        "messages": [
            {"role": "system", "content": "Card 4111-1111-1111-1111."},
            {"role": "user", "content": [{"type": "text", "text": "I am 123-45-6789"}, image]},
            {"role": "assistant", "content": None, "tool_calls": [{"id": "1"}]},
        ],
    }
    out, counts = Redactor().body(json.dumps(payload).encode(), route="/v1/chat/completions")
    redacted = json.loads(out)
    messages = redacted["messages"]
    assert messages[0]["content"] == "Card [CARD]."
    assert messages[1]["content"] == [{"type": "text", "text": "I am [SSN]"}, image]
    assert redacted["user"] == "e@example.com"
    assert messages[2] == payload["messages"][2]
    assert counts == {"card": 1, "ssn": 1}


@pytest.mark.parametrize(("route", "body"), LEAKS.values(), ids=LEAKS.keys())
def test_every_field_and_part_vllm_renders_as_prompt_text_is_redacted(
    route: str, body: dict[str, Any]
) -> None:
    raw = json.dumps(body).encode()
    out, counts = Redactor().body(raw, route=route)
    assert PII not in out.decode()
    assert counts == {"email": 1}
    # The address became the token and nothing else in the body changed.
    assert json.loads(out) == json.loads(raw.decode().replace(PII, "[EMAIL]"))


def test_a_request_chat_template_is_redacted_too() -> None:
    # vLLM refuses one unless started with --trust-request-chat-template; when it is,
    # the template's literal text is prompt text.
    template = "{{ 'Support: jane@example.com' }}{% for m in messages %}{{ m.content }}{% endfor %}"
    body = {"model": "m", "messages": [{"role": "user", "content": "hi"}],
            "chat_template": template}  # fmt: skip
    out, counts = Redactor().body(json.dumps(body).encode(), route="/v1/chat/completions")
    assert json.loads(out)["chat_template"] == template.replace("jane@example.com", "[EMAIL]")
    assert counts == {"email": 1}


def _with_part(part: dict[str, Any]) -> bytes:
    messages = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": f"Mail {PII}"}, part]},
    ]
    return json.dumps({"model": "m", "messages": messages}).encode()


@pytest.mark.parametrize("part", UNKNOWN_PARTS.values(), ids=UNKNOWN_PARTS.keys())
def test_a_part_type_the_gateway_does_not_know_is_refused_naming_its_field(
    part: dict[str, Any],
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        Redactor().body(_with_part(part), route="/v1/chat/completions")
    assert refused.value.status_code == 400
    assert refused.value.param == "messages.1.content.1.type"
    assert PII not in refused.value.message  # names the field, never echoes the input


@pytest.mark.parametrize("part", MEDIA_PARTS.values(), ids=MEDIA_PARTS.keys())
def test_media_parts_pass_untouched_beside_redacted_text(part: dict[str, Any]) -> None:
    out, counts = Redactor().body(_with_part(part), route="/v1/chat/completions")
    content = json.loads(out)["messages"][1]["content"]
    assert content == [{"type": "text", "text": "Mail [EMAIL]"}, part]
    assert counts == {"email": 1}


ADVERSARIAL = {
    "letters then @": "a" * 200_000 + "@",
    "one digit run": "4" * 200_000,
    "plus groups": "+1 " * 70_000,
    "digit dash": "1-" * 100_000,
    "a@ repeated": "a@" * 100_000,
    "dotted local part": "a." * 100_000 + "@x",
    "endless domain": "x@" + "a." * 100_000,
    "iban-like groups": "AB12 " * 40_000,
    "trunk-like groups": "01" + " 12" * 70_000,
    "card-like groups": "4111 " * 40_000,
    "ssn-like": "123-45-" * 30_000,
    "open parens": "(0" * 100_000,
    "nino-like": "AB 12 " * 35_000,
    "mixed separators": "1 2.3-4/" * 25_000,
}


@pytest.mark.parametrize("text", ADVERSARIAL.values(), ids=ADVERSARIAL.keys())
def test_adversarial_input_is_redacted_in_linear_time(text: str) -> None:
    # ~0.1 s here for 200 KB; a regex that backtracks super-linearly takes hours.
    started = time.perf_counter()
    _redact(text)
    assert time.perf_counter() - started < 3.0
