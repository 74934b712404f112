"""Messages pushed through /fhir/R4 reach the platform: events, message records and their thread."""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.settings import ClientsConfig, Settings
from tests.conftest import CLIENTS, Gateway, running


def communication(cid: str, **elements: Any) -> dict[str, Any]:
    """Return a synthetic secure message from the clinic to its patient."""
    resource: dict[str, Any] = {
        "resourceType": "Communication",
        "id": cid,
        "status": "completed",
        "subject": {"reference": "Patient/pat-1"},
        "sender": {"reference": "Practitioner/prac-1"},
        "recipient": [{"reference": "Patient/pat-1"}],
        "sent": "2026-03-02T09:00:00-05:00",
        "topic": {"text": "Lab results"},
        "payload": [{"contentString": "Your results are in; all normal."}],
    }
    return resource | elements


def reply(cid: str, to: str, **elements: Any) -> dict[str, Any]:
    """Return the patient's reply to message ``to``."""
    return (
        communication(
            cid,
            sender={"reference": "Patient/pat-1"},
            recipient=[{"reference": "Practitioner/prac-1"}],
            sent="2026-03-02T10:30:00-05:00",
            inResponseTo=[{"reference": f"Communication/{to}"}],
            payload=[{"contentString": "Thank you!"}],
        )
        | elements
    )


async def _events(gateway: Gateway) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = (await gateway.platform("/changes")).json()["events"]
    return [e for e in events if e["record_type"] == "message"]


async def test_a_message_and_its_reply_arrive_as_one_thread(gateway: Gateway) -> None:
    assert (await gateway.ehr("PUT", "/Communication/msg-1", json=communication("msg-1"))).status_code in (200, 201)
    assert (await gateway.ehr("PUT", "/Communication/msg-2", json=reply("msg-2", "msg-1"))).status_code in (200, 201)
    await gateway.drain()

    events = await _events(gateway)
    assert [(e["type"], e["record_id"]) for e in events] == [
        ("message.received", "msg-1"),
        ("message.received", "msg-2"),
    ]
    assert events[1]["record"]["body"] == "Thank you!"

    first = (await gateway.platform("/messages/msg-1")).json()
    assert (first["body"], first["sent_at"], first["thread_id"]) == (
        "Your results are in; all normal.",
        "2026-03-02T14:00:00Z",
        "msg-1",
    )
    second = (await gateway.platform("/messages/msg-2")).json()
    assert second["thread_id"] == "msg-1"
    assert second["in_response_to"] == [{"reference": "Communication/msg-1", "display": None}]

    thread = (await gateway.platform("/message-threads/msg-1")).json()
    assert thread["record_type"] == "message_thread"
    assert (thread["message_count"], thread["message_ids"]) == (2, ["msg-1", "msg-2"])
    assert thread["last_message_at"] == "2026-03-02T15:30:00Z"
    assert thread["patient"]["reference"] == "Patient/pat-1"
    assert thread["topic"]["text"] == "Lab results"
    assert [p["reference"] for p in thread["participants"]] == ["Practitioner/prac-1", "Patient/pat-1"]


async def test_an_updated_and_a_deleted_reply_change_the_thread(gateway: Gateway) -> None:
    await gateway.ehr("PUT", "/Communication/m-a", json=communication("m-a"))
    await gateway.ehr("PUT", "/Communication/m-b", json=reply("m-b", "m-a", status="in-progress"))
    await gateway.drain()
    await gateway.ehr("PUT", "/Communication/m-b", json=reply("m-b", "m-a"))
    await gateway.drain()
    thread = (await gateway.platform("/message-threads/m-a")).json()
    assert (thread["message_count"], thread["last_status"]) == (2, "completed")

    assert (await gateway.ehr("DELETE", "/Communication/m-b")).status_code in (200, 204)
    await gateway.drain()
    types = [(e["type"], e["record_id"]) for e in await _events(gateway)]
    assert types == [
        ("message.received", "m-a"),
        ("message.received", "m-b"),
        ("message.updated", "m-b"),
        ("message.deleted", "m-b"),
    ]
    thread = (await gateway.platform("/message-threads/m-a")).json()
    assert (thread["message_count"], thread["message_ids"]) == (1, ["m-a"])


async def test_a_reply_stored_before_its_parent_still_joins_the_parents_thread(gateway: Gateway) -> None:
    await gateway.ehr("PUT", "/Communication/late-2", json=reply("late-2", "late-1"))
    await gateway.drain()
    await gateway.ehr("PUT", "/Communication/late-1", json=communication("late-1"))
    await gateway.drain()
    thread = (await gateway.platform("/message-threads/late-1")).json()
    assert thread["message_ids"] == ["late-1", "late-2"]


@pytest.fixture
async def oracle_gateway(settings: Settings) -> AsyncIterator[Gateway]:
    """The app for a tenant whose EHR is Oracle Health (Cerner)."""
    config = {**CLIENTS, "tenants": {"clinic-a": {"vendor": "oracle-health", "timezone": "America/Chicago"}}}
    async with running(settings, ClientsConfig.model_validate(config), with_worker=True) as gw:
        yield gw


def _b64(words: str) -> str:
    return base64.b64encode(words.encode("utf-8")).decode("ascii")


async def test_oracle_health_bodies_are_decoded_from_attachments_and_binaries(oracle_gateway: Gateway) -> None:
    gw = oracle_gateway
    attached = communication("40001.0.-4.prsnl", payload=[
        {"contentAttachment": {"contentType": "text/plain", "data": _b64("Please call about your refill.")}}
    ])  # fmt: skip
    await gw.ehr("PUT", "/Communication/40001.0.-4.prsnl", json=attached)
    # Oracle Health's read API returns the body as a Binary the payload references.
    binary = {"resourceType": "Binary", "id": "40002", "contentType": "text/plain", "data": _b64("Lab is open 8-5.")}
    assert (await gw.ehr("PUT", "/Binary/40002", json=binary)).status_code in (200, 201)
    by_binary = communication("40002.0.-4.prsnl", payload=[{"contentReference": {"reference": "Binary/40002"}}])
    await gw.ehr("PUT", "/Communication/40002.0.-4.prsnl", json=by_binary)
    await gw.drain()

    assert (await gw.platform("/messages/40001.0.-4.prsnl")).json()["body"] == "Please call about your refill."
    record = (await gw.platform("/messages/40002.0.-4.prsnl")).json()
    assert (record["body"], record["content_references"]) == ("Lab is open 8-5.", [])
    assert [e["type"] for e in await _events(gw)] == ["message.received", "message.received"]


async def test_a_body_binary_arriving_after_its_message_updates_the_message(oracle_gateway: Gateway) -> None:
    gw = oracle_gateway
    by_binary = communication("40003.0.-4.prsnl", payload=[{"contentReference": {"reference": "Binary/40003"}}])
    await gw.ehr("PUT", "/Communication/40003.0.-4.prsnl", json=by_binary)
    await gw.drain()
    assert (await gw.platform("/messages/40003.0.-4.prsnl")).json()["body"] is None
    binary = {"resourceType": "Binary", "id": "40003", "contentType": "text/plain", "data": _b64("Bring your list.")}
    await gw.ehr("PUT", "/Binary/40003", json=binary)
    await gw.drain()
    assert (await gw.platform("/messages/40003.0.-4.prsnl")).json()["body"] == "Bring your list."
    assert [e["type"] for e in await _events(gw)] == ["message.received", "message.updated"]


async def test_a_message_moved_to_another_thread_leaves_the_old_one(gateway: Gateway) -> None:
    await gateway.ehr("PUT", "/Communication/root-a", json=communication("root-a"))
    await gateway.ehr("PUT", "/Communication/root-b", json=communication("root-b"))
    await gateway.ehr("PUT", "/Communication/mover", json=reply("mover", "root-a"))
    await gateway.drain()
    assert (await gateway.platform("/message-threads/root-a")).json()["message_count"] == 2
    await gateway.ehr("PUT", "/Communication/mover", json=reply("mover", "root-b"))
    await gateway.drain()
    assert (await gateway.platform("/message-threads/root-a")).json()["message_ids"] == ["root-a"]
    assert (await gateway.platform("/message-threads/root-b")).json()["message_ids"] == ["root-b", "mover"]
