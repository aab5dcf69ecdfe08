"""PEM public keys for JWT verification, and the algorithm each one verifies.

Shared by the settings (a key is checked when the configuration is read, so a
bad one stops start-up) and the verifier.
"""

from __future__ import annotations

from typing import Literal

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

# RFC 7518 section 3.2: an HS256 key must be at least as long as the SHA-256 output.
MIN_SECRET_BYTES = 32
MIN_RSA_BITS = 2048

AsymmetricAlgorithm = Literal["RS256", "ES256"]
PublicKey = rsa.RSAPublicKey | ec.EllipticCurvePublicKey


def load_public_key(pem: str) -> tuple[PublicKey, AsymmetricAlgorithm]:
    """Parse a PEM public key and name the one algorithm it verifies; ValueError if unusable."""
    # Environment variables rarely hold newlines; a PEM never contains a backslash.
    data = pem.replace("\\n", "\n").strip().encode()
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise ValueError("public_key is not a PEM public key (-----BEGIN PUBLIC KEY-----)") from exc
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= MIN_RSA_BITS:
        return key, "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ec.SECP256R1):
        return key, "ES256"
    raise ValueError(
        f"public_key must be an RSA key of {MIN_RSA_BITS}+ bits (RS256) or an EC P-256 key (ES256)"
    )
