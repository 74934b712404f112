"""The store's reads: current versions and versions by number, as stored bytes or parsed, several at once, by
canonical URL, and the backlog check made before a body is read."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from redis.asyncio import Redis

from gateway import encoding
from gateway.errors import Gone, NotFound, Overloaded
from gateway.store import audit, compact
from gateway.store.connection import Script, text
from gateway.store.keys import Keyspace
from gateway.store.operation import Current
from gateway.store.plan import Plan

# The current version's body in one round trip: {0} never existed, {1, vid} deleted, {2, body, vid} (a body "" is
# a deletion), {3, vid} when the version the current state names has no body (never so unless the store was damaged).
_READ_CURRENT = """
local state = redis.call("HMGET", KEYS[1], "vid", "deleted")
if not state[1] then return {0} end
if state[2] == "1" then return {1, state[1]} end
local body = redis.call("HGET", KEYS[2], state[1])
if not body then return {3, state[1]} end
return {2, body, state[1]}
"""


def _body(rtype: str, raw: bytes | str | None) -> bytes:
    """Return a stored version's body, or raise NotFound (no such version) / Gone (a deletion)."""
    if raw is None:
        raise NotFound(f"that {rtype} has no such version", expression=rtype)
    if not raw:
        raise Gone(f"that version of the {rtype} is a deletion", expression=rtype)
    return raw if isinstance(raw, bytes) else raw.encode()


@dataclass
class Seen:
    """The state reads found, for a plan to require it unchanged at its commit (``expect_in``): the worker maps a
    record from the resources it reads, and a resource changed between the read and the commit must make the
    commit conflict (its job may already have looked for the records that read it, before this one was listed)."""

    versions: list[tuple[str, str | None]] = field(default_factory=list)  # current-state key, its vid (None: none)
    members: list[tuple[str, list[str]]] = field(default_factory=list)  # canonical URL index key, its members

    def expect_in(self, plan: Plan) -> None:
        """Add to ``plan`` the checks that what was read is still so."""
        for key, vid in self.versions:
            plan.expect_field(key, "vid", vid)
        for key, members in self.members:
            plan.expect_members(key, members)


class Reads:
    """The read half of ``Store`` (which holds the Redis client, the keyspace and the backlog limit it uses)."""

    _redis: Redis
    _keys: Keyspace
    _max_backlog: int

    async def current(self, tenant: str, rtype: str, rid: str) -> Current | None:
        """Return the current state of a resource, or None if it never existed."""
        return Current.from_hash(await self._redis.hgetall(self._keys.current(tenant, rtype, rid)))

    async def read(self, tenant: str, rtype: str, rid: str, seen: Seen | None = None) -> dict[str, Any]:
        """Return the current version, or raise NotFound / Gone; note in ``seen`` the version read."""
        result: dict[str, Any] = encoding.loads(await self._current_body(tenant, rtype, rid, seen))
        audit.note_read(result)
        return result

    async def read_json(self, tenant: str, rtype: str, rid: str) -> bytes:
        """Return the current version's JSON as stored, or raise NotFound / Gone (``compact`` reads its meta)."""
        raw = await self._current_body(tenant, rtype, rid)
        compact.note_read(raw)
        return raw

    async def vread(self, tenant: str, rtype: str, rid: str, vid: int) -> dict[str, Any]:
        """Return one version, or raise NotFound / Gone."""
        result: dict[str, Any] = encoding.loads(await self._version(tenant, rtype, rid, vid))
        audit.note_read(result)
        return result

    async def vread_json(self, tenant: str, rtype: str, rid: str, vid: int) -> bytes:
        """Return one version's JSON as stored, or raise NotFound / Gone."""
        raw = await self._version(tenant, rtype, rid, vid)
        compact.note_read(raw)
        return raw

    async def _current_body(self, tenant: str, rtype: str, rid: str, seen: Seen | None = None) -> bytes:
        """Return the current version's body, or raise NotFound / Gone: in one round trip (``_READ_CURRENT``)."""
        keys = [self._keys.current(tenant, rtype, rid), self._keys.history(tenant, rtype, rid)]
        reply = await self._read_current(keys=keys)
        state = int(reply[0])
        if seen is not None:
            seen.versions.append((keys[0], text(reply[-1]) if state else None))
        if state == 0:
            raise NotFound(f"no {rtype} has that id", expression=rtype)
        if state == 1:
            raise Gone(f"that {rtype} was deleted", expression=rtype)
        return _body(rtype, reply[1] if state == 2 else None)

    async def _version(self, tenant: str, rtype: str, rid: str, vid: int) -> bytes:
        return _body(rtype, await self._redis.hget(self._keys.history(tenant, rtype, rid), str(vid)))

    @cached_property
    def _read_current(self) -> Script:
        return Script(self._redis, _READ_CURRENT)

    async def issues(self, tenant: str, rtype: str, rid: str, vid: int) -> dict[str, Any] | None:
        """Return the OperationOutcome a version was accepted with under a lenient policy, or None."""
        raw = await self._redis.hget(self._keys.issues(tenant, rtype, rid), str(vid))
        return encoding.loads(raw) if raw else None

    async def by_canonical(self, tenant: str, rtype: str, url: str, seen: Seen | None = None) -> list[dict[str, Any]]:
        """Return the live resources whose canonical URL is ``url`` (``url|version``, or failing that ``url``); note
        in ``seen`` the index members and versions read."""
        for candidate in dict.fromkeys([url, url.partition("|")[0]]):
            key = self._keys.url_index(tenant, rtype, candidate)
            ids = sorted(text(m) for m in await self._redis.smembers(key))
            if seen is not None:
                seen.members.append((key, ids))
            if found := await self.read_many(tenant, rtype, ids, seen):
                return found
        return []

    async def read_many(
        self, tenant: str, rtype: str, ids: Sequence[str], seen: Seen | None = None
    ) -> list[dict[str, Any]]:
        """Return the current versions of ``ids`` that exist and are not deleted, in order."""
        return [encoding.loads(raw) for _, raw in await self.read_many_json(tenant, rtype, ids, seen)]

    async def read_many_json(
        self, tenant: str, rtype: str, ids: Sequence[str], seen: Seen | None = None
    ) -> list[tuple[str, bytes]]:
        """Return the id and stored JSON of the current versions of ``ids`` that exist and are not deleted, in order;
        note in ``seen`` the versions read."""
        pipe = self._redis.pipeline(transaction=False)
        for rid in ids:
            pipe.hmget(self._keys.current(tenant, rtype, rid), ["vid", "deleted"])
        states = await pipe.execute()
        if seen is not None:
            seen.versions += [
                (self._keys.current(tenant, rtype, rid), text(vid) if vid is not None else None)
                for rid, (vid, _) in zip(ids, states, strict=True)
            ]
        pipe = self._redis.pipeline(transaction=False)
        wanted = []
        for rid, (vid, deleted) in zip(ids, states, strict=True):
            if vid is not None and deleted != b"1":
                pipe.hget(self._keys.history(tenant, rtype, rid), vid)
                wanted.append(rid)
        bodies = await pipe.execute()
        return [(rid, bytes(b)) for rid, b in zip(wanted, bodies, strict=True) if b]

    async def check_backlog(self, tenant: str) -> None:
        """Refuse (503) work for a tenant whose queue is past its limit, before its body is read and parsed."""
        pipe = self._redis.pipeline(transaction=False)
        pipe.xlen(self._keys.inbound(tenant))
        pipe.zcard(self._keys.retry(tenant))
        waiting = sum(int(n) for n in await pipe.execute())
        if waiting >= self._max_backlog:
            raise Overloaded(f"the gateway has {waiting} jobs waiting; retry later", retry_after=5)
