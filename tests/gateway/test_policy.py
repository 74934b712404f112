"""The per-tenant validation policy: strict refuses any error; lenient accepts what maps safely and keeps the issues.

clinic-a keeps the default (strict); clinic-b is lenient here.
"""

from __future__ import annotations

import copy
import re
from typing import Any

import pytest

from conformance.outcome import Issue
from gateway.fhir.policy import MAPPED_ELEMENTS, accepts, touched_element
from gateway.settings import ClientsConfig
from mappers.family import FRAME
from mappers.registry import MAPPED
from tests.conftest import CLIENTS, EHR_A, EHR_B, PLATFORM_B, Gateway, corpus_dir
from tests.gateway.fixtures import appointment
from tests.mappers.conftest import corpus_found, ctx

UNSAFE_DIV = '<div xmlns="http://www.w3.org/1999/xhtml"><script>alert(1)</script></div>'


@pytest.fixture
def clients() -> ClientsConfig:
    config = copy.deepcopy(CLIENTS)
    config["tenants"]["clinic-b"] = {"validation": "lenient"}
    return ClientsConfig.model_validate(config)


def observation(**changes: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "mood"}, **changes}


def _error(expression: str | None, code: str = "value") -> Issue:
    return Issue("error", code, expression, "bad")


def test_the_tenant_policy_defaults_to_strict(clients: ClientsConfig) -> None:
    assert clients.tenant("clinic-a").validation == "strict"
    assert clients.tenant("unknown").validation == "strict"
    assert clients.tenant("clinic-b").validation == "lenient"


def test_which_errors_lenient_tolerates() -> None:
    assert touched_element("Appointment.priority", "Appointment") == "priority"
    assert touched_element("Bundle.entry[2].resource._birthDate", "Bundle.entry[2].resource") == "birthDate"
    assert touched_element("Appointment", "Appointment") is None
    # a mapped type: only errors in elements its mapper does not read
    assert accepts("lenient", "Appointment", [_error("Appointment.priority")])
    assert not accepts("lenient", "Appointment", [_error("Appointment.start")])
    assert not accepts("lenient", "Appointment", [_error("Appointment.participant[0].actor.reference")])
    assert accepts("lenient", "Appointment", [_error("Appointment.foo", "structure")])
    # never: no element named, fatal, or an element every reader depends on
    assert not accepts("lenient", "Appointment", [_error("Appointment", "invariant")])
    assert not accepts("lenient", "Appointment", [_error(None)])
    assert not accepts("lenient", "Observation", [Issue("fatal", "exception", "Observation.issued", "x")])
    for element in ("meta.security[0].code", "text.div", "modifierExtension[0].url", "id", "implicitRules"):
        assert not accepts("lenient", "Observation", [_error(f"Observation.{element}")])
    # an unmapped type: values yes, structure no
    assert accepts("lenient", "Observation", [_error("Observation.issued"), _error("Observation.code", "invariant")])
    assert not accepts("lenient", "Observation", [_error("Observation.bogus", "structure")])
    assert not accepts("lenient", "Observation", [_error("Observation.code", "required")])
    # strict refuses any error and accepts warnings
    assert not accepts("strict", "Appointment", [_error("Appointment.priority")])
    assert accepts("strict", "Appointment", [Issue("warning", "informational", "Appointment.extension[0]", "x")])


def test_the_table_is_what_each_family_declares_it_reads() -> None:
    assert set(MAPPED_ELEMENTS) == set(MAPPED)
    for rtype, family in MAPPED.items():
        assert MAPPED_ELEMENTS[rtype] == family.reads
        assert family.reads >= FRAME, f"{rtype} reads labels from meta and contained resources"


def test_lenient_refuses_an_error_inside_a_contained_resource_of_a_mapped_type() -> None:
    # Labels of contained resources travel to the record, so what is wrong there is not cosmetic.
    for rtype in MAPPED:
        assert not accepts("lenient", rtype, [_error(f"{rtype}.contained[0].meta.security[0].code")])
    assert accepts("lenient", "Observation", [_error("Observation.contained[0].meta.security[0].code")])


def _mapped(resource: dict[str, Any]) -> Any:
    record = MAPPED[resource["resourceType"]].to_platform(resource, ctx())
    return record.model_dump(exclude={"unmapped"})


@pytest.mark.corpus
def test_elements_a_family_does_not_declare_do_not_change_its_record() -> None:
    """Hold each family to its declaration: dropping any other top-level element leaves the record as it is."""
    corpus_dir()
    checked: dict[str, int] = {}
    for path, found in corpus_found(*MAPPED):
        rtype, resource = found.resource["resourceType"], found.resource
        if "validator-r4" in path.parts or checked.get(rtype, 0) >= 40:
            continue  # the validator's cases are invalid on purpose; 40 of a type say enough
        try:
            whole = _mapped(resource)
        except Exception:  # a resource this mapper refuses says nothing about which elements it reads
            continue
        for key in set(resource) - MAPPED[rtype].reads:
            without = {k: v for k, v in resource.items() if k != key}
            assert _mapped(without) == whole, f"{rtype} mapping reads {key} ({path.name}): declare it in its Family"
        checked[rtype] = checked.get(rtype, 0) + 1
    assert set(checked) == set(MAPPED), f"no corpus example maps for {set(MAPPED) - set(checked)}"


async def _lenient_count(gw: Gateway, rtype: str) -> float:
    text = (await gw.http.get("/metrics")).text
    match = re.search(rf'^gateway_lenient_accepted_total{{type="{rtype}"}} ([0-9.e+]+)$', text, re.M)
    return float(match.group(1)) if match else 0.0


async def test_strict_refuses_an_error_in_an_element_no_mapping_reads(gateway: Gateway) -> None:
    response = await gateway.ehr("POST", "/Appointment", token=EHR_A, json=appointment(priority="high"))
    assert response.status_code in (400, 422)
    assert any(i["expression"] == ["Appointment.priority"] for i in response.json()["issue"])


async def test_lenient_accepts_it_keeps_the_issues_with_the_version_and_counts_it(gateway: Gateway) -> None:
    before = await _lenient_count(gateway, "Appointment")
    sent = appointment(id="len-1", priority="high")
    response = await gateway.ehr(
        "PUT", "/Appointment/len-1", token=EHR_B, json=sent, headers={"Prefer": "return=OperationOutcome"}
    )
    assert response.status_code == 201, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert [(i["severity"], i["expression"]) for i in outcome["issue"]] == [("error", ["Appointment.priority"])]

    stored = (await gateway.ehr("GET", "/Appointment/len-1", token=EHR_B)).json()
    assert stored["priority"] == "high"  # stored as sent: the EHR's data is not repaired
    services = gateway.app.state.services
    kept = await services.store.issues("clinic-b", "Appointment", "len-1", 1)
    assert kept == outcome
    assert await _lenient_count(gateway, "Appointment") == before + 1

    await gateway.drain()  # and it maps like any other appointment
    record = await gateway.platform("/appointments/len-1", token=PLATFORM_B)
    assert record.status_code == 200
    assert record.json()["id"] == "len-1"


async def test_lenient_still_refuses_errors_that_mapping_or_every_reader_depends_on(gateway: Gateway) -> None:
    refused = [
        ("/Appointment", appointment(start="tomorrow")),  # mapped
        ("/Appointment", appointment(status="bogus")),  # mapped
        ("/Observation", observation(bogus=1)),  # structural, unmapped type
        ("/Observation", {"resourceType": "Observation", "status": "final"}),  # required element missing
        ("/Observation", observation(text={"status": "generated", "div": UNSAFE_DIV})),  # narrative safety
    ]
    for path, resource in refused:
        response = await gateway.ehr("POST", path, token=EHR_B, json=resource)
        assert response.status_code in (400, 422), (resource, response.text)


async def test_lenient_accepts_a_bad_value_in_an_unmapped_type(gateway: Gateway) -> None:
    response = await gateway.ehr(
        "POST", "/Observation", token=EHR_B, json=observation(issued="yesterday"),
        headers={"Prefer": "return=OperationOutcome"},
    )  # fmt: skip
    assert response.status_code == 201, response.text
    assert response.json()["issue"][0]["expression"] == ["Observation.issued"]
    strict = await gateway.ehr("POST", "/Observation", token=EHR_A, json=observation(issued="yesterday"))
    assert strict.status_code in (400, 422)


async def test_lenient_in_bundles_answers_each_entry_with_its_issues(gateway: Gateway) -> None:
    entries = [
        {
            "resource": appointment(id="len-b1", priority="high"),
            "request": {"method": "PUT", "url": "Appointment/len-b1"},
        },
        {"resource": observation(issued="yesterday"), "request": {"method": "POST", "url": "Observation"}},
    ]
    for kind in ("transaction", "batch"):
        bundle = {"resourceType": "Bundle", "type": kind, "entry": copy.deepcopy(entries)}
        bundle["entry"][1]["resource"]["identifier"] = [{"value": kind}]  # not a retry of the other kind's create
        strict = await gateway.ehr("POST", "", token=EHR_A, json=bundle)
        if kind == "transaction":
            assert strict.status_code in (400, 422)
        else:
            assert [e["response"]["status"][:3] for e in strict.json()["entry"]] == ["400", "400"]
        lenient = await gateway.ehr("POST", "", token=EHR_B, json=bundle)
        assert lenient.status_code == 200, lenient.text
        answers = [e["response"] for e in lenient.json()["entry"]]
        assert [a["status"][:3] for a in answers][1] == "201"
        assert all(a["status"][0] == "2" for a in answers)
        assert answers[0]["outcome"]["issue"][0]["expression"] == ["Bundle.entry[0].resource.priority"]
    import_bundle = {
        "resourceType": "Bundle",
        "type": "collection",
        "entry": [{"fullUrl": "urn:uuid:8d1f3c1e-2222-4b3c-9d2e-000000000001", "resource": observation(issued="x")}],
    }
    imported = await gateway.ehr("POST", "", token=EHR_B, json=import_bundle)
    assert imported.json()["entry"][0]["response"]["status"].startswith("201")
