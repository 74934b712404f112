"""The ``idx`` field of ``cur`` (the index entries a version is in) is stored compact when
``GATEWAY_COMPACT_INDEX_LISTS`` is on, and the form earlier gateways wrote (a JSON list of [kind, full key, member])
is still read: the next write of such a resource, and the reindex, remove exactly its entries and add the new
version's, on the same Redis keys. By default the old form is written, which a gateway from before the compact form
(during a rolling upgrade, or after a rollback) reads right."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gateway import encoding
from gateway.settings import ClientsConfig, Settings
from gateway.store.indexing import decode_index, expand_index, index_entries
from gateway.store.store import Store
from tests.conftest import Gateway, running
from tests.gateway.fixtures import appointment

TENANT = "clinic-a"


@pytest.fixture
def settings(settings: Settings) -> Settings:
    """The gateway of these tests writes the compact form (one test below runs one with the default)."""
    return settings.model_copy(update={"compact_index_lists": True})


def _as_an_older_gateway_reads_it(raw: bytes) -> list[tuple[str, str, str]]:
    """Read an ``idx`` field as gateways before the compact form did (``Current.from_hash`` and ``_entry``)."""
    return [("s", e, "") if isinstance(e, str) else (str(e[0]), str(e[1]), str(e[2])) for e in json.loads(raw or "[]")]


async def test_by_default_the_form_that_older_gateways_read_is_written(
    redis_url: str, key_prefix: str, clients: ClientsConfig
) -> None:
    plain = Settings(redis_url=redis_url, key_prefix=key_prefix)
    assert not plain.compact_index_lists
    async with running(plain, clients, with_worker=False) as gateway:
        keys, redis = gateway.services.keys, gateway.services.redis
        first = appointment(id="d1", start="2026-12-10T09:00:00Z", end="2026-12-10T09:30:00Z")
        assert (await gateway.ehr("PUT", "/Appointment/d1", json=first)).status_code == 201
        second = appointment(
            id="d1", status="cancelled", participant=[{"actor": {"reference": "Patient/pat-2"}, "status": "accepted"}]
        )
        assert (await gateway.ehr("PUT", "/Appointment/d1", json=second)).status_code == 200
        raw = await redis.hget(keys.current(TENANT, "Appointment", "d1"), "idx")
        listed = _as_an_older_gateway_reads_it(raw)
        assert listed == index_entries(keys, TENANT, await _stored(gateway, "Appointment", "d1"))
        assert set(listed) == await _in_indexes(gateway, "Appointment", "d1")
        assert ("s", keys.reference_prefix(TENANT, "Appointment", "patient") + "Patient/pat-2", "") in listed

        # Turned on, then off again with a reindex (before rolling back to an older gateway): the old form again.
        compact = Store(redis, keys, max_backlog=1000, dedupe_seconds=60, retries=3, compact_index=True)
        assert await compact.reindex(TENANT) == (1, 0)
        assert (await redis.hget(keys.current(TENANT, "Appointment", "d1"), "idx")).startswith(b'[""')
        assert await gateway.services.store.reindex(TENANT) == (1, 0)
        assert (
            _as_an_older_gateway_reads_it(await redis.hget(keys.current(TENANT, "Appointment", "d1"), "idx")) == listed
        )


async def _in_indexes(gateway: Gateway, rtype: str, rid: str) -> set[tuple[str, str, str]]:
    """Every search index entry that holds the resource, read from Redis: ("s", key, ""), ("z", key, score) or
    ("l", key, member), as the old form listed them (not the ``ids`` and ``lu`` zsets)."""
    keys, redis = gateway.services.keys, gateway.services.redis
    prefix = keys.index_prefix(TENANT, rtype)
    found: set[tuple[str, str, str]] = set()
    async for raw in redis.scan_iter(match=f"{prefix}*", count=1000):
        key = raw.decode()
        if key in (keys.ids_index(TENANT, rtype), keys.last_updated_index(TENANT, rtype)):
            continue
        if await redis.type(key) == b"set":
            if await redis.sismember(key, rid):
                found.add(("s", key, ""))
            continue
        score = await redis.zscore(key, rid)
        if score is not None:
            found.add(("z", key, repr(float(score))))
        for member in await redis.zrangebylex(key, "-", "+"):
            if member.decode().endswith(f"\0{rid}"):
                found.add(("l", key, member.decode()))
    return found


async def _stored(gateway: Gateway, rtype: str, rid: str) -> dict[str, Any]:
    found: dict[str, Any] = (await gateway.ehr("GET", f"/{rtype}/{rid}")).json()
    return found


async def _as_an_older_gateway_stored_it(gateway: Gateway, rtype: str, rid: str, *extra: str) -> list[Any]:
    """Rewrite the resource's ``idx`` as the old code wrote it (``encoding.dumps`` of the full-key entries), with
    ``extra`` set keys (holding the id) that an older version indexed it in too. Return the old entries."""
    keys, redis = gateway.services.keys, gateway.services.redis
    old: list[Any] = [list(e) for e in index_entries(keys, TENANT, await _stored(gateway, rtype, rid))]
    for key in extra:
        await redis.sadd(key, rid)
        old.append(["s", key, ""])
    await redis.hset(keys.current(TENANT, rtype, rid), "idx", encoding.dumps(old))
    return old


async def _compact_idx(gateway: Gateway, rtype: str, rid: str) -> list[str]:
    keys = gateway.services.keys
    raw = await gateway.services.redis.hget(keys.current(TENANT, rtype, rid), "idx")
    assert raw.startswith(b'[""'), raw  # written in the compact form
    return decode_index(raw, keys.index_prefix(TENANT, rtype))


async def test_the_compact_form_lists_what_the_resource_is_indexed_in(gateway: Gateway) -> None:
    body = appointment(id="c1")
    assert (await gateway.ehr("PUT", "/Appointment/c1", json=body)).status_code == 201
    keys = gateway.services.keys
    stored = await _stored(gateway, "Appointment", "c1")
    entries = expand_index(keys.index_prefix(TENANT, "Appointment"), await _compact_idx(gateway, "Appointment", "c1"))
    assert entries == index_entries(keys, TENANT, stored)
    assert set(entries) == await _in_indexes(gateway, "Appointment", "c1")


async def test_an_update_of_a_resource_stored_in_the_old_form_moves_exactly_its_entries(gateway: Gateway) -> None:
    keys = gateway.services.keys
    first = appointment(id="o1", start="2026-12-10T09:00:00Z", end="2026-12-10T09:30:00Z")
    assert (await gateway.ehr("PUT", "/Appointment/o1", json=first)).status_code == 201
    legacy = f"{keys.prefix}:{{{TENANT}}}:idx:Appointment:patient:Patient/pat-1"  # an older version's key
    old = await _as_an_older_gateway_stored_it(gateway, "Appointment", "o1", legacy)
    assert await _in_indexes(gateway, "Appointment", "o1") == {tuple(e) for e in old}

    second = appointment(
        id="o1",
        identifier=[{"system": "urn:oid:1.2.3.4", "value": "appt-2"}],  # a token changes, its system stays
        status="cancelled",
        start="2026-12-10T09:00:00Z",  # the date's lower end stays, its upper end moves
        end="2026-12-10T10:00:00Z",
        participant=[{"actor": {"reference": "Patient/pat-2"}, "status": "accepted"}],
    )
    assert (await gateway.ehr("PUT", "/Appointment/o1", json=second)).status_code == 200
    new = index_entries(keys, TENANT, await _stored(gateway, "Appointment", "o1"))
    assert await _in_indexes(gateway, "Appointment", "o1") == set(new)
    assert not await gateway.services.redis.sismember(legacy, "o1")
    assert await _compact_idx(gateway, "Appointment", "o1") == decode_index(
        encoding.dumps(new), keys.index_prefix(TENANT, "Appointment")
    )
    found = (await gateway.ehr("GET", "/Appointment?identifier=appt-1")).json()
    assert found["total"] == 0
    found = (await gateway.ehr("GET", "/Appointment?identifier=appt-2&patient=pat-2&status=cancelled")).json()
    assert found["total"] == 1


async def test_string_entries_of_the_old_form_move_too(gateway: Gateway) -> None:
    patient = {"resourceType": "Patient", "id": "n1", "name": [{"family": "Rivera", "given": ["Álex"]}]}
    assert (await gateway.ehr("PUT", "/Patient/n1", json=patient)).status_code == 201
    old = await _as_an_older_gateway_stored_it(gateway, "Patient", "n1")
    assert any(kind == "l" for kind, _, _ in old)
    renamed = {**patient, "name": [{"family": "Lee", "given": ["Álex"]}], "birthDate": "1990-04-02"}
    assert (await gateway.ehr("PUT", "/Patient/n1", json=renamed)).status_code == 200
    keys = gateway.services.keys
    assert await _in_indexes(gateway, "Patient", "n1") == set(
        index_entries(keys, TENANT, await _stored(gateway, "Patient", "n1"))
    )
    assert (await gateway.ehr("GET", "/Patient?family=rivera")).json()["total"] == 0
    assert (await gateway.ehr("GET", "/Patient?family=lee&given=alex")).json()["total"] == 1


async def test_a_delete_of_a_resource_stored_in_the_old_form_leaves_no_entry(gateway: Gateway) -> None:
    assert (await gateway.ehr("PUT", "/Appointment/d1", json=appointment(id="d1"))).status_code == 201
    await _as_an_older_gateway_stored_it(gateway, "Appointment", "d1")
    assert (await gateway.ehr("DELETE", "/Appointment/d1")).status_code in (200, 204)
    assert await _in_indexes(gateway, "Appointment", "d1") == set()
    assert await gateway.services.redis.hget(gateway.services.keys.current(TENANT, "Appointment", "d1"), "idx") == b"[]"


async def test_reindex_reads_the_old_form(gateway: Gateway) -> None:
    keys, redis = gateway.services.keys, gateway.services.redis
    for rid in ("r1", "r2"):
        assert (await gateway.ehr("PUT", f"/Appointment/{rid}", json=appointment(id=rid))).status_code == 201
    stale = f"{keys.prefix}:{{{TENANT}}}:idx:Appointment:ident:urn:oid:1.2.3.4|appt-1"
    await _as_an_older_gateway_stored_it(gateway, "Appointment", "r1", stale)  # r2 stays in the compact form
    assert await gateway.services.store.reindex(TENANT) == (2, 0)
    for rid in ("r1", "r2"):
        expected = index_entries(keys, TENANT, await _stored(gateway, "Appointment", rid))
        assert await _in_indexes(gateway, "Appointment", rid) == set(expected)
        prefix = keys.index_prefix(TENANT, "Appointment")
        assert expand_index(prefix, await _compact_idx(gateway, "Appointment", rid)) == expected
    assert not await redis.sismember(stale, "r1")
