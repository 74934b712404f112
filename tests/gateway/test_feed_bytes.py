"""The change feed writes its pages from the stored events' bytes, and answers exactly what it did before.

The expected page is always the one the feed gave when it parsed every event, filtered the parsed events, and
wrote the page again; entries written by an older gateway (the event alone, spaces after its separators) are
mixed with new ones and are still filtered and answered the same.
"""

from __future__ import annotations

import json
from fnmatch import fnmatchcase
from typing import Any

import pytest

from gateway import encoding
from gateway.platform.disclosure import shown_event
from gateway.platform.feed import Entry, encode_cursor
from gateway.store import text
from tests.conftest import PLATFORM_A, PLATFORM_A_BASIC, Gateway
from tests.gateway.fixtures import appointment

PSY = {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]}


async def _put(gateway: Gateway, rid: str, **changes: Any) -> None:
    answer = await gateway.ehr("PUT", f"/Appointment/{rid}", json=appointment(id=rid, **changes))
    assert answer.status_code in (200, 201), answer.text
    await gateway.drain()


async def _stream(gateway: Gateway) -> list[tuple[str, dict[bytes, bytes]]]:
    found = await gateway.services.redis.xrange(gateway.services.keys.feed("clinic-a"))
    return [(text(entry_id), fields) for entry_id, fields in found]


async def _add_as_an_older_gateway_did(gateway: Gateway, event: dict[str, Any]) -> None:
    """Append an event as the gateway wrote them before the type and labels were kept beside it (``json.dumps``)."""
    record = event.pop("record")
    raw = json.dumps(event)[:-1] + ', "record": ' + json.dumps(record, separators=(",", ":")) + "}"
    await gateway.services.redis.xadd(gateway.services.keys.feed("clinic-a"), {"e": raw})


def _events_as_before(
    stream: list[tuple[str, dict[bytes, bytes]]], scopes: frozenset[str], types: list[str] | None = None
) -> list[dict[str, Any]]:
    """Return the page's events as the feed made them before: parse, filter the parsed event, add the cursor."""
    events = []
    for entry_id, fields in stream:
        event = json.loads(fields[b"e"])
        if types and not any(fnmatchcase(event["type"], pattern) for pattern in types):
            continue
        if not shown_event(event, scopes):
            continue
        event["cursor"] = encode_cursor(entry_id)
        events.append(event)
    return events


@pytest.fixture
async def mixed(gateway: Gateway) -> Gateway:
    """Events of both forms, plain and labelled, of several types, interleaved."""
    await _put(gateway, "plain-1", description='Ünïcode — ✓ \u2028 "q" \\ \t')
    await _put(gateway, "psy-1", description="Psychotherapy session", meta=PSY)
    [(_, latest)] = (await _stream(gateway))[-1:]
    older = encoding.loads(latest[b"e"])
    await _add_as_an_older_gateway_did(gateway, {**older, "id": "evt_old_psy", "type": "appointment.cancelled"})
    plain = encoding.loads((await _stream(gateway))[0][1][b"e"])
    await _add_as_an_older_gateway_did(gateway, {**plain, "id": "evt_old_plain", "type": "appointment.cancelled"})
    await _put(gateway, "plain-1", status="cancelled")
    await _put(gateway, "psy-1", meta=PSY, status="cancelled")
    return gateway


async def test_new_events_carry_their_type_and_labels_beside_them(mixed: Gateway) -> None:
    fields = [f for _, f in await _stream(mixed)]
    kept = [(f.get(b"type"), f.get(b"labels")) for f in fields]
    assert kept == [
        (b"appointment.created", b""), (b"appointment.created", b'["PSY"]'), (None, None), (None, None),
        (b"appointment.cancelled", b""), (b"appointment.cancelled", b'["PSY"]'),
    ]  # fmt: skip
    for f in fields:
        if b"type" in f:
            assert encoding.loads(f[b"e"])["type"] == f[b"type"].decode()


@pytest.mark.parametrize("token,scopes", [(PLATFORM_A, {"sensitive"}), (PLATFORM_A_BASIC, set())])
@pytest.mark.parametrize("types", [None, ["appointment.cancelled"], ["*.created", "nothing.*"]])
async def test_a_page_is_the_same_bytes_as_before(
    mixed: Gateway, token: str, scopes: set[str], types: list[str] | None
) -> None:
    query = "?limit=1000" + "".join(f"&types={t}" for t in types or [])
    answer = await mixed.platform(f"/changes{query}", token=token)
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    expected = _events_as_before(await _stream(mixed), frozenset(scopes), types)
    assert expected  # every case has something to show
    assert answer.content == encoding.dumps({"events": expected, "next_cursor": answer.json()["next_cursor"]})
    ids = [e["id"] for e in answer.json()["events"]]
    cancellations = types in (None, ["appointment.cancelled"])
    assert ("evt_old_psy" in ids) == (cancellations and bool(scopes))
    assert ("evt_old_plain" in ids) == cancellations


async def test_paging_through_both_forms_gives_every_shown_event_once(mixed: Gateway) -> None:
    expected = [e["id"] for e in _events_as_before(await _stream(mixed), frozenset())]
    seen, cursor = [], ""
    for _ in range(len(expected) + 1):
        page = (await mixed.platform(f"/changes?limit=1&cursor={cursor}", token=PLATFORM_A_BASIC)).json()
        seen += [e["id"] for e in page["events"]]
        cursor = page["next_cursor"]
    assert seen == expected and "evt_old_plain" in seen and "evt_old_psy" not in seen


def test_an_entry_is_filtered_by_its_fields_without_being_parsed() -> None:
    raw = b'{"id":"evt_1","type":"appointment.created","record":{"security":[]}}'
    entry = Entry.read(b"5-0", {b"e": raw, b"type": b"message.sent", b"labels": b'["R"]'})
    assert (entry.type, entry.codes, entry.parsed) == ("message.sent", ("R",), None)  # the fields are what counts
    assert entry.with_cursor() == raw[:-1] + b',"cursor":"' + encode_cursor("5-0").encode() + b'"}'
    older = Entry.read(b"6-0", {b"e": b'{"id": "evt_2", "type": "x.y", "record": {"security": [{"code": "V"}]}}'})
    assert (older.type, older.codes) == ("x.y", ("V",))
    assert older.with_cursor() == b'{"id":"evt_2","type":"x.y","record":{"security":[{"code":"V"}]},"cursor":"' + (
        encode_cursor("6-0").encode() + b'"}'
    )
