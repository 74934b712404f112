"""What either check refuses never leaves the gateway: a builder's defect fails the write-back with the
OperationOutcome, and the EHR (respx) never sees a request."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import respx

from conformance import fhir_models
from gateway.errors import Unprocessable
from gateway.settings import ClientsConfig, Settings
from gateway.writebacks import builders
from mappers.context import MapContext
from mappers.vendors import outbound
from tests.conftest import Gateway, running
from tests.support import until

BASE = "https://ehr.example.test/fhir"
PLATFORM = "platform-token-refusals-0123456789"
PLATFORM_ORACLE = "platform-token-refusals-oracle-0123"
EHR_BLOCK = {"base_url": BASE, "auth": {"type": "bearer", "token": "ehr-bearer-0123456789"}}
CLIENTS = {
    "clients": [
        {"token": PLATFORM, "tenant": "clinic-a", "role": "platform"},
        {"token": PLATFORM_ORACLE, "tenant": "clinic-oracle", "role": "platform"},
    ],
    "tenants": {
        "clinic-a": {"vendor": "generic", "ehr": EHR_BLOCK},
        "clinic-oracle": {"vendor": "oracle-health", "ehr": EHR_BLOCK},
    },
}
MESSAGE = {"patient": "Patient/pat-1", "sender": "Practitioner/prac-1", "body": "Your results are in."}


@pytest.fixture
def ehr() -> Iterator[respx.MockRouter]:
    """The EHR: every request the gateway makes is recorded (and one it did not expect fails the test)."""
    with respx.mock(assert_all_called=False, assert_all_mocked=True) as router:
        yield router


@pytest.fixture
async def gw(settings: Settings, ehr: respx.MockRouter) -> AsyncIterator[Gateway]:
    async with running(settings, ClientsConfig.model_validate(CLIENTS), with_worker=True) as gateway:
        yield gateway


async def post(gw: Gateway, path: str, body: Any, token: str = PLATFORM) -> httpx.Response:
    return await gw.http.post(f"/platform/v1{path}", json=body, headers={"Authorization": f"Bearer {token}"})


async def writeback(gw: Gateway, wid: str, token: str = PLATFORM) -> dict[str, Any]:
    response = await gw.http.get(f"/platform/v1/writebacks/{wid}", headers={"Authorization": f"Bearer {token}"})
    assert response.status_code == 200, response.text
    found: dict[str, Any] = response.json()
    return found


async def settled(gw: Gateway, wid: str, token: str = PLATFORM) -> dict[str, Any]:
    async def final() -> dict[str, Any] | None:
        found = await writeback(gw, wid, token)
        return found if found["status"] in ("delivered", "failed", "dead_lettered") else None

    found: dict[str, Any] = await until(final, "the write-back to settle")
    return found


async def queued(gw: Gateway, tenant: str = "clinic-a") -> int:
    services = gw.services
    return int(await services.redis.xlen(services.keys.outbound(tenant)))


# The deliberately bad vendor adjustments: one only the R4 validator refuses (fhir.resources' R4B model takes any
# string as a code), one the R4B model refuses (an empty payload element, slipped past its assignment checks).
def status_sent(resource: fhir_models.DomainResource, vendor: object) -> None:
    if isinstance(resource, fhir_models.Communication):
        resource.status = "sent"


def empty_payload(resource: fhir_models.DomainResource, vendor: object) -> None:
    if isinstance(resource, fhir_models.Communication) and resource.payload:
        resource.payload.append(fhir_models.CommunicationPayload.model_construct())


DEFECTS = {
    "the R4 validator refuses it": (status_sent, "Communication.status"),
    "the R4B model refuses it": (empty_payload, "Communication.payload[1]"),
}


def inject(defect: str, monkeypatch: pytest.MonkeyPatch, ehr: respx.MockRouter) -> tuple[str, respx.Route]:
    """Add the defect's adjustment to every vendor's; return the element it breaks and the EHR's create route."""
    adjustment, element = DEFECTS[defect]
    monkeypatch.setattr(outbound, "ADJUSTMENTS", (*outbound.ADJUSTMENTS, adjustment))
    return element, ehr.post(f"{BASE}/Communication").respond(201, headers={"Location": f"{BASE}/Communication/c-1"})


@pytest.mark.parametrize("defect", sorted(DEFECTS))
async def test_a_bad_vendor_adjustment_is_refused_before_anything_is_queued(
    gw: Gateway, ehr: respx.MockRouter, monkeypatch: pytest.MonkeyPatch, defect: str
) -> None:
    element, route = inject(defect, monkeypatch, ehr)

    response = await post(gw, "/messages", MESSAGE)

    assert response.status_code == 422, response.text
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert element in {e for issue in outcome["issue"] for e in issue.get("expression", [])}
    assert await queued(gw) == 0
    assert route.call_count == 0 and ehr.calls.call_count == 0


@pytest.mark.parametrize("defect", sorted(DEFECTS))
async def test_a_builder_defect_found_at_delivery_fails_the_write_back_and_the_ehr_gets_no_request(
    gw: Gateway, ehr: respx.MockRouter, monkeypatch: pytest.MonkeyPatch, defect: str
) -> None:
    # A builder whose defect escapes its own check (as a write-back queued by an older release would): the
    # worker's last check before sending catches it.
    element, route = inject(defect, monkeypatch, ehr)
    monkeypatch.setattr(builders, "checked", lambda resource, support=None: resource)

    response = await post(gw, "/messages", MESSAGE)
    assert response.status_code == 202, response.text
    found = await settled(gw, response.json()["id"])

    assert found["status"] == "failed" and found["ehr_id"] is None
    assert "nothing was sent to the EHR" in found["error"]
    assert found["outcome"]["resourceType"] == "OperationOutcome"
    assert element in {e for issue in found["outcome"]["issue"] for e in issue.get("expression", [])}
    assert route.call_count == 0 and ehr.calls.call_count == 0


async def test_a_valid_write_back_reaches_the_ehr_as_the_models_export_adjusted_for_its_vendor(
    gw: Gateway, ehr: respx.MockRouter
) -> None:
    route = ehr.post(f"{BASE}/Communication").respond(
        201, headers={"Location": f"{BASE}/Communication/c-9/_history/1", "ETag": 'W/"1"'}
    )
    response = await post(gw, "/messages", MESSAGE, token=PLATFORM_ORACLE)
    assert response.status_code == 202, response.text
    found = await settled(gw, response.json()["id"], PLATFORM_ORACLE)
    assert (found["status"], found["ehr_id"], found["ehr_version"]) == ("delivered", "c-9", "1")
    [call] = route.calls
    sent = json.loads(call.request.content)
    [part] = sent["payload"]
    assert base64.b64decode(part["contentAttachment"]["data"]).decode() == MESSAGE["body"]
    assert fhir_models.written(sent, fhir_models.Communication) == sent, "what was sent is the model's export"


# -- where R4 and R4B differ: Extension.value[x] ----------------------------------------------------------------


def stored_appointment(extension: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Appointment", "id": "a-1", "status": "booked", "extension": [extension],
        "start": "2026-12-10T14:00:00Z", "end": "2026-12-10T14:50:00Z",
        "participant": [{"actor": {"reference": "Patient/p-1"}, "status": "accepted"}],
    }  # fmt: skip


CONTEXT = MapContext(tenant="clinic-a", version_id="0", last_updated="2026-12-01T15:00:00Z")


def test_an_r4_extension_valuemeta_that_r4b_cannot_hold_is_refused_and_says_why() -> None:
    stored = stored_appointment({"url": "https://example.org/ext", "valueMeta": {"versionId": "2"}})
    with pytest.raises(Unprocessable) as refused:
        builders.cancellation(stored, "a-1", None, CONTEXT)
    [issue] = refused.value.issues
    assert issue.expression == "Appointment.extension[0].valueMeta"
    assert "R4 allows Extension.valueMeta" in issue.diagnostics


def test_an_r4b_only_extension_value_is_refused_as_r4_is_kept() -> None:
    stored = stored_appointment({"url": "https://example.org/ext", "valueRatioRange": {"denominator": {"value": 1}}})
    assert fhir_models.refusals(stored) == [], "R4B takes it"
    with pytest.raises(Unprocessable) as refused:
        builders.cancellation(stored, "a-1", None, CONTEXT)
    assert any("valueRatioRange" in (issue.expression or "") for issue in refused.value.issues)


# -- the inbound path stays free of fhir.resources ----------------------------------------------------------------

INBOUND = """
import sys
from gateway import app, cli, services
from conformance.validator import validate_resource
from mappers.context import MapContext
from mappers.registry import MAPPED

resources = [
    {"resourceType": "Communication", "id": "c1", "status": "completed", "subject": {"reference": "Patient/p"},
     "payload": [{"contentString": "hello"}]},
    {"resourceType": "Appointment", "id": "a1", "status": "booked", "start": "2026-12-10T14:00:00Z",
     "end": "2026-12-10T14:50:00Z", "participant": [{"actor": {"reference": "Patient/p"}, "status": "accepted"}]},
    {"resourceType": "QuestionnaireResponse", "id": "q1", "status": "completed",
     "item": [{"linkId": "1", "answer": [{"valueInteger": 2}]}]},
    {"resourceType": "CarePlan", "id": "cp1", "status": "active", "intent": "plan",
     "subject": {"reference": "Patient/p"}, "activity": [{"detail": {"status": "scheduled"}}]},
]
ctx = MapContext(tenant="t", version_id="1", last_updated="2026-01-01T00:00:00Z")
for resource in resources:
    assert not [i for i in validate_resource(resource) if i.severity == "error"], resource["resourceType"]
    MAPPED[resource["resourceType"]].to_platform(resource, ctx)
loaded = sorted(m for m in sys.modules if m.startswith("fhir.resources") or m.startswith("fhir_core"))
assert not loaded, loaded
"""


def test_the_api_and_the_inbound_path_never_load_fhir_resources() -> None:
    """Start-up imports the whole gateway, and validating and mapping inbound resources constructs no model."""
    done = subprocess.run([sys.executable, "-c", INBOUND], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


@pytest.mark.parametrize("contained_type", ["", {"a": 1}, ["Patient"]])
def test_what_the_r4b_model_cannot_even_read_is_refused_not_a_crash(contained_type: Any) -> None:
    # fhir.resources raises KeyError or TypeError on a contained resource of no type (which a lenient tenant's
    # stored Appointment may hold): still a refusal with an OperationOutcome, at the API and at delivery.
    stored = stored_appointment({"url": "https://example.org/ext", "valueString": "x"})
    stored["contained"] = [{"resourceType": contained_type, "id": "c1"}]
    assert fhir_models.refusals(stored)
    with pytest.raises(Unprocessable):
        builders.cancellation(stored, "a-1", None, CONTEXT)
    assert builders.refusal(stored) is not None
