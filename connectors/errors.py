"""The connectors' exceptions: httpx errors and EHR answers are translated into these once, at the client boundary.

ConnectorError
 ├── ConfigError                 the EHR block cannot be used (a key that does not load, a rule the vendor needs)
 ├── UnsafeURL                   a URL off the registered base or token URL (a ``next`` link elsewhere, a redirect)
 ├── LeaseLost                   another poller replica holds the tenant now; stop without moving its cursor
 ├── CircuitOpen                 the EHR's breaker refuses calls for now (retry later)
 ├── TransportError              no HTTP answer: connect, read or write failed, the connection was reset
 │    └── Timeout                 an attempt took longer than the EHR's ``timeout_seconds``
 └── EHRError                    the EHR answered with a status that is not a success
      ├── AuthError               the token endpoint refused us, or a 401 persisted after one refresh
      ├── TransientStatus         408, 429, 500, 502, 503, 504: worth another try later (``retry_after`` when given)
      ├── Rejected                another 4xx: the EHR refused the request; ``issues`` holds its OperationOutcome
      │    └── PreconditionFailed  412: a stale ``If-Match``, or several matches for ``If-None-Exist``
      ├── UnexpectedRedirect      a 3xx: redirects are never followed
      └── ServerError             another 5xx (501, 505...): not transient, not retried

``retryable(exc)`` says whether an error may succeed on a later attempt; the retry policy retries those only for
idempotent requests, and the write-back queue schedules them again.
"""

from __future__ import annotations

from typing import Any


class ConnectorError(Exception):
    """Base of every error a connector raises."""

    kind = "error"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ConfigError(ConnectorError):
    kind = "config"


class UnsafeURL(ConnectorError):
    kind = "unsafe-url"


class LeaseLost(ConnectorError):
    kind = "lease-lost"


class CircuitOpen(ConnectorError):
    kind = "circuit-open"

    def __init__(self, message: str, *, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class TransportError(ConnectorError):
    kind = "transport"


class Timeout(TransportError):
    kind = "timeout"


class EHRError(ConnectorError):
    """The EHR answered ``status``; ``outcome`` is its OperationOutcome when it sent one."""

    kind = "status"

    def __init__(
        self,
        message: str,
        *,
        status: int,
        outcome: dict[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.outcome = outcome
        self.retry_after = retry_after

    @property
    def issues(self) -> list[dict[str, Any]]:
        """Return the issues of the EHR's OperationOutcome (empty when it sent none)."""
        issues = (self.outcome or {}).get("issue")
        return [i for i in issues if isinstance(i, dict)] if isinstance(issues, list) else []


class AuthError(EHRError):
    kind = "auth"


class TransientStatus(EHRError):
    kind = "transient"


class Rejected(EHRError):
    kind = "rejected"


class PreconditionFailed(Rejected):
    kind = "precondition"


class UnexpectedRedirect(EHRError):
    kind = "redirect"


class ServerError(EHRError):
    kind = "server"


def retryable(exc: BaseException) -> bool:
    """Tell whether ``exc`` may succeed if the same request is tried again later."""
    return isinstance(exc, TransportError | TransientStatus | CircuitOpen)
