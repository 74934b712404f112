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
    """One ``EHRClient`` per tenant that has an EHR block."""

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
        self.targets = dict(targets)
        self.clients: dict[str, EHRClient] = {}
        self.broken: dict[str, str] = {}
        for tenant, target in sorted(self.targets.items()):
            try:
                self.clients[tenant] = EHRClient(
                    tenant,
                    target.vendor,
                    target.ehr,
                    observer=observer(tenant) if observer else None,
                    sleep=sleep,
                    clock=clock,
                    transport=transport(tenant) if transport else None,
                    outbound=outbound,
                )
            except ConfigError as exc:
                # One tenant's unreadable key must not stop every other tenant's connector.
                self.broken[tenant] = exc.message
                log.error("connector not opened", extra={"tenant": tenant, "error": exc.message})

    def get(self, tenant: str) -> EHRClient | None:
        """Return the tenant's client, or None when it has no (usable) EHR block."""
        return self.clients.get(tenant)

    @property
    def tenants(self) -> list[str]:
        """Return the tenants with an open client, sorted."""
        return sorted(self.clients)

    async def aclose(self) -> None:
        """Close every connection pool."""
        for client in self.clients.values():
            await client.aclose()


def smart_auths(targets: Mapping[str, Target]) -> list[SmartBackendAuth]:
    """Return every SMART Backend Services configuration (whose public keys the gateway publishes)."""
    return [t.ehr.auth for t in targets.values() if isinstance(t.ehr.auth, SmartBackendAuth)]
