"""Access tokens: opaque random strings whose grant (client, scopes) Redis keeps until they expire.

Opaque rather than signed: a token means nothing without Redis, a revoked client's tokens stop working at the
next use (``gateway.auth`` checks the client is still registered), and there is no signing key to rotate. Only a
SHA-256 digest of the token is stored, so a Redis dump does not hold usable tokens.
"""

from __future__ import annotations

import hashlib
import json
import secrets

from redis.asyncio import Redis

from gateway.auth import Grant
from gateway.store import Keyspace

__all__ = ["AccessTokens"]


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


class AccessTokens:
    """Issue and look up access tokens, and remember the assertion ids (``jti``) already used."""

    def __init__(self, redis: Redis, keys: Keyspace) -> None:
        self._redis = redis
        self._keys = keys

    async def issue(self, grant: Grant, lifetime: int) -> str:
        """Return a new access token for ``grant``, valid ``lifetime`` seconds."""
        token = secrets.token_urlsafe(32)
        value = json.dumps({"client": grant.client, "scopes": sorted(grant.scopes)})
        await self._redis.set(self._keys.oauth_token(_digest(token)), value, ex=lifetime)
        return token

    async def lookup(self, token: str) -> Grant | None:
        """Return the grant of a live access token, or None."""
        if len(token) > 512:
            return None
        raw = await self._redis.get(self._keys.oauth_token(_digest(token)))
        if raw is None:
            return None
        data = json.loads(raw)
        return Grant(client=str(data["client"]), scopes=frozenset(data["scopes"]))

    async def first_use(self, client: str, jti: str, seconds: int) -> bool:
        """Record that ``client`` used assertion id ``jti``; False when it was used already (a replay)."""
        key = self._keys.oauth_jti(_digest(f"{client}\n{jti}"))
        return bool(await self._redis.set(key, "1", nx=True, ex=max(seconds, 1)))
