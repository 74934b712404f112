"""Apply a batch of inbound jobs to the platform records: map, classify, index, publish, in one compare-and-set.

A record is a Redis hash ``{vid, rev, json}``: ``vid`` is the FHIR version it came from, ``rev`` is bumped by every
write and is what the compare-and-set checks, so a batch that raced another worker is decided again from the
state it really replaces.

**Every accepted version yields its events, in version order.** A job names one stored version, but jobs of one
resource may be handled together, by two workers, or out of order after a reclaim. So a job for version ``v`` of a
record that holds version ``h`` maps every version ``h+1 .. v`` in turn, each classified against the one before
it (a quick cancel-then-rebook publishes ``appointment.cancelled`` and then ``appointment.rescheduled``); a job
for a version already applied is only acknowledged. A deleted version (an empty history entry) is mapped as the
deletion of the record.

The records, their query indexes, their change events, their aggregates (a message's thread), the re-mapping of
records that read a changed resource, and the acknowledgement of every job are written by one Lua script, or not
at all. A job whose mapping fails is left out of the batch (the worker schedules its retry); the rest go on.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from redis.asyncio import Redis

from gateway import encoding
from gateway.clock import Clock, epoch_of, instant, system_clock
from gateway.errors import NotFound
from gateway.platform import feed
from gateway.platform.disclosure import label_codes
from gateway.platform.risk import Flag, RiskFlags
from gateway.settings import ClientsConfig
from gateway.store import Plan, Store, ehr_meta, text
from gateway.store.indexing import canonical_urls
from gateway.store.keys import Keyspace
from gateway.store.plan import Form
from gateway.work.held import Found, Held, HeldReader, Wanted
from gateway.work.inbound import Job
from gateway.work.links import Links
from mappers.context import MapContext
from mappers.family import Aggregate, Family, canonical_key, differs_only_in_version
from mappers.model import Record
from mappers.registry import MAPPED

# Random bytes for event ids, drawn from os.urandom 256 ids at a time (one system call per batch of events instead
# of one per event) and used from the end; a forked child starts without its parent's, so no two processes share any.
# Taken from the worker's event-loop thread only (two threads taking at once could take the same bytes).
_RANDOM = bytearray()
_RANDOM_DRAW = 16 * 256
os.register_at_fork(after_in_child=_RANDOM.clear)


def event_id() -> str:
    """Return a new change event id: ``evt_`` and a random UUID's hex, as ``uuid.uuid4().hex`` makes it (version 4,
    RFC 4122 variant), without building the UUID object (a third of the cost)."""
    if not _RANDOM:
        _RANDOM.extend(os.urandom(_RANDOM_DRAW))
    raw = _RANDOM[-16:]
    del _RANDOM[-16:]
    raw[6] = raw[6] & 0x0F | 0x40
    raw[8] = raw[8] & 0x3F | 0x80
    return "evt_" + raw.hex()


# Resources decided between two turns of the event loop (see ``RecordWriter.decide``).
_YIELD_EVERY = 8

# A record's write as a plan's form (``Plan.put``, the key the record's): its field names sent once per commit.
_RECORD_FORM: Form = ("HSET", ("vid", None, "rev", None, "json", None))


@dataclass
class Outcome:
    """What a batch does: its atomic plan, the events of each applied job, and the jobs that failed."""

    plan: Plan
    events: dict[str, list[str]] = field(default_factory=dict)  # job entry id -> event types
    failed: dict[str, Exception] = field(default_factory=dict)  # job entry id -> why


@dataclass
class Batch:
    """Jobs grouped by resource, with what the read found for each mapped one (``RecordWriter.read``)."""

    jobs: list[Job]
    groups: dict[tuple[str, str, str], list[Job]]  # (tenant, type, id) -> its jobs
    found: dict[tuple[str, str, str], Found]


class RecordWriter:
    """Plan the effect of a batch of jobs on the platform records."""

    def __init__(
        self,
        redis: Redis,
        keys: Keyspace,
        store: Store,
        clients: ClientsConfig,
        risks: RiskFlags,
        *,
        clock: Clock = system_clock,
    ) -> None:
        self._redis = redis
        self.keys = keys
        self._store = store
        self._clients = clients
        self._risks = risks
        self._clock = clock
        self._held = HeldReader(redis, keys)
        self._links = Links(redis, keys, store)
        # The last source time read as epoch seconds: a batch's versions mostly share one (a Bundle's are stored
        # at one time), so each is parsed once instead of once per record.
        self._updated_at: tuple[str | None, float | None] = (None, None)
        # The last mapping context made for versions that read nothing else, by what it holds: a Bundle's versions
        # share it (one tenant, version number and store time), and it is immutable, so it is made once for them.
        self._last_context: tuple[tuple[str, int, str, str | None, str | None], MapContext] | None = None
        # Per tenant and record type: the sort and updated index keys, and the status and patient keys' prefixes.
        self._index_keys: dict[tuple[str, str], tuple[str, str, str, str]] = {}
        self._feed_keys: dict[str, str] = {}  # per tenant: its feed's key

    async def plan(self, jobs: Sequence[Job]) -> Outcome:
        """Decide what ``jobs`` do; the caller settles the applied ones in ``outcome.plan`` and commits it."""
        return await self.decide(await self.read(jobs))

    async def read(self, jobs: Sequence[Job]) -> Batch:
        """Read what ``jobs`` need to be decided (one round trip per tenant): the first half of ``plan``.

        The worker reads its next batches before it sends the current one's commit, and decides them while Redis
        applies it. A record or related resource that commit changes makes this batch's own commit conflict, and
        the batch is read and decided again.
        """
        groups: dict[tuple[str, str, str], list[Job]] = {}
        for job in jobs:
            groups.setdefault((job.tenant, job.rtype, job.rid), []).append(job)
        return Batch(list(jobs), groups, await self._read(groups))

    async def decide(self, batch: Batch) -> Outcome:
        """Decide what the jobs of ``batch`` do, from what ``read`` found: the second half of ``plan``."""
        outcome = Outcome(Plan())
        groups, found = batch.groups, batch.found
        # One time for the batch's events and deletions: the batch is decided within milliseconds.
        now = instant(self._clock())
        aggregates: dict[str, Held] = {}
        provided: list[tuple[str, str, set[str]]] = []  # (tenant, source, keys): whose dependents to re-map
        for count, (group, members) in enumerate(groups.items(), 1):
            if not count % _YIELD_EVERY:
                # Let the event loop run: the commit sent before this batch is decided streams out to Redis
                # while the socket takes it, instead of waiting for the whole decision.
                await asyncio.sleep(0)
            tenant, rtype, rid = group
            # Each resource writes straight into the batch's plan; one whose mapping fails is taken out again.
            mark = outcome.plan.mark()
            try:
                family = MAPPED.get(rtype)
                if family is None:
                    # An unmapped resource that records depend on (a Binary body): re-map those records.
                    events, gives = await self._links.unmapped(members)
                else:
                    seen = found[group]
                    events, gives = await self._apply(tenant, family, seen.held, seen.versions, members,
                                                      outcome.plan, aggregates, now)  # fmt: skip
            except Exception as exc:
                outcome.plan.undo(mark)
                for job in members:
                    outcome.failed[job.entry_id] = exc
                continue
            for job, job_events in zip(members, events, strict=True):
                outcome.events[job.entry_id] = job_events
            if gives:
                provided.append((tenant, f"{rtype}/{rid}", gives))
        known = {(tenant, f"{rtype}/{rid}"): seen.dependents for (tenant, rtype, rid), seen in found.items()}
        await self._links.refresh_readers(provided, outcome.plan, known)
        for agg in aggregates.values():
            if agg.changed:
                outcome.plan.expect_field(agg.key, "rev", str(agg.rev) if agg.rev else None)
                current = agg.record()
                assert current is not None
                outcome.plan.write("HSET", agg.key, "rev", agg.rev + 1, "json", current.model_dump_json())
        return outcome

    # -- reads: one round trip per tenant for the whole batch --------------------------------------------

    async def _read(self, groups: Mapping[tuple[str, str, str], list[Job]]) -> dict[tuple[str, str, str], Found]:
        """Return, per mapped resource, its record, the stored versions its jobs ask to map (each one after the
        record's, or the one it holds for a refresh) and the records that read it."""
        by_tenant: dict[str, list[tuple[tuple[str, str, str], Wanted]]] = {}
        for group, members in groups.items():
            tenant, rtype, rid = group
            family = MAPPED.get(rtype)
            if family is None:
                continue
            if len(members) == 1:  # most resources have one job in a batch
                refresh = members[0].op == "refresh"
                newest = 0 if refresh else members[0].vid
            else:
                newest = max((j.vid for j in members if j.op != "refresh"), default=0)
                refresh = any(j.op == "refresh" for j in members)
            key = self.keys.record(tenant, family.record_type, rid)
            by_tenant.setdefault(tenant, []).append(
                (group, Wanted(tenant, rtype, rid, key, family.model, newest, refresh))
            )
        found: dict[tuple[str, str, str], Found] = {}
        for tenant, wanted in by_tenant.items():
            for (group, _), seen in zip(wanted, await self._held.read(tenant, [w for _, w in wanted]), strict=True):
                found[group] = seen
        return found

    # -- one resource's versions ---------------------------------------------------------------------------

    async def _apply(
        self,
        tenant: str,
        family: Family[Any],
        held: Held,
        versions: list[tuple[int, bytes | None]],
        jobs: list[Job],
        plan: Plan,
        aggregates: dict[str, Held],
        now: str,
    ) -> tuple[list[list[str]], set[str]]:
        """Plan the record through ``versions``; return each job's events (all of them on the newest job) and the
        keys (``Type/id``, canonical URLs) whose dependent records must be mapped again."""
        plan.expect_field(held.key, "rev", str(held.rev) if held.rev else None)
        refresh_only = jobs[0].op == "refresh" if len(jobs) == 1 else all(j.op == "refresh" for j in jobs)
        # The held record is read back (15-40 us) only when a version is told from it: a first version whose
        # record's bytes differ from the held ones in nothing but the version is no change to classify or index.
        pending = held.raw is not None and not refresh_only and family.aggregate is None
        previous = None if pending else held.record()
        if refresh_only and (previous is None or previous.deleted):
            versions = []
        alike: Record | None = None  # the first version's record, when the platform sees it as the held one
        first: tuple[Record, bytes] | None = None  # the first version's record and its bytes, once compared
        events, provided, last_vid = [], set(), held.vid
        folds: dict[str, Held] = {}
        rtype, rid = jobs[0].rtype, jobs[0].rid
        source = f"{rtype}/{rid}"
        for version, raw in versions:
            if raw is None:  # a job for a version the store never held: an inconsistency an operator must see
                raise NotFound(f"{source} has no stored version {version}")
            last_vid = version
            if raw == b"":  # a deletion
                if pending:
                    previous, pending = held.record(), False
                if previous is None or previous.deleted:
                    continue
                ctx = self._context(tenant, version, now)
                record = family.deleted_record(previous, ctx)
            else:
                resource = encoding.loads(raw)
                meta = resource.get("meta", {})
                # The EHR's version rides in the stored meta's extensions: most versions have none to read.
                evid, elu = ehr_meta.read(meta) if "extension" in meta else (None, None)
                needs = family.needs(resource)
                related = await self._links.related(tenant, needs, plan) if needs else None
                ctx = self._context(tenant, version, meta.get("lastUpdated", ""), evid, elu, related)
                record = family.to_platform(resource, ctx)
                provided.add(source)
                if "url" in resource:  # a definitional resource: what reads it by canonical URL is mapped again too
                    provided.update(canonical_key(rtype, url) for url in canonical_urls(resource))
                for need in needs:
                    plan.write("SADD", self.keys.dependents(tenant, need), source)
                if pending:
                    pending = False
                    first = (record, record.__pydantic_serializer__.to_json(record))
                    if held.raw is not None and differs_only_in_version(held.raw, first[1]):
                        previous = alike = record
                        continue
                    previous = held.record()
            if family.aggregate is not None:
                await self._fold(tenant, family.aggregate, previous, record, ctx, aggregates, folds)
            events += [(event_type, record) for event_type in family.classify(previous, record)]
            previous = record
        if last_vid != held.vid or (refresh_only and versions):
            # Each record is serialised once, to the bytes ``model_dump_json`` encodes: for its hash and for every
            # event that carries it.
            body: dict[int, bytes] = {}
            for each in (previous, *(r for _, r in events)):
                if each is not None and id(each) not in body:
                    if first is not None and each is first[0]:
                        body[id(each)] = first[1]
                    else:
                        body[id(each)] = each.__pydantic_serializer__.to_json(each)
            written = body[id(previous)] if previous is not None else None
            before = alike if alike is not None else held.record()
            # An event of the record written carries the bytes the write sends: the commit script joins them in.
            place = self._write_record(tenant, family, held, before, previous, written, last_vid, plan)
            for event_type, record in events:
                codes = [label.code for label in record.security]
                event_id = self._publish(tenant, family.record_type, event_type, record.id, body[id(record)], codes,
                                         plan, now, place if record is previous else None)  # fmt: skip
                if event_type == "risk.flagged":
                    flags = list(getattr(record, "risk_flags", []))
                    self._risks.raise_in(plan, tenant, event_id, family.record_type, record.id, flags)
        aggregates.update(folds)
        newest = jobs[0] if len(jobs) == 1 else max(jobs, key=lambda j: j.vid)
        gives = provided | {source} if last_vid != held.vid and not refresh_only else set()
        return [[e for e, _ in events] if job is newest else [] for job in jobs], gives

    def replace_clients(self, clients: ClientsConfig) -> None:
        """Map with a reloaded clients file's tenant settings (vendor, timezone, local codes) from the next job."""
        self._clients = clients
        self._last_context = None

    def _context(
        self,
        tenant: str,
        version: int,
        last_updated: str,
        ehr_version_id: str | None = None,
        ehr_last_updated: str | None = None,
        related: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> MapContext:
        held = (tenant, version, last_updated, ehr_version_id, ehr_last_updated)
        if not related and self._last_context is not None and self._last_context[0] == held:
            return self._last_context[1]
        config = self._clients.tenant(tenant)
        ctx = MapContext(
            tenant=tenant, vendor=config.vendor, timezone=config.timezone, version_id=str(version),
            last_updated=last_updated, ehr_version_id=ehr_version_id, ehr_last_updated=ehr_last_updated,
            related=related or {}, local_codes=config.local_codes,
        )  # fmt: skip
        if not related:
            self._last_context = (held, ctx)
        return ctx

    def _write_record(
        self,
        tenant: str,
        family: Family[Any],
        held: Held,
        before: Record | None,
        record: Record | None,
        encoded: bytes | None,
        vid: int,
        plan: Plan,
    ) -> int | None:
        """Write the record over the held one, whose indexes ``before`` gives (the held record, or one alike); return
        the place of its ``encoded`` bytes among the plan's writes (None: not written)."""
        if record is None or encoded is None:  # deleted before it was ever mapped
            plan.write("HSET", held.key, "vid", vid, "rev", held.rev + 1)
            return None
        first = plan.put(_RECORD_FORM, held.key, vid, held.rev + 1, encoded)
        self._plan_indexes(tenant, family, before, record, plan)
        return first + 2 if first is not None else None

    def _publish(
        self,
        tenant: str,
        record_type: str,
        event_type: str,
        record_id: str,
        body: bytes,
        codes: Iterable[str],
        plan: Plan,
        occurred_at: str,
        place: int | None = None,
        **extra: Any,
    ) -> str:
        """Add the change event, and its record's label ``codes``, to the tenant's feed in ``plan``; return its id.

        ``place``: where the plan already holds ``body`` (the record's write), for the commit script to join it into
        the event instead of sending it again.
        """
        event = {
            "id": event_id(),
            "type": event_type,
            "tenant": tenant,
            "occurred_at": occurred_at,
            "record_type": record_type,
            "record_id": record_id,
            **extra,
        }
        # The record is serialised once and spliced in rather than encoded again for every event (one copy of it).
        head = orjson.dumps(event)
        key = self._feed_keys.get(tenant) or self._feed_keys.setdefault(tenant, self.keys.feed(tenant))
        if place is not None:
            head = b"".join((memoryview(head)[:-1], b',"record":'))
            plan.put(feed.SPLICED_ENTRY_FORM, key, head, place, event_type, feed.entry_labels(codes))
        else:
            encoded = b"".join((memoryview(head)[:-1], b',"record":', body, b"}"))
            plan.put(feed.ENTRY_FORM, key, *feed.entry_values(encoded, event_type, codes))
        return str(event["id"])

    async def escalate(self, tenant: str, flag: Flag) -> Plan | None:
        """Return the plan that escalates an unacknowledged flag (``risk.escalated`` with the record), or None."""
        body = await self._redis.hget(self.keys.record(tenant, flag.record_type, flag.record_id), "json")
        if body is None:
            return None
        plan = Plan()
        self._risks.escalate_in(plan, tenant, flag)
        raised = {"id": flag.id, "flags": flag.flags, "raised_at": instant(flag.raised_at)}
        codes = label_codes(encoding.loads(body))
        self._publish(tenant, flag.record_type, "risk.escalated", flag.record_id, text(body).encode(), codes, plan,
                      instant(self._clock()), flag=raised)  # fmt: skip
        return plan

    async def _fold(
        self,
        tenant: str,
        aggregate: Aggregate[Any],
        previous: Record | None,
        record: Record,
        ctx: MapContext,
        batch: dict[str, Held],
        folds: dict[str, Held],
    ) -> None:
        """Fold the record into its aggregate; if it moved from another one, fold it out of that one."""
        new_key = aggregate.key(record)
        old_key = aggregate.key(previous) if previous is not None and not previous.deleted else None
        if old_key is not None and old_key != new_key:
            assert previous is not None
            await self._fold_one(tenant, aggregate, old_key, previous.model_copy(update={"deleted": True}), ctx,
                                 batch, folds)  # fmt: skip
        if new_key is not None:
            await self._fold_one(tenant, aggregate, new_key, record, ctx, batch, folds)

    async def _fold_one(
        self,
        tenant: str,
        aggregate: Aggregate[Any],
        aid: str,
        record: Record,
        ctx: MapContext,
        batch: dict[str, Held],
        folds: dict[str, Held],
    ) -> None:
        key = self.keys.record(tenant, aggregate.record_type, aid)
        state = folds.get(key)
        if state is None:
            found = batch.get(key)
            if found is None:
                rev, raw = await self._redis.hmget(key, ["rev", "json"])
                found = Held(key, int(rev or 0), 0, raw if isinstance(raw, bytes) else None, aggregate.model)
            # This resource's folds go on a copy, kept only if all of its versions map.
            state = Held(found.key, found.rev, 0, found.raw, found.model, found.record(), True, found.changed)
            folds[key] = state
        state.current = aggregate.fold(state.record(), record, ctx)
        state.changed = True

    def _plan_indexes(
        self, tenant: str, family: Family[Any], previous: Record | None, record: Record, plan: Plan
    ) -> None:
        rt, rid = family.record_type, record.id
        new = family.index_fields(record) if not record.deleted else {}
        if previous is record:  # a version the platform sees as the held one: the same indexes, read once
            old = new
        else:
            old = family.index_fields(previous) if previous is not None and not previous.deleted else {}
        keys = self._index_keys.get((tenant, rt)) or self._keys_of(tenant, rt)
        sort_key, updated_key, patient_prefix, status_prefix = keys
        for name, prefix in (("patient", patient_prefix), ("status", status_prefix)):
            before, after = old.get(name), new.get(name)
            if isinstance(before, str) and before != after:
                plan.write("SREM", prefix + before, rid)
            if isinstance(after, str):
                plan.add("SADD", prefix + after, rid)
        if record.deleted:
            plan.write("ZREM", sort_key, rid)
        else:
            # Records without a date sort first, so date-less queries still list them.
            sort = new.get("sort")
            plan.add("ZADD", sort_key, sort if sort is not None else 0, rid)
        # Deleted records stay here, so that a consumer syncing with updated_since learns of the deletion.
        last_updated = record.source.last_updated
        if last_updated != self._updated_at[0]:
            self._updated_at = (last_updated, epoch_of(last_updated))
        updated = self._updated_at[1]
        plan.add("ZADD", updated_key, updated if updated is not None else self._clock(), rid)

    def _keys_of(self, tenant: str, record_type: str) -> tuple[str, str, str, str]:
        """Return a record type's index keys (``_index_keys``): a status's or a patient's key is its prefix and the
        status or reference, as ``Keyspace`` ends them."""
        k = self.keys
        found = self._index_keys[(tenant, record_type)] = (
            k.record_sort_index(tenant, record_type),
            k.record_updated_index(tenant, record_type),
            k.record_patient_index(tenant, record_type, ""),
            k.record_status_index(tenant, record_type, ""),
        )
        return found
