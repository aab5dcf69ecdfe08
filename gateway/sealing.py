"""Encryption at rest: authenticated encryption of what Portico writes to Redis
(cached answers, key records' names and metadata) under a list of keys.

AES-256-GCM through ``cryptography``. A sealed value is
``MAGIC | key fingerprint (4) | nonce (12) | ciphertext and tag``:

- the first key of the list seals every new value; any key of the list opens,
  so a rotation (new key first, old key kept until its entries expire) loses
  nothing;
- the fingerprint names the key that sealed a value, so opening tries one key,
  not the whole list, and a value sealed under a key no longer held is refused
  at once;
- ``context`` (the Redis key a value is written under) is authenticated data:
  a value copied under another key, another tenant's cache entry for one, does
  not open;
- ``open`` returns None for anything it cannot authenticate (a wrong or
  dropped key, a value written before encryption was on, a truncated or
  altered value), never garbage: the callers turn None into a cache miss.

GCM rather than Fernet: Fernet base64-encodes its tokens (a third more bytes in
Redis) and adds a separate HMAC pass; GCM seals raw bytes in one pass. Keys use
Fernet's format all the same (32 random bytes, URL-safe base64), so
``Fernet.generate_key()`` or ``openssl rand -base64 32`` makes one.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

MAGIC = b"\x00pse1"  # zlib output never starts with 0x00: a sealed value is never inflated
_FINGERPRINT = 4
_NONCE = 12
_TAG = 16
_HEADER = len(MAGIC) + _FINGERPRINT + _NONCE


def parse_key(text: str) -> bytes:
    """A key's 32 bytes from its URL-safe (or standard) base64 text; ValueError
    naming the problem, never the key, otherwise."""
    cleaned = text.strip()
    try:
        raw = base64.b64decode(cleaned.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("an encryption key is not valid base64") from None
    if len(raw) != 32:
        raise ValueError(f"an encryption key must be 32 bytes of base64, not {len(raw)}")
    return raw


def fingerprint(key: bytes) -> bytes:
    """What a sealed value records of its key: enough to pick it, not to guess it."""
    return hashlib.sha256(b"portico-sealing-key-id" + key).digest()[:_FINGERPRINT]


class Sealer:
    """Seals under the first key, opens under any (see the module docstring)."""

    def __init__(self, keys: list[bytes]) -> None:
        if not keys:
            raise ValueError("a Sealer needs at least one key")
        self._first = (fingerprint(keys[0]), AESGCM(keys[0]))
        self._by_fingerprint = {fingerprint(k): AESGCM(k) for k in reversed(keys)}

    @classmethod
    def from_texts(cls, texts: list[str]) -> Sealer | None:
        """None when no key is configured (encryption off)."""
        return cls([parse_key(t) for t in texts]) if texts else None

    def seal(self, data: bytes, context: bytes) -> bytes:
        key_id, aead = self._first
        nonce = os.urandom(_NONCE)
        return MAGIC + key_id + nonce + aead.encrypt(nonce, data, context)

    def open(self, sealed: bytes, context: bytes) -> bytes | None:
        """The plaintext, or None if ``sealed`` is not a value one of these keys
        sealed under ``context``."""
        if not is_sealed(sealed) or len(sealed) < _HEADER + _TAG:
            return None
        key_id = sealed[len(MAGIC) : len(MAGIC) + _FINGERPRINT]
        aead = self._by_fingerprint.get(key_id)
        if aead is None:
            return None
        nonce = sealed[len(MAGIC) + _FINGERPRINT : _HEADER]
        try:
            return aead.decrypt(nonce, sealed[_HEADER:], context)
        except InvalidTag:
            return None


def is_sealed(value: bytes) -> bool:
    return value.startswith(MAGIC)
