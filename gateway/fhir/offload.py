"""Heavy request work (parsing and validating a large body) off the event loop, a bounded number at once.

A body of ``THRESHOLD`` bytes or more is parsed and validated in a worker thread, at most ``WORKERS`` at a time,
so the event loop keeps answering every other request (health checks, small writes, other tenants) while it is
processed. At most ``WAITING`` more large bodies wait for a worker; past that a large body is refused with 503 and
``Retry-After`` before it is parsed (load shed, not queued without bound). Smaller bodies are handled inline: they
cost less than the hand-off.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TypeVar

from gateway.errors import Overloaded

T = TypeVar("T")
THRESHOLD = 256 * 1024
WORKERS = 2
WAITING = 8


class Offload:
    """Run functions of large bodies in threads, ``workers`` at once and ``waiting`` more queued."""

    def __init__(self, threshold: int = THRESHOLD, workers: int = WORKERS, waiting: int = WAITING) -> None:
        self.threshold = threshold
        self.workers = workers
        self.waiting = waiting
        self.running = 0  # large bodies being worked on now, or waiting for a worker
        self._slots: asyncio.Semaphore | None = None

    def large(self, size: int) -> bool:
        """Tell whether a body of ``size`` bytes is worked on off the event loop."""
        return size >= self.threshold

    def admit(self) -> None:
        """Refuse (503) another large body when the workers and the waiting line are full."""
        if self.running >= self.workers + self.waiting:
            raise Overloaded("too many large bodies are being processed; retry later", retry_after=2)

    async def run(self, size: int, fn: Callable[[], T]) -> T:
        """Return ``fn()``: inline for a small body, in a worker thread for a large one."""
        if not self.large(size):
            return fn()
        self.admit()
        if self._slots is None:
            self._slots = asyncio.Semaphore(self.workers)
        self.running += 1
        try:
            async with self._slots:
                return await asyncio.to_thread(fn)
        finally:
            self.running -= 1
