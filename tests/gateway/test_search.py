"""FHIR search: every served parameter narrows, nothing widens, and paging holds while resources change."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.conftest import EHR_A, Gateway
from tests.gateway.fixtures import appointment, next_path


def _ids(bundle: dict[str, Any], mode: str = "match") -> list[str]:
    return [e["resource"]["id"] for e in bundle.get("entry", []) if e["search"]["mode"] == mode]


async def _search(gateway: Gateway, query: str, **headers: str) -> dict[str, Any]:
    response = await gateway.ehr("GET", query, headers=headers)
    assert response.status_code == 200, response.text
    bundle: dict[str, Any] = response.json()
    assert bundle["type"] == "searchset"
    return bundle


async def _refused(gateway: Gateway, query: str, **headers: str) -> httpx.Response:
    response = await gateway.ehr("GET", query, headers=headers)
    assert response.status_code == 400, response.text
    assert response.json()["resourceType"] == "OperationOutcome"
    return response


async def _seed(gateway: Gateway, count: int) -> None:
    for i in range(count):
        body = appointment(
            id=f"s{i}",
            identifier=[{"system": "urn:ehr", "value": f"v{i}"}],
            participant=[{"actor": {"reference": f"Patient/p{i % 2}"}, "status": "accepted"}],
        )
        assert (await gateway.ehr("PUT", f"/Appointment/s{i}", json=body)).status_code == 201


def _self_params(bundle: dict[str, Any]) -> dict[str, list[str]]:
    [self_link] = [link["url"] for link in bundle["link"] if link["relation"] == "self"]
    return parse_qs(urlsplit(self_link).query)


async def test_search_by_id_identifier_and_patient(gateway: Gateway) -> None:
    await _seed(gateway, 4)
    assert sorted(_ids(await _search(gateway, "/Appointment?_id=s1,s3"))) == ["s1", "s3"]
    assert _ids(await _search(gateway, "/Appointment?identifier=urn:ehr|v2")) == ["s2"]
    assert _ids(await _search(gateway, "/Appointment?identifier=v2")) == ["s2"]
    assert sorted(_ids(await _search(gateway, "/Appointment?identifier=urn:ehr|"))) == ["s0", "s1", "s2", "s3"]
    assert _ids(await _search(gateway, "/Appointment?identifier=urn:other|")) == []
    assert sorted(_ids(await _search(gateway, "/Appointment?patient=p1"))) == ["s1", "s3"]
    assert _ids(await _search(gateway, "/Appointment?patient=Patient/p1&_id=s3,s2")) == ["s3"]
    assert sorted(_ids(await _search(gateway, "/Appointment?actor:Patient=p0"))) == ["s0", "s2"]


async def test_updates_move_index_entries(gateway: Gateway) -> None:
    await _seed(gateway, 1)
    moved = appointment(id="s0", identifier=[{"system": "urn:ehr", "value": "new"}], status="cancelled",
                        participant=[{"actor": {"reference": "Patient/p9"}, "status": "accepted"}])  # fmt: skip
    await gateway.ehr("PUT", "/Appointment/s0", json=moved)
    assert (await _search(gateway, "/Appointment?identifier=urn:ehr|v0"))["total"] == 0
    assert (await _search(gateway, "/Appointment?patient=p0"))["total"] == 0
    assert (await _search(gateway, "/Appointment?patient=p9"))["total"] == 1
    assert (await _search(gateway, "/Appointment?status=booked"))["total"] == 0
    assert (await _search(gateway, "/Appointment?status=cancelled"))["total"] == 1
    await gateway.ehr("DELETE", "/Appointment/s0")
    for query in ("identifier=new", "status=cancelled", "patient=p9", "date=2026-12-10", "_id=s0", ""):
        assert (await _search(gateway, f"/Appointment?{query}"))["total"] == 0, query


async def test_reference_parameters_of_mapped_types_narrow(gateway: Gateway) -> None:
    subject = {"resourceType": "Communication", "status": "completed", "payload": [{"contentString": "hi"}]}
    await gateway.ehr("PUT", "/Communication/c1", json={**subject, "id": "c1", "subject": {"reference": "Patient/x"},
                                                        "recipient": [{"reference": "Practitioner/d1"}]})  # fmt: skip
    await gateway.ehr("PUT", "/Communication/c2", json={**subject, "id": "c2", "subject": {"reference": "Patient/y"}})
    assert _ids(await _search(gateway, "/Communication?subject=Patient/x")) == ["c1"]
    assert _ids(await _search(gateway, "/Communication?patient=y")) == ["c2"]
    assert _ids(await _search(gateway, "/Communication?recipient=Practitioner/d1")) == ["c1"]
    assert _ids(await _search(gateway, "/Communication?subject=Patient/nobody")) == []
    plan = {"resourceType": "CarePlan", "status": "active", "intent": "plan", "subject": {"reference": "Patient/x"}}
    await gateway.ehr("PUT", "/CarePlan/cp1", json={**plan, "id": "cp1"})
    await gateway.ehr("PUT", "/CarePlan/cp2", json={**plan, "id": "cp2", "basedOn": [{"reference": "CarePlan/cp1"}]})
    assert _ids(await _search(gateway, "/CarePlan?based-on=CarePlan/cp1")) == ["cp2"]
    encounter = {"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}}
    await gateway.ehr("PUT", "/Encounter/e1", json={**encounter, "id": "e1", "subject": {"reference": "Patient/x"},
                                                    "period": {"start": "2026-01-05T10:00:00Z"}})  # fmt: skip
    await gateway.ehr("PUT", "/Encounter/e2", json={**encounter, "id": "e2", "subject": {"reference": "Patient/y"}})
    assert _ids(await _search(gateway, "/Encounter?subject=Patient/x")) == ["e1"]
    assert _ids(await _search(gateway, "/Encounter?subject:Patient=y")) == ["e2"]


async def test_patient_name_birthdate_gender(gateway: Gateway) -> None:
    people = {
        "a": {"name": [{"family": "Rivera", "given": ["Álex", "J"]}], "gender": "female", "birthDate": "1990-04-02"},
        "b": {"name": [{"family": "Riviera", "given": ["Sam"]}], "gender": "male", "birthDate": "1985-11-20"},
        "c": {"name": [{"text": "Kim Lee", "family": "Lee"}], "gender": "female", "birthDate": "1990"},
    }
    for pid, body in people.items():
        resource = {"resourceType": "Patient", "id": pid, **body}
        assert (await gateway.ehr("PUT", f"/Patient/{pid}", json=resource)).is_success
    assert sorted(_ids(await _search(gateway, "/Patient?name=riv"))) == ["a", "b"]
    assert _ids(await _search(gateway, "/Patient?family=RIVERA")) == ["a"]
    assert _ids(await _search(gateway, "/Patient?given=alex")) == ["a"]  # accents and case do not matter
    assert _ids(await _search(gateway, "/Patient?given:exact=Álex")) == ["a"]
    assert _ids(await _search(gateway, "/Patient?given:exact=alex")) == []
    assert _ids(await _search(gateway, "/Patient?name=kim")) == ["c"]
    assert sorted(_ids(await _search(gateway, "/Patient?gender=female"))) == ["a", "c"]
    assert _ids(await _search(gateway, "/Patient?birthdate=1990-04-02")) == ["a"]
    assert sorted(_ids(await _search(gateway, "/Patient?birthdate=1990"))) == ["a", "c"]
    assert _ids(await _search(gateway, "/Patient?birthdate=lt1986")) == ["b"]
    assert sorted(_ids(await _search(gateway, "/Patient?birthdate=ge1990-01-01"))) == ["a", "c"]
    assert _ids(await _search(gateway, "/Patient?name=riv&gender=male")) == ["b"]
    assert sorted(_ids(await _search(gateway, "/Patient?family=rivera,lee"))) == ["a", "c"]


async def test_date_status_code_and_category(gateway: Gateway) -> None:
    await _seed(gateway, 2)
    await gateway.ehr("PUT", "/Appointment/late", json=appointment(id="late", start="2027-03-01T09:00:00Z",
                                                                   end="2027-03-01T10:00:00Z"))  # fmt: skip
    assert sorted(_ids(await _search(gateway, "/Appointment?date=2026-12-10"))) == ["s0", "s1"]
    assert _ids(await _search(gateway, "/Appointment?date=gt2027-01-01")) == ["late"]
    assert sorted(_ids(await _search(gateway, "/Appointment?date=lt2027-01-01"))) == ["s0", "s1"]
    assert _ids(await _search(gateway, "/Appointment?date=ge2027-01-01&date=le2027-12-31")) == ["late"]
    assert _ids(await _search(gateway, "/Appointment?date=sa2026-12-31")) == ["late"]
    assert sorted(_ids(await _search(gateway, "/Appointment?date=eb2027-01-01"))) == ["s0", "s1"]
    assert (await _search(gateway, "/Appointment?status=booked"))["total"] == 3
    observation = {"resourceType": "Observation", "status": "final", "subject": {"reference": "Patient/p0"},
                   "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category",
                                             "code": "survey"}]}],
                   "code": {"coding": [{"system": "http://loinc.org", "code": "44249-1"}]},
                   "effectiveDateTime": "2026-12-01T10:00:00Z"}  # fmt: skip
    await gateway.ehr("PUT", "/Observation/o1", json={**observation, "id": "o1"})
    await gateway.ehr("PUT", "/Observation/o2", json={**observation, "id": "o2", "status": "preliminary",
                                                      "code": {"coding": [{"code": "other"}]}})  # fmt: skip
    assert _ids(await _search(gateway, "/Observation?code=http://loinc.org|44249-1")) == ["o1"]
    assert _ids(await _search(gateway, "/Observation?code=44249-1")) == ["o1"]
    assert _ids(await _search(gateway, "/Observation?code=|other")) == ["o2"]
    assert sorted(_ids(await _search(gateway, "/Observation?category=survey"))) == ["o1", "o2"]
    assert _ids(await _search(gateway, "/Observation?status=final&patient=p0")) == ["o1"]
    assert sorted(_ids(await _search(gateway, "/Observation?date=2026-12"))) == ["o1", "o2"]


async def test_last_updated_ranges(gateway: Gateway) -> None:
    await _seed(gateway, 2)
    assert (await _search(gateway, "/Appointment?_lastUpdated=gt2000-01-01"))["total"] == 2
    assert (await _search(gateway, "/Appointment?_lastUpdated=lt2000-01-01"))["total"] == 0
    stamp = (await gateway.ehr("GET", "/Appointment/s1")).json()["meta"]["lastUpdated"]
    assert (await _search(gateway, f"/Appointment?_lastUpdated=ge{stamp}"))["total"] >= 1
    assert (await _search(gateway, f"/Appointment?_lastUpdated=gt{stamp}"))["total"] == 0


async def _all_pages(gateway: Gateway, url: str, between: Any = None) -> tuple[list[str], int]:
    seen: list[str] = []
    pages = 0
    while url:
        page = await _search(gateway, url)
        seen += _ids(page)
        url = next_path(page)
        pages += 1
        if between is not None:
            await between(pages)
    return seen, pages


async def test_paging_follows_next_links_without_gaps_or_repeats(gateway: Gateway) -> None:
    await _seed(gateway, 7)
    seen, pages = await _all_pages(gateway, "/Appointment?_count=3")
    assert pages == 3
    assert seen == sorted(f"s{i}" for i in range(7))  # by id when no _sort is given
    seen, pages = await _all_pages(gateway, "/Appointment?_count=3&patient=p0")
    assert (seen, pages) == (["s0", "s2", "s4", "s6"], 2)


@pytest.mark.parametrize("sort", ["", "&_sort=_lastUpdated", "&_sort=-_lastUpdated", "&_sort=date", "&_sort=-date"])
async def test_paging_is_stable_when_resources_change_meanwhile(gateway: Gateway, sort: str) -> None:
    await _seed(gateway, 9)

    async def touch(page: int) -> None:
        # After each page, change a resource not seen yet and one already seen, and delete one.
        for rid in {1: ("s8", "s0"), 2: ("s5", "s1")}.get(page, ()):
            await gateway.ehr("PUT", f"/Appointment/{rid}", json=appointment(id=rid, description=f"changed {page}",
                                                                             start="2026-12-11T09:00:00Z",
                                                                             end="2026-12-11T10:00:00Z"))  # fmt: skip

    seen, _ = await _all_pages(gateway, f"/Appointment?_count=3{sort}", touch)
    assert set(seen) == {f"s{i}" for i in range(9)}  # nothing skipped
    if not sort:
        assert len(seen) == 9  # and by id, nothing repeated


async def test_sort_by_last_updated_and_date(gateway: Gateway) -> None:
    for rid, day in (("x", "12"), ("y", "10"), ("z", "11")):
        await gateway.ehr("PUT", f"/Appointment/{rid}", json=appointment(id=rid, start=f"2026-12-{day}T09:00:00Z",
                                                                         end=f"2026-12-{day}T10:00:00Z"))  # fmt: skip
    assert _ids(await _search(gateway, "/Appointment?_sort=_lastUpdated")) == ["x", "y", "z"]
    assert _ids(await _search(gateway, "/Appointment?_sort=-_lastUpdated")) == ["z", "y", "x"]
    assert _ids(await _search(gateway, "/Appointment?_sort=date")) == ["y", "z", "x"]
    assert _ids(await _search(gateway, "/Appointment?_sort=-date")) == ["x", "z", "y"]
    assert _self_params(await _search(gateway, "/Appointment?_sort=-date"))["_sort"] == ["-date"]


async def test_summary_count_total_and_elements(gateway: Gateway) -> None:
    await _seed(gateway, 3)
    counted = await _search(gateway, "/Appointment?_summary=count")
    assert counted["total"] == 3 and "entry" not in counted
    assert "total" not in await _search(gateway, "/Appointment?_total=none")
    assert (await _search(gateway, "/Appointment?_total=accurate&patient=p0"))["total"] == 2
    slim = await _search(gateway, "/Appointment?_elements=status,start&_id=s1")
    [resource] = [e["resource"] for e in slim["entry"]]
    assert set(resource) == {"resourceType", "id", "meta", "status", "start"}
    assert {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue", "code": "SUBSETTED"} in resource[
        "meta"
    ]["tag"]


async def test_include_and_revinclude(gateway: Gateway) -> None:
    await gateway.ehr("PUT", "/Patient/p0", json={"resourceType": "Patient", "id": "p0", "gender": "other"})
    await _seed(gateway, 3)
    with_patient = await _search(gateway, "/Appointment?_id=s0,s2&_include=Appointment:patient")
    assert sorted(_ids(with_patient)) == ["s0", "s2"]
    assert _ids(with_patient, "include") == ["p0"]
    targeted = await _search(gateway, "/Appointment?_id=s0&_include=Appointment:actor:Practitioner")
    assert _ids(targeted, "include") == []  # the Practitioner it names is not stored; the Patient is not asked for
    patients = await _search(gateway, "/Patient?_id=p0&_revinclude=Appointment:patient")
    assert _ids(patients) == ["p0"]
    assert sorted(_ids(patients, "include")) == ["s0", "s2"]
    await _refused(gateway, "/Appointment?_include=Appointment:status")
    await _refused(gateway, "/Appointment?_include=Patient:link")


async def test_post_search_takes_a_form_body(gateway: Gateway) -> None:
    await _seed(gateway, 4)
    response = await gateway.http.post(
        "/fhir/R4/Appointment/_search?_count=10",
        content="patient=p1&_sort=-_lastUpdated",
        headers={**gateway.headers(EHR_A), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 200, response.text
    assert _ids(response.json()) == ["s3", "s1"]
    wrong = await gateway.ehr("POST", "/Appointment/_search", json={"patient": "p1"})
    assert wrong.status_code == 415


@pytest.mark.parametrize(
    "query",
    [
        "/Encounter?subject.name=Rivera",  # chained: narrows by a referenced resource
        "/Encounter?_has:Observation:subject:code=1234",
        "/Practitioner?patient=x",  # R4 has no such parameter for the type: ignoring it would widen
        "/Organization?subject=Patient/x",
        "/Bundle?composition=Composition/1",  # an R4 reference parameter the gateway cannot evaluate
        "/Appointment?patient:identifier=urn:mrn|1",  # an unsupported modifier
        "/Patient?name:contains=iver",
        "/Appointment?status:not=booked",
        "/Appointment?date=ap2026-12-10",
        "/Appointment?date=last-week",
        "/Patient?_content=rivera",
    ],
)
async def test_a_parameter_that_would_narrow_is_refused_never_ignored(gateway: Gateway, query: str) -> None:
    await _seed(gateway, 1)
    await _refused(gateway, query)


async def test_an_unsupported_parameter_is_ignored_and_left_out_of_the_self_link(gateway: Gateway) -> None:
    await _seed(gateway, 2)
    page = await _search(gateway, "/Appointment?service-type=psychotherapy&foo=bar&patient=p0")
    assert _ids(page) == ["s0"]
    assert set(_self_params(page)) == {"patient", "_count"}
    assert all(e["search"]["mode"] == "match" for e in page["entry"])  # no OperationOutcome among the resources
    strict = await _refused(gateway, "/Appointment?service-type=psychotherapy", Prefer="handling=strict")
    assert strict.json()["issue"][0]["expression"] == ["service-type"]
    assert _ids(await _search(gateway, "/Appointment?_id=s1&_include=*")) == ["s1"]
    await _refused(gateway, "/Appointment?_include=*", Prefer="handling=strict")


async def test_identifier_keys_do_not_collide(gateway: Gateway) -> None:
    """``urn:s|x`` + ``y`` and ``urn:s`` + ``x|y`` are two identifiers (issue #12, item 10)."""
    for pid, system, value in (("one", "urn:s|x", "y"), ("two", "urn:s", "x|y")):
        body = {"resourceType": "Patient", "id": pid, "identifier": [{"system": system, "value": value}]}
        assert (await gateway.ehr("PUT", f"/Patient/{pid}", json=body)).status_code == 201
    assert _ids(await _search(gateway, "/Patient?identifier=urn:s\\|x|y")) == ["one"]
    assert _ids(await _search(gateway, "/Patient?identifier=urn:s|x\\|y")) == ["two"]
    again = await gateway.ehr("POST", "/Patient", json={"resourceType": "Patient"},
                              headers={"If-None-Exist": "identifier=urn:s|x\\|y"})  # fmt: skip
    assert (again.status_code, again.json()["id"]) == (200, "two")


async def test_a_bad_date_is_refused_without_echoing_it(gateway: Gateway) -> None:
    """Diagnostics never quote input (issue #12, item 10)."""
    response = await _refused(gateway, "/Appointment?_lastUpdated=SECRET-VALUE-123")
    assert "SECRET" not in response.text
    assert response.json()["issue"][0]["expression"] == ["_lastUpdated"]


def test_the_search_parameters_in_the_docs_are_current() -> None:
    import importlib.util
    from pathlib import Path

    tool = Path(__file__).resolve().parents[2] / "tools" / "search_doc.py"
    spec = importlib.util.spec_from_file_location("search_doc", tool)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    held = module.documented(module.DOC.read_text(encoding="utf-8"))
    assert held == module.table(), "run `python tools/search_doc.py --write`"
