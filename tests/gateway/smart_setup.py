"""SMART Backend Services clients for the identity tests: key pairs generated here, their public JWKs, and signed
client assertions (good ones, and each kind of bad one)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid
from functools import cache
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

BASE = "https://gateway.example.org"
TOKEN_URL = f"{BASE}/oauth2/token"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
RSA_CLIENT = "bh-scheduler"  # inline JWKS, an RS384 key
EC_CLIENT = "bh-analytics"  # keys at a JWKS URL, an ES384 key
EC_JWKS_URL = "https://keys.analytics.example.org/jwks.json"
RSA_KID, EC_KID = "rsa-1", "ec-1"


@cache
def _rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def rsa_key(*, fresh: bool = False) -> rsa.RSAPrivateKey:
    """Return the RSA client's key, or with ``fresh`` another key nobody registered."""
    return rsa.generate_private_key(public_exponent=65537, key_size=2048) if fresh else _rsa_key()


@cache
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


def public_jwk(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey, kid: str, **extra: str) -> dict[str, Any]:
    """Return the public half of ``key`` as a JWK."""
    if isinstance(key, rsa.RSAPrivateKey):
        jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    else:
        jwk = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, **extra}


def smart_clients(scopes: list[str] | None = None) -> list[dict[str, Any]]:
    """Return the two SMART clients' entries of a clients file (tenant clinic-a, role ehr)."""
    listed = {"scopes": scopes} if scopes is not None else {}
    return [
        {"name": RSA_CLIENT, "tenant": "clinic-a", "role": "ehr", "jwks": {"keys": [public_jwk(rsa_key(), RSA_KID)]},
         **listed},
        {"name": EC_CLIENT, "tenant": "clinic-a", "role": "ehr", "jwks_url": EC_JWKS_URL, **listed},
    ]  # fmt: skip


def claims(client: str = RSA_CLIENT, **changes: Any) -> dict[str, Any]:
    """Return an assertion's claims, valid for four minutes from now, with ``changes`` (None removes a claim)."""
    now = int(time.time())
    base = {"iss": client, "sub": client, "aud": TOKEN_URL, "exp": now + 240, "iat": now, "jti": uuid.uuid4().hex}
    merged = {**base, **changes}
    return {k: v for k, v in merged.items() if v is not None}


def assertion(
    client: str = RSA_CLIENT, *, alg: str | None = None, kid: str | None = None, key: Any = None, **changes: Any
) -> str:
    """Return a client assertion signed with the client's key (RS384 or ES384 unless ``alg`` says otherwise)."""
    key = key or (rsa_key() if client != EC_CLIENT else ec_key())
    alg = alg or ("RS384" if client != EC_CLIENT else "ES384")
    kid = kid or (RSA_KID if client != EC_CLIENT else EC_KID)
    return jwt.encode(claims(client, **changes), key, algorithm=alg, headers={"kid": kid})


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(client: str = RSA_CLIENT) -> str:
    """Return an assertion with ``alg: none``."""
    header = _b64(json.dumps({"alg": "none", "typ": "JWT", "kid": RSA_KID}).encode())
    return f"{header}.{_b64(json.dumps(claims(client)).encode())}."


def hs256_with_public_key(client: str = RSA_CLIENT) -> str:
    """Return an assertion "signed" HS256 with the client's public key as the secret (the key-confusion attack)."""
    secret = json.dumps(public_jwk(rsa_key(), RSA_KID), sort_keys=True).encode()
    header = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": RSA_KID}).encode())
    body = _b64(json.dumps(claims(client)).encode())
    signature = hmac.new(secret, f"{header}.{body}".encode(), hashlib.sha256).digest()
    return f"{header}.{body}.{_b64(signature)}"


def tampered(client: str = RSA_CLIENT) -> str:
    """Return a validly signed assertion whose claims were changed afterwards (another jti)."""
    header, _, signature = assertion(client).split(".")
    return f"{header}.{_b64(json.dumps(claims(client)).encode())}.{signature}"


def token_form(client_assertion: str, scope: str = "system/*.cruds", **extra: str) -> dict[str, str]:
    """Return the token request's form fields."""
    return {"grant_type": "client_credentials", "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": client_assertion, "scope": scope, **extra}  # fmt: skip
