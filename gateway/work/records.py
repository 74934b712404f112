"""Apply one inbound job to the platform records: map, classify, index, publish, in one compare-and-set.

A record is a Redis hash ``{vid, rev, json}``: ``vid`` is the FHIR version it came from (an older version never
replaces a newer one), ``rev`` is bumped by every write and is what the compare-and-set checks, so a job that
raced another is decided again from the state it really replaces. The record, its query indexes, its change
events, its aggregate (a message's thread), the re-mapping of records that read this resource, and the job's
acknowledgement are written together by one Lua script, or not at all.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from redis.asyncio import Redis

from gateway.errors import NotFound
from gateway.settings import ClientsConfig
from gateway.store.connection import text
from gateway.store.indexing import canonical_urls
from gateway.store.keys import Keyspace
from gateway.store.plan import Plan
from gateway.store.store import EXT_EHR_LAST_UPDATED, EXT_EHR_VERSION_ID, Store
from gateway.work.inbound import Job
from mappers.context import MapContext
from mappers.family import Family, canonical_key
from mappers.model import Record


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _epoch(instant: str) -> float:
    try:
        return datetime.fromisoformat(instant.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return datetime.now(UTC).timestamp()


def _ehr_meta(meta: Mapping[str, Any]) -> tuple[str | None, str | None]:
    found = {e.get("url"): e for e in meta.get("extension", []) if isinstance(e, dict)}
    return found.get(EXT_EHR_VERSION_ID, {}).get("valueId"), found.get(EXT_EHR_LAST_UPDATED, {}).get("valueInstant")


class RecordWriter:
    """Plan the effect of one job on the platform records."""

    def __init__(self, redis: Redis, keys: Keyspace, store: Store, clients: ClientsConfig) -> None:
        self._redis = redis
        self._keys = keys
        self._store = store
        self._clients = clients

    async def plan(self, job: Job, family: Family[Any], plan: Plan) -> list[str]:
        """Add the job's effect to ``plan``; return the event types it publishes."""
        k, tenant = self._keys, job.tenant
        rec_key = k.record(tenant, family.record_type, job.rid)
        held_vid, held_rev, held_json = await self._redis.hmget(rec_key, ["vid", "rev", "json"])
        vid, rev = int(held_vid or 0), int(held_rev or 0)
        plan.expect_field(rec_key, "rev", str(rev) if rev else None)
        previous: Record | None = family.model.model_validate_json(held_json) if held_json else None

        if job.op == "refresh":
            # Something this record read changed: map the version it holds again.
            if previous is None or previous.deleted:
                return []
            version = vid
        elif job.vid <= vid:
            return []  # a newer version is already applied, or this very one (a redelivery)
        else:
            version = job.vid

        tenant_cfg = self._clients.tenant(tenant)
        provided = [f"{job.rtype}/{job.rid}"]
        needs: list[str] = []
        if job.op == "delete":
            if previous is None or previous.deleted:
                plan.write("HSET", rec_key, "vid", version, "rev", rev + 1)
                return []
            ctx = MapContext(
                tenant=tenant, vendor=tenant_cfg.vendor, timezone=tenant_cfg.timezone,
                version_id=str(version), last_updated=_now(),
            )  # fmt: skip
            record = family.deleted_record(previous, ctx)
        else:
            resource = await self._store.vread(tenant, job.rtype, job.rid, version)
            meta = resource.get("meta", {})
            evid, elu = _ehr_meta(meta)
            needs = family.needs(resource)
            ctx = MapContext(
                tenant=tenant, vendor=tenant_cfg.vendor, timezone=tenant_cfg.timezone,
                version_id=str(version), last_updated=meta.get("lastUpdated", ""),
                ehr_version_id=evid, ehr_last_updated=elu, related=await self._related(tenant, needs),
                local_codes=tenant_cfg.local_codes,
            )  # fmt: skip
            record = family.to_platform(resource, ctx)
            provided += [canonical_key(job.rtype, url) for url in canonical_urls(resource)]

        events = family.classify(previous, record)
        body = json.dumps(record.model_dump(mode="json"))
        plan.write("HSET", rec_key, "vid", version, "rev", rev + 1, "json", body)
        self._plan_indexes(tenant, family, previous, record, plan)
        source = f"{job.rtype}/{job.rid}"
        for need in needs:
            plan.write("SADD", k.dependents(tenant, need), source)
        if job.op != "refresh":
            await self._plan_refreshes(tenant, provided, source, plan)
        if family.aggregate is not None:
            await self._plan_aggregates(tenant, family, previous, record, ctx, plan)
        for event_type in events:
            event = {
                "id": f"evt_{uuid.uuid4().hex}",
                "type": event_type,
                "tenant": tenant,
                "occurred_at": _now(),
                "record_type": family.record_type,
                "record_id": record.id,
            }
            # The record is serialised once, above, and spliced in rather than encoded again for every event.
            encoded = json.dumps(event)[:-1] + ', "record": ' + body + "}"
            plan.write("XADD", k.feed(tenant), "*", "e", encoded)
        return events

    async def plan_dependents(self, job: Job, plan: Plan) -> None:
        """Queue the re-mapping of every record that read this (unmapped) resource."""
        provided = [f"{job.rtype}/{job.rid}"]
        if job.op != "delete":
            try:
                resource = await self._store.vread(job.tenant, job.rtype, job.rid, job.vid)
            except NotFound:
                resource = {}
            provided += [canonical_key(job.rtype, url) for url in canonical_urls(resource)]
        await self._plan_refreshes(job.tenant, provided, f"{job.rtype}/{job.rid}", plan)

    async def _related(self, tenant: str, needs: list[str]) -> dict[str, Mapping[str, Any]]:
        """Read the stored resources a mapping needs; a key the gateway does not hold is left out."""
        found: dict[str, Mapping[str, Any]] = {}
        for need in needs:
            rtype, sep, query = need.partition("?url=")
            if sep:
                ids = sorted(text(m) for m in await self._redis.smembers(self._keys.url_index(tenant, rtype, query)))
                candidates = await self._store.read_many(tenant, rtype, ids)
                if candidates:
                    # Several resources may claim one canonical URL: the most recently stored wins.
                    found[need] = max(candidates, key=lambda r: str(r.get("meta", {}).get("lastUpdated", "")))
                continue
            rtype, _, rid = need.partition("/")
            try:
                found[need] = await self._store.read(tenant, rtype, rid)
            except NotFound:
                continue
        return found

    async def _plan_refreshes(self, tenant: str, provided: list[str], source: str, plan: Plan) -> None:
        """Queue a re-mapping of every record that read one of ``provided``."""
        keys = [self._keys.dependents(tenant, key) for key in provided]
        members = {text(m) for m in await self._redis.sunion(keys)} - {source}
        for dependent in sorted(members):
            rtype, _, rid = dependent.partition("/")
            plan.write(
                "XADD", self._keys.inbound(tenant), "*",
                "type", rtype, "id", rid, "vid", 0, "op", "refresh", "attempt", 0,
            )  # fmt: skip

    async def _plan_aggregates(
        self, tenant: str, family: Family[Any], previous: Record | None, record: Record, ctx: MapContext, plan: Plan
    ) -> None:
        """Fold the record into its aggregate; if it moved from another one, fold it out of that one."""
        aggregate = family.aggregate
        assert aggregate is not None
        new_key = aggregate.key(record)
        old_key = aggregate.key(previous) if previous is not None and not previous.deleted else None
        if old_key is not None and old_key != new_key:
            await self._fold(tenant, family, old_key, previous.model_copy(update={"deleted": True}), ctx, plan)  # type: ignore[union-attr]
        if new_key is not None:
            await self._fold(tenant, family, new_key, record, ctx, plan)

    async def _fold(
        self, tenant: str, family: Family[Any], aid: str, record: Record, ctx: MapContext, plan: Plan
    ) -> None:
        aggregate = family.aggregate
        assert aggregate is not None
        agg_key = self._keys.record(tenant, aggregate.record_type, aid)
        held_rev, held_json = await self._redis.hmget(agg_key, ["rev", "json"])
        rev = int(held_rev or 0)
        plan.expect_field(agg_key, "rev", str(rev) if rev else None)
        held = aggregate.model.model_validate_json(held_json) if held_json else None
        folded = aggregate.fold(held, record, ctx)
        plan.write("HSET", agg_key, "rev", rev + 1, "json", folded.model_dump_json())

    def _plan_indexes(
        self, tenant: str, family: Family[Any], previous: Record | None, record: Record, plan: Plan
    ) -> None:
        k, rt, rid = self._keys, family.record_type, record.id
        old = family.index_fields(previous) if previous is not None and not previous.deleted else {}
        new = family.index_fields(record) if not record.deleted else {}
        for name, key_of in (("patient", k.record_patient_index), ("status", k.record_status_index)):
            before, after = old.get(name), new.get(name)
            if isinstance(before, str) and before != after:
                plan.write("SREM", key_of(tenant, rt, before), rid)
            if isinstance(after, str):
                plan.write("SADD", key_of(tenant, rt, after), rid)
        sort_key = k.record_sort_index(tenant, rt)
        if record.deleted:
            plan.write("ZREM", sort_key, rid)
        else:
            # Records without a date sort first, so date-less queries still list them.
            sort = new.get("sort")
            plan.write("ZADD", sort_key, sort if sort is not None else 0, rid)
        # Deleted records stay here, so that a consumer syncing with updated_since learns of the deletion.
        plan.write("ZADD", k.record_updated_index(tenant, rt), _epoch(record.source.last_updated), rid)
