"""What records read, and who reads what: the links between platform records and the stored resources they are
mapped from besides their own.

A mapping may read other stored resources (a plan's Goals, a response's Questionnaire by canonical URL, a message's
parents and Binary bodies). The worker lists the record as a reader of each (a ``deps`` set per key, written by
the record's commit), and a resource that changes queues a re-mapping (a ``refresh`` job) of every record listed
as its reader. The commit of a record also requires unchanged what its mapping read: a resource changed between
the read and the commit makes the commit conflict and the record mapped again, whichever worker applies the
change (its job may have looked for the readers before this commit listed this one).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from redis.asyncio import Redis

from gateway.errors import NotFound
from gateway.store import Plan, Store, text
from gateway.store.indexing import canonical_urls
from gateway.store.keys import Keyspace, lane
from gateway.store.reads import Seen
from gateway.work.inbound import Job
from mappers.family import canonical_key


class Links:
    """Read what mappings need, and queue the re-mapping of the records that read a changed resource."""

    def __init__(self, redis: Redis, keys: Keyspace, store: Store) -> None:
        self._redis = redis
        self._keys = keys
        self._store = store

    async def unmapped(self, jobs: list[Job]) -> tuple[list[list[str]], set[str]]:
        """Return the keys of an unmapped resource (a Binary body) whose dependent records must be mapped again."""
        job = max(jobs, key=lambda j: j.vid)
        provided = {f"{job.rtype}/{job.rid}"}
        if job.op != "delete":
            try:
                resource = await self._store.vread(job.tenant, job.rtype, job.rid, job.vid)
            except NotFound:
                resource = {}
            provided |= {canonical_key(job.rtype, url) for url in canonical_urls(resource)}
        return [[] for _ in jobs], provided

    async def related(self, tenant: str, needs: list[str], plan: Plan) -> dict[str, Mapping[str, Any]]:
        """Read the stored resources a mapping needs; a key the gateway does not hold is left out.

        ``plan`` requires what was read unchanged at its commit: a resource the EHR changes meanwhile makes the
        commit conflict and the batch map the record again, from the new version. Without it, the new version's
        job could look for the records that read the resource before this commit lists this one, and the record
        would keep showing the old version.
        """
        found: dict[str, Mapping[str, Any]] = {}
        seen = Seen()
        for need in needs:
            rtype, sep, query = need.partition("?url=")
            if sep:
                candidates = await self._store.by_canonical(tenant, rtype, query, seen)
                if candidates:
                    # Several resources may claim one canonical URL: the most recently stored wins.
                    found[need] = max(candidates, key=lambda r: str(r.get("meta", {}).get("lastUpdated", "")))
                continue
            rtype, _, rid = need.partition("/")
            try:
                found[need] = await self._store.read(tenant, rtype, rid, seen)
            except NotFound:
                continue
        seen.expect_in(plan)
        return found

    async def refresh_readers(
        self, provided: list[tuple[str, str, set[str]]], plan: Plan, known: Mapping[tuple[str, str], set[str]]
    ) -> None:
        """Queue a re-mapping of every record that read one of the keys a resource provides.

        ``known`` holds the readers the batch's read already found, by (tenant, ``Type/id``); the other keys (a
        resource's canonical URLs, an unmapped resource) are read here, in one round trip when there are any.
        """
        if not provided:
            return
        missing = sorted({(t, key) for t, _, gives in provided for key in gives if (t, key) not in known})
        readers: Mapping[tuple[str, str], set[str]] = known
        if missing:
            readers = dict(known)
            pipe = self._redis.pipeline(transaction=False)
            for tenant, key in missing:
                pipe.smembers(self._keys.dependents(tenant, key))
            for where, members in zip(missing, await pipe.execute(), strict=True):
                readers[where] = {text(m) for m in members}
        for tenant, source, gives in provided:
            found = [members for key in gives if (members := readers[(tenant, key)])]
            if not found:  # most resources have no readers: nothing to gather
                continue
            dependents = set().union(*found) - {source}
            for dependent in sorted(dependents):
                rtype, _, rid = dependent.partition("/")
                plan.write(
                    "XADD", self._keys.inbound(tenant, lane(rtype)), "*",
                    "type", rtype, "id", rid, "vid", 0, "op", "refresh", "attempt", 0,
                )  # fmt: skip
