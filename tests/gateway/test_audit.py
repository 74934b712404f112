"""The audit trail: an AuditEvent-shaped entry for every read, search, write, delete, write-back and refusal, with
no PHI in any of it; retention; the audit API's scope; the NDJSON AuditEvent export."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx
from redis.asyncio import Redis

from conformance.outcome import has_errors
from conformance.validator import validate_resource
from gateway import cli
from gateway.services import Services
from gateway.settings import ClientsConfig, Settings
from gateway.store import Keyspace, Plan, audit
from tests.conftest import CLIENTS, EHR_A, EHR_B, PLATFORM_A, Gateway, running
from tests.support import ShiftedClock

AUDITOR = "platform-auditor-token-clinic-a-0123456789"
EHR_BLOCK = {"base_url": "https://ehr.example.test/fhir", "auth": {"type": "bearer", "token": "ehr-bearer-0123456789"}}
CANARY_NAME = "Quillfeather"  # a patient's family name: PHI, never in the trail
CANARY_TEXT = "Zebedee needs a ride"  # a message body: PHI


@pytest.fixture
def clients() -> ClientsConfig:
    auditor = {"token": AUDITOR, "tenant": "clinic-a", "role": "platform", "scopes": ["audit"], "name": "auditor"}
    tenants = {"clinic-a": {"ehr": EHR_BLOCK}}  # write-backs need an EHR (the EHR is never reached: respx)
    return ClientsConfig.model_validate({**CLIENTS, "clients": [*CLIENTS["clients"], auditor], "tenants": tenants})


@pytest.fixture(autouse=True)
def ehr() -> Iterator[respx.MockRouter]:
    with respx.mock(assert_all_called=False) as router:
        router.route(host="ehr.example.test").mock(return_value=httpx.Response(503))
        yield router


@pytest.fixture
async def gw(settings: Settings, clients: ClientsConfig, clock: ShiftedClock) -> AsyncIterator[Gateway]:
    async with running(settings, clients, with_worker=True, clock=clock) as gateway:
        yield gateway


def patient(rid: str) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": rid,
        "name": [{"family": CANARY_NAME, "given": ["Zebedee"]}],
        "birthDate": "1990-04-02",
    }


async def trail(gw: Gateway, tenant: str = "clinic-a") -> list[dict[str, Any]]:
    await gw.services.audit.flush()
    return (await gw.services.audit.entries(tenant, limit=1000)).entries


async def raw_stream(gw: Gateway, tenant: str) -> list[bytes]:
    """Every byte of every field of the tenant's audit stream."""
    redis: Redis = gw.services.redis
    found = await redis.xrange(gw.services.keys.audit(tenant))
    return [part for _, fields in found for kv in fields.items() for part in kv]


async def test_every_interaction_kind_is_audited_with_who_what_when_outcome_and_source(gw: Gateway) -> None:
    created = await gw.ehr("POST", "/Patient", json={k: v for k, v in patient("x").items() if k != "id"})
    pid = created.json()["id"]
    assert created.status_code == 201
    assert (await gw.ehr("GET", f"/Patient/{pid}")).status_code == 200
    assert (await gw.ehr("GET", f"/Patient/{pid}/_history/1")).status_code == 200
    assert (await gw.ehr("GET", f"/Patient?family={CANARY_NAME}&birthdate=1990-04-02")).status_code == 200
    assert (await gw.ehr("PUT", f"/Patient/{pid}", json={**patient(pid), "gender": "other"})).status_code == 200
    assert (await gw.ehr("GET", f"/Patient/{pid}/_history")).status_code == 200
    await gw.drain()
    assert (await gw.platform(f"/patients/{pid}")).status_code == 200
    assert (await gw.platform("/changes")).status_code == 200
    message = {"patient": f"Patient/{pid}", "sender": f"Patient/{pid}", "body": CANARY_TEXT}
    sent = await gw.http.post("/platform/v1/messages", json=message, headers={"Authorization": f"Bearer {PLATFORM_A}"})
    assert sent.status_code == 202, sent.text
    assert (await gw.ehr("DELETE", f"/Patient/{pid}")).status_code == 204
    assert (await gw.ehr("GET", f"/Patient/{pid}", token="not-a-known-token-0123456789")).status_code == 401
    assert (await gw.platform(f"/patients/{pid}", token=EHR_A)).status_code == 403

    # Writes are in the stream when answered, reads once flushed: the order is by time, not by id.
    entries = sorted(await trail(gw), key=lambda e: int(e["at"]))
    seen = [(e["interaction"], e.get("type"), e.get("id"), e.get("vid"), e["outcome"]) for e in entries]
    ehr = "clinic-a-ehr-0"
    assert sorted(seen, key=str) == sorted(
        [
            ("create", "Patient", pid, "1", 201),
            ("read", "Patient", pid, "1", 200),
            ("vread", "Patient", pid, "1", 200),
            ("search-type", "Patient", None, None, 200),
            ("update", "Patient", pid, "2", 200),
            ("history-instance", "Patient", pid, None, 200),
            ("platform-read", "patients", pid, None, 200),
            ("feed-read", None, None, None, 200),
            ("writeback", "Communication", None, None, 202),
            ("delete", "Patient", pid, "3", 204),
            ("platform-read", "patients", pid, None, 403),
        ],
        key=str,
    )
    by_kind = {e["interaction"]: e for e in entries}
    assert all(e["source"] == "127.0.0.1" and e["tenant"] == "clinic-a" and e["recorded"] for e in entries)
    platform = {"platform-read", "feed-read", "writeback"}
    assert all(e["client"] == ("clinic-a-platform-1" if e["interaction"] in platform and e["outcome"] != 403 else ehr)
               for e in entries)  # fmt: skip
    assert all(e["patient"] == f"Patient/{pid}" for e in entries if e["interaction"] != "feed-read"
               and e["interaction"] != "search-type")  # fmt: skip
    assert by_kind["search-type"]["params"] == "birthdate,family"  # names, never values
    assert by_kind["writeback"]["writeback"] == sent.json()["id"]
    # The 401 names no tenant: it is on the anonymous stream.
    [refused] = [e for e in await trail(gw, "~anonymous") if e["source"] == "127.0.0.1" and e["outcome"] == 401]
    assert refused["client"] == "unknown" and refused["interaction"] == "read" and refused["id"] == pid

    everything = b"".join(await raw_stream(gw, "clinic-a")) + b"".join(await raw_stream(gw, "~anonymous"))
    for canary in (CANARY_NAME, "Zebedee", "1990-04-02", "ride", "not-a-known-token", EHR_A, PLATFORM_A):
        assert canary.encode() not in everything


async def test_a_write_and_its_audit_entry_are_one_atomic_step(gw: Gateway) -> None:
    # Nothing is buffered for a committed write: the entry is in the stream as soon as the 201 is.
    created = await gw.ehr("PUT", "/Patient/atomic-1", json=patient("atomic-1"))
    assert created.status_code == 201
    found = await gw.services.redis.xrange(gw.services.keys.audit("clinic-a"))
    assert [(f[b"interaction"], f[b"id"], f[b"outcome"]) for _, f in found] == [(b"update", b"atomic-1", b"201")]
    # A refused write (412, stale If-Match) writes nothing, and is audited as a refusal.
    stale = await gw.ehr("PUT", "/Patient/atomic-1", json=patient("atomic-1"), headers={"If-Match": 'W/"7"'})
    assert stale.status_code == 412
    assert [(e["interaction"], e["outcome"]) for e in await trail(gw)][-1] == ("update", 412)


async def test_a_transaction_audits_each_entry_and_a_refused_body_is_audited(gw: Gateway) -> None:
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": patient("tx-1"), "request": {"method": "PUT", "url": "Patient/tx-1"}},
            {"resource": patient("tx-2"), "request": {"method": "PUT", "url": "Patient/tx-2"}},
        ],
    }
    assert (await gw.ehr("POST", "", json=bundle)).status_code == 200
    bad = await gw.ehr("POST", "/Patient", json={"resourceType": "Patient", "gender": "sometimes", "name": "x"})
    assert bad.status_code in (400, 422)
    entries = await trail(gw)
    assert [(e["interaction"], e["id"]) for e in entries[:2]] == [("update", "tx-1"), ("update", "tx-2")]
    assert (entries[2]["interaction"], entries[2]["outcome"], entries[2]["type"]) == (
        "create",
        bad.status_code,
        "Patient",
    )


async def test_each_tenant_has_its_own_trail(gw: Gateway) -> None:
    await gw.ehr("PUT", "/Patient/b-1", token=EHR_B, json=patient("b-1"))
    assert [e["id"] for e in await trail(gw, "clinic-b")] == ["b-1"]
    assert await trail(gw) == []


async def test_the_audit_api_needs_the_audit_scope_and_filters_by_patient_and_client(gw: Gateway) -> None:
    await gw.ehr("PUT", "/Patient/p-1", json=patient("p-1"))
    await gw.ehr("PUT", "/Patient/p-2", json=patient("p-2"))
    await gw.ehr("GET", "/Patient/p-1")
    denied = await gw.platform("/audit")
    assert denied.status_code == 403
    assert "audit" in denied.json()["issue"][0]["diagnostics"]
    await gw.services.audit.flush()
    about = (await gw.platform("/audit?patient=p-1", token=AUDITOR)).json()
    assert [(e["interaction"], e["id"]) for e in about["entries"]] == [("update", "p-1"), ("read", "p-1")]
    assert about["next_cursor"] is None
    first = (await gw.platform("/audit?client=clinic-a-ehr-0&limit=2", token=AUDITOR)).json()
    assert [e["id"] for e in first["entries"]] == ["p-1", "p-2"]
    rest = (await gw.platform(f"/audit?client=clinic-a-ehr-0&cursor={first['next_cursor']}", token=AUDITOR)).json()
    assert [e["id"] for e in rest["entries"]] == ["p-1"]
    assert (await gw.platform("/audit?client=nobody", token=AUDITOR)).json()["entries"] == []
    assert (await gw.platform("/audit?from=2000-01-01&to=2000-01-02", token=AUDITOR)).json()["entries"] == []
    assert (await gw.platform("/audit?from=yesterday", token=AUDITOR)).status_code == 400
    assert (await gw.platform("/audit?from=1900-01-01", token=AUDITOR)).json()["entries"][0]["id"] == "p-1"
    for cursor in ("99999999999999999999-0", "x", "1-2-3"):
        assert (await gw.platform(f"/audit?cursor={cursor}", token=AUDITOR)).status_code == 400, cursor
    # Reading the trail is itself audited (the 403 too).
    kinds = [(e["interaction"], e["outcome"]) for e in await trail(gw) if e["interaction"] == "audit-read"]
    assert kinds[0] == ("audit-read", 403) and ("audit-read", 200) in kinds


async def test_entries_past_retention_are_trimmed(gw: Gateway, clock: ShiftedClock) -> None:
    await gw.ehr("PUT", "/Patient/old-1", json=patient("old-1"))
    audit = gw.services.audit
    clock.advance(2189 * 86_400)  # within six years: kept
    assert await audit.trim("clinic-a") == 0
    assert [e["id"] for e in await trail(gw)] == ["old-1"]
    clock.advance(2 * 86_400)  # past GATEWAY_AUDIT_RETENTION_DAYS (2190)
    assert await audit.trim("clinic-a") == 1
    assert await trail(gw) == []


async def test_read_entries_buffered_at_shutdown_are_written(settings: Settings, clients: ClientsConfig) -> None:
    services = Services.build(settings, clients)
    try:
        async with running(settings, clients, with_worker=False) as gateway:
            await gateway.ehr("GET", "/Patient/never-1")
            services = gateway.services
            assert services.audit.pending == 1 or await services.redis.xlen(services.keys.audit("clinic-a")) == 1
        # The lifespan ended: the buffer was flushed.
        found = await services.redis.xrange(services.keys.audit("clinic-a"))
        assert [(f[b"interaction"], f[b"outcome"]) for _, f in found] == [(b"read", b"404")]
    finally:
        await services.aclose()


async def test_export_writes_valid_r4_audit_events_without_phi(
    gw: Gateway, settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    await gw.ehr("PUT", "/Patient/e-1", json=patient("e-1"))
    await gw.ehr("GET", f"/Patient?name={CANARY_NAME}")
    await gw.ehr("GET", "/Patient/e-1", token="not-a-known-token-0123456789")
    await gw.services.audit.flush()
    monkeypatch.setenv("REDIS_URL", str(settings.redis_url))
    monkeypatch.setenv("GATEWAY_KEY_PREFIX", settings.key_prefix)
    out = tmp_path / "audit.ndjson"
    args = ["audit", "export", "--tenant", "clinic-a", "--since", "2020-01-01", "--output", str(out)]
    code = await asyncio.to_thread(cli.main, args)
    assert code == 0
    text = out.read_text(encoding="utf-8")
    assert CANARY_NAME not in text and "Zebedee" not in text
    events = [json.loads(line) for line in text.splitlines()]
    assert [e["subtype"][0]["code"] for e in events] == ["update", "search-type"]
    for event in events:
        assert not has_errors(validate_resource(event)), validate_resource(event)
    update = events[0]
    assert update["type"]["code"] == "rest" and update["action"] == "U" and update["outcome"] == "0"
    assert update["agent"][0]["who"]["identifier"]["value"] == "clinic-a-ehr-0"
    assert update["agent"][0]["network"] == {"address": "127.0.0.1", "type": "2"}
    assert update["entity"][0]["what"]["reference"] == "Patient/e-1/_history/1"
    assert update["entity"][1]["what"]["reference"] == "Patient/e-1"
    assert events[1]["entity"][-1]["detail"] == [{"type": "parameter-names", "valueString": "name"}]
    # The export is audited too.
    last = (await trail(gw))[-1]
    assert (last["interaction"], last["client"]) == ("export", "operator-cli")
    assert await asyncio.to_thread(cli.main, ["audit", "export", "--tenant", "clinic-a", "--since", "yesterday"]) != 0


def test_a_writes_audit_entries_are_the_xadds_of_their_fields_whatever_they_share() -> None:
    """``audit.add`` sends what a request's entries share once (``Plan.put``); each entry is still its own XADD."""
    trail, keys = audit.RequestAudit("10.0.0.1", "transaction", 1_000, 2_000, "ehr-a"), Keyspace("gw")
    plan, rows = (
        Plan(),
        [("Patient", "p1", "Patient/p1"), ("Practitioner", "d1", ""), ("Appointment", "a1", "Patient/p1")],
    )
    expected = []
    for rtype, rid, patient in rows:
        fields = audit.entry(
            trail, tenant="t", client="ehr-a", rtype=rtype, rid=rid, vid="1", outcome=201, patient=patient
        )
        audit.add(plan, keys, "t", fields, trail.minid)
        expected.append(("XADD", plan.key(keys.audit("t")), ["MINID", "~", 1_000, "*", *fields]))
    assert list(plan.commands()) == expected
    assert len(plan.forms) == 2  # with a patient, and without


async def test_a_flush_returns_once_every_entry_recorded_before_it_is_written(gw: Gateway) -> None:
    """A flush called while another is writing (the flusher task's) waits for it: it used to return at once with
    nothing left to take, before the entries in the other one's pipeline were in the stream."""
    trail_ = gw.services.audit
    release, real = asyncio.Event(), gw.services.redis.pipeline

    class SlowPipeline:
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            self._pipe = real(*args, **kwargs)

        def execute_command(self, *args: Any) -> None:
            self._pipe.execute_command(*args)

        async def execute(self) -> Any:
            await release.wait()
            return await self._pipe.execute()

    trail_.record("clinic-a", ["at", "1", "tenant", "clinic-a", "interaction", "read", "id", "flush-race-1"])
    with pytest.MonkeyPatch.context() as patched:
        patched.setattr(trail_._redis, "pipeline", SlowPipeline)
        first = asyncio.create_task(trail_.flush())
        await asyncio.sleep(0)  # the first flush has taken the entry and waits in its pipeline
        second = asyncio.create_task(trail_.flush())
        for _ in range(5):
            await asyncio.sleep(0)
        assert not second.done()
        release.set()
        await asyncio.gather(first, second)
    assert any(e.get("id") == "flush-race-1" for e in await trail(gw))
