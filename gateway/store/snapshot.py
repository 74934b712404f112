"""Read many keys of one tenant in one round trip: one script call, one reply parsed in C.

A pipeline of N reads costs N replies, each parsed and each awaited under its own timeout by redis-py; the store
reads a whole Bundle's state (a hundred hashes and flags) before deciding it, so it asks once. Every key is
declared, and a tenant's keys share a cluster slot, so this runs unchanged on a Redis Cluster.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from redis.asyncio import Redis

from gateway.store.connection import Script

Read = tuple[Literal["hgetall", "exists", "get"], str]

_SCRIPT = """
local out = {}
for i = 1, #KEYS do
  local op = ARGV[i]
  if op == "h" then
    out[i] = redis.call("HGETALL", KEYS[i])
  elseif op == "e" then
    out[i] = redis.call("EXISTS", KEYS[i])
  else
    out[i] = redis.call("GET", KEYS[i])
  end
end
return out
"""
_OPS = {"hgetall": "h", "exists": "e", "get": "g"}


class Snapshot:
    """Read hashes (as dicts), existence flags (as bools) and strings (bytes, or None) in one call."""

    def __init__(self, redis: Redis) -> None:
        self._script = Script(redis, _SCRIPT)

    async def read(self, reads: Sequence[Read]) -> list[Any]:
        """Return one answer per read, in order."""
        if not reads:
            return []
        replies = await self._script(keys=[key for _, key in reads], args=[_OPS[op] for op, _ in reads])
        out: list[Any] = []
        for (op, _), reply in zip(reads, replies, strict=True):
            if op == "hgetall":
                out.append(dict(zip(reply[::2], reply[1::2], strict=True)))
            elif op == "exists":
                out.append(bool(reply))
            else:
                out.append(reply or None)
        return out
