"""The records and change events a batch plans are the bytes the plain path makes: the record's ``model_dump_json``.

The batch serialises each record once, with the model's serializer, straight to bytes, and writes every resource
into the batch's plan in place; the reference is each corpus or benchmark-shaped resource mapped on its own and
dumped with ``model_dump_json``. The batch's reads are given (no Redis): these are creates of fresh records.
"""

from __future__ import annotations

import dataclasses
import os
import sys
import uuid
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from gateway.clock import epoch_of
from gateway.platform import feed
from gateway.settings import ClientsConfig
from gateway.store import Plan
from gateway.store.keys import Keyspace
from gateway.work import records
from gateway.work.held import Found, Held
from gateway.work.inbound import Job
from gateway.work.records import RecordWriter, event_id
from mappers import person
from mappers.context import MapContext
from mappers.family import visible
from mappers.registry import MAPPED
from tests.mappers.conftest import bench_shaped, corpus_found

TENANT = "clinic-a"
LAST_UPDATED = "2026-12-03T09:00:00.123Z"


def _stored() -> list[dict[str, Any]]:
    """Benchmark-shaped resources and the corpus's Appointments and Patients, with ids, as the store keeps them."""
    found = [f.resource for _, f in corpus_found("Appointment", "Patient")]
    unique = {(r["resourceType"], r.get("id")): r for r in [*bench_shaped(), *found] if isinstance(r.get("id"), str)}
    return [
        {**r, "meta": {**r.get("meta", {}), "versionId": "1", "lastUpdated": LAST_UPDATED}} for r in unique.values()
    ]


def _written(plan: Plan) -> tuple[dict[str, bytes], list[dict[str, Any]]]:
    """Return the records a plan writes (by key) and the events it publishes, in order."""
    written, events = {}, []
    for command, key, args in plan.commands():
        if command == "HSET" and "json" in args:
            written[plan.keys[key - 1]] = args[args.index("json") + 1]
        elif command == "XADD":
            events.append(orjson.loads(args[args.index("e") + 1]))
    return written, events


async def test_a_batch_writes_each_record_and_event_as_model_dump_json_makes_them() -> None:
    resources = _stored()
    clients = ClientsConfig.model_validate({"clients": [], "tenants": {TENANT: {"vendor": "generic"}}})
    keys = Keyspace("gwtest")
    writer = RecordWriter(Redis(), keys, None, clients, None)  # type: ignore[arg-type]
    jobs, found = [], {}
    for n, resource in enumerate(resources):
        rtype, rid = resource["resourceType"], resource["id"]
        family = MAPPED[rtype]
        jobs.append(Job(TENANT, f"1-{n}", {"type": rtype, "id": rid, "vid": "1", "op": "upsert", "attempt": "0"}))
        held = Held(keys.record(TENANT, family.record_type, rid), 0, 0, None, family.model)
        found[(TENANT, rtype, rid)] = Found(held, [(1, orjson.dumps(resource))], set())

    async def read(groups: Any) -> Any:
        return found

    writer._read = read  # type: ignore[method-assign]
    outcome = await writer.plan(jobs)
    assert not outcome.failed

    expected: dict[str, bytes] = {}  # record key -> the reference's bytes
    for resource in resources:
        family = MAPPED[resource["resourceType"]]
        context = MapContext(tenant=TENANT, version_id="1", last_updated=LAST_UPDATED)
        record = family.to_platform(resource, context)
        expected[keys.record(TENANT, family.record_type, record.id)] = record.model_dump_json().encode()
    written, events = _written(outcome.plan)
    assert written == expected
    assert len(events) == len(resources)
    for event in events:
        key = keys.record(TENANT, event["record_type"], event["record_id"])
        assert orjson.dumps(event["record"]) == orjson.dumps(orjson.loads(expected[key]))
        assert event["type"].endswith(".created") and event["tenant"] == TENANT


def test_event_ids_are_random_version_4_uuids_as_uuid4_hex_writes_them() -> None:
    ids = [event_id() for _ in range(5_000)]
    assert len(set(ids)) == len(ids)
    for made in ids:
        assert made.startswith("evt_") and len(made) == 36
        parsed = uuid.UUID(hex=made[4:])
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and parsed.hex == made[4:]


def test_a_forked_child_draws_event_ids_of_its_own() -> None:
    """Event ids come from random bytes drawn many at a time: a child forked after its parent drew some must not
    hand out the ones its parent has left."""
    event_id()  # the parent holds undrawn bytes now
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - the child
        os.close(read)
        os.write(write, " ".join(event_id() for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as pipe:
        theirs = set(pipe.read().decode().split())
    os.waitpid(child, 0)
    ours = {event_id() for _ in range(50)}
    assert len(theirs) == 50 and not theirs & ours


async def test_a_resource_that_fails_partway_leaves_nothing_of_itself_in_the_batchs_plan() -> None:
    """Its record written and its index failing: the batch's plan holds the others' writes and none of its own."""
    clients = ClientsConfig.model_validate({"clients": [], "tenants": {TENANT: {"vendor": "generic"}}})
    keys = Keyspace("gwtest")
    writer = RecordWriter(Redis(), keys, None, clients, None)  # type: ignore[arg-type]
    _, appointment = bench_shaped()
    jobs, found = [], {}
    for n, rid in enumerate(["first", "broken", "last"]):
        resource = {**appointment, "id": rid, "meta": {"versionId": "1", "lastUpdated": LAST_UPDATED}}
        jobs.append(Job(TENANT, f"1-{n}", {"type": "Appointment", "id": rid, "vid": "1", "op": "upsert"}))
        held = Held(keys.record(TENANT, "appointment", rid), 0, 0, None, MAPPED["Appointment"].model)
        found[(TENANT, "Appointment", rid)] = Found(held, [(1, orjson.dumps(resource))], set())
    family = MAPPED["Appointment"]

    def index_fields(record: Any) -> Any:
        if record.id == "broken":
            raise ValueError("index bug")
        return family.index_fields(record)

    async def read(groups: Any) -> Any:
        return found

    writer._read = read  # type: ignore[method-assign]
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(MAPPED, "Appointment", dataclasses.replace(family, index_fields=index_fields))
        outcome = await writer.plan(jobs)
    assert list(outcome.failed) == ["1-1"]
    plan = outcome.plan
    assert [k for k in plan.keys if "broken" in k] == []
    assert not any(isinstance(a, str | bytes) and b"broken" in (a if isinstance(a, bytes) else a.encode())
                   for a in plan.writes)  # fmt: skip
    assert all("broken" not in members for members in plan.adds.values())
    assert {keys.record(TENANT, "appointment", rid) for rid in ("first", "last")} <= set(plan.keys)
    assert len(plan.checks) == 2


# What bench/worker_phases.py --updates sends again (and more): each change, and none but a regenerated narrative.
UPDATES = (
    {"start": "2027-01-05T15:00:00Z", "end": "2027-01-05T15:30:00Z"},
    {"status": "cancelled"},
    {"status": "arrived"},
    {"description": "Synthetic benchmark visit, room changed"},
    {"participant": [{"actor": {"reference": "Patient/3f0a7c1e"}, "status": "declined"}]},
    {"name": [{"family": "Bench", "given": ["Renamed"]}]},
    {"text": {"status": "generated", "div": "<div>regenerated</div>"}},
)


async def _updated(chains: list[list[dict[str, Any]]]) -> tuple[Any, ...]:
    """Plan the later versions of each chain as one job against the record its first version made, held as stored;
    return the records written, the events published (type, record id, record) and every other write and check."""
    plan = await _planned(chains)
    rest = [(command, plan.keys[key - 1], *args) for command, key, args in plan.commands() if command != "XADD"]
    adds = {(command, plan.keys[key - 1]): members for (command, key), members in plan.adds.items()}
    written, events = _written(plan)
    return written, [(e["type"], e["record_id"], e["record"]) for e in events], rest, adds, plan.checks


async def _planned(chains: list[list[dict[str, Any]]]) -> Plan:
    """Return the plan of the later versions of each chain, as one job against the record its first version made
    (a chain of one: a create)."""
    clients = ClientsConfig.model_validate({"clients": [], "tenants": {TENANT: {"vendor": "generic"}}})
    keys = Keyspace("gwtest")
    writer = RecordWriter(Redis(), keys, None, clients, None)  # type: ignore[arg-type]
    jobs, found = [], {}
    for n, (first, *later) in enumerate(chains):
        rtype, rid = first["resourceType"], first["id"]
        family = MAPPED[rtype]
        newest = str(len(later) + 1)
        jobs.append(Job(TENANT, f"1-{n}", {"type": rtype, "id": rid, "vid": newest, "op": "upsert", "attempt": "0"}))
        key = keys.record(TENANT, family.record_type, rid)
        versions: list[tuple[int, bytes | None]] = [(v, orjson.dumps(r)) for v, r in enumerate(later, start=2)]
        if not later:  # a create
            held, versions = Held(key, 0, 0, None, family.model), [(1, orjson.dumps(first))]
        else:
            record = family.to_platform(first, MapContext(tenant=TENANT, version_id="1", last_updated=LAST_UPDATED))
            held = Held(key, 1, 1, record.model_dump_json().encode(), family.model)
        found[(TENANT, rtype, rid)] = Found(held, versions, set())

    async def read(groups: Any) -> Any:
        return found

    writer._read = read  # type: ignore[method-assign]
    outcome = await writer.plan(jobs)
    assert not outcome.failed
    return outcome.plan


async def test_updates_write_the_records_and_events_the_dumps_comparison_decides() -> None:
    """New versions of the benchmark's and the corpus's Appointments and Patients, planned against their held
    records, make the same records, events, "unchanged" decisions and index writes as the plain path: every held
    record read back and classified, with ``visible`` dumps compared."""
    # Each change alone, and each after another (two versions in one job: the first told from the held record).
    chains = [chain for chain in _chains() if len(chain) > 1]
    fast = await _updated(chains)
    with pytest.MonkeyPatch.context() as patch:
        for module in {sys.modules[family.classify.__module__] for family in MAPPED.values()} | {person}:
            if hasattr(module, "visibly_changed"):
                patch.setattr(module, "visibly_changed", _dumps_differ)
        patch.setattr(records, "differs_only_in_version", lambda stored, encoded: False)
        reference = await _updated(chains)
    assert fast[0] == reference[0]
    assert fast[1] == reference[1]
    assert fast[2:] == reference[2:]
    assert len(fast[0]) == len(chains)  # every record written again (its version), changed or not
    assert 0 < len(fast[1]) < len(chains)  # some versions changed what the platform sees, some did not


def _chains() -> list[list[dict[str, Any]]]:
    """Creates and updates (each change alone, and each after another) of the benchmark's and the corpus's
    Appointments and Patients."""
    chains = []
    for resource in _stored():
        chains.append([{**resource, "id": f"{resource['id']}-new"}])
        steps = [(c, None) for c in UPDATES] + list(zip(UPDATES, UPDATES[::-1], strict=True))
        for m, (change, then) in enumerate(steps):
            first = {**resource, "id": f"{resource['id']}-{m}"}
            second = {**first, **change, "meta": {"versionId": "2", "lastUpdated": LAST_UPDATED}}
            third = [{**second, **then, "meta": {"versionId": "3", "lastUpdated": LAST_UPDATED}}] if then else []
            chains.append([first, second, *third])
    return chains


def _as_redis_reads(plan: Plan) -> list[tuple[Any, ...]]:
    """Return a plan's commands (and its set and zset additions and checks) as Redis receives them: every argument
    as bytes, each feed event's JSON parsed, without its id and time (new each time)."""

    def sent(value: Any) -> bytes:
        return value if isinstance(value, bytes) else str(value).encode()

    made: list[tuple[Any, ...]] = []
    for command, key, args in plan.commands():
        values: list[Any] = [sent(a) for a in args]
        if command == "XADD":
            event = orjson.loads(values[values.index(b"e") + 1])
            del event["id"], event["occurred_at"]
            values[values.index(b"e") + 1] = event
        made.append((command, plan.keys[key - 1], *values))
    adds = [(command, plan.keys[key - 1], *map(sent, members)) for (command, key), members in plan.adds.items()]
    return [*made, *adds, *map(tuple, plan.checks)]


async def test_records_and_feed_entries_written_as_forms_are_the_commands_plain_writes_made() -> None:
    """A record's HSET and a feed entry's XADD go into the batch's plan as forms (field names once per commit), the
    feed entry's JSON as bytes: Redis receives the same commands, in the same order, as from the plain writes (the
    feed's ``entry_fields``, text) that the worker made before."""
    chains = _chains()
    fast = await _planned(chains)
    assert fast.forms  # the forms were used

    # The writes as the worker made them before, spelled out (not through the forms, whose words are under test).
    def plain_put(self: Plan, form: Any, key: str, *values: Any) -> None:
        if form[0] == "HSET":
            vid, rev, encoded = values
            self.write("HSET", key, "vid", vid, "rev", rev, "json", encoded)
        else:
            (fields,) = values
            self.write("XADD", key, "*", *fields)

    def plain_values(event: bytes, event_type: str, codes: Any) -> tuple[Any, ...]:
        return (feed.entry_fields(event, event_type, codes),)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Plan, "put", plain_put)
        patch.setattr(feed, "entry_values", plain_values)
        plain = await _planned(chains)
    assert not plain.forms
    assert _as_redis_reads(fast) == _as_redis_reads(plain)


async def test_each_record_is_scored_by_its_own_source_time_when_a_batch_mixes_them() -> None:
    """The updated-since index reads each record's source time, parsed once per run of records that share it."""
    times = [LAST_UPDATED, LAST_UPDATED, "2026-12-03T09:00:01.5Z", LAST_UPDATED, "not a time", "2026-12-03T10:00:00Z"]
    chains = [
        [{**resource, "id": f"{resource['id']}-{n}", "meta": {"versionId": "1", "lastUpdated": times[n % len(times)]}}]
        for n, resource in enumerate(_stored())
    ]
    plan = await _planned(chains)
    scores: dict[str, float] = {}
    for (command, key), members in plan.adds.items():
        if command == "ZADD" and plan.keys[key - 1].endswith(":updated"):
            scores |= dict(zip(members[1::2], members[::2], strict=True))
    assert len(scores) == len(chains)
    for chain in chains:
        resource = chain[0]
        expected = epoch_of(resource["meta"]["lastUpdated"])
        assert scores[resource["id"]] == (expected if expected is not None else scores[resource["id"]])


def _dumps_differ(previous: Any, current: Any, *, besides: Any = ()) -> bool:
    return visible(previous, besides=besides) != visible(current, besides=besides)


async def test_a_reloaded_clients_file_maps_the_next_job_with_the_tenants_new_zone() -> None:
    """A Bundle's versions share one mapping context (tenant, version, store time): a reload between two of them
    must still reach the second."""
    keys = Keyspace("gwtest")
    zoned = {"clients": [], "tenants": {TENANT: {"vendor": "generic", "timezone": "America/New_York"}}}
    writer = RecordWriter(Redis(), keys, None, ClientsConfig.model_validate(zoned), None)  # type: ignore[arg-type]
    _, appointment = bench_shaped()
    starts = []
    for rid, zone in (("before-reload", "America/New_York"), ("after-reload", "Europe/Paris")):
        zoned["tenants"][TENANT]["timezone"] = zone
        writer.replace_clients(ClientsConfig.model_validate(zoned))
        local = {**appointment, "id": rid, "start": "2027-01-04T09:00:00", "end": "2027-01-04T09:30:00",
                 "meta": {"versionId": "1", "lastUpdated": LAST_UPDATED}}  # fmt: skip
        held = Held(keys.record(TENANT, "appointment", rid), 0, 0, None, MAPPED["Appointment"].model)
        found = {(TENANT, "Appointment", rid): Found(held, [(1, orjson.dumps(local))], set())}

        async def read(groups: Any, found: Any = found) -> Any:
            return found

        writer._read = read  # type: ignore[method-assign]
        job = Job(TENANT, "1-0", {"type": "Appointment", "id": rid, "vid": "1", "op": "upsert", "attempt": "0"})
        written, _ = _written((await writer.plan([job])).plan)
        starts.append(orjson.loads(written[keys.record(TENANT, "appointment", rid)])["start"])
    assert starts == ["2027-01-04T14:00:00Z", "2027-01-04T08:00:00Z"]
