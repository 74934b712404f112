"""What a batch of jobs finds before it decides: each resource's record, the versions to map, who reads it.

One script reads it all for a tenant's batch, in one round trip and one reply (a pipeline of three commands per
resource cost the worker a reply to parse, and an asyncio timeout, per command). Every key it names is in the
tenant's hash slot, so it runs unchanged on a Redis Cluster. The reads decide nothing: the batch's commit still
checks each record's ``rev``, so a record changed meanwhile makes the batch decide again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from redis.asyncio import Redis

from gateway.store import text
from gateway.store.connection import Script
from gateway.store.keys import Keyspace
from mappers.model import Record

# For resource i: KEYS[3i-2] its record, KEYS[3i-1] its version history, KEYS[3i] the set of records that read it;
# ARGV[2i-1] the newest version its jobs name (refreshes aside), ARGV[2i] "1" when one of its jobs is a refresh.
# Reply, per resource: {vid, rev, json, first version read, {versions (false: not stored)}, {dependents}}.
_READ = """
local out = {}
for i = 1, #KEYS / 3 do
  local held = redis.call("HMGET", KEYS[3 * i - 2], "vid", "rev", "json")
  local vid = tonumber(held[1]) or 0
  local newest = tonumber(ARGV[2 * i - 1])
  local first, last = vid + 1, newest
  if newest <= vid then
    -- nothing new: a refresh maps the version the record holds again (something it read changed)
    if ARGV[2 * i] == "1" and vid > 0 then first, last = vid, vid else first, last = 0, -1 end
  end
  local versions = {}
  for v = first, last do
    versions[#versions + 1] = redis.call("HGET", KEYS[3 * i - 1], tostring(v))
  end
  out[i] = {held[1], held[2], held[3], first, versions, redis.call("SMEMBERS", KEYS[3 * i])}
end
return out
"""


@dataclass
class Held:
    """A record (or an aggregate) as the batch found it, and as the batch has changed it so far."""

    key: str
    rev: int
    vid: int
    raw: bytes | None
    model: type[Record]
    current: Record | None = None
    parsed: bool = False
    changed: bool = False

    def record(self) -> Record | None:
        if not self.parsed:
            self.current = self.model.model_validate_json(self.raw) if self.raw else None
            self.parsed = True
        return self.current


@dataclass(slots=True)  # not frozen: a frozen dataclass sets each field through object.__setattr__
class Wanted:
    """One mapped resource a batch's jobs name: its record and what its jobs ask for."""

    tenant: str
    rtype: str
    rid: str
    record_key: str
    model: type[Record]
    newest: int  # the newest version its non-refresh jobs name (0: none)
    refresh: bool  # one of its jobs asks to map the held version again


@dataclass
class Found:
    """What the read found for one resource."""

    held: Held
    versions: list[tuple[int, bytes | None]] = field(default_factory=list)  # (version, stored JSON; b"": deleted)
    dependents: set[str] = field(default_factory=set)  # "Type/id" of the records that read the resource


class HeldReader:
    """Read, for one tenant's batch at a time, what its resources' jobs need."""

    def __init__(self, redis: Redis, keys: Keyspace) -> None:
        self._keys = keys
        self._script = Script(redis, _READ)

    async def read(self, tenant: str, wanted: Sequence[Wanted]) -> list[Found]:
        """Return what each of ``wanted`` (all of ``tenant``) finds, in order."""
        if not wanted:
            return []
        k = self._keys
        keys: list[str] = []
        args: list[int | str] = []
        for w in wanted:
            keys += [w.record_key, k.history(tenant, w.rtype, w.rid), k.dependents(tenant, f"{w.rtype}/{w.rid}")]
            args += [w.newest, "1" if w.refresh else "0"]
        reply = await self._script(keys=keys, args=args)
        found = []
        for w, (vid, rev, raw, first, versions, dependents) in zip(wanted, reply, strict=True):
            held = Held(w.record_key, int(rev or 0), int(vid or 0), raw, w.model)
            numbered = [(int(first) + i, v) for i, v in enumerate(versions)]
            found.append(Found(held, numbered, {text(m) for m in dependents}))
        return found
