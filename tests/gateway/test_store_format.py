"""The store format an operator sets (``fhir-gateway store-format``): a resource's index entries are written as
lists until format 2 is set, packed from then on (half the bytes), and searches and updates find the same resources
in either form; ``reindex`` rewrites every resource in the form in force, also back to lists."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from gateway.cli import _parser, main
from gateway.settings import Settings
from gateway.store.format import FORMATS, REFRESH_SECONDS, parse
from gateway.store.indexing import unpack_index
from tests.conftest import Gateway
from tests.gateway.fixtures import appointment
from tests.support import ShiftedClock

TENANT = "clinic-a"


async def _idx(gateway: Gateway, rid: str) -> Any:
    services = gateway.services
    return json.loads(await services.redis.hget(services.keys.current(TENANT, "Appointment", rid), "idx"))


async def _ids(gateway: Gateway, query: str) -> list[str]:
    bundle = (await gateway.ehr("GET", f"/Appointment?{query}")).json()
    return sorted(e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == "match")


async def _put(gateway: Gateway, rid: str, **fields: Any) -> int:
    return (await gateway.ehr("PUT", f"/Appointment/{rid}", json=appointment(id=rid, **fields))).status_code


def _moved(rid: str) -> dict[str, Any]:
    return appointment(
        id=rid,
        start="2026-12-11T09:00:00-05:00",
        end="2026-12-11T09:30:00-05:00",
        participant=[
            {"actor": {"reference": "Patient/pat-1"}, "status": "accepted"},
            {"actor": {"reference": "Practitioner/prac-2"}, "status": "accepted"},
        ],
    )


def _cli(settings: Settings, monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    monkeypatch.setenv("REDIS_URL", settings.redis_url or "")
    monkeypatch.setenv("GATEWAY_KEY_PREFIX", settings.key_prefix)
    return main(["store-format", *args])


async def test_index_entries_are_packed_only_once_an_operator_sets_format_2(
    gateway: Gateway, clock: ShiftedClock, settings: Settings, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    assert await _put(gateway, "f1") == 201
    listed = await _idx(gateway, "f1")
    assert isinstance(listed, list) and len(listed) >= 10  # format 1, as every version reads

    assert await asyncio.to_thread(_cli, settings, monkeypatch, "--set", "2") == 0
    assert json.loads(capsys.readouterr().out) == {"store_format": "2", "writes": 2, "form": FORMATS[2]}
    # A process reads the format again at most every REFRESH_SECONDS: until then it writes what it read.
    assert await _put(gateway, "f2") == 201
    assert isinstance(await _idx(gateway, "f2"), list)

    clock.advance(REFRESH_SECONDS)
    assert await _put(gateway, "f3") == 201
    packed = await _idx(gateway, "f3")
    assert isinstance(packed, dict) and packed["p"] == f"{settings.key_prefix}:{{{TENANT}}}:idx:Appointment:"
    assert len(json.dumps(packed)) < 0.7 * len(json.dumps(listed))
    assert sorted(unpack_index(packed)) == sorted(tuple(e) for e in listed)  # the same entries, in half the bytes

    # Searches find resources in either form; an update moves each out of its old entries and packs it.
    assert await _ids(gateway, "practitioner=Practitioner/prac-1") == ["f1", "f2", "f3"]
    for rid in ("f1", "f3"):
        assert (await gateway.ehr("PUT", f"/Appointment/{rid}", json=_moved(rid))).status_code == 200
        assert isinstance(await _idx(gateway, rid), dict)
    assert await _ids(gateway, "practitioner=Practitioner/prac-1") == ["f2"]
    assert await _ids(gateway, "practitioner=Practitioner/prac-2") == ["f1", "f3"]
    assert await _ids(gateway, "date=2026-12-10") == ["f2"]
    assert await _ids(gateway, "date=2026-12-11") == ["f1", "f3"]
    assert (await gateway.ehr("DELETE", "/Appointment/f3")).status_code == 204
    assert await _ids(gateway, "practitioner=Practitioner/prac-2") == ["f1"]


async def test_reindex_rewrites_every_resource_in_the_format_in_force_and_back(
    gateway: Gateway, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    for rid in ("r1", "r2", "r3"):
        assert await _put(gateway, rid) == 201
    before = {rid: sorted(tuple(e) for e in await _idx(gateway, rid)) for rid in ("r1", "r2", "r3")}

    async def reindex() -> None:
        done, changed = await gateway.services.store.reindex(TENANT)
        assert (done, changed) == (3, 0)

    assert await asyncio.to_thread(_cli, settings, monkeypatch, "--set", "2") == 0
    await reindex()  # reads the format in force first, whenever it last read it
    for rid, entries in before.items():
        packed = await _idx(gateway, rid)
        assert isinstance(packed, dict) and sorted(unpack_index(packed)) == entries
    assert await _ids(gateway, "practitioner=Practitioner/prac-1") == ["r1", "r2", "r3"]

    # Back to format 1 (before rolling back to a version that reads lists only): reindex writes lists again.
    assert await asyncio.to_thread(_cli, settings, monkeypatch, "--set", "1") == 0
    await reindex()
    for rid, entries in before.items():
        listed = await _idx(gateway, rid)
        assert isinstance(listed, list) and sorted(tuple(e) for e in listed) == entries
    assert await _ids(gateway, "practitioner=Practitioner/prac-1") == ["r1", "r2", "r3"]


async def test_the_command_prints_the_format_and_refuses_one_it_does_not_know(
    gateway: Gateway, settings: Settings, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    assert await asyncio.to_thread(_cli, settings, monkeypatch) == 0
    assert json.loads(capsys.readouterr().out) == {"store_format": None, "writes": 1, "form": FORMATS[1]}
    with pytest.raises(SystemExit) as refused:
        await asyncio.to_thread(_cli, settings, monkeypatch, "--set", "3")
    assert refused.value.code == 2
    assert "invalid choice" in capsys.readouterr().err
    assert await gateway.services.redis.get(gateway.services.keys.store_format) is None


def test_a_format_set_by_a_later_version_writes_this_versions_latest_and_junk_writes_lists() -> None:
    assert parse(None) == 1
    assert parse(b"1") == 1 and parse(b"2") == 2
    assert parse(b"9") == max(FORMATS)  # a later version's format includes what this one writes
    assert parse(b"two") == 1 and parse(b"0") == 1 and parse(b"-2") == 1
    assert parse("²".encode()) == 1  # a digit to str.isdigit, not to int(): every write would have failed


def test_the_command_offers_every_format_this_version_knows() -> None:
    """``--set``'s choices are written out in the command line (which does not import the store): they must be the
    formats ``gateway.store.format`` knows."""
    for number in FORMATS:
        assert _parser().parse_args(["store-format", "--set", str(number)]).number == number
