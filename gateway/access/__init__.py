"""Who called and how often: the audit trail of every request, and per-client rate limits.

``trail`` buffers the audit entries of reads and refusals and flushes them in pipelines (writes are audited by the
store's own commit, ``gateway.store.audit``); ``record`` is the ASGI middleware that opens and records each
request's entry; ``auditevent`` turns entries into FHIR R4 AuditEvents; ``ratelimit`` is a token bucket per client
in Redis; ``routes`` serves ``GET /platform/v1/audit``.
"""

from gateway.access.auditevent import audit_event
from gateway.access.ratelimit import RateLimiter
from gateway.access.record import AuditRecorder
from gateway.access.trail import AuditTrail

__all__ = ["AuditRecorder", "AuditTrail", "RateLimiter", "audit_event"]
