"""The retry policy, in one place: which requests may be repeated, on what, how long to wait, when to give up.

Built from small tenacity strategies:

- **what**: transport errors (connect, read, reset, a timed-out attempt) and the statuses 408, 429, 500, 502, 503,
  504, and only for idempotent requests: GET, PUT with ``If-Match``, POST with ``If-None-Exist``. A plain POST is
  never repeated (the EHR may have acted on it).
- **wait**: the EHR's ``Retry-After`` (seconds or an HTTP date) when it sent one, else ``backoff``: exponential,
  capped, with equal jitter.
- **stop**: after ``max_attempts``; before a wait longer than ``backoff_max_seconds`` (a long ``Retry-After`` is
  honoured by the caller's queue instead, not by holding a connection slot); before the total passes
  ``max_retry_seconds``.

``sleep`` is injectable, so tests never wait.

``backoff`` and ``parse_retry_after`` are the project's only backoff and only ``Retry-After`` parser: the
gateway's work queues and webhook deliveries use them too.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    retry_never,
    stop_after_attempt,
)
from tenacity.stop import stop_base
from tenacity.wait import wait_base

from connectors.errors import retryable

RETRY_STATUSES = frozenset({408, 429, 500, 502, 503, 504})

Sleep = Callable[[float], Awaitable[None]]


def is_idempotent(method: str, headers: Mapping[str, str]) -> bool:
    """Tell whether repeating the request cannot do twice what it asks for."""
    method = method.upper()
    lowered = {k.lower() for k in headers}
    if method in ("GET", "HEAD", "OPTIONS"):
        return True
    if method == "PUT":
        return "if-match" in lowered
    if method == "POST":
        return "if-none-exist" in lowered
    return False


def parse_retry_after(value: str | None, now: float) -> float | None:
    """Return the seconds a ``Retry-After`` value asks for (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return max(when.timestamp() - now, 0.0)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class backoff(wait_base):
    """Exponential from ``base`` (doubling per attempt), capped at ``cap``, with equal jitter.

    After failed attempt ``n`` the wait is uniformly random in ``[c/2, c]`` where ``c = min(cap, base * 2**n)``
    (the first wait is ``base`` to ``2 * base``): half the delay is guaranteed, so the EHR or receiver gets its
    breather, and half is spread, so that retries of many jobs that failed together do not arrive together again.
    """

    def __init__(self, base: float, cap: float, *, uniform: Callable[[float, float], float] = random.uniform) -> None:
        self.base = base
        self.cap = cap
        self._uniform = uniform

    def delay(self, attempt: int) -> float:
        """Return the wait after failed attempt number ``attempt`` (1 for the first failure)."""
        ceiling = min(self.cap, self.base * 2 ** max(attempt, 1))
        return self._uniform(ceiling / 2, ceiling)

    def __call__(self, retry_state: RetryCallState) -> float:
        return self.delay(retry_state.attempt_number)


class wait_retry_after(wait_base):
    """Wait what the failed attempt's ``retry_after`` asks for, else what ``fallback`` says."""

    def __init__(self, fallback: wait_base) -> None:
        self.fallback = fallback

    def __call__(self, retry_state: RetryCallState) -> float:
        exc = retry_state.outcome.exception() if retry_state.outcome else None
        asked = getattr(exc, "retry_after", None)
        if isinstance(asked, int | float):
            return float(asked)
        return self.fallback(retry_state)


class stop_if_wait_exceeds(stop_base):
    """Stop rather than wait longer than ``limit`` seconds before the next attempt."""

    def __init__(self, limit: float) -> None:
        self.limit = limit

    def __call__(self, retry_state: RetryCallState) -> bool:
        return retry_state.upcoming_sleep > self.limit


class stop_before_budget(stop_base):
    """Stop when the next attempt would start after ``budget`` seconds from the first."""

    def __init__(self, budget: float) -> None:
        self.budget = budget

    def __call__(self, retry_state: RetryCallState) -> bool:
        # Time spent is what the clock says, or what was slept when sleep is a test's stand-in.
        spent = max(retry_state.seconds_since_start or 0.0, retry_state.idle_for)
        return spent + retry_state.upcoming_sleep > self.budget


class stop_when_set(stop_base):
    """Stop once ``event`` is set (the process is stopping: the work goes back to its durable queue instead)."""

    def __init__(self, event: asyncio.Event) -> None:
        self.event = event

    def __call__(self, retry_state: RetryCallState) -> bool:
        return self.event.is_set()


class Halted(Exception):
    """A wait between attempts ended because the process is stopping: no attempt follows. Its ``__cause__`` is the
    error of the attempt before the wait, which the caller raises instead (``halted_error``)."""


class _Halting:
    """The ``before_sleep`` and ``sleep`` of a request whose waits end when ``event`` is set. tenacity makes the
    next attempt whenever its sleep returns, so ending a wait is raising; the error to raise is noted before it."""

    def __init__(self, event: asyncio.Event, before_sleep: Callable[[RetryCallState], Awaitable[None]] | None) -> None:
        self.event = event
        self._before_sleep = before_sleep
        self._error: BaseException | None = None

    async def before_sleep(self, retry_state: RetryCallState) -> None:
        outcome = retry_state.outcome
        self._error = outcome.exception() if outcome is not None and outcome.failed else None
        if self._before_sleep is not None:
            await self._before_sleep(retry_state)

    async def sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.event.wait(), timeout=seconds)
        if self.event.is_set():
            raise Halted("stopping") from self._error


def halted_error(halted: Halted) -> BaseException:
    """Return what a request ended by ``Halted`` raises: the error of its last attempt."""
    return halted.__cause__ or halted


@dataclass(frozen=True)
class RetryPolicy:
    """How one EHR's requests are retried."""

    max_attempts: int = 4
    max_seconds: float = 60.0
    backoff_base: float = 0.5
    backoff_max: float = 20.0
    sleep: Sleep | None = None

    def retrying(
        self,
        *,
        idempotent: bool,
        before_sleep: Callable[[RetryCallState], Awaitable[None]] | None = None,
        halt: asyncio.Event | None = None,
    ) -> AsyncRetrying:
        """Return the tenacity controller for one request; once ``halt`` is set, a wait between attempts ends and
        no further attempt is made (the last error is raised)."""
        options: dict[str, object] = {}
        if self.sleep is not None:  # a test's stand-in: used as it is
            options["sleep"] = self.sleep
        elif halt is not None:
            halting = _Halting(halt, before_sleep)
            options["sleep"], before_sleep = halting.sleep, halting.before_sleep
        stop = stop_after_attempt(self.max_attempts) | stop_if_wait_exceeds(self.backoff_max)
        stop = stop | stop_before_budget(self.max_seconds)
        return AsyncRetrying(
            retry=retry_if_exception(retryable) if idempotent else retry_never,
            wait=wait_retry_after(backoff(self.backoff_base, self.backoff_max)),
            stop=stop | stop_when_set(halt) if halt is not None else stop,
            before_sleep=before_sleep,
            reraise=True,
            **options,  # type: ignore[arg-type]
        )
