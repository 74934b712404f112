"""How many FHIR writes one API process works on at once: past the limit, a write is refused before its body is read.

A burst of pushes (a clinic's EHR catching up after an outage, every feed of a health system retried at once) would
otherwise all be taken in: each request's body parsed into objects and its Bundle decided, hundreds at a time, while
answers slow for every one of them. The heap grows with them and the collector's passes over it lengthen (a full
pass took 266 ms with about 450 Bundles in flight, bench/README.md, "Fourteenth round"), so the process gets slower
the more it holds, and clients time out and send again what it is still working on.

``GATEWAY_MAX_WRITES_IN_FLIGHT`` bounds that: a FHIR request that may change data or carries a body to parse (POST,
PUT, PATCH, DELETE under the FHIR base: Bundles, creates, updates, patches, deletes, and also searches by POST and
``$validate``) is taken only while fewer than the limit are being worked on in this process. Past it, the answer is
503 with ``Retry-After`` and an OperationOutcome, before the body is read, so a shed request costs little. Nothing
it sent was taken, so nothing is lost: the client sends it again later, as it does for the backlog limit. Reads
(GET) are never refused here, nor health checks and the platform's API.
"""

from __future__ import annotations

from starlette.types import Scope

from gateway.errors import Overloaded
from gateway.metrics import WRITES_SHED

_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
RETRY_AFTER = 2  # seconds: as the large-body limit asks (gateway.fhir.offload); a shed write was not read at all


class WritesInFlight:
    """Count this process's FHIR writes in flight and refuse one past ``limit`` (0: no limit)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.now = 0  # writes being worked on

    def counts(self, scope: Scope) -> bool:
        """Tell whether a request is one this limit counts."""
        return self.limit > 0 and scope.get("method") in _WRITES

    def enter(self) -> None:
        """Take a place, or raise Overloaded (503 with Retry-After) when every place is taken."""
        if self.now >= self.limit:
            WRITES_SHED.inc()
            raise Overloaded(
                f"this gateway process is working on {self.limit} writes already; retry later", retry_after=RETRY_AFTER
            )
        self.now += 1

    def leave(self) -> None:
        """Give a place back (once per ``enter`` that did not raise)."""
        self.now -= 1
