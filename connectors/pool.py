"""Every tenant's EHR client, opened once per process and closed together.

The app's lifespan (or the worker, or the poller) opens one ``Connectors`` and shares it, so each EHR has one
connection pool, one circuit breaker and one rate limit in a process, whoever calls it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import httpx

from connectors.address import OutboundPolicy
from connectors.client import EHRClient
from connectors.config import EHRConfig, SmartBackendAuth
from connectors.errors import ConfigError
from connectors.retry import Sleep
from connectors.status import Observer

log = logging.getLogger("connectors")


@dataclass(frozen=True)
class Target:
    """One tenant's EHR as configured."""

    tenant: str
    vendor: str
    ehr: EHRConfig


class Connectors:
    """One ``EHRClient`` per tenant that has an EHR block; ``replace`` takes a reloaded clients file's blocks."""

    def __init__(
        self,
        targets: Mapping[str, Target],
        *,
        observer: Callable[[str], Observer] | None = None,
        sleep: Sleep | None = None,
        clock: Callable[[], float] = time.time,
        transport: Callable[[str], httpx.AsyncBaseTransport | None] | None = None,
        outbound: OutboundPolicy | None = None,
    ) -> None:
        self._observer = observer
        self._sleep = sleep
        self._clock = clock
        self._transport = transport
        self._outbound = outbound
        self.targets: dict[str, Target] = {}
        self.clients: dict[str, EHRClient] = {}
        self.broken: dict[str, str] = {}
        self._retired: list[EHRClient] = []  # replaced while requests may be in flight on them: closed by aclose
        self._winding_down = False
        self.replace(targets)

    def _open(self, tenant: str, target: Target) -> None:
        try:
            self.clients[tenant] = EHRClient(
                tenant,
                target.vendor,
                target.ehr,
                observer=self._observer(tenant) if self._observer else None,
                sleep=self._sleep,
                clock=self._clock,
                transport=self._transport(tenant) if self._transport else None,
                outbound=self._outbound,
            )
            if self._winding_down:
                self.clients[tenant].wind_down()
        except ConfigError as exc:
            # One tenant's unreadable key must not stop every other tenant's connector.
            self.broken[tenant] = exc.message
            log.error("connector not opened", extra={"tenant": tenant, "error": exc.message})

    def replace(self, targets: Mapping[str, Target]) -> None:
        """Take these EHR blocks: a tenant whose block is new or changed gets a new client (pool, circuit breaker,
        rate limit), one whose block is gone has none; an unchanged one keeps its client and its state."""
        for tenant in sorted(set(self.targets) | set(targets)):
            target = targets.get(tenant)
            if target is not None and self.targets.get(tenant) == target:
                continue
            if (old := self.clients.pop(tenant, None)) is not None:
                self._retired.append(old)
            self.broken.pop(tenant, None)
            if target is not None:
                self._open(tenant, target)
        self.targets = dict(targets)

    def get(self, tenant: str) -> EHRClient | None:
        """Return the tenant's client, or None when it has no (usable) EHR block."""
        return self.clients.get(tenant)

    @property
    def tenants(self) -> list[str]:
        """Return the tenants with an open client, sorted."""
        return sorted(self.clients)

    def wind_down(self) -> None:
        """Stop every client's retries (``EHRClient.wind_down``): the process is stopping."""
        self._winding_down = True
        for client in [*self.clients.values(), *self._retired]:
            client.wind_down()

    async def aclose(self) -> None:
        """Close every connection pool, replaced ones included."""
        for client in [*self.clients.values(), *self._retired]:
            await client.aclose()
        self._retired.clear()


def smart_auths(targets: Mapping[str, Target]) -> list[SmartBackendAuth]:
    """Return every SMART Backend Services configuration (whose public keys the gateway publishes)."""
    return [t.ehr.auth for t in targets.values() if isinstance(t.ehr.auth, SmartBackendAuth)]
