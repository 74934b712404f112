"""The CapabilityStatement is true: every interaction, search parameter and operation it declares answers.

The test reads ``GET /fhir/R4/metadata`` from the running app and, for every mapped type and a few others,
exercises over HTTP exactly what the statement declares for that type (and the system interactions), asserting the
answer a client would rely on. A declared capability this test does not know how to exercise fails the test, so
the statement cannot grow a promise nobody checks.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pytest

from gateway.store.parameters import dates, indexed, reached, references, strings, tokens
from mappers.registry import MAPPED
from tests.conftest import Gateway

PATIENT_REF = {"reference": "Patient/cap-pat-1"}
SUBJECT = {"subject": PATIENT_REF}
CONCEPT = {"coding": [{"system": "urn:example:code", "code": "capability"}], "text": "capability check"}
CATEGORY = [{"coding": [{"system": "urn:example:category", "code": "capability"}]}]
DOCTOR = {"reference": "Practitioner/cap-doc-1"}
ENCOUNTER = {"encounter": {"reference": "Encounter/cap-enc-1"}}
CANONICAL = "http://example.org/fhir/PlanDefinition/capability"


def _ref(target: str) -> dict[str, str]:
    return {"reference": target}


# One small valid resource per sampled type, with a value for every search parameter the gateway declares for it
# (a declared parameter without a value here fails the test). ``subject``/``participant.actor`` point at a patient
# where the type has such an element, so ``patient`` search has something to find.
SAMPLES: dict[str, dict[str, Any]] = {
    "Appointment": {
        "status": "booked",
        "start": "2026-12-10T09:00:00-05:00",
        "end": "2026-12-10T09:30:00-05:00",
        "basedOn": [_ref("ServiceRequest/cap-sr-1")],
        "reasonReference": [_ref("Condition/cap-cond-1")],
        "slot": [_ref("Slot/cap-slot-1")],
        "supportingInformation": [_ref("Observation/cap-obs-1")],
        "participant": [
            {"actor": PATIENT_REF, "status": "accepted"},
            {"actor": DOCTOR, "status": "accepted"},
            {"actor": _ref("Location/cap-loc-1"), "status": "accepted"},
        ],
    },
    "Patient": {
        "name": [{"family": "Capability", "given": ["Casey"]}],
        "gender": "other",
        "birthDate": "1990-04-02",
        "generalPractitioner": [DOCTOR],
        "managingOrganization": _ref("Organization/cap-org-1"),
        "link": [{"other": _ref("Patient/cap-pat-2"), "type": "seealso"}],
    },
    "Practitioner": {"name": [{"family": "Capability", "given": ["Devi"]}], "gender": "female"},
    "PractitionerRole": {
        "active": True,
        "period": {"start": "2026-01-01"},
        "practitioner": DOCTOR,
        "organization": _ref("Organization/cap-org-1"),
        "location": [_ref("Location/cap-loc-1")],
        "healthcareService": [_ref("HealthcareService/cap-hs-1")],
        "endpoint": [_ref("Endpoint/cap-ep-1")],
    },
    "Communication": {
        "status": "completed",
        **SUBJECT,
        **ENCOUNTER,
        "category": CATEGORY,
        "basedOn": [_ref("CarePlan/cap-plan-1")],
        "partOf": [_ref("Communication/cap-comm-0")],
        "instantiatesCanonical": [CANONICAL],
        "recipient": [DOCTOR],
        "sender": PATIENT_REF,
        "payload": [{"contentString": "hello"}],
    },
    "CarePlan": {
        "status": "active",
        "intent": "plan",
        **SUBJECT,
        **ENCOUNTER,
        "category": CATEGORY,
        "period": {"start": "2026-11-01", "end": "2027-02-01"},
        "basedOn": [_ref("CarePlan/cap-plan-0")],
        "replaces": [_ref("CarePlan/cap-plan-00")],
        "partOf": [_ref("CarePlan/cap-plan-000")],
        "instantiatesCanonical": [CANONICAL],
        "careTeam": [_ref("CareTeam/cap-team-1")],
        "addresses": [_ref("Condition/cap-cond-1")],
        "goal": [_ref("Goal/cap-goal-1")],
        "activity": [
            {"reference": _ref("Appointment/cap-appt-1")},
            {"detail": {"status": "scheduled", "performer": [DOCTOR]}},
        ],
    },
    "Goal": {"lifecycleStatus": "active", "description": CONCEPT, "category": CATEGORY, **SUBJECT},
    "Questionnaire": {
        "status": "active",
        "name": "CapabilityCheck",
        "url": "http://example.org/fhir/Questionnaire/capability",
        "date": "2026-11-29",
        "item": [{"linkId": "q1", "type": "string", "code": [{"system": "http://loinc.org", "code": "44249-1"}]}],
    },
    "QuestionnaireResponse": {
        "status": "completed",
        **SUBJECT,
        **ENCOUNTER,
        "questionnaire": "http://example.org/fhir/Questionnaire/capability",
        "author": DOCTOR,
        "source": PATIENT_REF,
        "basedOn": [_ref("CarePlan/cap-plan-1")],
        "partOf": [_ref("Observation/cap-obs-1")],
    },
    "Observation": {
        "status": "final",
        "code": CONCEPT,
        **SUBJECT,
        **ENCOUNTER,
        "category": CATEGORY,
        "effectiveDateTime": "2026-12-01T10:00:00Z",
        "basedOn": [_ref("CarePlan/cap-plan-1")],
        "partOf": [_ref("Procedure/cap-proc-1")],
        "focus": [_ref("Goal/cap-goal-1")],
        "performer": [DOCTOR],
        "specimen": _ref("Specimen/cap-spec-1"),
        "device": _ref("Device/cap-dev-1"),
        "hasMember": [_ref("Observation/cap-obs-2")],
        "derivedFrom": [_ref("Observation/cap-obs-3")],
    },
    "Condition": {
        "code": CONCEPT,
        **SUBJECT,
        **ENCOUNTER,
        "category": CATEGORY,
        "asserter": DOCTOR,
        "evidence": [{"detail": [_ref("Observation/cap-obs-1")]}],
    },
    "Encounter": {
        "status": "finished",
        "class": {"code": "AMB"},
        **SUBJECT,
        "period": {"start": "2026-12-01T10:00:00Z", "end": "2026-12-01T11:00:00Z"},
        "account": [_ref("Account/cap-acct-1")],
        "appointment": [_ref("Appointment/cap-appt-1")],
        "basedOn": [_ref("ServiceRequest/cap-sr-1")],
        "diagnosis": [{"condition": _ref("Condition/cap-cond-1")}],
        "episodeOfCare": [_ref("EpisodeOfCare/cap-eoc-1")],
        "location": [{"location": _ref("Location/cap-loc-1")}],
        "partOf": _ref("Encounter/cap-enc-0"),
        "participant": [{"individual": DOCTOR}],
        "reasonReference": [_ref("Condition/cap-cond-1")],
        "serviceProvider": _ref("Organization/cap-org-1"),
    },
    "Organization": {
        "name": "Capability clinic",
        "partOf": _ref("Organization/cap-org-0"),
        "endpoint": [_ref("Endpoint/cap-ep-1")],
    },
}
SAMPLED = sorted(SAMPLES)
# Types whose samples carry a Patient reference where the patient index reads it.
ABOUT_A_PATIENT = {t for t, s in SAMPLES.items() if "subject" in s or "participant" in s}


def test_the_sample_covers_every_mapped_type() -> None:
    assert set(MAPPED) <= set(SAMPLES)


def _resource(rtype: str, key: str, **changes: Any) -> dict[str, Any]:
    """Return the sample of ``rtype`` with an identifier ``key`` (a list, or one Identifier where R4 says 0..1)."""
    identifier = {"system": "urn:example:capability", "value": key}
    resource: dict[str, Any] = {"resourceType": rtype, **copy.deepcopy(SAMPLES[rtype])}
    resource["identifier"] = identifier if rtype == "QuestionnaireResponse" else [identifier]
    resource.update(changes)
    return resource


@dataclass
class Exercise:
    """What one type's checks share: the app, the type, and the resource created first."""

    gw: Gateway
    rtype: str
    key: str
    created: dict[str, Any]

    @property
    def rid(self) -> str:
        return str(self.created["id"])

    async def search(self, **params: str) -> list[dict[str, Any]]:
        response = await self.gw.ehr("GET", f"/{self.rtype}", params=params)
        assert response.status_code == 200, response.text
        bundle = response.json()
        assert bundle["resourceType"] == "Bundle"
        assert bundle["type"] == "searchset"
        return [e["resource"] for e in bundle.get("entry", []) if e.get("search", {}).get("mode") == "match"]


Check = Callable[[Exercise], Awaitable[None]]


async def _read(ex: Exercise) -> None:
    response = await ex.gw.ehr("GET", f"/{ex.rtype}/{ex.rid}")
    assert response.status_code == 200
    assert response.json() == ex.created
    assert response.headers["etag"] == 'W/"1"'


async def _vread(ex: Exercise) -> None:
    response = await ex.gw.ehr("GET", f"/{ex.rtype}/{ex.rid}/_history/1")
    assert response.status_code == 200
    assert response.json() == ex.created


async def _update(ex: Exercise) -> None:
    changed = _resource(ex.rtype, ex.key, id=ex.rid, language="en")
    response = await ex.gw.ehr("PUT", f"/{ex.rtype}/{ex.rid}", json=changed, headers={"If-Match": 'W/"1"'})
    assert response.status_code == 200, response.text
    assert response.json()["meta"]["versionId"] == "2"
    assert response.json()["language"] == "en"
    # updateCreate: a PUT at a new id creates
    fresh = f"cap-{uuid.uuid4().hex[:12]}"
    created = await ex.gw.ehr("PUT", f"/{ex.rtype}/{fresh}", json=_resource(ex.rtype, f"{ex.key}-put", id=fresh))
    assert created.status_code == 201, created.text
    stale = await ex.gw.ehr("PUT", f"/{ex.rtype}/{ex.rid}", json=changed, headers={"If-Match": 'W/"1"'})
    assert stale.status_code == 412


async def _delete(ex: Exercise) -> None:
    fresh = (await ex.gw.ehr("POST", f"/{ex.rtype}", json=_resource(ex.rtype, f"{ex.key}-del"))).json()
    response = await ex.gw.ehr("DELETE", f"/{ex.rtype}/{fresh['id']}")
    assert response.status_code == 204
    assert (await ex.gw.ehr("GET", f"/{ex.rtype}/{fresh['id']}")).status_code == 410


async def _search_type(ex: Exercise) -> None:
    found = await ex.search(_count="100")
    assert ex.rid in {r["id"] for r in found}


async def _create(ex: Exercise) -> None:
    assert ex.created["meta"]["versionId"] == "1"  # the create itself ran (201) when the exercise was set up


async def _by_id(ex: Exercise) -> None:
    assert [r["id"] for r in await ex.search(_id=ex.rid)] == [ex.rid]


async def _by_last_updated(ex: Exercise) -> None:
    lu = ex.created["meta"]["lastUpdated"]
    assert ex.rid in {r["id"] for r in await ex.search(_lastUpdated=f"ge{lu}")}
    assert ex.rid not in {r["id"] for r in await ex.search(_lastUpdated=f"gt{lu[:4]}-12-31T23:59:59Z")}


async def _by_reference(ex: Exercise, name: str) -> None:
    param = indexed(ex.rtype)[name]
    [target, *_] = sorted(references(reached(ex.created, param)))
    assert ex.rid in {r["id"] for r in await ex.search(**{name: target})}, (name, target)
    if "/" in target and "://" not in target:
        kind, rid = target.split("/")
        assert ex.rid in {r["id"] for r in await ex.search(**{f"{name}:{kind}": rid})}, name
        assert ex.rid not in {r["id"] for r in await ex.search(**{name: f"{kind}/someone-else"})}, name
        included = await ex.gw.ehr("GET", f"/{ex.rtype}", params={"_id": ex.rid, "_include": f"{ex.rtype}:{name}"})
        assert included.status_code == 200, included.text
        revincluded = await ex.gw.ehr("GET", f"/{kind}", params={"_id": rid, "_revinclude": f"{ex.rtype}:{name}"})
        assert revincluded.status_code == 200, revincluded.text


async def _by_token(ex: Exercise, name: str) -> None:
    [(system, code), *_] = sorted(tokens(reached(ex.created, indexed(ex.rtype)[name])), key=str)
    assert ex.rid in {r["id"] for r in await ex.search(**{name: code})}, name
    if system:
        assert ex.rid in {r["id"] for r in await ex.search(**{name: f"{system}|{code}"})}, name
        assert ex.rid in {r["id"] for r in await ex.search(**{name: f"{system}|"})}, name
    assert ex.rid not in {r["id"] for r in await ex.search(**{name: f"{code}-absent"})}, name


async def _by_date(ex: Exercise, name: str) -> None:
    span = dates(reached(ex.created, indexed(ex.rtype)[name]))
    assert span is not None, name
    day = datetime.fromtimestamp(max(span[0], 0) / 1000, UTC).strftime("%Y-%m-%d")
    assert ex.rid in {r["id"] for r in await ex.search(**{name: f"ge{day}"})}, name
    assert ex.rid not in {r["id"] for r in await ex.search(**{name: "lt1900-01-01"})}, name
    assert ex.rid not in {r["id"] for r in await ex.search(**{name: "sa2999-01-01"})}, name
    ordered = await ex.gw.ehr("GET", f"/{ex.rtype}", params={"_sort": f"-{name}", "_count": "100"})
    assert ordered.status_code == 200, ordered.text


async def _by_string(ex: Exercise, name: str) -> None:
    [value, *_] = sorted(strings(reached(ex.created, indexed(ex.rtype)[name])))
    assert ex.rid in {r["id"] for r in await ex.search(**{name: value[:3].upper()})}, name
    assert ex.rid in {r["id"] for r in await ex.search(**{f"{name}:exact": value})}, name
    assert ex.rid not in {r["id"] for r in await ex.search(**{name: "zzqq-absent"})}, name


async def _by_uri(ex: Exercise, name: str) -> None:
    [value] = [v for v in reached(ex.created, indexed(ex.rtype)[name]) if isinstance(v, str)]
    assert ex.rid in {r["id"] for r in await ex.search(**{name: value})}, name
    assert ex.rid not in {r["id"] for r in await ex.search(**{name: f"{value}-absent"})}, name


async def _validate(ex: Exercise) -> None:
    good = await ex.gw.ehr("POST", f"/{ex.rtype}/$validate", json=_resource(ex.rtype, "v"))
    assert good.status_code == 200, good.text
    assert good.json()["resourceType"] == "OperationOutcome"
    bad = await ex.gw.ehr("POST", f"/{ex.rtype}/$validate", json=_resource(ex.rtype, "v", notAnElement=1))
    assert bad.status_code == 400
    assert any(i["severity"] == "error" for i in bad.json()["issue"])


async def _patch(ex: Exercise) -> None:
    fresh = (await ex.gw.ehr("POST", f"/{ex.rtype}", json=_resource(ex.rtype, f"{ex.key}-patch"))).json()
    ops = [{"op": "add", "path": "/language", "value": "es"}]
    headers = {"Content-Type": "application/json-patch+json", "If-Match": 'W/"1"'}
    response = await ex.gw.ehr("PATCH", f"/{ex.rtype}/{fresh['id']}", json=ops, headers=headers)
    assert response.status_code == 200, response.text
    assert (response.json()["language"], response.json()["meta"]["versionId"]) == ("es", "2")
    stale = await ex.gw.ehr("PATCH", f"/{ex.rtype}/{fresh['id']}", json=ops, headers=headers)
    assert stale.status_code == 412


async def _history_instance(ex: Exercise) -> None:
    response = await ex.gw.ehr("GET", f"/{ex.rtype}/{ex.rid}/_history")
    assert response.status_code == 200, response.text
    bundle = response.json()
    assert bundle["type"] == "history"
    assert [e["response"]["etag"] for e in bundle["entry"]][-1] == 'W/"1"'


async def _history_type(ex: Exercise) -> None:
    response = await ex.gw.ehr("GET", f"/{ex.rtype}/_history", params={"_count": "1000"})
    assert response.status_code == 200, response.text
    assert ex.rid in {e["fullUrl"].rsplit("/", 1)[1] for e in response.json()["entry"]}


INTERACTIONS: dict[str, Check] = {
    "patch": _patch,
    "history-instance": _history_instance,
    "history-type": _history_type,
    "create": _create,
    "read": _read,
    "vread": _vread,
    "update": _update,
    "search-type": _search_type,
    "delete": _delete,
}
SEARCH: dict[str, Check] = {"_id": _by_id, "_lastUpdated": _by_last_updated}
BY_TYPE: dict[str, Callable[[Exercise, str], Awaitable[None]]] = {
    "reference": _by_reference,
    "token": _by_token,
    "date": _by_date,
    "string": _by_string,
    "uri": _by_uri,
}
OPERATIONS: dict[str, Check] = {"validate": _validate}


async def _conditional(ex: Exercise, declared: dict[str, Any]) -> None:
    """Exercise conditionalCreate, conditionalUpdate and conditionalDelete as declared."""
    condition = f"identifier=urn:example:capability|{ex.key}"
    if declared.get("conditionalCreate"):
        again = await ex.gw.ehr(
            "POST",
            f"/{ex.rtype}",
            json=_resource(ex.rtype, ex.key, language="de"),
            headers={"If-None-Exist": condition},
        )
        assert again.status_code == 200, again.text
        assert again.json()["id"] == ex.rid
    if declared.get("conditionalUpdate"):
        response = await ex.gw.ehr("PUT", f"/{ex.rtype}?{condition}", json=_resource(ex.rtype, ex.key, language="fr"))
        assert response.status_code in (200, 201), response.text
        assert response.json()["id"] == ex.rid
        assert response.json()["language"] == "fr"
        new_key = f"{ex.key}-cu"
        made = await ex.gw.ehr(
            "PUT", f"/{ex.rtype}?identifier=urn:example:capability|{new_key}", json=_resource(ex.rtype, new_key)
        )
        assert made.status_code == 201, made.text
    if declared.get("conditionalDelete", "not-supported") != "not-supported":
        gone_key = f"{ex.key}-cd"
        made = (await ex.gw.ehr("POST", f"/{ex.rtype}", json=_resource(ex.rtype, gone_key))).json()
        response = await ex.gw.ehr("DELETE", f"/{ex.rtype}?identifier=urn:example:capability|{gone_key}")
        assert response.status_code == 204
        assert (await ex.gw.ehr("GET", f"/{ex.rtype}/{made['id']}")).status_code == 410


async def _statement(gw: Gateway) -> dict[str, Any]:
    response = await gw.http.get("/fhir/R4/metadata")
    assert response.status_code == 200
    statement: dict[str, Any] = response.json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    return statement


@pytest.mark.parametrize("rtype", SAMPLED)
async def test_every_declared_interaction_answers(gateway: Gateway, rtype: str) -> None:
    [rest] = (await _statement(gateway))["rest"]
    declared = next(r for r in rest["resource"] if r["type"] == rtype)
    interactions = [i["code"] for i in declared.get("interaction", [])]
    params = {p["name"]: p["type"] for p in declared.get("searchParam", [])}
    operations = [o["name"] for o in declared.get("operation", [])]
    assert set(interactions) <= set(INTERACTIONS), "the statement declares an interaction this test cannot check"
    assert all(n in SEARCH or t in BY_TYPE for n, t in params.items()), "a search parameter this test cannot check"
    assert set(operations) <= set(OPERATIONS), "the statement declares an operation this test cannot check"
    assert "create" in interactions  # every other check starts from a created resource

    key = f"cap-{rtype}-{uuid.uuid4().hex[:8]}"
    created = await gateway.ehr("POST", f"/{rtype}", json=_resource(rtype, key))
    assert created.status_code == 201, created.text
    ex = Exercise(gateway, rtype, key, created.json())
    for code in interactions:
        await INTERACTIONS[code](ex)
    if declared.get("readHistory"):
        await _vread(ex)
    for name, kind in params.items():
        await (SEARCH[name](ex) if name in SEARCH else BY_TYPE[kind](ex, name))
    for name in operations:
        await OPERATIONS[name](ex)
    await _conditional(ex, declared)


async def test_patient_search_is_declared_exactly_for_types_about_a_patient(gateway: Gateway) -> None:
    [rest] = (await _statement(gateway))["rest"]
    declared = {r["type"]: {p["name"] for p in r.get("searchParam", [])} for r in rest["resource"]}
    assert {t for t in SAMPLED if "patient" in declared[t]} == ABOUT_A_PATIENT
    assert all({"_id", "_lastUpdated"} <= params for params in declared.values())
    assert "identifier" in declared["Patient"] and "subject" in declared["Observation"]


async def test_every_r4_type_is_declared(gateway: Gateway) -> None:
    from conformance.fhir_models import R4_RESOURCE_TYPES

    [rest] = (await _statement(gateway))["rest"]
    assert {r["type"] for r in rest["resource"]} == set(R4_RESOURCE_TYPES)


async def test_declared_system_interactions_answer(gateway: Gateway) -> None:
    [rest] = (await _statement(gateway))["rest"]
    codes = {i["code"] for i in rest.get("interaction", [])}
    assert codes <= {"transaction", "batch", "history-system"}
    if "history-system" in codes:
        response = await gateway.ehr("GET", "/_history", params={"_count": "5"})
        assert response.status_code == 200, response.text
        assert response.json()["type"] == "history"
    if "transaction" in codes:
        bundle = {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": "urn:uuid:6a3f0c1e-0000-4000-8000-000000000001",
                    "resource": _resource("Patient", "tx-pat"),
                    "request": {"method": "POST", "url": "Patient"},
                },
                {
                    "resource": _resource(
                        "Observation", "tx-obs", subject={"reference": "urn:uuid:6a3f0c1e-0000-4000-8000-000000000001"}
                    ),
                    "request": {"method": "POST", "url": "Observation"},
                },
            ],
        }
        response = await gateway.ehr("POST", "", json=bundle)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["type"] == "transaction-response"
        assert [e["response"]["status"][:3] for e in answer["entry"]] == ["201", "201"]
        patient_id = answer["entry"][0]["response"]["location"].split("/")[1]
        obs_id = answer["entry"][1]["response"]["location"].split("/")[1]
        obs = (await gateway.ehr("GET", f"/Observation/{obs_id}")).json()
        assert obs["subject"]["reference"] == f"Patient/{patient_id}"
    if "batch" in codes:
        bundle = {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [
                {
                    "resource": _resource("Organization", "batch-org"),
                    "request": {"method": "POST", "url": "Organization"},
                },
                {"request": {"method": "GET", "url": "Organization/does-not-exist"}},
            ],
        }
        response = await gateway.ehr("POST", "", json=bundle)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["type"] == "batch-response"
        assert [e["response"]["status"][:3] for e in answer["entry"]] == ["201", "404"]
