"""A resource's current state keeps its index entries (the ``idx`` field), so that its next version moves it out of
them. This version reads the form it writes, the form before it, and the packed form a later version is to write
(``unpack_index``): in a rolling upgrade, whichever process updates a resource removes it from its old entries."""

from __future__ import annotations

import json

from gateway.store.indexing import unpack_index
from tests.conftest import Gateway
from tests.gateway.fixtures import appointment


def _moved(rid: str) -> dict[str, object]:
    """The appointment moved to the next day, with another practitioner."""
    return appointment(
        id=rid,
        description="Moved visit",
        start="2026-12-11T09:00:00-05:00",
        end="2026-12-11T09:30:00-05:00",
        participant=[
            {"actor": {"reference": "Patient/pat-1"}, "status": "accepted"},
            {"actor": {"reference": "Practitioner/prac-2"}, "status": "accepted"},
        ],
    )


async def _move_and_search(gateway: Gateway, rid: str) -> None:
    """Move the appointment, then check it is found by its new practitioner and day only."""
    assert (await gateway.ehr("PUT", f"/Appointment/{rid}", json=_moved(rid))).status_code == 200
    assert await _search_ids(gateway, "practitioner=Practitioner/prac-1") == []
    assert await _search_ids(gateway, "practitioner=Practitioner/prac-2") == [rid]
    assert await _search_ids(gateway, "date=2026-12-10") == []
    assert await _search_ids(gateway, "date=2026-12-11") == [rid]


async def _search_ids(gateway: Gateway, query: str) -> list[str]:
    bundle = (await gateway.ehr("GET", f"/Appointment?{query}")).json()
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match"]


async def test_a_resource_indexed_in_the_packed_form_moves_out_of_its_old_entries(gateway: Gateway) -> None:
    """A resource whose current state a later version wrote, its index keys packed under their shared root, is
    updated by this one: its old entries are removed, so searching for its old practitioner or date no longer finds
    it, and the resource is found by its new ones."""
    assert (await gateway.ehr("PUT", "/Appointment/ix1", json=appointment(id="ix1"))).status_code == 201
    services = gateway.services
    keys, redis = services.keys, services.redis
    current = keys.current("clinic-a", "Appointment", "ix1")
    entries = unpack_index(json.loads(await redis.hget(current, "idx")))
    root = f"{keys.prefix}:{{clinic-a}}:idx:Appointment:"
    assert len(entries) >= 10 and all(key.startswith(root) for _, key, _ in entries)
    packed = {
        "p": root,
        "s": [key[len(root) :] for kind, key, _ in entries if kind == "s"],
        "o": [[kind, key[len(root) :], member] for kind, key, member in entries if kind != "s"],
    }
    await redis.hset(current, "idx", json.dumps(packed))
    assert unpack_index(packed) == entries
    assert len(json.dumps(packed)) < 0.7 * len(json.dumps([list(e) for e in entries]))
    assert await _search_ids(gateway, "practitioner=Practitioner/prac-1") == ["ix1"]

    await _move_and_search(gateway, "ix1")


async def test_a_resource_indexed_in_the_older_form_moves_out_of_its_old_entries(gateway: Gateway) -> None:
    """A resource stored by a gateway that kept whole keys (``[kind, key, member]``) is updated by this one: its old
    entries are removed, so searching for its old practitioner or date no longer finds it."""
    assert (await gateway.ehr("PUT", "/Appointment/ix2", json=appointment(id="ix2"))).status_code == 201
    services = gateway.services
    keys, redis = services.keys, services.redis
    current = keys.current("clinic-a", "Appointment", "ix2")
    entries = unpack_index(json.loads(await redis.hget(current, "idx")))
    await redis.hset(current, "idx", json.dumps([list(e) for e in entries]))  # as the previous version wrote it
    assert await _search_ids(gateway, "practitioner=Practitioner/prac-1") == ["ix2"]

    await _move_and_search(gateway, "ix2")
