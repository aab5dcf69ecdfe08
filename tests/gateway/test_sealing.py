"""gateway/sealing.py: seal under the first key, open under any, refuse what does
not authenticate (None, never garbage), and parse keys without echoing them."""

from __future__ import annotations

import base64
import os

import pytest
from cryptography.fernet import Fernet

from gateway.sealing import MAGIC, Sealer, parse_key

A, B = os.urandom(32), os.urandom(32)


def test_a_sealed_value_opens_under_its_context_only() -> None:
    sealer = Sealer([A])
    sealed = sealer.seal(b"the answer", b"cache:k1")
    assert sealed.startswith(MAGIC)
    assert b"the answer" not in sealed
    assert sealer.open(sealed, b"cache:k1") == b"the answer"
    assert sealer.open(sealed, b"cache:k2") is None


def test_two_seals_of_one_value_differ() -> None:
    sealer = Sealer([A])
    assert sealer.seal(b"x", b"c") != sealer.seal(b"x", b"c")  # a fresh nonce each time


def test_rotation_seals_under_the_first_and_opens_under_any() -> None:
    old = Sealer([A]).seal(b"old", b"c")
    rotated = Sealer([B, A])
    new = rotated.seal(b"new", b"c")
    assert rotated.open(old, b"c") == b"old"
    assert Sealer([B]).open(new, b"c") == b"new"
    assert Sealer([A]).open(new, b"c") is None
    assert Sealer([B]).open(old, b"c") is None  # A dropped


@pytest.mark.parametrize(
    "value",
    [b"", b"plain text", MAGIC, MAGIC + b"\x00" * 20, b"x\x9c" + b"\x00" * 40],
    ids=["empty", "plain", "magic-only", "short", "zlib-like"],
)
def test_what_was_not_sealed_here_does_not_open(value: bytes) -> None:
    assert Sealer([A]).open(value, b"c") is None


def test_an_altered_or_truncated_value_does_not_open() -> None:
    sealer = Sealer([A])
    sealed = sealer.seal(b"the answer", b"c")
    flipped = sealed[:-1] + bytes([sealed[-1] ^ 1])
    assert sealer.open(flipped, b"c") is None
    assert sealer.open(sealed[:-1], b"c") is None


def test_keys_parse_from_fernet_and_standard_base64() -> None:
    assert len(parse_key(Fernet.generate_key().decode())) == 32
    assert parse_key(base64.b64encode(A).decode()) == A
    assert Sealer.from_texts([]) is None


@pytest.mark.parametrize("text", ["not base64!", base64.b64encode(b"short").decode()])
def test_a_malformed_key_is_refused_without_echoing_it(text: str) -> None:
    with pytest.raises(ValueError, match="encryption key") as caught:
        parse_key(text)
    assert text not in str(caught.value)
