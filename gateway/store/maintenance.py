"""The store's maintenance half: moving a resource's index entries from one version to the next, and rebuilding
every index of a tenant's data (``fhir-gateway reindex``) from its stored versions.

``Store`` takes ``Maintenance`` as it takes ``Reads``; its writes move indexes with ``versions.move_index`` too.
"""

from __future__ import annotations

import json

from redis.asyncio import Redis

from gateway.clock import epoch_of
from gateway.store.committer import Committer
from gateway.store.connection import text
from gateway.store.format import StoreFormat
from gateway.store.indexing import index_entries
from gateway.store.keys import Keyspace
from gateway.store.operation import Current
from gateway.store.plan import Plan, PlanConflict
from gateway.store.versions import index_field, move_index


class Maintenance:
    """The index rebuild of ``Store`` (which holds the Redis client, the keyspace and the committer it uses)."""

    _redis: Redis
    _keys: Keyspace
    _committer: Committer
    format: StoreFormat

    async def reindex(self, tenant: str) -> tuple[int, int]:
        """Write every stored resource of ``tenant`` into the indexes this version of the gateway keeps.

        For data stored by an older version (whose identifier and patient keys had another form, and which kept
        no reference, token, date or string indexes, nor version indexes): each resource's current version is
        indexed again in one atomic step that holds only while the resource is unchanged (a concurrent write
        indexes it anyway). Return (resources reindexed, resources that changed meanwhile and were left as their
        new write indexed them).
        """
        done = changed = 0
        await self.format.refresh()  # every resource in the form in force now
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
        new_index = index_entries(k, tenant, json.loads(stored)) if stored and not cur.deleted else []
        move_index(plan, rid, cur.index, new_index)
        if not cur.deleted:
            plan.write("ZADD", k.ids_index(tenant, rtype), 0, rid)
        for vid, body in versions.items():
            meta = json.loads(body).get("meta", {}) if body else {}
            when = epoch_of(meta.get("lastUpdated")) or epoch_of(cur.last_updated) or 0.0
            plan.write("ZADD", k.type_versions(tenant, rtype), int(when * 1000), f"{rid}/{vid}")
            plan.write("ZADD", k.all_versions(tenant), int(when * 1000), f"{rtype}/{rid}/{vid}")
        idx = index_field(k.index_root(tenant, rtype), new_index, self.format.packed_index)
        plan.write("HSET", k.current(tenant, rtype, rid), "idx", idx)
        try:
            await self._committer.commit(plan)
        except PlanConflict:
            return False
        return True
