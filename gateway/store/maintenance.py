"""The store's maintenance half: moving a resource's index entries from one version to the next, and rebuilding
every index of a tenant's data (``fhir-gateway reindex``) from its stored versions.

``Store`` takes ``Maintenance`` as it takes ``Reads``; its writes move indexes with ``move_index`` too.
"""

from __future__ import annotations

import json

from redis.asyncio import Redis

from gateway.clock import epoch_of
from gateway.store.connection import text
from gateway.store.indexing import compact_entries, decode_index, encode_index
from gateway.store.keys import Keyspace
from gateway.store.operation import Current
from gateway.store.plan import Committer, Plan, PlanConflict


def move_index(plan: Plan, prefix: str, rid: str, old: list[str], new: list[str]) -> None:
    """Move the resource from the index entries of its last version to those of this one (compact entries, keys
    relative to ``prefix``, the type's index prefix: ``indexing.compact_entries``)."""
    if old == new:
        return  # nothing moves: an update that changed no indexed value
    if old:
        gone = set(old).difference(new)
        if gone:
            kept_scores = {entry[: entry.index(" ")] for entry in new if entry[0] == "z"}  # "zdate:date:lo"
            for entry in gone:
                kind = entry[0]
                if kind == "z":
                    head = entry[: entry.index(" ")]
                    if head not in kept_scores:  # else the ZADD below moves the score
                        plan.write("ZREM", prefix + head[1:], rid)
                elif kind == "l":
                    key, _, member = entry[1:].partition(" ")
                    plan.write("ZREM", prefix + key, member)
                elif kind == "!":  # an old form's entry the compact form cannot hold (none is written): full key
                    kind, key, member = json.loads(entry[1:])
                    plan.write("SREM" if kind == "s" else "ZREM", key, member if kind == "l" else rid)
                else:
                    plan.write("SREM", prefix + entry, rid)
        new = sorted(set(new).difference(old))
    for entry in new:  # compact_entries lists them sorted and once each
        kind = entry[0]
        if kind == "z":
            key, _, member = entry[1:].partition(" ")
            plan.add("ZADD", prefix + key, member, rid)
        elif kind == "l":
            key, _, member = entry[1:].partition(" ")
            plan.add("ZADD", prefix + key, 0, member)
        else:
            plan.add("SADD", prefix + entry, rid)


class Maintenance:
    """The index rebuild of ``Store`` (which holds the Redis client, the keyspace and the committer it uses)."""

    _redis: Redis
    _keys: Keyspace
    _committer: Committer
    compact_index: bool

    async def reindex(self, tenant: str) -> tuple[int, int]:
        """Write every stored resource of ``tenant`` into the indexes this version of the gateway keeps.

        For data stored by an older version (whose identifier and patient keys had another form, and which kept
        no reference, token, date or string indexes, nor version indexes): each resource's current version is
        indexed again in one atomic step that holds only while the resource is unchanged (a concurrent write
        indexes it anyway). Return (resources reindexed, resources that changed meanwhile and were left as their
        new write indexed them).
        """
        done = changed = 0
        async for key in self._redis.scan_iter(match=self._keys.current(tenant, "*", "*"), count=500):
            _, rtype, rid = text(key).rsplit(":", 2)
            if await self._reindex_one(tenant, rtype, rid):
                done += 1
            else:
                changed += 1
        return done, changed

    async def _reindex_one(self, tenant: str, rtype: str, rid: str) -> bool:
        k = self._keys
        cur = Current.from_hash(await self._redis.hgetall(k.current(tenant, rtype, rid)))
        if cur is None:
            return False
        versions = {text(v): body for v, body in (await self._redis.hgetall(k.history(tenant, rtype, rid))).items()}
        plan = Plan()
        plan.expect_field(k.current(tenant, rtype, rid), "vid", str(cur.vid))
        stored = versions.get(str(cur.vid))
        new_index = compact_entries(json.loads(stored)) if stored and not cur.deleted else []
        prefix = k.index_prefix(tenant, rtype)
        move_index(plan, prefix, rid, decode_index(cur.index, prefix), new_index)
        if not cur.deleted:
            plan.write("ZADD", k.ids_index(tenant, rtype), 0, rid)
        for vid, body in versions.items():
            meta = json.loads(body).get("meta", {}) if body else {}
            when = epoch_of(meta.get("lastUpdated")) or epoch_of(cur.last_updated) or 0.0
            plan.write("ZADD", k.type_versions(tenant, rtype), int(when * 1000), f"{rid}/{vid}")
            plan.write("ZADD", k.all_versions(tenant), int(when * 1000), f"{rtype}/{rid}/{vid}")
        plan.write(
            "HSET", k.current(tenant, rtype, rid), "idx", encode_index(new_index, prefix, compact=self.compact_index)
        )
        try:
            await self._committer.commit(plan)
        except PlanConflict:
            return False
        return True
