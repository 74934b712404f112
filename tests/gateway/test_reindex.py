"""After an upgrade: resources stored with an older version's indexes are found again once reindexed."""

from __future__ import annotations

import asyncio
import json

import pytest

from gateway.cli import main
from gateway.settings import Settings
from gateway.store.indexing import unpack_index
from tests.conftest import Gateway
from tests.gateway.fixtures import appointment


async def _as_if_stored_by_the_previous_version(gateway: Gateway, rid: str) -> None:
    """Keep the resource, but only the indexes the previous version wrote (a plain identifier and patient set)."""
    services = gateway.services
    keys, redis = services.keys, services.redis
    cur = keys.current("clinic-a", "Appointment", rid)
    entries = unpack_index(json.loads((await redis.hget(cur, "idx")) or "[]"))
    for kind, key, member in entries:
        await (redis.srem(key, rid) if kind == "s" else redis.zrem(key, member if kind == "l" else rid))
    old = [
        f"{keys.prefix}:{{clinic-a}}:idx:Appointment:ident:urn:sys|{rid}",
        f"{keys.prefix}:{{clinic-a}}:idx:Appointment:patient:Patient/p-old",
    ]
    for key in old:
        await redis.sadd(key, rid)
    await redis.hset(cur, "idx", json.dumps(old))
    await redis.delete(keys.type_versions("clinic-a", "Appointment"), keys.all_versions("clinic-a"))


async def test_reindex_makes_older_resources_findable_and_matchable_again(
    gateway: Gateway, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    body = appointment(id="old1", identifier=[{"system": "urn:sys", "value": "old1"}])
    assert (await gateway.ehr("PUT", "/Appointment/old1", json=body)).status_code == 201
    await _as_if_stored_by_the_previous_version(gateway, "old1")
    assert (await gateway.ehr("GET", "/Appointment?identifier=urn:sys|old1")).json()["total"] == 0

    monkeypatch.setenv("REDIS_URL", settings.redis_url or "")
    monkeypatch.setenv("GATEWAY_KEY_PREFIX", settings.key_prefix)
    assert await asyncio.to_thread(main, ["reindex", "--tenant", "clinic-a"]) == 0

    found = (await gateway.ehr("GET", "/Appointment?identifier=urn:sys|old1")).json()
    assert [e["resource"]["id"] for e in found["entry"] if e["search"]["mode"] == "match"] == ["old1"]
    without_id = {k: v for k, v in body.items() if k != "id"}
    again = await gateway.ehr(
        "POST", "/Appointment", json=without_id, headers={"If-None-Exist": "identifier=urn:sys|old1"}
    )
    assert again.status_code == 200  # the conditional create finds it: no duplicate
    history = (await gateway.ehr("GET", "/Appointment/_history")).json()
    assert [e["resource"]["id"] for e in history["entry"]] == ["old1"]
    stale = f"{gateway.services.keys.prefix}:{{clinic-a}}:idx:Appointment:ident:urn:sys|old1"
    assert not await gateway.services.redis.sismember(stale, "old1")  # the old form's entries are gone
