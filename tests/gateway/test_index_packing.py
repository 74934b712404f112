"""What a resource's current state keeps of its index entries (the ``idx`` field): every key without the root all of
its type's index keys share, kept once; and data written before in the older form is still read, so an update
moves the resource out of the index entries its older version was written to."""

from __future__ import annotations

import json

from gateway.store.indexing import index_entries, unpack_index
from tests.conftest import Gateway
from tests.gateway.fixtures import appointment


async def _search_ids(gateway: Gateway, query: str) -> list[str]:
    bundle = (await gateway.ehr("GET", f"/Appointment?{query}")).json()
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


async def test_the_current_state_keeps_the_index_root_once(gateway: Gateway) -> None:
    """An Appointment's index entries (eleven here) share their key root: it is kept once, not once per entry, so the
    entries take about half the bytes, and they are read back as the version wrote them."""
    assert (await gateway.ehr("PUT", "/Appointment/ix1", json=appointment(id="ix1"))).status_code == 201
    services = gateway.services
    keys, redis = services.keys, services.redis
    raw = await redis.hget(keys.current("clinic-a", "Appointment", "ix1"), "idx")
    root = keys.index_root("clinic-a", "Appointment")
    assert raw is not None and raw.decode().count(root) == 1
    stored = (await gateway.ehr("GET", "/Appointment/ix1")).json()
    entries = index_entries(keys, "clinic-a", stored)
    assert len(entries) >= 10 and all(key.startswith(root) for _, key, _ in entries)
    assert sorted(unpack_index(json.loads(raw))) == entries
    as_before = json.dumps([list(e) for e in entries]).encode()  # the form versions before this one wrote
    assert len(raw) < 0.7 * len(as_before)


async def test_a_resource_indexed_in_the_older_form_moves_out_of_its_old_entries(gateway: Gateway) -> None:
    """A resource stored by a gateway that kept whole keys (``[kind, key, member]``) is updated by this one: its old
    entries are removed, so searching for its old practitioner, date or description no longer finds it."""
    assert (await gateway.ehr("PUT", "/Appointment/ix2", json=appointment(id="ix2"))).status_code == 201
    services = gateway.services
    keys, redis = services.keys, services.redis
    current = keys.current("clinic-a", "Appointment", "ix2")
    entries = unpack_index(json.loads(await redis.hget(current, "idx")))
    await redis.hset(current, "idx", json.dumps([list(e) for e in entries]))  # as the previous version wrote it
    assert await _search_ids(gateway, "practitioner=Practitioner/prac-1") == ["ix2"]

    moved = appointment(
        id="ix2",
        description="Moved visit",
        start="2026-12-11T09:00:00-05:00",
        end="2026-12-11T09:30:00-05:00",
        participant=[
            {"actor": {"reference": "Patient/pat-1"}, "status": "accepted"},
            {"actor": {"reference": "Practitioner/prac-2"}, "status": "accepted"},
        ],
    )
    assert (await gateway.ehr("PUT", "/Appointment/ix2", json=moved)).status_code == 200
    assert await _search_ids(gateway, "practitioner=Practitioner/prac-1") == []
    assert await _search_ids(gateway, "practitioner=Practitioner/prac-2") == ["ix2"]
    assert await _search_ids(gateway, "date=2026-12-10") == []
    assert await _search_ids(gateway, "date=2026-12-11") == ["ix2"]
    raw = await redis.hget(current, "idx")
    assert raw.decode().count(keys.index_root("clinic-a", "Appointment")) == 1  # written again in the new form
