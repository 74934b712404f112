"""SMART Backend Services: the signed client assertion, the access token cache, and the public keys (JWKS).

The client assertion is a JWT signed with the tenant's private key (RS384 or ES384), ``kid`` in its header, and
the claims ``iss`` = ``sub`` = the client id, ``aud`` = the token URL, ``iat``, ``exp`` at most five minutes ahead
and a unique ``jti``. It is exchanged at the token URL (``client_credentials`` grant) for an access token, which
is cached until a minute before it expires and refreshed once when the EHR answers 401.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from connectors.config import SmartBackendAuth
from connectors.errors import ConfigError

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ASSERTION_LIFETIME = 300  # SMART: exp no more than five minutes in the future
REFRESH_MARGIN = 60  # a token is renewed this long before it expires
DEFAULT_TOKEN_SECONDS = 300  # when the token answer has no expires_in

PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey


def load_signing_key(auth: SmartBackendAuth) -> PrivateKey:
    """Load the tenant's private key and check it fits the algorithm (RSA of 2048+ bits, or EC P-384)."""
    try:
        key = load_pem_private_key(auth.private_key_pem(), password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"the private key for {auth.kid} is not an unencrypted PEM key: {exc}") from None
    if auth.alg == "RS384":
        if not isinstance(key, rsa.RSAPrivateKey) or key.key_size < 2048:
            raise ConfigError(f"RS384 needs an RSA key of 2048 bits or more (kid {auth.kid})")
    elif not isinstance(key, ec.EllipticCurvePrivateKey) or not isinstance(key.curve, ec.SECP384R1):
        raise ConfigError(f"ES384 needs an EC key on P-384 (kid {auth.kid})")
    return key


class ClientAssertion:
    """Sign client assertions for one SMART client."""

    def __init__(self, auth: SmartBackendAuth, key: PrivateKey, *, clock: Callable[[], float] = time.time) -> None:
        self.auth = auth
        self._key = key
        self._clock = clock

    def sign(self) -> str:
        """Return a fresh assertion (a new ``jti`` every time)."""
        now = int(self._clock())
        claims = {
            "iss": self.auth.client_id,
            "sub": self.auth.client_id,
            "aud": self.auth.token_url,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME,
            "jti": str(uuid.uuid4()),
        }
        return jwt.encode(claims, self._key, algorithm=self.auth.alg, headers={"kid": self.auth.kid, "typ": "JWT"})

    def form(self) -> dict[str, str]:
        """Return the token request's form fields."""
        return {
            "grant_type": "client_credentials",
            "scope": self.auth.scopes,
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": self.sign(),
        }


@dataclass(frozen=True)
class AccessToken:
    """An access token and when (epoch seconds) it should be renewed."""

    value: str
    renew_at: float


class TokenCache:
    """Hold one access token; fetch a new one when it is due or was refused, one fetch at a time."""

    def __init__(
        self, fetch: Callable[[], Awaitable[tuple[str, float | None]]], *, clock: Callable[[], float] = time.time
    ) -> None:
        self._fetch = fetch
        self._clock = clock
        self._token: AccessToken | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0

    @property
    def renews_at(self) -> float | None:
        """Return when (epoch seconds) the token held is due for renewal, None before the first one."""
        return self._token.renew_at if self._token is not None else None

    async def get(self) -> str:
        """Return a token that is not due for renewal."""
        token = self._token
        if token is not None and self._clock() < token.renew_at:
            return token.value
        async with self._lock:
            token = self._token
            if token is None or self._clock() >= token.renew_at:
                token = await self._renew()
            return token.value

    async def refresh(self, refused: str) -> str:
        """Replace the token the EHR refused (unless another caller already did) and return the new one."""
        async with self._lock:
            if self._token is None or self._token.value == refused:
                return (await self._renew()).value
            return self._token.value

    async def _renew(self) -> AccessToken:
        value, expires_in = await self._fetch()
        self.fetches += 1
        lifetime = expires_in if expires_in and expires_in > 0 else DEFAULT_TOKEN_SECONDS
        # Renew a minute early; a token that lives less than that is still used once, for half its life.
        margin = REFRESH_MARGIN if lifetime > 2 * REFRESH_MARGIN else lifetime / 2
        self._token = AccessToken(value, self._clock() + lifetime - margin)
        return self._token


def public_jwk(auth: SmartBackendAuth, key: PrivateKey) -> dict[str, Any]:
    """Return the public half of ``key`` as a JWK with its ``kid``, ``alg`` and ``use``."""
    public = key.public_key()
    jwk: dict[str, Any] = dict(
        RSAAlgorithm.to_jwk(public, as_dict=True)
        if isinstance(public, rsa.RSAPublicKey)
        else ECAlgorithm.to_jwk(public, as_dict=True)
    )
    jwk.update({"kid": auth.kid, "alg": auth.alg, "use": "sig", "key_ops": ["verify"]})
    return jwk


def jwks(auths: Iterable[SmartBackendAuth]) -> tuple[dict[str, Any], list[str]]:
    """Return the JWK Set of every configured SMART key, and the kids whose key could not be loaded."""
    keys: dict[str, dict[str, Any]] = {}
    failed: list[str] = []
    for auth in auths:
        try:
            jwk = public_jwk(auth, load_signing_key(auth))
        except ConfigError:
            failed.append(auth.kid)
            continue
        keys.setdefault(f"{auth.kid}|{jwk.get('n') or jwk.get('x')}", jwk)
    return {"keys": list(keys.values())}, failed
