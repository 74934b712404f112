"""Per-client rate limits: a token bucket per client in Redis, refilled by elapsed time (``bucket.lua``).

A client's ``rate`` (requests per second) and ``burst`` (the bucket's size) come from its entry in the clients
file, else its tenant's block, else ``GATEWAY_RATE_LIMIT_RATE`` / ``GATEWAY_RATE_LIMIT_BURST``; with no rate
anywhere the client is not limited. Every API pod shares the bucket, so the limit holds for the deployment.
"""

from __future__ import annotations

import math
from importlib import resources

from redis.asyncio import Redis

from gateway.clock import Clock, system_clock
from gateway.errors import TooManyRequests
from gateway.metrics import RATE_LIMITED
from gateway.settings import ClientsConfig, Settings
from gateway.store.connection import Script
from gateway.store.keys import Keyspace

_SCRIPT = resources.files("gateway.access").joinpath("bucket.lua").read_text(encoding="utf-8")

Limit = tuple[float, int]  # (rate per second, burst)


def _limit(rate: float | None, burst: int | None) -> Limit | None:
    if rate is None:
        return None
    return rate, burst if burst is not None else max(1, math.ceil(rate))


class RateLimiter:
    """Take one token from the caller's bucket, or refuse with 429 and the seconds until one is available."""

    def __init__(
        self, redis: Redis, keys: Keyspace, clients: ClientsConfig, settings: Settings, *, clock: Clock = system_clock
    ) -> None:
        self._keys = keys
        self._clock = clock
        self._script = Script(redis, _SCRIPT)
        self._default = _limit(settings.rate_limit_rate or None, settings.rate_limit_burst or None)
        self._tenants: dict[str, Limit | None] = {}
        self._clients: dict[tuple[str, str], Limit | None] = {}
        self.replace(clients)

    def replace(self, clients: ClientsConfig) -> None:
        """Take the limits of a (reloaded) clients file; buckets already in Redis keep their tokens."""
        default = self._default
        tenants = {name: _limit(t.rate, t.burst) or default for name, t in clients.tenants.items()}
        limits: dict[tuple[str, str], Limit | None] = {}
        for i, c in enumerate(clients.clients):
            name = c.name or f"{c.tenant}-{c.role}-{i}"  # as gateway.auth names a client without a name
            limits[(c.tenant, name)] = _limit(c.rate, c.burst) or tenants.get(c.tenant, default)
        self._tenants, self._clients = tenants, limits

    def limit(self, tenant: str, client: str) -> Limit | None:
        """Return the (rate, burst) a client is held to, or None when it is not limited."""
        found = self._clients.get((tenant, client))
        if (tenant, client) in self._clients:
            return found
        return self._tenants.get(tenant, self._default)

    async def take(self, tenant: str, client: str) -> None:
        """Spend one of the client's tokens, or raise TooManyRequests (429, ``Retry-After``)."""
        limit = self.limit(tenant, client)
        if limit is None:
            return
        rate, burst = limit
        now_ms = int(self._clock() * 1000)
        taken, wait_ms = await self._script(keys=[self._keys.rate_bucket(tenant, client)], args=[now_ms, rate, burst])
        if int(taken):
            return
        RATE_LIMITED.labels(tenant, client).inc()
        retry_after = max(1, math.ceil(int(wait_ms) / 1000))
        raise TooManyRequests(
            f"client {client} is over its rate limit ({rate:g}/s, burst {burst}); retry in {retry_after} s",
            retry_after=retry_after,
        )
