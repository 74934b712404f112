"""Every kind of write-back built from random valid platform requests, for every vendor: what would be sent is the
R4B model's export, and both fhir.resources and the project's R4 validator take it."""

from __future__ import annotations

import copy
import string
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import HealthCheck, given, reject, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from conformance import fhir_models
from conformance.validator import Support, validate_resource
from gateway.errors import Unprocessable
from gateway.store import ehr_meta
from gateway.writebacks import builders
from gateway.writebacks.builders import Target
from gateway.writebacks.models import (
    ActivityStatusRequest,
    AppointmentRequest,
    CancelRequest,
    MessageRequest,
    SurveyResponseRequest,
)
from mappers import appointment as appointment_mapper
from mappers import message as message_mapper
from mappers import survey_response as survey_mapper
from mappers.context import MapContext
from mappers.message import MessageThread
from mappers.model import CodeableText, SecurityLabel
from mappers.treatment_plan import ACTIVITY_STATUS
from mappers.vendors import VENDORS
from tests.mappers.conftest import corpus_params

NOW = "2026-12-01T15:00:00Z"
LOINC = "http://loinc.org"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
PROPERTY = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def context(vendor: str, zone: str | None = None) -> MapContext:
    return MapContext(tenant="clinic-a", vendor=vendor, timezone=zone, version_id="0", last_updated=NOW)


def passes_both_checks(target: Target, support: Support | None = None) -> dict[str, Any]:
    """Assert that fhir.resources' R4B model and the R4 validator both take what would be sent; return it."""
    resource = target.resource
    assert fhir_models.refusals(resource) == []
    errors = [f"{i.expression}: {i.diagnostics}" for i in validate_resource(resource, support=support)
              if i.severity in ("error", "fatal")]  # fmt: skip
    assert errors == []
    model = fhir_models.model_class(str(resource["resourceType"]))
    assert model is not None
    assert fhir_models.written(resource, model) == resource, "what is sent is already the model's own export"
    return resource


# -- what a platform sends ----------------------------------------------------------------------------------

ids = st.text(string.ascii_letters + string.digits + "-.", min_size=1, max_size=64)
# What a person types: any characters but lone surrogates (which JSON cannot carry), no space around them.
words = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=40).map(str.strip).filter(bool)
codes = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9\-._]{0,15}( [A-Za-z0-9]{1,8})?\Z")
systems = st.sampled_from([LOINC, "http://snomed.info/sct", "urn:oid:1.2.840.114350.1.13.0.1.7.2.707679",
                           "http://example.org/codes"])  # fmt: skip


def reference(*types: str) -> st.SearchStrategy[str]:
    return st.builds(lambda kind, rid: f"{kind}/{rid}", st.sampled_from(types), ids)


codings = st.fixed_dictionaries({}, optional={"system": systems, "code": codes, "display": words}).filter(bool)
concepts = st.fixed_dictionaries({}, optional={"text": words, "codings": st.lists(codings, max_size=2)}).filter(
    lambda c: c.get("text") or c.get("codings")
)
offsets = st.integers(-12 * 4, 14 * 4).map(lambda quarters: timezone(timedelta(minutes=15 * quarters)))
moments = st.datetimes(datetime(1900, 1, 1), datetime(2200, 1, 1), timezones=offsets)


def instant(moment: datetime) -> str:
    return moment.isoformat()


def messages() -> st.SearchStrategy[dict[str, Any]]:
    patient = reference("Patient")
    return patient.flatmap(
        lambda who: st.fixed_dictionaries(
            {"patient": st.just(who), "sender": st.one_of(st.just(who), reference("Practitioner")), "body": words},
            optional={
                "recipients": st.lists(
                    reference(
                        "Patient", "Practitioner", "PractitionerRole", "RelatedPerson", "CareTeam", "Organization"
                    ),
                    max_size=3,
                ),
                "category": st.one_of(
                    st.sampled_from(["alert", "notification", "reminder", "instruction"]),
                    st.from_regex(r"\A[A-Za-z0-9_.\-]{1,64}\Z"),
                ),
                "priority": st.sampled_from(["routine", "urgent", "asap", "stat"]),
            },
        )
    )


labels = st.sampled_from(
    [SecurityLabel(system=ACT_CODE, code="PSY"), SecurityLabel(system=ACT_CODE, code="SUD"),
     SecurityLabel(system=CONFIDENTIALITY, code="R", display="restricted"), SecurityLabel(system=ACT_CODE, code="ETH")]
)  # fmt: skip


@st.composite
def threads(draw: st.DrawFn, patient: str) -> MessageThread:
    """A thread the feed holds: started by a message, or (a reply naming its parent only in words) by topic."""
    by_topic = draw(st.booleans())
    thread_id = f"topic-{draw(st.from_regex(r'[0-9a-f]{16}', fullmatch=True))}" if by_topic else draw(ids)
    topic = draw(st.none() | concepts.map(CodeableText.model_validate))
    return MessageThread(
        id=thread_id, patient={"reference": patient}, topic=topic,
        message_ids=draw(st.lists(ids, min_size=1, max_size=4)), security=draw(st.lists(labels, max_size=2,
                                                                                         unique_by=repr)),
        source=context("generic").source("Communication", thread_id),
    )  # fmt: skip


FHIR_DATES = st.dates().map(lambda d: d.isoformat()) | st.integers(1900, 2200).map(str)
FHIR_DATE_TIMES = FHIR_DATES | moments.map(instant)
FHIR_TIMES = st.times().map(lambda t: t.isoformat())
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "boolean": st.booleans(),
    "integer": st.integers(-(2**31), 2**31 - 1),
    "decimal": st.floats(allow_nan=False, allow_infinity=False),
    "date": FHIR_DATES,
    "date_time": FHIR_DATE_TIMES,
    "time": FHIR_TIMES,
    "string": words,
    "uri": st.sampled_from(["https://example.org/a", "urn:uuid:6b4bbc6e-0000-4000-8000-000000000001"]),
    "coding": codings,
    "quantity": st.one_of(
        st.fixed_dictionaries({"value": st.floats(-1e6, 1e6)}, optional={"unit": words}),
        st.fixed_dictionaries(
            {
                "value": st.integers(0, 500),
                "unit": st.just("mg"),
                "system": st.just("http://unitsofmeasure.org"),
                "code": st.just("mg"),
            },
            optional={"comparator": st.sampled_from(["<", "<=", ">=", ">"])},
        ),
    ),
    "reference": st.fixed_dictionaries({"reference": reference("Observation", "Patient")}, optional={"display": words}),
}
QUESTIONNAIRE_TYPES = {
    "boolean": "boolean", "integer": "integer", "decimal": "decimal", "date": "date", "date_time": "dateTime",
    "time": "time", "string": "string", "uri": "url", "coding": "open-choice", "quantity": "quantity",
    "reference": "reference",
}  # fmt: skip

item_codes = st.one_of(
    st.sampled_from([{"system": LOINC, "code": c} for c in ("44250-9", "44255-8", "44260-8", "69725-0")]),
    codings,
)


@st.composite
def answers(draw: st.DrawFn, *, flat: bool = False) -> dict[str, Any]:
    kind = draw(st.sampled_from(sorted(VALUES)))
    answer: dict[str, Any] = {"link_id": draw(ids), "value_type": kind, "value": draw(VALUES[kind])}
    if not flat:
        answer["path"] = draw(st.lists(ids, max_size=2))
    if draw(st.booleans()):
        answer["question"] = draw(words)
    if draw(st.booleans()):
        answer["item_code"] = draw(item_codes)
    return answer


def survey_responses(*, flat: bool = False) -> st.SearchStrategy[dict[str, Any]]:
    answer_lists = (
        st.lists(answers(flat=True), min_size=1, max_size=5, unique_by=lambda a: a["link_id"])
        if flat
        else st.lists(answers(), min_size=1, max_size=6)
    )
    return st.fixed_dictionaries(
        {
            "survey": st.sampled_from(
                [
                    "http://loinc.org/q/44249-1",
                    "http://example.org/Questionnaire/mood|2.0",
                    "urn:uuid:6b4bbc6e-0000-4000-8000-0000000000aa",
                ]
            ),
            "patient": reference("Patient"),
            "answers": answer_lists,
        },
        optional={
            "status": st.sampled_from(["in_progress", "completed", "amended", "stopped"]),
            "authored_at": moments.map(instant),
            "author": reference("Patient", "Practitioner", "PractitionerRole", "RelatedPerson"),
            "answered_by": reference("Patient", "Practitioner", "PractitionerRole", "RelatedPerson"),
            "encounter": reference("Encounter"),
            "based_on": st.lists(reference("CarePlan", "ServiceRequest"), max_size=2),
        },
    )


def questionnaire_for(request: dict[str, Any]) -> dict[str, Any]:
    """Return a Questionnaire that a flat survey response request answers item for item."""
    url, _, version = request["survey"].partition("|")
    items = [
        {"linkId": a["link_id"], "type": QUESTIONNAIRE_TYPES[a["value_type"]], **({"text": a["question"]}
                                                                                 if "question" in a else {})}
        for a in request["answers"]
    ]  # fmt: skip
    found = {"resourceType": "Questionnaire", "id": "q1", "url": url, "status": "active", "item": items}
    return found | ({"version": version} if version else {})


@st.composite
def appointments(draw: st.DrawFn) -> dict[str, Any]:
    request: dict[str, Any] = {"patient": draw(reference("Patient"))}
    booking = draw(st.booleans())
    request["status"] = "scheduled" if booking else "requested"
    if booking or draw(st.booleans()):
        start = draw(moments)
        request["start"] = instant(start)
        request["end"] = instant(start + draw(st.timedeltas(timedelta(minutes=1), timedelta(hours=8))))
    elif draw(st.booleans()):
        start = draw(moments)
        period = {"start": instant(start), "end": instant(start + timedelta(days=draw(st.integers(0, 30)), hours=1))}
        request["requested_period"] = draw(
            st.sampled_from([period, {"start": period["start"]}, {"end": period["end"]}])
        )
    optional = {
        "practitioners": st.lists(reference("Practitioner", "PractitionerRole"), max_size=3),
        "location": reference("Location"),
        "minutes_duration": st.integers(1, 1440),
        "service_type": st.lists(concepts, max_size=2),
        "appointment_type": concepts,
        "reason": st.lists(concepts, max_size=2),
        "description": words,
        "comment": words,
        "patient_instruction": words,
        "slot": st.lists(reference("Slot"), max_size=2),
        "modality": st.sampled_from(["in_person", "video", "phone"]),
    }
    for field, values in optional.items():
        if draw(st.booleans()):
            request[field] = draw(values)
    return request


def stored(resource: dict[str, Any], rid: str, ehr_version: str) -> dict[str, Any]:
    """Return a resource as the gateway stores what an EHR sent: its id, the gateway's meta and the EHR's version."""
    held = copy.deepcopy(resource) | {"id": rid}
    meta = {**held.get("meta", {}), "versionId": "3", "lastUpdated": "2026-11-30T10:00:00.000Z"}
    return held | {"meta": meta | {"extension": ehr_meta.stamp(meta, ehr_version, None).get("extension", [])}}


@st.composite
def careplans(draw: st.DrawFn) -> tuple[dict[str, Any], int]:
    """A stored CarePlan with at least one activity that has a detail, and the index of one."""
    activity = st.one_of(
        st.fixed_dictionaries(
            {
                "detail": st.fixed_dictionaries(
                    {"status": st.sampled_from(sorted(ACTIVITY_STATUS))},
                    optional={
                        "kind": st.sampled_from(["Appointment", "Task", "ServiceRequest"]),
                        "description": words,
                        "statusReason": concepts.map(lambda c: {"text": c.get("text", "a reason")}),
                        "scheduledString": words,
                    },
                )
            }
        ),
        st.builds(lambda rid: {"reference": {"reference": f"Task/{rid}"}}, ids),
    )
    activities = draw(st.lists(activity, min_size=1, max_size=5).filter(lambda a: any("detail" in x for x in a)))
    index = draw(st.sampled_from([i for i, a in enumerate(activities) if "detail" in a]))
    plan = {
        "resourceType": "CarePlan", "status": draw(st.sampled_from(["draft", "active", "on-hold", "completed"])),
        "intent": draw(st.sampled_from(["proposal", "plan", "order", "option"])),
        "subject": {"reference": draw(reference("Patient"))}, "activity": activities,
    }  # fmt: skip
    if draw(st.booleans()):
        plan["meta"] = {"security": [draw(labels).model_dump(exclude_none=True)]}
    if draw(st.booleans()):
        plan["period"] = {"start": instant(draw(moments))}
    return stored(plan, draw(ids), str(draw(st.integers(1, 99)))), index


# -- the properties -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("vendor", VENDORS)
@PROPERTY
@given(data=st.data())
def test_a_message_write_back_passes_both_checks(vendor: str, data: st.DataObject) -> None:
    body = MessageRequest.model_validate(data.draw(messages()))
    thread = data.draw(st.none() | threads(body.patient))
    target = builders.message(body, "wb-1", context(vendor), thread)
    resource = passes_both_checks(target)
    assert target.if_none_exist == f"identifier={message_mapper.WRITEBACK_SYSTEM}|wb-1"
    back = message_mapper.to_platform(resource | {"id": "c-1"}, context(vendor))
    assert (back.body, back.patient and back.patient.reference) == (body.body, body.patient)
    if thread is not None:
        assert {(label.system, label.code) for label in thread.security} <= {(x.system, x.code) for x in back.security}


@pytest.mark.parametrize("vendor", VENDORS)
@PROPERTY
@given(request=survey_responses())
def test_a_survey_response_write_back_passes_both_checks(vendor: str, request: dict[str, Any]) -> None:
    body = SurveyResponseRequest.model_validate(request)
    target = builders.survey_response(body, "wb-2", context(vendor), None)
    resource = passes_both_checks(target)
    assert "id" not in resource and target.if_none_exist == survey_mapper.if_none_exist(resource)
    back = survey_mapper.to_platform(resource | {"id": "qr-1"}, context(vendor))
    # In document order (a question's sub-items follow its answer); Epic reads a whole decimal as an integer.
    assert sorted((a.link_id, kind(a.value_type)) for a in back.answers) == sorted(
        (a.link_id, kind(a.value_type)) for a in body.answers
    )


def kind(value_type: str) -> str:
    return "number" if value_type in ("integer", "decimal") else value_type


@pytest.mark.parametrize("vendor", ["generic", "epic"])
@PROPERTY
@given(request=survey_responses(flat=True))
def test_a_survey_response_checked_against_its_questionnaire_passes_both_checks(
    vendor: str, request: dict[str, Any]
) -> None:
    body = SurveyResponseRequest.model_validate(request)
    support = Support([questionnaire_for(request)])
    target = builders.survey_response(body, "wb-3", context(vendor), support)
    # Epic's decimals are its form of integer answers: the Questionnaire is checked before that adjustment.
    passes_both_checks(target, support if vendor != "epic" else None)


@pytest.mark.parametrize("vendor", VENDORS)
@PROPERTY
@given(request=appointments(), zone=st.sampled_from([None, "America/New_York", "Pacific/Kiritimati"]))
def test_an_appointment_write_back_passes_both_checks(vendor: str, request: dict[str, Any], zone: str | None) -> None:
    body = AppointmentRequest.model_validate(request)
    target = builders.appointment(body, "wb-4", context(vendor, zone))
    resource = passes_both_checks(target)
    assert "id" not in resource and resource["status"] == ("booked" if body.status == "scheduled" else "proposed")
    back = appointment_mapper.to_platform(resource | {"id": "a-1"}, context(vendor, zone))
    assert back.status == body.status and back.patient is not None and back.patient.reference == body.patient
    if body.start is not None:  # in UTC, to the millisecond
        start = body.start.astimezone(UTC)
        assert datetime.fromisoformat(resource["start"]) == start.replace(microsecond=start.microsecond // 1000 * 1000)


@pytest.mark.parametrize("vendor", VENDORS)
@PROPERTY
@given(request=appointments(), reason=st.none() | words, version=st.integers(1, 99).map(str))
def test_an_appointment_cancellation_passes_both_checks(
    vendor: str, request: dict[str, Any], reason: str | None, version: str
) -> None:
    booked = builders.appointment(AppointmentRequest.model_validate(request), "wb-5", context(vendor)).resource
    cancel = CancelRequest.model_validate({"reason": reason} if reason else {})
    target = builders.cancellation(stored(booked, "a-7", version), "a-7", cancel.reason, context(vendor))
    resource = passes_both_checks(target)
    assert (target.method, target.resource_id, target.if_match) == ("update", "a-7", version)
    assert resource["status"] == "cancelled" and resource["id"] == "a-7"
    assert "versionId" not in resource.get("meta", {}), "the gateway's own version never goes to the EHR"
    if cancel.reason is not None:
        assert resource["cancelationReason"] == {"text": cancel.reason}


@pytest.mark.parametrize("vendor", VENDORS)
@PROPERTY
@given(plan=careplans(), status=st.sampled_from(sorted(ACTIVITY_STATUS) + sorted(set(ACTIVITY_STATUS.values()))))
def test_an_activity_status_write_back_passes_both_checks(
    vendor: str, plan: tuple[dict[str, Any], int], status: str
) -> None:
    held, index = plan
    body = ActivityStatusRequest.model_validate({"status": status})
    target = builders.activity_status(held, held["id"], index, body.status, context(vendor))
    resource = passes_both_checks(target)
    assert resource["activity"][index]["detail"]["status"] == body.status
    assert len(resource["activity"]) == len(held["activity"])


def test_what_either_check_refuses_is_a_422_naming_the_element() -> None:
    # A Questionnaire that wants an integer where the platform answered with a string: the R4 validator refuses.
    request = {"survey": "http://example.org/Questionnaire/mood", "patient": "Patient/p-1",
               "answers": [{"link_id": "1", "value_type": "string", "value": "fine"}]}  # fmt: skip
    questionnaire = questionnaire_for(request)
    questionnaire["item"][0]["type"] = "integer"
    with pytest.raises(Unprocessable) as refused:
        builders.survey_response(
            SurveyResponseRequest.model_validate(request), "wb-6", context("generic"), Support([questionnaire])
        )
    assert refused.value.issues and all(i.expression for i in refused.value.issues)


def test_epic_decimals_are_not_taken_for_wrong_answers_to_a_held_questionnaire() -> None:
    # Epic wants integer answers as valueDecimal; the Questionnaire's integer items still hold what was answered.
    request = {"survey": "http://example.org/Questionnaire/mood", "patient": "Patient/p-1",
               "answers": [{"link_id": "1", "value_type": "integer", "value": 3}]}  # fmt: skip
    support = Support([questionnaire_for(request)])
    body = SurveyResponseRequest.model_validate(request)
    target = builders.survey_response(body, "wb-7", context("epic"), support)
    assert target.resource["item"] == [{"linkId": "1", "answer": [{"valueDecimal": 3}]}]
    passes_both_checks(target)


# -- whatever the request models take -------------------------------------------------------------------------

wild = st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=30)
wild_codings = st.fixed_dictionaries({}, optional={"system": wild, "code": wild, "display": wild})
wild_moments = st.datetimes(timezones=st.integers(-1439, 1439).map(lambda m: timezone(timedelta(minutes=m))))
WILD_VALUES: dict[str, st.SearchStrategy[Any]] = {
    **dict.fromkeys(("date", "date_time", "time", "string", "uri"), wild),
    "integer": st.integers(),
    "decimal": st.floats(allow_nan=False, allow_infinity=False),
    "coding": wild_codings,
    "quantity": st.fixed_dictionaries(
        {},
        optional={
            "value": st.floats(allow_nan=False, allow_infinity=False),
            "unit": wild,
            "comparator": wild,
            "code": wild,
        },
    ),
}


@st.composite
def wild_requests(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    """A request of ``kind`` with any text where its model takes text, and moments from any year and offset."""
    if kind == "message":
        return draw(messages()) | {"body": draw(wild)}
    if kind == "survey_response":
        request = draw(survey_responses())
        for answer in request["answers"]:
            answer["value_type"] = draw(st.sampled_from(sorted(WILD_VALUES)))
            answer["value"] = draw(WILD_VALUES[answer["value_type"]])
            answer["link_id"] = draw(wild)
        return request | {"survey": draw(st.from_regex(r"\A\S{1,30}\Z")), "authored_at": draw(wild_moments).isoformat()}
    request = draw(appointments())
    if "start" in request and draw(st.booleans()):
        start = draw(wild_moments)
        request |= {"start": start.isoformat(), "end": (start + timedelta(seconds=1)).isoformat()}
    for field in ("description", "comment", "patient_instruction"):
        if draw(st.booleans()):
            request[field] = draw(wild)
    if draw(st.booleans()):
        request["reason"] = [{"text": draw(wild), "codings": [draw(wild_codings)]}]
    return request


BUILD = {
    "message": lambda body, ctx: builders.message(MessageRequest.model_validate(body), "wb-8", ctx, None),
    "survey_response": lambda body, ctx: builders.survey_response(
        SurveyResponseRequest.model_validate(body), "wb-8", ctx, None
    ),
    "appointment": lambda body, ctx: builders.appointment(AppointmentRequest.model_validate(body), "wb-8", ctx),
}


@pytest.mark.parametrize("kind", sorted(BUILD))
@PROPERTY
@given(data=st.data(), vendor=st.sampled_from(VENDORS))
def test_whatever_a_request_model_takes_is_sent_valid_or_refused_naming_the_elements(
    kind: str, vendor: str, data: st.DataObject
) -> None:
    """Never a crash and never a resource either check would refuse: a 422 naming each element at fault."""
    request = data.draw(wild_requests(kind))
    try:
        target = BUILD[kind](request, context(vendor))
    except ValidationError:
        reject()  # the request model refuses it: a 422 naming the field, before anything is built
    except Unprocessable as refused:
        assert refused.issues and all(issue.expression for issue in refused.issues)
    else:
        passes_both_checks(target)


# -- real resources: every valid Appointment and CarePlan of the corpus, changed as a write-back -------------------


@pytest.mark.parametrize("resource", corpus_params("Appointment", "CarePlan", with_id=True))
def test_a_corpus_resource_changed_by_a_write_back_passes_both_checks(resource: dict[str, Any]) -> None:
    if [i for i in validate_resource(resource) if i.severity in ("error", "fatal")]:
        pytest.skip("not valid R4 as published: the gateway refuses to write it back (tested elsewhere)")
    held = stored(resource, resource["id"], "5")
    if resource["resourceType"] == "Appointment":
        if resource.get("status") in ("cancelled", "fulfilled", "noshow", "entered-in-error"):
            pytest.skip("nothing to cancel")
        changed = passes_both_checks(builders.cancellation(held, resource["id"], "Clinic closed", context("generic")))
        assert changed["status"] == "cancelled"
        return
    index = next((i for i, a in enumerate(resource.get("activity", [])) if "detail" in a), None)
    if index is None:
        pytest.skip("no activity with a status of its own")
    changed = passes_both_checks(builders.activity_status(held, resource["id"], index, "stopped", context("generic")))
    assert changed["activity"][index]["detail"]["status"] == "stopped"
