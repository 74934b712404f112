"""The worker's faster paths (issue #13, the worker's CPU) plan exactly what the code before them planned.

Every batch's commit is captured as the commit script receives it (its keys and arguments): the records' bytes,
their indexes, the change events' bytes and their feed entries, the aggregates (message threads), the re-mapping
of dependent records, the risk flags; and with it each job's events and each failure. Event ids and instants are
pinned (a counter, a fixed clock). The runs are deterministic:

- the benchmark's Bundles (``bench/worker_phases.py``'s creates), then every resource sent again as its
  ``--updates`` sends it (rescheduled, cancelled, described anew, or only a new narrative), then again unchanged;
- hand-made histories on tenants of three vendors: cancellations and rebookings within one batch, reschedules,
  deletes (of records mapped and never mapped) and re-creations, a patient merged, messages in threads (a reply,
  a message moved to another thread, one deleted), a care plan whose goal arrives after it and changes, a
  questionnaire response scored and flagged when its questionnaire arrives, and another flagged at once;
- when the FHIR corpus is present, every Appointment, Patient, Practitioner(Role), Communication, CarePlan, Goal,
  Questionnaire and QuestionnaireResponse in it, created, stored again with a new narrative, then deleted.

Their commits hash to what the code at d3a04f2 (main before this round's changes) made of the same runs, but for the
lastUpdated of later versions written in one millisecond (see ``GOLDEN``) (at d8d7bce,
before the commit checked the related resources a mapping read, they were 0d4b965b... and c4a608c9...). A change
meant to alter what the worker writes changes them: print ``golden(<a folder>, corpus)`` (``PYTHONHASHSEED=0``)
with the code before the change and after, and say in the commit why old and new workers can run side by side.

Since the commit script joins each change event's record bytes from its record's write (a ``Splice``: sent once,
not twice), the runs are hashed twice: with every event sent whole, as main sent them (the goldens above,
unchanged), and as the worker now sends them (``GOLDEN_SPLICED``); and both ways are applied by the script on
servers of their own, which must hold the same keys, values and stream entries, byte for byte, afterwards.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import hashlib
import itertools
import os
import random
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

import gateway.store.store as store_module
from connectors.retry import backoff
from gateway.embedded import EmbeddedRedis
from gateway.fhir import bundle as bundles
from gateway.platform.risk import RiskFlags
from gateway.settings import ClientsConfig, Settings
from gateway.store import Store
from gateway.store.committer import Committer
from gateway.store.keys import GROUP
from gateway.store.operation import Delete, Operation, Update
from gateway.work import records as records_module
from gateway.work.inbound import InboundQueue, inbound_queue
from gateway.work.records import RecordWriter
from tests.gateway.test_decide_commit import _ids, _store, _trail, bench_bundle

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_800_000_100.375  # the worker's clock: events' occurred_at, risk flags' raised_at, deletions' lastUpdated
PREFIX = "gwtest-worker-golden"
TENANTS = {
    "bench": {"vendor": "generic"},
    "clinic-a": {"vendor": "generic", "timezone": "America/New_York"},
    "clinic-o": {"vendor": "oracle-health", "timezone": "America/Chicago"},
    "clinic-h": {"vendor": "athenahealth", "timezone": "America/Los_Angeles"},
    "corpus": {"vendor": "generic", "timezone": "Europe/Amsterdam"},
}

# What the code at d3a04f2 made of ``_golden_runs`` (sha256 of the normalized commits), without and with the corpus,
# with one change since: each version of a resource is stamped at least a millisecond after the one before, so the
# records of later versions written at the store's one instant carry a lastUpdated a millisecond or two on (before
# it, 331628cb... and 200e3104...; spliced, 7f365da8... and a859daf2...).
GOLDEN = "5d50fd177c2d437bcce5ebf60a3dbcc59958b0ae4577ee174becb332e8f94763"
GOLDEN_CORPUS = "c198c2d637f664c036d03079a59fe5065d10bb91234bb07ea8e6b7fd765d534b"
# The same with each change event's record bytes joined by the commit script from its record's write (``Splice``):
# what the runs' commits are now (``test_events_joined_by_the_commit_script_leave_redis_as_events_sent_whole``
# shows they leave Redis as main's did).
GOLDEN_SPLICED = "43765168f02df11f8a28a77a29c266f66e58546b3c5309ca23d6678f763ad466"
GOLDEN_SPLICED_CORPUS = "3527d278324f45f21d02208b60987fd68c7f25b205db6ffb334f09f95b86baa2"


# -- the runs -----------------------------------------------------------------------------------------------------

# ``bench/worker_phases.py``'s ``--updates``: what each quarter of the Appointments is sent again with.
_NARRATIVE = {"status": "generated", "div": '<div xmlns="http://www.w3.org/1999/xhtml">Regenerated</div>'}


def _changed(resource: dict[str, Any], index: int) -> dict[str, Any]:
    again = copy.deepcopy(resource)
    again.pop("meta", None)
    if again["resourceType"] != "Appointment" or index % 4 == 3:
        again["text"] = _NARRATIVE
    elif index % 4 == 0:
        for name in ("start", "end"):
            moved = datetime.fromisoformat(again[name]) + timedelta(days=1)
            again[name] = moved.isoformat().replace("+00:00", "Z")
    elif index % 4 == 1:
        again["status"] = "cancelled"
    else:
        again["description"] = "Synthetic benchmark visit, room changed"
    return again


LOINC = "http://loinc.org"
CERNER = "https://fhir-ehr.cerner.com/r4/StructureDefinition"
ATHENA = "https://fhir.athena.io/StructureDefinition"
PHQ9 = ["44250-9", "44255-8", "44259-0", "44254-1", "44251-7", "44258-2", "44252-5", "44253-3", "44260-8"]
ANSWER = {0: "LA6568-5", 1: "LA6569-3", 2: "LA6570-1", 3: "LA6571-9"}
CANONICAL = "https://forms.clinic-a.example/Questionnaire/phq9"


def _appointment(aid: str, **elements: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Appointment",
        "id": aid,
        "identifier": [{"system": "urn:oid:1.2.3.4", "value": aid}, {"value": "no-system"}, {"system": " "}],
        "status": "booked",
        "description": "Follow-up visit",
        "start": "2026-12-10T09:00:00-05:00",
        "end": "2026-12-10T09:30:00-05:00",
        "participant": [
            {"actor": {"reference": "Patient/pat-1", "display": "P One"}, "status": "accepted"},
            {"actor": {"reference": "Practitioner/prac-1"}, "status": "accepted", "required": "required"},
        ],
    }
    return resource | elements


def _rich_appointment(aid: str) -> dict[str, Any]:
    """An appointment with most of what the mapper reads, and some of what it does not."""
    return _appointment(
        aid,
        meta={"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY",
                            "display": "psychiatry"}, "R", {"code": ""}]},
        start="2026-12-11T10:00:00",  # local: the clinic's zone says when
        end="2026-12-11T10:45",
        minutesDuration=45,
        serviceType=[{"coding": [{"system": "http://snomed.info/sct", "code": "394913002", "display": "Psych"}]},
                     {"text": "Telehealth"}],
        appointmentType={"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0276",
                                     "code": "FOLLOWUP"}], "text": "follow up"},
        serviceCategory={"text": "lone object"},
        specialty=[{"coding": [{"code": "x"}, {"system": " "}]}],
        reasonCode=[{"text": "Anxiety"}],
        reasonReference=[{"reference": "Condition/c1", "display": "Anxiety disorder"}, {"reference": "Condition/c2"}],
        patientInstruction="Bring your medication list",
        comment="  ",
        basedOn=[{"reference": "ServiceRequest/sr1"}],
        slot=[{"reference": "Slot/s1"}, {"display": "a slot"}, {}],
        extension=[
            {"url": "http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment.replaces",
             "valueReference": {"reference": "Appointment/old-1"}},
            {"url": "http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment.virtualService",
             "extension": [{"url": "channelType", "valueCoding": {"code": "ms-teams"}},
                           {"url": "addressUrl", "valueUrl": "https://meet.example.test/j/1"}]},
            {"url": "urn:unknown:ext", "valueString": "x"},
        ],
        modifierExtension=[{"url": "urn:modifier", "valueBoolean": True}],
        priority=5,
        participant=[
            {"actor": {"reference": "Patient/pat-1"}, "status": "accepted", "period": {"start": "2026-12-11"}},
            {"actor": {"reference": "urn:uuid:00000000-0000-4000-8000-000000000001", "type": "PractitionerRole"},
             "type": [{"coding": [{"code": "ATND"}]}], "status": "tentative"},
            {"actor": {"display": "Room 4", "type": "http://hl7.org/fhir/StructureDefinition/Location"},
             "status": "accepted"},
            {"actor": {"reference": "https://other.example/fhir/Practitioner/p9/_history/2"}, "status": "accepted"},
            {"status": "needs-action"},
            "not an object",
        ],
    )  # fmt: skip


def _video_visit(aid: str, link: str) -> dict[str, Any]:
    rooms = [
        {"resourceType": "HealthcareService", "id": "28", "type": [{"text": "Patient Virtual Meeting Room"}],
         "telecom": [{"system": "url", "value": link}], "meta": {"security": [{"code": "R"}]}},
        {"resourceType": "HealthcareService", "id": "31", "type": [{"text": "Provider Virtual Meeting Room"}],
         "telecom": [{"system": "url", "value": "https://vmr.example.test/host/provider"}]},
    ]  # fmt: skip
    resource = _appointment(
        aid,
        contained=rooms,
        extension=[{"url": f"{CERNER}/is-cancelable", "valueBoolean": True},
                   {"url": f"{CERNER}/is-reschedulable", "valueBoolean": "true"}],
    )  # fmt: skip
    resource["participant"] += [
        {"type": [{"text": "Patient Virtual Meeting Room"}], "actor": {"reference": "#28"}, "status": "accepted"},
        {"type": [{"text": "Provider Virtual Meeting Room"}], "actor": {"reference": "#31"}, "status": "accepted"},
    ]
    return resource


def _athena_appointment(aid: str) -> dict[str, Any]:
    return _appointment(
        aid,
        extension=[{"url": f"{ATHENA}/ah-practice", "valueReference": {"reference": "Organization/a-1"}}],
        participant=[{"actor": {"reference": "Patient/a-1.E-5"}, "status": "accepted"},
                     {"actor": {"reference": "Location/a-1.Department-7"}, "status": "accepted"}],
    )  # fmt: skip


def _patient(pid: str, **elements: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Patient",
        "id": pid,
        "identifier": [{"system": "urn:mrn", "value": f"mrn-{pid}",
                        "type": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0203",
                                             "code": "MR"}]}}],
        "name": [{"use": "official", "family": "Zoë", "given": ["Ab", "Cd"]}, {"text": "Nick"}],
        "telecom": [{"system": "phone", "value": "555-0100", "use": "mobile"}, {"system": "email", "value": "x@y.z"}],
        "gender": "female",
        "birthDate": "1980-02-29",
        "communication": [{"language": {"coding": [{"system": "urn:ietf:bcp:47", "code": "es"}]}, "preferred": True}],
        "generalPractitioner": [{"reference": "Practitioner/prac-1"}],
        "managingOrganization": {"reference": "Organization/o1"},
        "maritalStatus": {"text": "unmapped"},
    }  # fmt: skip
    return resource | elements


def _communication(cid: str, **elements: Any) -> dict[str, Any]:
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


def _reply(cid: str, to: str, **elements: Any) -> dict[str, Any]:
    return _communication(
        cid,
        sender={"reference": "Patient/pat-1"},
        recipient=[{"reference": "Practitioner/prac-1"}],
        sent="2026-03-02T10:30:00-05:00",
        inResponseTo=[{"reference": f"Communication/{to}"}],
        payload=[{"contentString": "Thank you!"}],
        **elements,
    )


def _careplan(**elements: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "CarePlan",
        "id": "cp1",
        "status": "active",
        "intent": "plan",
        "title": "Depression treatment plan",
        "subject": {"reference": "Patient/pat-1"},
        "period": {"start": "2026-03-01"},
        "goal": [{"reference": "Goal/g1", "display": "Mood goal"}],
        "activity": [{"detail": {"kind": "Appointment", "status": "scheduled", "description": "Weekly CBT session"}}],
    }
    return resource | elements


def _goal(**elements: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Goal",
        "id": "g1",
        "meta": {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]},
        "lifecycleStatus": "active",
        "achievementStatus": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/goal-achievement",
                                          "code": "in-progress"}]},
        "description": {"text": "PHQ-9 score below 5"},
        "subject": {"reference": "Patient/pat-1"},
    }  # fmt: skip
    return resource | elements


def _questionnaire() -> dict[str, Any]:
    return {
        "resourceType": "Questionnaire",
        "id": "phq9-clinic",
        "url": CANONICAL,
        "version": "3",
        "status": "active",
        "title": "Mood check-in",
        "item": [
            {"linkId": f"q{n}", "type": "choice", "required": True, "code": [{"system": LOINC, "code": code}]}
            for n, code in enumerate(PHQ9, start=1)
        ],
    }


def _response(rid: str, scores: list[int], **elements: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "QuestionnaireResponse",
        "id": rid,
        "questionnaire": f"{CANONICAL}|3",
        "status": "completed",
        "subject": {"reference": "Patient/pat-1"},
        "authored": "2026-03-02T15:04:05-05:00",
        "item": [
            {"linkId": f"q{n}", "answer": [{"valueCoding": {"system": LOINC, "code": ANSWER[score]}}]}
            for n, score in enumerate(scores, start=1)
        ],
    }
    return resource | elements


def _put(resource: dict[str, Any]) -> Update:
    return Update(resource["resourceType"], resource["id"], copy.deepcopy(resource))


def _delete(rtype: str, rid: str) -> Delete:
    return Delete(rtype, rid)


def _hand_made() -> list[tuple[str, list[list[Operation]]]]:
    """Per tenant, rounds of writes: the worker drains after each round (each write is a transaction of its own,
    so a round's writes of one resource are versions the worker maps in one batch)."""
    a1, a2 = _appointment("a1"), _appointment("a2", start="2026-12-12T14:00:00Z", end="2026-12-12T14:30:00Z")
    clinic_a: list[list[Operation]] = [
        [_put(_patient("pat-1")), _put(_patient("dup")), _put(a1), _put(a2), _put(_appointment("a3")),
         _put(_rich_appointment("rich")), _put({"resourceType": "Practitioner", "id": "prac-1",
                                                "name": [{"family": "Doe", "given": ["Jo"]}]}),
         _put({"resourceType": "PractitionerRole", "id": "role-1", "practitioner": {"reference": "Practitioner/prac-1"},
               "code": [{"text": "Therapist"}], "active": True})],
        # Cancelled, then rebooked, before the worker sees either; a2 rescheduled; a3 deleted; rich changed a little.
        [_put(a1 | {"status": "cancelled", "cancelationReason": {"text": "sick"}}), _put(a1 | {"status": "booked"}),
         _put(a2 | {"start": "2026-12-13T14:00:00Z", "end": "2026-12-13T14:30:00Z"}), _delete("Appointment", "a3"),
         _put(_rich_appointment("rich") | {"text": _NARRATIVE}), _put(_appointment("a4")),
         _delete("Appointment", "a4"), _put(_appointment("a5", status="fulfilled"))],
        # Deleted again (nothing new), re-created; a2 cancelled and moved at once; a5 marked a no-show.
        [_delete("Appointment", "a3"), _put(_appointment("a3", status="proposed")),
         _put(a2 | {"status": "cancelled", "start": "2026-12-20T14:00:00Z"}), _put(_appointment("a5", status="noshow")),
         _put(_rich_appointment("rich") | {"description": "New words", "priority": 6}),
         _put(_patient("pat-1", telecom=[{"system": "phone", "value": "555-0199"}])),
         _put(_patient("dup", active=False, link=[{"other": {"reference": "Patient/pat-1"}, "type": "replaced-by"}]))],
        [_put(_communication("msg-1")), _put(_reply("msg-2", "msg-1")),
         _put(_communication("msg-3", topic={"text": "Billing"}, sent="2026-03-03T08:00:00Z")),
         _put(_communication("msg-4", payload=[{"contentReference": {"reference": "Binary/b1"}}]))],
        # msg-4's body arrives (an unmapped resource that a record reads); a job names a version never stored.
        [_put({"resourceType": "Binary", "id": "b1", "contentType": "text/plain", "data": "SGVsbG8gdGhlcmU="})],
        [_put(_reply("msg-3", "msg-1", topic={"text": "Lab results"})), _delete("Communication", "msg-2"),
         _put(_communication("msg-1", status="entered-in-error"))],
        [_put(_careplan()), _put(_response("qr-late", [0] * 8 + [1]))],
        [_put(_goal()), _put(_questionnaire())],
        [_put(_goal(lifecycleStatus="completed")), _put(_response("qr-now", [3, 3, 2, 2, 2, 1, 1, 1, 2])),
         _put(_careplan(status="completed"))],
        [_put(_response("qr-now", [0] * 9, status="amended")), _delete("CarePlan", "cp1"), _delete("Patient", "dup"),
         _delete("Goal", "g1")],
    ]  # fmt: skip
    clinic_o: list[list[Operation]] = [
        [_put(_video_visit("vv-1", "https://vmr.example.test/join/patient-1")), _put(_patient("pat-1"))],
        [_put(_video_visit("vv-1", "https://vmr.example.test/join/patient-2"))],
    ]
    clinic_h: list[list[Operation]] = [
        [_put(_athena_appointment("ah-1")), _put(_patient("a-1.E-5", extension=[
            {"url": f"{ATHENA}/ah-practice", "valueReference": {"reference": "Organization/a-1"}}]))],
        [_put(_athena_appointment("ah-1") | {"status": "arrived"})],
    ]  # fmt: skip
    return [("clinic-a", clinic_a), ("clinic-o", clinic_o), ("clinic-h", clinic_h)]


def _corpus() -> list[list[Operation]]:
    """The corpus's mapped resources (ids given where they have none): created, given a new narrative, deleted."""
    from tests.mappers.conftest import corpus_found

    types = ("Appointment", "Patient", "Practitioner", "PractitionerRole", "Communication", "CarePlan", "Goal",
             "Questionnaire", "QuestionnaireResponse")  # fmt: skip
    found: dict[tuple[str, str], dict[str, Any]] = {}
    for n, (_, each) in enumerate(corpus_found(*types)):
        resource = copy.deepcopy(each.resource)
        rid = resource.get("id")
        if not isinstance(rid, str) or not rid or len(rid) > 64:
            rid = resource["id"] = f"c{n}"
        found.setdefault((resource["resourceType"], rid), resource)
    first: list[Operation] = [_put(r) for r in found.values()]
    again: list[Operation] = [_put(r | {"text": _NARRATIVE}) for r in found.values()]
    gone: list[Operation] = [_delete(rtype, rid) for rtype, rid in found]
    return [first, again, gone]


# -- the worker's side, captured ------------------------------------------------------------------------------------


@contextmanager
def _pinned_event_ids() -> Iterator[None]:
    counter = itertools.count()
    real = records_module.event_id
    records_module.event_id = lambda: f"evt_{next(counter):032x}"
    try:
        yield
    finally:
        records_module.event_id = real


async def _drain(
    writer: RecordWriter, queues: list[InboundQueue], committer: Committer, tenant: str, size: int, made: list[Any]
) -> None:
    """Apply every job queued for ``tenant``, ``size`` at a time, as the worker's batches do, and add each batch's
    commit and its jobs' events and failures to ``made`` (without the jobs' entry ids, which follow the clock:
    the jobs are acknowledged apart)."""
    script = committer._script

    async def recording(keys: list[Any], args: list[Any]) -> Any:
        made.append(["commit", list(keys), list(args)])
        return await script(keys=keys, args=args)

    committer._script = recording  # type: ignore[assignment]
    try:
        for queue in queues:
            while jobs := await queue.read([tenant], "golden", size, 1):
                outcome = await writer.plan(jobs)
                await committer.commit(outcome.plan)
                made.append(["jobs", [[j.fields, outcome.events.get(j.entry_id), repr(outcome.failed.get(j.entry_id))]
                                      for j in jobs]])  # fmt: skip
                stream = queue.keys.stream(tenant)
                ids = [j.entry_id for j in jobs]
                await queue.redis.xack(stream, GROUP, *ids)
                await queue.redis.xdel(stream, *ids)
    finally:
        committer._script = script


def _normalized(made: list[Any]) -> bytes:
    """The batches as comparable bytes: every value with its Python type."""

    def one(value: Any) -> Any:
        if isinstance(value, bytes):
            return ["b", value.decode("utf-8", "backslashreplace")]
        if isinstance(value, str):
            return ["s", value]
        if isinstance(value, list):
            return [one(v) for v in value]
        if isinstance(value, dict):
            return {k: one(v) for k, v in value.items()}
        return [type(value).__name__, repr(value)]

    return orjson.dumps([one(m) for m in made])


async def _golden_runs(url: str, corpus: bool) -> bytes:
    """Write the runs' resources, drain them with the worker's code after each round, and return the batches."""
    from gateway.fhir.edge import Edge

    store: Store = _store(url, PREFIX)
    clients = ClientsConfig.model_validate({"clients": [], "tenants": TENANTS})
    edge = Edge(store, Settings(redis_url="redis://unused"), clients)
    redis, keys = store.redis, store.keys
    writer = RecordWriter(redis, keys, store, clients, RiskFlags(redis, keys, clock=lambda: NOW), clock=lambda: NOW)
    queues = [inbound_queue(redis, keys, lane=lane, max_attempts=5, wait=backoff(1, 2)) for lane in ("", "risk")]
    committer = Committer(redis)
    made: list[Any] = []
    real_ids = store_module.new_ids  # type: ignore[attr-defined]
    store_module.new_ids = _ids()  # type: ignore[attr-defined]
    try:
        with _trail(), _pinned_event_ids():
            rng = random.Random(7)
            bodies = [bench_bundle(rng, "golden", size, seq) for size, seq in ((20, 0), (20, 1), (100, 2), (100, 3))]
            sent = []
            for body in bodies:
                value = orjson.loads(body)
                answer = await bundles.process(edge, "bench", value, "http://bench/fhir/R4", bundles.Prefer())
                sent.append([await store.read("bench", *entry["response"]["location"].split("/")[:2])
                             for entry in answer["entry"]])  # fmt: skip
            await _drain(writer, queues, committer, "bench", 128, made)
            for resources in sent:
                await store.apply("bench", [_put(_changed(r, n)) for n, r in enumerate(resources)])
            await _drain(writer, queues, committer, "bench", 128, made)
            for resources in sent[:2]:  # the same content again: nothing the platform sees
                await store.apply("bench", [_put(_changed(r, n)) for n, r in enumerate(resources)])
            await _drain(writer, queues, committer, "bench", 7, made)
            for tenant, rounds in _hand_made():
                for ops in rounds:
                    for op in ops:
                        await store.apply(tenant, [op])
                    await _drain(writer, queues, committer, tenant, 5, made)
            ghost = {"type": "Appointment", "id": "ghost", "vid": "2", "op": "upsert", "attempt": "0"}
            await redis.xadd(keys.inbound("clinic-a"), ghost)  # type: ignore[arg-type]
            await _drain(writer, queues, committer, "clinic-a", 5, made)
            if corpus:
                for ops in _corpus():
                    for at in range(0, len(ops), 50):
                        await store.apply("corpus", ops[at : at + 50])
                    await _drain(writer, queues, committer, "corpus", 64, made)
    finally:
        store_module.new_ids = real_ids  # type: ignore[attr-defined]
        await redis.aclose()
    return _normalized(made)


@contextmanager
def _events_sent_whole() -> Iterator[None]:
    """Make the worker send each change event's record bytes in the event, as main did, instead of having the
    commit script join in the bytes its record's write sends (``Splice``): the commits main made."""
    real = RecordWriter._write_record

    def whole(*args: Any, **kwargs: Any) -> None:
        real(*args, **kwargs)  # its place in the plan is not given: every event is sent whole

    RecordWriter._write_record = whole  # type: ignore[assignment,method-assign]
    try:
        yield
    finally:
        RecordWriter._write_record = real  # type: ignore[method-assign]


def golden(folder: str, corpus: bool = False, *, spliced: bool = False) -> str:
    """Return the sha256 of ``_golden_runs``'s batches on a private server, with ``PYTHONHASHSEED=0`` (the order of
    a set's members, where the worker writes them as a set gives them, follows their strings' hashes); unless
    ``spliced``, with every event sent whole as main sent it."""
    with EmbeddedRedis(Path(folder)) as server, contextlib.ExitStack() as stack:
        if not spliced:
            stack.enter_context(_events_sent_whole())
        made = asyncio.run(_golden_runs(server.url, corpus))
    assert made.count(b"appointment.created") > 200 and made.count(b"risk.flagged") >= 2
    return hashlib.sha256(made).hexdigest()


def _golden_in_a_subprocess(folder: Path, corpus: bool, *, spliced: bool = False) -> str:
    code = ("from tests.gateway.test_worker_equivalence import golden; "
            f"print(golden({str(folder)!r}, {corpus}, spliced={spliced}))")  # fmt: skip
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout.split()[-1]


def test_the_worker_plans_what_main_planned(tmp_path: Path) -> None:
    assert _golden_in_a_subprocess(tmp_path, corpus=False) == GOLDEN


def test_the_worker_plans_the_corpus_as_main_did(tmp_path: Path) -> None:
    from tests.conftest import corpus_dir

    corpus_dir()  # skips without the corpus
    assert _golden_in_a_subprocess(tmp_path, corpus=True) == GOLDEN_CORPUS


def test_the_worker_plans_what_it_planned_with_events_joined_by_the_script(tmp_path: Path) -> None:
    assert _golden_in_a_subprocess(tmp_path, corpus=False, spliced=True) == GOLDEN_SPLICED


def test_the_worker_plans_the_corpus_as_it_did_with_events_joined_by_the_script(tmp_path: Path) -> None:
    from tests.conftest import corpus_dir

    corpus_dir()  # skips without the corpus
    assert _golden_in_a_subprocess(tmp_path, corpus=True, spliced=True) == GOLDEN_SPLICED_CORPUS


# -- the events joined by the commit script: the same Redis as the events sent whole ---------------------------------


async def _dump(url: str, prefix: str = "") -> dict[bytes, Any]:
    """Return every key of a server (or those under ``prefix``, named without it) with its type and value, byte for
    byte: a string with whether it expires, a set's members and a hash's fields sorted, a stream's entries in order
    with their ids numbered (an entry's id is the clock's)."""
    redis = Redis.from_url(url)
    try:
        found: dict[bytes, Any] = {}
        async for key in redis.scan_iter(match=f"{prefix}:*" if prefix else None, count=1000):
            kind = (await redis.type(key)).decode()
            value: Any
            if kind == "string":
                value = [await redis.get(key), await redis.ttl(key) > 0]
            elif kind == "hash":
                value = sorted((await redis.hgetall(key)).items())
            elif kind == "set":
                value = sorted(await redis.smembers(key))
            elif kind == "zset":
                value = await redis.zrange(key, 0, -1, withscores=True)
            elif kind == "list":
                value = await redis.lrange(key, 0, -1)
            elif kind == "stream":
                value = [[n, sorted(fields.items())] for n, (_, fields) in enumerate(await redis.xrange(key))]
            else:
                raise AssertionError(f"{key!r} is a {kind}")
            found[key.removeprefix(prefix.encode())] = [kind, value]
        return found
    finally:
        await redis.aclose()


def _replayed(folder: Path, corpus: bool, spliced: bool) -> tuple[dict[bytes, Any], list[Any]]:
    """Run ``_golden_runs`` on a private server, the events sent whole (as main) or joined by the commit script;
    return every key the runs left and each batch's jobs, events and failures."""
    with EmbeddedRedis(folder) as server, contextlib.ExitStack() as stack:
        if not spliced:
            stack.enter_context(_events_sent_whole())
        made = orjson.loads(asyncio.run(_golden_runs(server.url, corpus)))
        return asyncio.run(_dump(server.url)), [m for m in made if m[0] == "jobs"]


@pytest.mark.parametrize("corpus", [False, True], ids=["runs", "corpus"])
def test_events_joined_by_the_commit_script_leave_redis_as_events_sent_whole(tmp_path: Path, corpus: bool) -> None:
    """The commit script joins an event's record bytes from its record's write (``Splice``) instead of receiving
    them twice: the same runs, applied by the script each way on servers of their own, leave every key, value and
    stream entry byte for byte the same (the records, indexes, feeds and their entries, threads, dependents, risk
    flags, audit trail, the store's own keys), and every job the same events and failures."""
    if corpus:
        from tests.conftest import corpus_dir

        corpus_dir()  # skips without the corpus
    whole_keys, whole_jobs = _replayed(tmp_path / "whole", corpus, spliced=False)
    joined_keys, joined_jobs = _replayed(tmp_path / "joined", corpus, spliced=True)
    feeds = [k for k, (kind, _) in whole_keys.items() if kind == "stream" and k.endswith(b":feed")]
    assert feeds and sum(len(whole_keys[k][1]) for k in feeds) > 200  # the events are there to compare
    assert joined_keys == whole_keys
    assert joined_jobs == whole_jobs
