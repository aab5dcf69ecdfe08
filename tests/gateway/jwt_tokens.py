"""Signed, forged and hosted JWTs for the tests that attack or check JWT auth (unit
tests of the verifier and the app-level attack suite share them)."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from tests.gateway.servers import serving

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


@dataclass(frozen=True)
class SigningKey:
    private: PrivateKey
    alg: str
    kid: str

    @property
    def public_pem(self) -> str:
        return (
            self.private.public_key()
            .public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            )
            .decode()
        )

    def jwk(self) -> dict[str, Any]:
        public = self.private.public_key()
        if isinstance(public, rsa.RSAPublicKey):
            return {**RSAAlgorithm.to_jwk(public, as_dict=True), "kid": self.kid}
        return {**ECAlgorithm.to_jwk(public, as_dict=True), "kid": self.kid}

    def sign(self, payload: dict[str, Any], **headers: Any) -> str:
        return jwt.encode(
            payload, self.private, algorithm=self.alg, headers={"kid": self.kid, **headers}
        )


def rsa_signing_key(kid: str) -> SigningKey:
    return SigningKey(rsa.generate_private_key(public_exponent=65537, key_size=2048), "RS256", kid)


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forge(header: dict[str, Any], payload: dict[str, Any], sign: Callable[[bytes], bytes]) -> str:
    """A token assembled by hand, as an attacker would, bypassing PyJWT's own guards."""
    signing_input = f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64url(sign(signing_input.encode()))}"


def hmac_signer(secret: bytes) -> Callable[[bytes], bytes]:
    return lambda data: hmac.new(secret, data, hashlib.sha256).digest()


class JWKSHost:
    """JWKS documents served over real HTTP; tests change them and count fetches per path."""

    def __init__(self) -> None:
        self.base_url = ""
        self.app = Starlette(routes=[Route("/{name}", self._serve)])
        self.reset()

    def reset(self) -> None:
        self.documents: dict[str, Any] = {}
        self.fetches: Counter[str] = Counter()
        self.status = 200
        self.delay_s = 0.0

    def url(self, name: str = "jwks.json") -> str:
        return f"{self.base_url}/{name}"

    def publish(self, *keys: SigningKey, name: str = "jwks.json") -> None:
        self.documents[name] = {"keys": [key.jwk() for key in keys]}

    async def _serve(self, request: Request) -> Response:
        name = request.path_params["name"]
        self.fetches[name] += 1
        await asyncio.sleep(self.delay_s)
        document = self.documents.get(name)
        if self.status != 200 or document is None:
            return PlainTextResponse("unavailable", status_code=self.status)
        if isinstance(document, str):
            return Response(document, media_type="application/json")
        return JSONResponse(document)


@contextmanager
def hosted_jwks() -> Iterator[JWKSHost]:
    """A JWKSHost served on a real socket until the block ends."""
    host = JWKSHost()
    with serving(host.app) as base_url:
        host.base_url = base_url
        yield host
