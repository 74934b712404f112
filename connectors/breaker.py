"""A circuit breaker per EHR: stop calling an EHR that keeps failing, and probe it now and then.

closed ──(``failures`` consecutive failures)──► open ──(``reset_seconds`` later)──► half-open
  ▲                                              ▲                                     │ one probe call
  └──────────────────── probe succeeded ─────────┴──────────── probe failed ───────────┘

A failure is an attempt that got no answer or a server error (5xx, 408); a 4xx or a 429 is an answer and does not
count, so a rate-limited EHR is slowed down by ``Retry-After``, not cut off.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from connectors.errors import CircuitOpen

CLOSED, OPEN, HALF_OPEN = "closed", "open", "half_open"


class CircuitBreaker:
    """Count consecutive failures of one EHR; refuse calls while open."""

    def __init__(self, failures: int, reset_seconds: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._threshold = failures
        self._reset = reset_seconds
        self._clock = clock
        self._failures = 0
        self._opened_at = 0.0
        self._probing = False
        self.state = CLOSED

    def before_call(self) -> str | None:
        """Let a call through or raise CircuitOpen; return the new state when this call changed it."""
        if self.state == CLOSED:
            return None
        waited = self._clock() - self._opened_at
        if self.state == OPEN and waited >= self._reset:
            self.state = HALF_OPEN
            self._probing = True
            return HALF_OPEN
        if self.state == HALF_OPEN and not self._probing:
            self._probing = True
            return None
        raise CircuitOpen(
            f"the circuit is {self.state.replace('_', '-')} after {self._failures} failures",
            retry_after=max(self._reset - waited, 0.0) if self.state == OPEN else self._reset,
        )

    def success(self) -> str | None:
        """Record an answer; return the new state when it closed the circuit."""
        changed = self.state != CLOSED
        self.state, self._failures, self._probing = CLOSED, 0, False
        return CLOSED if changed else None

    def failure(self) -> str | None:
        """Record a failure; return the new state when it opened the circuit."""
        self._failures += 1
        self._probing = False
        if self.state == HALF_OPEN or (self.state == CLOSED and self._failures >= self._threshold):
            self.state = OPEN
            self._opened_at = self._clock()
            return OPEN
        return None

    def release(self) -> None:
        """Forget a probe that ended neither way (cancelled, or refused before it was sent)."""
        self._probing = False
