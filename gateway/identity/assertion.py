"""Checking a SMART Backend Services client assertion (RFC 7523 JWT, SMART App Launch 2.0 "Backend Services").

The assertion is a JWT the client signs with its private key: ``iss`` = ``sub`` = its client id, ``aud`` = the
token endpoint's URL, ``exp`` at most five minutes ahead, a ``jti`` never used before, and ``kid`` naming one of its
registered public keys. The algorithm is pinned by that key, never taken from the token: an RSA key verifies RS384
only, a P-384 EC key ES384 only (a key's own ``alg`` must agree), so ``none``, HS256 (a public key used as an HMAC
secret) and RS256 are refused.

Errors (RFC 6749 section 5.2): ``invalid_client`` (401) when the assertion does not prove who the client is
(unknown client, ``iss`` != ``sub``, another algorithm, unknown key, bad signature, wrong ``aud``);
``invalid_grant`` (400) when a correctly signed assertion cannot be used (expired, too long-lived, issued in the
future, no ``jti``, a ``jti`` used already).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

import jwt

from gateway.clock import Clock
from gateway.identity.keysets import KeySets, KeySetUnavailable
from gateway.settings import Client

__all__ = ["ALGORITHMS", "ASSERTION_TYPE", "MAX_LIFETIME", "OAuthError", "pinned_algorithm", "verify"]

ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
ALGORITHMS = ("RS384", "ES384")
MAX_LIFETIME = 300  # seconds an assertion may be valid for (SMART: exp no more than five minutes ahead)
LEEWAY = 30  # seconds of clock skew allowed between the client and the gateway


class OAuthError(Exception):
    """An OAuth 2.0 token error: answered as ``{"error", "error_description"}`` (RFC 6749 section 5.2)."""

    def __init__(self, error: str, description: str, status: int = 400) -> None:
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status


def _client_error(description: str) -> OAuthError:
    return OAuthError("invalid_client", description, 401)


def pinned_algorithm(jwk: dict[str, Any]) -> str | None:
    """Return the one algorithm a public key verifies (RS384 or ES384), or None for a key the gateway never uses."""
    if jwk.get("use", "sig") != "sig":
        return None
    kty = jwk.get("kty")
    natural = "RS384" if kty == "RSA" else "ES384" if kty == "EC" and jwk.get("crv") == "P-384" else None
    declared = jwk.get("alg")
    return natural if declared in (None, natural) else None


async def verify(
    assertion: str,
    *,
    token_url: str,
    client_of: Callable[[str], Client | None],
    keysets: KeySets,
    first_use: Callable[[str, str, int], Awaitable[bool]],
    clock: Clock,
) -> Client:
    """Return the client a valid assertion authenticates, or raise OAuthError."""
    try:
        header = jwt.get_unverified_header(assertion)
        unverified = jwt.decode(assertion, options={"verify_signature": False})
    except jwt.PyJWTError:
        raise _client_error("client_assertion is not a JWT") from None
    alg = header.get("alg")
    if alg not in ALGORITHMS:
        raise _client_error(f"the assertion's alg must be one of {', '.join(ALGORITHMS)}")
    iss, sub = unverified.get("iss"), unverified.get("sub")
    if not isinstance(iss, str) or iss != sub:
        raise _client_error("the assertion's iss and sub must both be the client id")
    client = client_of(iss)
    if client is None:
        raise _client_error("no SMART client is registered with this client id")
    kid = header.get("kid")
    if not isinstance(kid, str):
        raise _client_error("the assertion's header must name its key (kid)")
    jwk = await _key(client, kid, keysets)
    if pinned_algorithm(jwk) != alg:
        raise _client_error(f"key {kid} does not verify {alg}")
    try:
        key = jwt.PyJWK(jwk, algorithm=alg)
        claims: dict[str, Any] = jwt.decode(
            assertion, key=key, algorithms=[alg], audience=token_url,
            options={"require": ["iss", "sub", "aud", "exp"], "verify_exp": False, "verify_iat": False,
                     "verify_nbf": False},
        )  # fmt: skip
    except jwt.InvalidAudienceError:
        raise _client_error(f"the assertion's aud must be {token_url}") from None
    except jwt.MissingRequiredClaimError as exc:
        raise OAuthError("invalid_grant", f"the assertion has no {exc.claim}") from None
    except jwt.PyJWTError:
        raise _client_error("the assertion's signature does not verify") from None
    _check_times(claims, clock())
    jti = claims.get("jti")
    if not isinstance(jti, str) or not jti or len(jti) > 256:
        raise OAuthError("invalid_grant", "the assertion needs a jti (a unique id)")
    if not await first_use(iss, jti, int(claims["exp"] - clock()) + LEEWAY):
        raise OAuthError("invalid_grant", "the assertion's jti was used before")
    return client


async def _key(client: Client, kid: str, keysets: KeySets) -> dict[str, Any]:
    try:
        for refresh in (False, True):
            for jwk in await keysets.keys(client, refresh=refresh):
                if jwk.get("kid") == kid:
                    return jwk
            if client.jwks is not None:
                break
    except KeySetUnavailable:
        raise _client_error("the client's key set could not be fetched") from None
    raise _client_error(f"the client has no key {json.dumps(kid)[:80]}")


def _check_times(claims: dict[str, Any], now: float) -> None:
    exp, iat, nbf = claims.get("exp"), claims.get("iat"), claims.get("nbf")
    if not isinstance(exp, int | float):
        raise OAuthError("invalid_grant", "the assertion's exp must be a number")
    if exp <= now - LEEWAY:
        raise OAuthError("invalid_grant", "the assertion has expired")
    if exp > now + MAX_LIFETIME + LEEWAY:
        raise OAuthError("invalid_grant", f"the assertion's exp is more than {MAX_LIFETIME} s ahead")
    for name, value in (("iat", iat), ("nbf", nbf)):
        if value is not None and (not isinstance(value, int | float) or value > now + LEEWAY):
            raise OAuthError("invalid_grant", f"the assertion's {name} is in the future")
