"""The public keys of SMART clients: inline in the clients file, or fetched from the client's ``jwks_url``.

A fetched set is reused for ``GATEWAY_JWKS_CACHE_SECONDS``; an assertion naming a key the cached set lacks fetches
it again at once (a client that rotated its key), at most every ``REFRESH_SECONDS``. A fetch that fails keeps the
last good set, if any. Only https URLs are registered; no redirect is followed.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx

from gateway.clock import Clock, system_clock
from gateway.settings import Client

__all__ = ["REFRESH_SECONDS", "KeySetUnavailable", "KeySets"]

log = logging.getLogger("gateway.identity")
REFRESH_SECONDS = 10.0
_MAX_BYTES = 256 * 1024
_PRIVATE = {"d", "p", "q", "dp", "dq", "qi", "k"}


class KeySetUnavailable(Exception):
    """The client's key set could not be fetched and none is cached."""


class KeySets:
    """Each SMART client's public keys (a list of JWKs)."""

    def __init__(
        self, *, cache_seconds: float, clock: Clock = system_clock, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self._ttl = cache_seconds
        self._clock = clock
        self._transport = transport
        self._http: httpx.AsyncClient | None = None
        self._cache: dict[str, tuple[float, list[dict[str, Any]]]] = {}

    async def keys(self, client: Client, *, refresh: bool = False) -> list[dict[str, Any]]:
        """Return the client's keys; ``refresh``: fetch again unless fetched moments ago (a key not found)."""
        if client.jwks is not None:
            return list(client.jwks["keys"])
        assert client.jwks_url is not None
        url, now = client.jwks_url, self._clock()
        cached = self._cache.get(url)
        if cached is not None:
            age = now - cached[0]
            if age < self._ttl and not (refresh and age >= REFRESH_SECONDS):
                return cached[1]
        try:
            keys = await self._fetch(url)
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("client key set not fetched", extra={"client": client.name, "error": type(exc).__name__})
            if cached is None:
                raise KeySetUnavailable(client.name) from exc
            return cached[1]
        self._cache[url] = (now, keys)
        return keys

    async def _fetch(self, url: str) -> list[dict[str, Any]]:
        if self._http is None:
            self._http = httpx.AsyncClient(transport=self._transport, timeout=5.0, follow_redirects=False)
        answer = await self._http.get(url, headers={"Accept": "application/jwk-set+json, application/json"})
        if answer.status_code != 200:
            raise ValueError(f"status {answer.status_code}")
        if len(answer.content) > _MAX_BYTES:
            raise ValueError("key set too large")
        keys = answer.json().get("keys")
        if not isinstance(keys, list):
            raise ValueError("not a JWK Set")
        # A private or symmetric key published by mistake is never used to check a signature.
        return [k for k in keys if isinstance(k, dict) and not set(k) & _PRIVATE]

    async def aclose(self) -> None:
        """Close the HTTP client."""
        if self._http is not None:
            await self._http.aclose()
