"""Every kind of bad input gets a 4xx OperationOutcome naming the problem, never a 500."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from gateway.settings import ClientsConfig, Settings
from tests.conftest import EHR_A, PLATFORM_A, Gateway, running
from tests.gateway.fixtures import appointment

# Bad input is refused before it reaches Redis, so the Redis given makes no difference (see tests/conftest.py): run
# once.
pytestmark = pytest.mark.embedded_only


def _outcome(response) -> dict:  # type: ignore[no-untyped-def]
    body = response.json()
    assert body["resourceType"] == "OperationOutcome", body
    return body


def _paths(outcome: dict) -> list[str]:  # type: ignore[type-arg]
    return [p for issue in outcome["issue"] for p in issue.get("expression", [])]


@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b'{"resourceType": "Appointment", "status": ', "malformed JSON"),
        (b'{"resourceType": "Appointment", "status": "booked", "status": "cancelled"}', "duplicate JSON key"),
        (b"", "empty"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"resourceType": "Appointment", "minutesDuration": NaN}', "not valid JSON"),
        (b"[1, 2, 3]", "JSON object"),
    ],
)
async def test_unparseable_bodies_are_400(gateway: Gateway, raw: bytes, fragment: str) -> None:
    response = await gateway.ehr("POST", "/Appointment", content=raw)
    assert response.status_code == 400
    assert fragment in json.dumps(_outcome(response))


async def test_deep_nesting_is_refused(gateway: Gateway) -> None:
    nested: dict = {"resourceType": "Appointment", "status": "booked", "participant": []}  # type: ignore[type-arg]
    node: dict = nested  # type: ignore[type-arg]
    for _ in range(200):
        node["extension"] = [{"url": "urn:x", "extension": []}]
        node = node["extension"][0]
    response = await gateway.ehr("POST", "/Appointment", json=nested)
    assert response.status_code == 400
    assert "nested deeper" in json.dumps(_outcome(response))


async def test_extremely_deep_json_is_400_not_a_crash(gateway: Gateway) -> None:
    raw = b'{"resourceType":"Appointment","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    response = await gateway.ehr("POST", "/Appointment", content=raw)
    assert response.status_code == 400
    _outcome(response)


async def test_wrong_content_type_is_415(gateway: Gateway) -> None:
    response = await gateway.ehr(
        "POST", "/Appointment", content=b"<Appointment/>", headers={"Content-Type": "application/fhir+xml"}
    )
    assert response.status_code == 415
    _outcome(response)


async def test_invalid_resource_names_the_element(gateway: Gateway) -> None:
    response = await gateway.ehr("POST", "/Appointment", json=appointment(status="maybe", start="tomorrow"))
    assert response.status_code == 400
    paths = _paths(_outcome(response))
    assert "Appointment.status" in paths
    assert "Appointment.start" in paths
    assert "maybe" not in response.text and "tomorrow" not in response.text


async def test_type_mismatch_and_unknown_types(gateway: Gateway) -> None:
    mismatch = await gateway.ehr("POST", "/Patient", json=appointment())
    assert mismatch.status_code == 400
    unknown = await gateway.ehr("POST", "/Spaceship", json={"resourceType": "Spaceship"})
    assert unknown.status_code == 404
    _outcome(unknown)
    wrong_id = await gateway.ehr("PUT", "/Appointment/a1", json=appointment(id="a2"))
    assert wrong_id.status_code == 400
    bad_id = await gateway.ehr("GET", "/Appointment/" + "x" * 65)
    assert bad_id.status_code == 400


async def test_unknown_resource_is_404_outcome(gateway: Gateway) -> None:
    response = await gateway.ehr("GET", "/Appointment/never-was")
    assert response.status_code == 404
    assert _outcome(response)["issue"][0]["code"] == "not-found"


async def test_bad_search_parameters_are_400(gateway: Gateway) -> None:
    assert (await gateway.ehr("GET", "/Appointment?_lastUpdated=last-week")).status_code == 400
    assert (await gateway.ehr("GET", "/Appointment?_count=-1")).status_code == 400
    assert (await gateway.ehr("GET", "/Appointment?_cursor=%%%")).status_code == 400


async def test_bundle_structure_problems_are_400(gateway: Gateway) -> None:
    no_request = {"resourceType": "Bundle", "type": "transaction", "entry": [{"resource": appointment()}]}
    response = await gateway.ehr("POST", "", json=no_request)
    assert response.status_code == 400
    assert "Bundle.entry[0].request" in _paths(_outcome(response))
    patch_entry = {"resource": appointment(), "request": {"method": "PATCH", "url": "Appointment/x"}}
    patch = {"resourceType": "Bundle", "type": "transaction", "entry": [patch_entry]}
    assert (await gateway.ehr("POST", "", json=patch)).status_code == 400
    not_bundle = await gateway.ehr("POST", "", json=appointment())
    assert not_bundle.status_code == 400


async def test_no_or_unknown_token_is_401_and_wrong_role_is_403(gateway: Gateway) -> None:
    anonymous = await gateway.http.get("/fhir/R4/Appointment/x")
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"].startswith("Bearer")
    _outcome(anonymous)
    unknown = await gateway.http.get("/fhir/R4/Appointment/x", headers={"Authorization": "Bearer not-a-real-token"})
    assert unknown.status_code == 401
    platform_on_fhir = await gateway.ehr("GET", "/Appointment/x", token=PLATFORM_A)
    assert platform_on_fhir.status_code == 403
    _outcome(platform_on_fhir)
    ehr_on_platform = await gateway.platform("/changes", token=EHR_A)
    assert ehr_on_platform.status_code == 403


@pytest.fixture
def small_settings(settings: Settings) -> Settings:
    return settings.model_copy(update={"max_body_bytes": 4096, "max_bundle_entries": 3})


@pytest.fixture
async def small_gateway(small_settings: Settings, clients: ClientsConfig) -> AsyncIterator[Gateway]:
    async with running(small_settings, clients, with_worker=False) as gw:
        yield gw


async def test_a_body_over_the_limit_is_413_even_when_chunked(small_gateway: Gateway) -> None:
    big = appointment(description="x" * 10_000)
    declared = await small_gateway.ehr("POST", "/Appointment", json=big)
    assert declared.status_code == 413
    _outcome(declared)

    async def chunks() -> AsyncIterator[bytes]:
        payload = json.dumps(big).encode()
        for i in range(0, len(payload), 1000):
            yield payload[i : i + 1000]

    chunked = await small_gateway.ehr("POST", "/Appointment", content=chunks())
    assert chunked.status_code == 413
    _outcome(chunked)


async def test_too_many_bundle_entries_is_413(small_gateway: Gateway) -> None:
    bundle = {"resourceType": "Bundle", "type": "batch",
              "entry": [{"request": {"method": "GET", "url": f"Appointment/{i}"}} for i in range(4)]}  # fmt: skip
    response = await small_gateway.ehr("POST", "", json=bundle)
    assert response.status_code == 413
    _outcome(response)


HUGE_INTEGER = "9" * 5000  # past Python's 4,300-digit limit for int()


@pytest.mark.parametrize(
    ("raw", "path"),
    [
        (b'{"resourceType": "Patient", "multipleBirthInteger": ' + HUGE_INTEGER.encode() + b"}",
         "Patient.multipleBirthInteger"),
        (b'{"resourceType": "Patient", "name": [{"family": "Smith", "given": ["A", ' + HUGE_INTEGER.encode() + b"]}]}",
         "Patient.name[0].given[1]"),
        (b'{"resourceType": "Patient", "name": [{"family": "Sm\\ud800ith"}]}', "Patient.name[0].family"),
        (b'{"resourceType": "Patient", "name": [{"given": ["x", "\\udfff"]}]}', "Patient.name[0].given[1]"),
        (b'{"resourceType": "Patient", "\\ud800": 1}', "Patient"),
    ],
    ids=["huge integer", "huge integer in an array", "lone high surrogate", "lone low surrogate", "surrogate key"],
)  # fmt: skip
@pytest.mark.parametrize("route", ["POST /Patient", "PUT /Patient/p1", "POST /Patient/$validate", "POST bundle"])
async def test_a_huge_integer_or_a_lone_surrogate_is_400_naming_the_element(
    gateway: Gateway, raw: bytes, path: str, route: str
) -> None:
    method, url = route.split(" ")
    if url == "/Patient/p1":
        raw = raw.replace(b'"Patient", ', b'"Patient", "id": "p1", ', 1)
    if url == "bundle":
        url = ""
        entry = b'{"request": {"method": "POST", "url": "Patient"}, "resource": ' + raw + b"}"
        raw = b'{"resourceType": "Bundle", "type": "batch", "entry": [' + entry + b"]}"
        path = path.replace("Patient", "Bundle.entry[0].resource", 1)
    response = await gateway.ehr(method, url, content=raw)
    assert response.status_code == 400, response.text
    assert path in _paths(_outcome(response))
    assert "\\ud800" not in response.text and "999999" not in response.text


async def test_a_lone_surrogate_is_400_for_a_lenient_tenant_too(settings: Settings) -> None:
    lenient = ClientsConfig.model_validate(
        {"clients": [{"token": EHR_A, "tenant": "clinic-a", "role": "ehr"}],
         "tenants": {"clinic-a": {"validation": "lenient"}}}
    )  # fmt: skip
    raw = b'{"resourceType": "Basic", "code": {"text": "a\\ud800"}, '
    raw += b'"extension": [{"url": "urn:x", "valueString": "\\udc00"}]}'
    async with running(settings, lenient, with_worker=False) as gw:
        response = await gw.ehr("POST", "/Basic", content=raw)
    assert response.status_code == 400, response.text
    assert "Basic.code.text" in _paths(_outcome(response))


ECHO = "Quibble7731"  # what a client might send: a name, a date typed into the wrong box


@pytest.mark.parametrize(
    "query",
    [f"_lastUpdated={ECHO}", f"_lastUpdated=xx{ECHO}", f"_lastUpdated=gt{ECHO}", f"date={ECHO}", f"date=zz{ECHO}",
     f"date:{ECHO}=2026", f"{ECHO}=1", f"{ECHO}.name=1", f"subject.{ECHO}=1", f"patient:{ECHO}=1",
     f"identifier:{ECHO}=x", f"_id:{ECHO}=1", f"_lastUpdated:{ECHO}=2026", f"_count={ECHO}", f"_sort={ECHO}",
     f"_include={ECHO}", f"_include=Appointment:{ECHO}", f"_revinclude={ECHO}:x", f"_include:{ECHO}=x",
     f"_summary={ECHO}", f"_total={ECHO}", f"_cursor={ECHO}", f"actor={ECHO}/x/y", f"_elements={ECHO}&{ECHO}=1"],
)  # fmt: skip
async def test_a_search_refusal_never_repeats_what_was_sent(gateway: Gateway, query: str) -> None:
    response = await gateway.ehr("GET", f"/Appointment?{query}", headers={"Prefer": "handling=strict"})
    assert response.status_code == 400, (query, response.text)
    _outcome(response)
    assert ECHO not in response.text


@pytest.mark.parametrize(
    "path",
    [f"/platform/v1/{ECHO}", f"/platform/v1/appointments/{ECHO}", f"/platform/v1/appointments?from={ECHO}",
     f"/platform/v1/changes?cursor={ECHO}", f"/platform/v1/appointments?cursor={ECHO}",
     f"/fhir/R4/Appointment/{ECHO}/_history", f"/fhir/R4/Appointment/{ECHO}/_history?_since={ECHO}",
     f"/fhir/R4/Appointment/_history?_count={ECHO}", f"/fhir/R4/Appointment/{ECHO}"],
)  # fmt: skip
async def test_other_refusals_never_repeat_what_was_sent(gateway: Gateway, path: str) -> None:
    token = PLATFORM_A if path.startswith("/platform") else EHR_A
    response = await gateway.http.get(path, headers=gateway.headers(token))
    assert 400 <= response.status_code < 500, (path, response.text)
    _outcome(response)
    assert ECHO not in response.text


@pytest.mark.parametrize("spelled", ["repeated", "commas"])
async def test_changes_takes_at_most_50_type_patterns(gateway: Gateway, spelled: str) -> None:
    patterns = [f"appointment.kind{i}" for i in range(51)]
    params = [("types", p) for p in patterns] if spelled == "repeated" else [("types", ",".join(patterns))]
    response = await gateway.platform("/changes", params=params)
    assert response.status_code == 400, response.text
    assert _paths(_outcome(response)) == ["types"]
    fifty = await gateway.platform("/changes", params=[("types", ",".join(patterns[:50]))])
    assert fifty.status_code == 200, fifty.text


async def test_identifier_searches_do_not_collide_across_the_bar(gateway: Gateway) -> None:
    # system "urn:s|x" with value "y", and system "urn:s" with value "x|y": two identifiers, one text if unescaped
    first = {"resourceType": "Patient", "id": "p-bar-1", "identifier": [{"system": "urn:s|x", "value": "y"}]}
    second = {"resourceType": "Patient", "id": "p-bar-2", "identifier": [{"system": "urn:s", "value": "x|y"}]}
    for patient in (first, second):
        assert (await gateway.ehr("PUT", f"/Patient/{patient['id']}", json=patient)).status_code == 201
    for query, expected in ((r"urn:s\|x|y", "p-bar-1"), (r"urn:s|x\|y", "p-bar-2")):
        found = await gateway.ehr("GET", "/Patient", params={"identifier": query})
        assert found.status_code == 200, found.text
        assert [e["resource"]["id"] for e in found.json().get("entry", [])] == [expected], query
    # A conditional create on the one does not find the other.
    created = await gateway.ehr("POST", "/Patient", json={"resourceType": "Patient", "identifier": [
        {"system": "urn:s", "value": "x|y"}]}, headers={"If-None-Exist": r"identifier=urn:s|x\|y"})  # fmt: skip
    assert created.status_code == 200  # the match: p-bar-2, not p-bar-1
    assert created.headers["Location"].split("/")[-3] == "p-bar-2"
