"""The store's format: which form of its data the gateway's processes write, set by an operator.

A version of the gateway that brings a smaller or faster form of stored data reads it before any version writes it.
Writing it starts only when an operator says that every process reads it (``fhir-gateway store-format --set N``,
after a rollout), so that in a rolling upgrade, or an upgrade straight from an older version, no process meets data
it cannot read. The format is one number under ``{prefix}:store-format``; none means 1.

- **1**: a resource's current state keeps its index entries (``idx``) as ``[kind, key, member]`` lists.
- **2**: ``idx`` is packed under the root its type's index keys share (``indexing.pack_index``): about half the
  bytes, so a resource's current state and indexes take 10% less memory and each accepted resource 14% fewer
  append-only-file bytes, for a few us more CPU per version written (bench/README.md, "Seventeenth round"). Read
  since 12d42f2.

Each process reads the number when it first writes and again at most every ``REFRESH_SECONDS`` on its next write,
so a change reaches every process within that time. Writing an older form than the one set is always safe (every
version that reads a form reads the ones before it); ``fhir-gateway reindex`` rewrites every resource in the form in
force.
"""

from __future__ import annotations

import logging

from redis.asyncio import Redis

from gateway.clock import Clock, system_clock
from gateway.store.connection import text

log = logging.getLogger(__name__)

FORMATS = {
    1: "index entries as [kind, key, member] lists",
    2: "index entries packed under their type's key root",
}
LATEST = max(FORMATS)
REFRESH_SECONDS = 10.0


def parse(raw: bytes | str | None) -> int:
    """Return the format a stored value names: 1 when none is set, this version's latest for a later one."""
    if raw is None:
        return 1
    value = text(raw)
    if not (value.isascii() and value.isdigit()) or int(value) < 1:  # "²" is a digit int() refuses
        log.warning("unknown store format; writing format 1", extra={"store_format": value[:20]})
        return 1
    return min(int(value), LATEST)


class StoreFormat:
    """The format this process writes, read from Redis on first use and again at most every ``REFRESH_SECONDS``."""

    def __init__(self, redis: Redis, key: str, *, clock: Clock = system_clock) -> None:
        self._redis = redis
        self._key = key
        self._clock = clock
        self._due = 0.0
        self.number = 1

    @property
    def packed_index(self) -> bool:
        return self.number >= 2

    async def current(self) -> int:
        """Return the format to write now, reading it again when the last read is ``REFRESH_SECONDS`` old."""
        if self._clock() >= self._due:
            await self.refresh()
        return self.number

    async def refresh(self) -> int:
        """Read the format now."""
        self._due = self._clock() + REFRESH_SECONDS  # concurrent writes meanwhile keep the number read before
        try:
            self.number = parse(await self._redis.get(self._key))
        except BaseException:
            self._due = 0.0  # the next write reads it again
            raise
        return self.number


async def read_format(redis: Redis, key: str) -> tuple[str | None, int]:
    """Return the format as set (None when none is) and the one this version writes for it."""
    raw = await redis.get(key)
    return (None if raw is None else text(raw)), parse(raw)


async def set_format(redis: Redis, key: str, number: int) -> None:
    """Set the format every process writes from its next read on."""
    if number not in FORMATS:
        raise ValueError(f"store format {number} is not one this version knows ({', '.join(map(str, FORMATS))})")
    await redis.set(key, str(number))
