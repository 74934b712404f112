"""What every FHIR interaction needs, whether it came over HTTP, in a Bundle, or from the EHR poller."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from gateway.fhir.admission import WritesInFlight
from gateway.fhir.offload import Offload
from gateway.settings import ClientsConfig, Settings
from gateway.store import Store


@dataclass(frozen=True)
class Edge:
    """The store, the limits, each tenant's validation policy, and the threads large bodies are worked on in."""

    store: Store
    settings: Settings
    clients: ClientsConfig
    offload: Offload = field(default_factory=Offload, compare=False)

    @cached_property
    def writes(self) -> WritesInFlight:
        """This process's FHIR writes in flight, bounded by the settings (one counter for the edge's life)."""
        return WritesInFlight(self.settings.max_writes_in_flight)

    def policy(self, tenant: str) -> str:
        """Return the tenant's validation policy: ``strict`` or ``lenient``."""
        return self.clients.tenant(tenant).validation

    def dedupe(self, tenant: str) -> bool:
        """Tell whether the tenant's identical plain POSTs within the dedupe window answer with the first one."""
        return self.clients.tenant(tenant).dedupe_posts
