"""What the console reads and acts through: the parts of ``Services`` it uses, as a protocol.

The routes hand ``Services`` in; the page modules see only this, so they stay apart from the composition root.
"""

from __future__ import annotations

from typing import Protocol

from redis.asyncio import Redis

from connectors import Connectors, Poller
from gateway.auth import Authenticator
from gateway.clock import Clock
from gateway.platform.risk import RiskFlags
from gateway.settings import ClientsConfig, Settings
from gateway.store import Keyspace
from gateway.webhooks.subscriptions import Subscriptions
from gateway.work.inbound import InboundQueue, known_tenants


class Sources(Protocol):
    """The services the console uses (``gateway.services.Services`` is one)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def clients(self) -> ClientsConfig: ...

    @property
    def auth(self) -> Authenticator: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def redis(self) -> Redis: ...

    @property
    def keys(self) -> Keyspace: ...

    @property
    def inbound(self) -> InboundQueue: ...

    @property
    def subscriptions(self) -> Subscriptions: ...

    @property
    def risks(self) -> RiskFlags: ...

    @property
    def connectors(self) -> Connectors: ...

    def poller(self, name: str | None = None) -> Poller: ...


async def tenants(sources: Sources) -> list[str]:
    """Return every tenant: those that have written, configured ones, and those with subscriptions."""
    configured = set(sources.clients.tenants) | {c.tenant for c in sources.clients.clients}
    written = await known_tenants(sources.redis, sources.keys)
    hooked = await sources.subscriptions.tenants()
    return sorted(configured | set(written) | set(hooked))
