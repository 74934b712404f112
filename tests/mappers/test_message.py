"""The Communication mapper as the messaging service sees it: bodies, threads, events, labels and write-back."""

from __future__ import annotations

import base64
import copy
import json
from datetime import datetime
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from conformance.outcome import has_errors
from conformance.validator import validate_resource
from mappers.errors import MappingError
from mappers.family import tombstone as deleted_record
from mappers.message import (
    WRITEBACK_SYSTEM,
    Message,
    MessageAttachment,
    MessageThread,
    classify,
    fold,
    needs,
    to_fhir,
    to_platform,
)
from mappers.model import CodeableText, Coding, Ref, SecurityLabel
from mappers.registry import MAPPED, record_routes
from tests.mappers.conftest import corpus_params, ctx, hl7_example, sent

CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CERNER = "https://fhir-ehr.cerner.com/r4/StructureDefinition"


def communication(**elements: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Communication",
        "id": "msg-1",
        "status": "completed",
        "subject": {"reference": "Patient/p1"},
        "sender": {"reference": "Practitioner/dr1", "display": "Dr One"},
        "recipient": [{"reference": "Patient/p1"}],
        "sent": "2024-03-05T14:00:00Z",
        "payload": [{"contentString": "Your lab results are ready."}],
    }
    return resource | elements


def b64(data: str | bytes, encoding: str = "utf-8") -> str:
    raw = data.encode(encoding) if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def attachment_body(content_type: str, data: str | bytes, **more: Any) -> list[dict[str, Any]]:
    return [{"contentAttachment": {"contentType": content_type, "data": b64(data), **more}}]


def mapped(version: str = "1", **elements: Any) -> Message:
    return to_platform(communication(**elements), ctx(version))


# Bodies


def test_content_string_is_the_body() -> None:
    record = mapped()
    assert record.body == "Your lab results are ready."
    assert record.attachments == []


def test_base64_text_plain_attachment_is_decoded_with_its_charset() -> None:
    assert mapped(payload=attachment_body("text/plain", "Take 2 tablets\ndaily")).body == "Take 2 tablets\ndaily"
    latin = [{"contentAttachment": {"contentType": "text/plain; charset=ISO-8859-1", "data": b64("Café", "latin-1")}}]
    record = mapped(payload=latin)
    assert record.body == "Café"
    # A body is the message's words, not a file to download.
    assert record.attachments == []


def test_base64_html_is_reduced_to_text_without_script_or_style() -> None:
    html = (
        "<html><head><title>t</title><style>p{color:red}</style></head><body>"
        "<p>Hello&nbsp;Pat &amp; family,</p><script>alert('steal-cookie')</script>"
        "<div>See you <b>Tuesday</b> &lt;3</div></body></html>"
    )
    body = mapped(payload=attachment_body("text/html; charset=utf-8", html)).body
    assert body == "Hello Pat & family,\nSee you Tuesday <3"
    assert body is not None and "steal-cookie" not in body and "color" not in body


def test_unknown_binary_gives_no_body_but_its_metadata() -> None:
    payload = [
        {"contentAttachment": {"contentType": "application/pdf", "data": b64(b"%PDF-1.4"), "title": "after.pdf"}},
        {"contentAttachment": {"contentType": "image/png", "url": "https://ehr.example/files/9", "size": 2048}},
    ]
    record = mapped(payload=payload)
    assert record.body is None
    assert record.attachments == [
        MessageAttachment(content_type="application/pdf", title="after.pdf", inline=True),
        MessageAttachment(content_type="image/png", size=2048, url="https://ehr.example/files/9"),
    ]


def test_text_that_cannot_be_decoded_is_kept_as_an_attachment_not_a_body() -> None:
    broken = [{"contentAttachment": {"contentType": "text/plain", "data": "not base64!!", "title": "note.txt"}}]
    record = mapped(payload=broken)
    assert record.body is None
    assert record.attachments == [MessageAttachment(content_type="text/plain", title="note.txt", inline=True)]


def test_several_text_parts_join_into_one_body() -> None:
    payload = [{"contentString": "First."}, *attachment_body("text/plain", "Second."), {"contentString": "  "}]
    assert mapped(payload=payload).body == "First.\n\nSecond."


def test_a_referenced_binary_is_the_body_when_the_gateway_holds_it() -> None:
    resource = communication(payload=[{"contentReference": {"reference": "Binary/b-1"}}])
    assert needs(resource) == ["Binary/b-1"]
    unread = to_platform(resource, ctx())
    assert (unread.body, unread.content_references) == (None, [Ref(reference="Binary/b-1")])
    binary = {
        "resourceType": "Binary",
        "id": "b-1",
        "meta": {"security": [{"system": ACT_CODE, "code": "PSY"}]},
        "contentType": "text/plain",
        "data": b64("Call us back."),
    }
    record = to_platform(resource, ctx(related={"Binary/b-1": binary}))
    assert (record.body, record.content_references) == ("Call us back.", [])
    assert SecurityLabel(system=ACT_CODE, code="PSY") in record.security


# Fields


@pytest.mark.parametrize(
    ("fhir_status", "status"),
    [
        ("preparation", "draft"),
        ("in-progress", "in_progress"),
        ("on-hold", "on_hold"),
        ("not-done", "not_done"),
        ("stopped", "stopped"),
        ("completed", "completed"),
        ("entered-in-error", "void"),
        ("unknown", "unknown"),
        ("sent", "unknown"),
    ],
)
def test_status_is_normalized_and_the_fhir_code_kept(fhir_status: str, status: str) -> None:
    record = mapped(status=fhir_status)
    assert (record.status, record.fhir_status) == (status, fhir_status)


def test_times_are_utc_and_a_local_time_needs_the_clinic_zone() -> None:
    record = mapped(sent="2024-07-01T09:00:00-04:00", received="2024-07-01T09:05:00")
    assert (record.sent_at, record.received_at) == ("2024-07-01T13:00:00Z", "2024-07-01T13:05:00Z")
    no_zone = to_platform(communication(received="2024-07-01T09:05:00"), ctx(timezone=None))
    assert no_zone.received_at is None


def test_people_category_priority_and_topic() -> None:
    record = mapped(
        priority="URGENT",
        category=[
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/communication-category", "code": "reminder"}]}
        ],
        topic={"text": "Refill"},
        recipient=[{"reference": "Patient/p1"}, {"reference": "Group/care-team", "display": "Care team"}],
        encounter={"reference": "Encounter/e1"},
    )
    assert record.priority == "urgent"
    assert record.category[0].codings[0].code == "reminder"
    assert record.topic == CodeableText(text="Refill")
    assert record.patient == Ref(reference="Patient/p1")
    assert record.sender == Ref(reference="Practitioner/dr1", display="Dr One")
    assert record.recipients[1] == Ref(reference="Group/care-team", display="Care team")
    assert record.encounter == Ref(reference="Encounter/e1")
    assert mapped(priority="whenever").priority is None


def test_a_group_subject_is_not_the_patient_and_is_listed_unmapped() -> None:
    record = mapped(subject={"reference": "Group/g1"}, medium=[{"text": "written"}], note=[{"text": "x"}])
    assert record.patient is None
    assert record.unmapped == ["medium", "note", "subject"]


def test_security_labels_of_the_message_and_its_contained_resources_are_all_kept() -> None:
    record = mapped(
        meta={"security": [{"system": CONFIDENTIALITY, "code": "R"}, {"system": ACT_CODE}]},
        contained=[{"resourceType": "Organization", "id": "o", "meta": {"security": ["PSYTHPN"]}}],
    )
    assert {(label.system, label.code) for label in record.security} == {
        (CONFIDENTIALITY, "R"),
        (ACT_CODE, ""),
        (None, "PSYTHPN"),
    }
    assert deleted_record(record, ctx("2")).security == record.security


def test_messy_optional_elements_never_raise() -> None:
    record = to_platform(
        {
            "resourceType": "Communication",
            "id": "odd",
            "status": 7,
            "sent": 20240101,
            "priority": ["urgent"],
            "subject": "Patient/1",
            "recipient": {"reference": "Patient/1"},
            "inResponseTo": ["x", {"reference": 5}, {"reference": "#contained"}],
            "partOf": {"reference": "Communication/"},
            "topic": {"coding": "nope"},
            "payload": [
                None,
                "text",
                {"contentAttachment": {"contentType": 3, "data": None, "size": True}},
                {"contentAttachment": {"contentType": "text/plain", "data": b64("\ufeffhi")}},
                {"contentReference": {"reference": "Binary/zz"}},
            ],
        },
        ctx(related={"Binary/zz": {"resourceType": "Binary", "contentType": "text/plain", "data": 3}}),
    )
    assert (record.status, record.sent_at, record.priority, record.patient) == ("unknown", None, None, None)
    assert record.recipients == [Ref(reference="Patient/1")]
    assert record.thread_id == "odd"
    assert record.body == "hi"
    assert record.attachments == [MessageAttachment()]
    assert record.content_references == [Ref(reference="Binary/zz")]


@pytest.mark.parametrize(
    "resource",
    [{"resourceType": "Appointment", "id": "a"}, {"id": "x"}, [], "Communication", {"resourceType": "Communication"}],
)
def test_input_that_is_not_a_communication_raises_mapping_error(resource: Any) -> None:
    with pytest.raises(MappingError):
        to_platform(resource, ctx())


# Threads


def test_a_message_without_a_parent_starts_its_own_thread_even_with_a_topic() -> None:
    assert mapped().thread_id == "msg-1"
    # Replies name their root by id; threading the root by topic would split it from them.
    assert mapped(topic={"text": "Refill"}).thread_id == "msg-1"


def test_a_reply_is_threaded_under_the_root_it_can_reach() -> None:
    root = communication(id="m1")
    reply = communication(id="m2", inResponseTo=[{"reference": "Communication/m1"}])
    reply_to_reply = communication(id="m3", inResponseTo=[{"reference": "https://ehr.example/fhir/Communication/m2"}])
    assert needs(reply_to_reply) == ["Communication/m2"]
    assert to_platform(reply, ctx()).thread_id == "m1"
    # m3 names only m2; the stored m2 says it answers m1.
    assert to_platform(reply_to_reply, ctx(related={"Communication/m2": reply})).thread_id == "m1"
    both = {"Communication/m2": reply, "Communication/m1": root}
    assert to_platform(reply_to_reply, ctx(related=both)).thread_id == "m1"
    # Before m2 arrives, m3 is threaded under m2, the furthest message it can name.
    assert to_platform(reply_to_reply, ctx()).thread_id == "m2"


def test_part_of_a_thread_header_wins_over_in_response_to() -> None:
    record = mapped(
        id="m5",
        partOf=[{"reference": "Communication/header/_history/2"}],
        inResponseTo=[{"reference": "Communication/m4"}],
    )
    assert record.thread_id == "header"
    assert needs(communication(id="m5", partOf=[{"reference": "Observation/o1"}])) == []
    assert mapped(id="m5", partOf=[{"reference": "Observation/o1"}]).thread_id == "m5"


def test_a_cycle_of_replies_ends() -> None:
    a = communication(id="a", inResponseTo=[{"reference": "Communication/b"}])
    b = communication(id="b", inResponseTo=[{"reference": "Communication/a"}])
    assert to_platform(a, ctx(related={"Communication/b": b})).thread_id == "b"
    assert mapped(id="self", inResponseTo=[{"reference": "Communication/self"}]).thread_id == "self"


def test_a_reply_naming_its_parent_without_an_id_is_threaded_by_patient_and_topic() -> None:
    unnamed = [{"identifier": {"system": "urn:ehr:msg", "value": "77"}}]
    first = mapped(id="r1", inResponseTo=unnamed, topic={"text": "Medication  refill"})
    second = mapped(id="r2", inResponseTo=[{"display": "your message"}], topic={"text": "medication refill"})
    other_patient = mapped(
        id="r3", inResponseTo=unnamed, topic={"text": "Medication refill"}, subject={"reference": "Patient/p2"}
    )
    assert first.thread_id.startswith("topic-")
    assert first.thread_id == second.thread_id
    assert other_patient.thread_id != first.thread_id
    assert mapped(id="r4", inResponseTo=unnamed).thread_id == "r4"


def test_a_reply_carries_the_labels_of_the_thread_it_read() -> None:
    root = communication(id="m1", meta={"security": [{"system": ACT_CODE, "code": "PSY"}]})
    reply = communication(id="m2", inResponseTo=[{"reference": "Communication/m1"}])
    record = to_platform(reply, ctx(related={"Communication/m1": root}))
    assert record.security == [SecurityLabel(system=ACT_CODE, code="PSY")]


def message(mid: str, sent: str, version: str = "1", **elements: Any) -> Message:
    return to_platform(communication(id=mid, sent=sent, **elements), ctx(version))


def test_thread_gathers_its_messages_in_order() -> None:
    root = message("m1", "2024-03-05T14:00:00Z", topic={"text": "Labs"})
    reply = message(
        "m2",
        "2024-03-05T15:30:00Z",
        inResponseTo=[{"reference": "Communication/m1"}],
        sender={"reference": "Patient/p1"},
        recipient=[{"reference": "Practitioner/dr1"}],
        status="in-progress",
        meta={"security": [{"system": ACT_CODE, "code": "PSY"}]},
    )
    thread = fold(fold(None, reply, ctx()), root, ctx())
    assert thread.id == "m1" and thread.record_type == "message_thread"
    assert (thread.message_ids, thread.message_count) == (["m1", "m2"], 2)
    assert thread.last_message_at == "2024-03-05T15:30:00Z"
    assert thread.last_status == "in_progress"
    assert thread.patient == Ref(reference="Patient/p1")
    assert thread.topic == CodeableText(text="Labs")
    assert thread.participants == [
        Ref(reference="Practitioner/dr1", display="Dr One"),
        Ref(reference="Patient/p1"),
    ]
    assert thread.security == [SecurityLabel(system=ACT_CODE, code="PSY")]
    # The same messages folded in the other order, or folded again, give the same thread.
    assert fold(fold(None, root, ctx()), reply, ctx()) == thread
    assert fold(thread, reply, ctx()) == thread
    assert fold(thread, root, ctx()) == thread
    assert MessageThread.model_validate_json(thread.model_dump_json()) == thread


def test_thread_follows_an_updated_and_a_deleted_message() -> None:
    root = message("m1", "2024-03-05T14:00:00Z")
    reply = message("m2", "2024-03-05T15:00:00Z", inResponseTo=[{"reference": "Communication/m1"}])
    thread = fold(fold(None, root, ctx()), reply, ctx())
    updated = message(
        "m2", "2024-03-05T15:00:00Z", "2", status="entered-in-error", inResponseTo=[{"reference": "Communication/m1"}]
    )
    after_update = fold(thread, updated, ctx("2"))
    assert (after_update.message_count, after_update.last_status) == (2, "void")
    assert after_update.source.version_id == "2"
    after_delete = fold(after_update, deleted_record(updated, ctx("3")), ctx("3"))
    assert (after_delete.message_ids, after_delete.last_status, after_delete.deleted) == (["m1"], "completed", False)
    emptied = fold(after_delete, deleted_record(root, ctx("4")), ctx("4"))
    assert (emptied.message_count, emptied.deleted, emptied.last_status) == (0, True, None)
    assert fold(emptied, root, ctx("5")).deleted is False


def test_thread_keeps_a_label_after_the_labelled_message_loses_it() -> None:
    labelled = message("m1", "2024-03-05T14:00:00Z", meta={"security": [{"system": ACT_CODE, "code": "SUD"}]})
    thread = fold(None, labelled, ctx())
    relabelled = fold(thread, message("m1", "2024-03-05T14:00:00Z", "2"), ctx("2"))
    assert relabelled.security == [SecurityLabel(system=ACT_CODE, code="SUD")]


# Events


def test_first_version_is_received() -> None:
    assert classify(None, mapped()) == ["message.received"]


def test_a_version_that_changes_what_is_shown_is_updated() -> None:
    assert classify(mapped(), mapped("2", status="entered-in-error")) == ["message.updated"]
    assert classify(mapped(), mapped("2", payload=[{"contentString": "Corrected text"}])) == ["message.updated"]
    labelled = mapped("2", meta={"security": [{"system": ACT_CODE, "code": "PSY"}]})
    assert classify(mapped(), labelled) == ["message.updated"]


def test_a_version_that_changes_nothing_shown_publishes_nothing() -> None:
    new_version = to_platform(communication(text={"div": "<div>n</div>"}), ctx("2", ehr_version_id="9"))
    assert classify(mapped(), new_version) == []


def test_delete_and_recreate() -> None:
    previous = mapped()
    tombstone = deleted_record(previous, ctx("2"))
    assert tombstone.deleted and tombstone.source.fhir_url == "Communication/msg-1/_history/2"
    assert classify(previous, tombstone) == ["message.deleted"]
    assert classify(tombstone, tombstone) == []
    assert classify(tombstone, mapped("3")) == ["message.received"]


def test_registry_serves_messages_and_threads() -> None:
    family = MAPPED["Communication"]
    assert (family.record_type, family.route) == ("message", "messages")
    assert family.aggregate is not None
    assert record_routes()["message-threads"] == ("message_thread", MessageThread)
    record = family.to_platform(communication(sent="1970-01-01T00:01:00Z"), ctx())
    assert family.index_fields(record) == {"patient": "Patient/p1", "sort": 60.0, "status": "completed"}
    assert family.aggregate.key(record) == "msg-1"
    assert family.model.model_validate_json(record.model_dump_json()) == record


# Oracle Health (Cerner)


def cerner_communication(**elements: Any) -> dict[str, Any]:
    """A Communication shaped like Oracle Health's documented R4 create body (synthetic values)."""
    resource: dict[str, Any] = {
        "resourceType": "Communication",
        "id": "40001.0.-4.prsnl",
        "meta": {"versionId": "0", "lastUpdated": "2024-02-01T15:04:05.000Z"},
        "extension": [{"url": f"{CERNER}/reply-to", "valueReference": {"reference": "Group/700"}}],
        "status": "completed",
        "category": [
            {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/communication-category", "code": "reminder"}]}
        ],
        "priority": "urgent",
        "subject": {"reference": "Patient/12700"},
        "topic": {"text": "Follow-up questions"},
        "encounter": {"reference": "Encounter/97700"},
        "sent": "2024-02-01T15:04:05.000Z",
        "recipient": [{"reference": "Practitioner/744000"}, {"reference": "Group/700"}],
        "sender": {"reference": "Practitioner/593000"},
        "payload": attachment_body("text/plain", "Please call the clinic about your refill."),
    }
    return resource | elements


def test_oracle_health_body_sent_as_base64_attachment_is_decoded() -> None:
    record = to_platform(cerner_communication(), ctx(vendor="oracle-health"))
    assert record.body == "Please call the clinic about your refill."
    assert record.attachments == []
    assert (record.priority, record.topic) == ("urgent", CodeableText(text="Follow-up questions"))
    assert record.sent_at == "2024-02-01T15:04:05Z"
    assert record.unmapped == ["extension"]


def test_oracle_health_xhtml_body_is_reduced_to_text() -> None:
    xhtml = (
        '<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Transitional//EN" '
        '"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd">'
        "<html><body><p>Your appointment is confirmed.</p><script>track()</script></body></html>"
    )
    resource = cerner_communication(payload=attachment_body("application/xhtml+xml; charset=utf-8", xhtml))
    assert to_platform(resource, ctx(vendor="oracle-health")).body == "Your appointment is confirmed."


# Write-back


def test_to_fhir_writes_a_reply_the_ehr_can_take() -> None:
    reply = mapped(
        id="platform-msg-9",
        inResponseTo=[{"reference": "Communication/msg-1"}],
        meta={"security": [{"system": ACT_CODE, "code": "PSY"}]},
        priority="routine",
    )
    resource = to_fhir(reply, ctx())
    assert "id" not in resource
    assert resource["identifier"] == [{"system": WRITEBACK_SYSTEM, "value": "platform-msg-9"}]
    assert resource["status"] == "completed"
    assert resource["payload"] == [{"contentString": "Your lab results are ready."}]
    assert resource["inResponseTo"] == [{"reference": "Communication/msg-1"}]
    assert resource["meta"]["security"] == [{"system": ACT_CODE, "code": "PSY"}]
    assert (resource["subject"], resource["sent"], resource["priority"]) == (
        {"reference": "Patient/p1"},
        "2024-03-05T14:00:00Z",
        "routine",
    )


def test_a_write_back_sends_oracle_health_a_base64_text_attachment() -> None:
    written = to_fhir(mapped(payload=[{"contentString": "Réponse: oui"}]), ctx(vendor="oracle-health"))
    assert written["payload"] == [{"contentString": "Réponse: oui"}], "to_fhir writes the same R4 for every vendor"
    [part] = sent(written, "oracle-health")["payload"]
    assert part["contentAttachment"]["contentType"] == "text/plain; charset=utf-8"
    assert base64.b64decode(part["contentAttachment"]["data"]).decode("utf-8") == "Réponse: oui"


@pytest.mark.parametrize("vendor", ["generic", "oracle-health"])
def test_written_communications_are_valid_r4(vendor: str) -> None:
    record = mapped(
        inResponseTo=[{"reference": "Communication/msg-0"}],
        meta={"security": [{"system": ACT_CODE, "code": "PSY"}]},
        category=[{"text": "Advice"}],
        topic={"text": "Refill"},
        encounter={"reference": "Encounter/e1"},
        priority="urgent",
    )
    issues = validate_resource(sent(to_fhir(record, ctx(vendor=vendor)), vendor))
    assert [i for i in issues if i.severity in ("error", "fatal")] == []


def test_to_fhir_refuses_a_tombstone_and_another_tenant() -> None:
    with pytest.raises(MappingError):
        to_fhir(deleted_record(mapped(), ctx("2")), ctx("2"))
    with pytest.raises(MappingError):
        to_fhir(mapped(), ctx(tenant="clinic-b"))


_TEXT = st.text(min_size=1, max_size=30).filter(lambda s: s.strip() != "")
_URI = st.from_regex(r"\A(https://example\.org/[a-z]{1,8}|urn:oid:1\.2\.[0-9]{1,4})\Z")
_ID = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9.\-]{0,20}\Z")
_REF = st.builds(
    Ref,
    reference=st.builds(lambda t, i: f"{t}/{i}", st.sampled_from(["Patient", "Practitioner", "RelatedPerson"]), _ID),
    display=st.none() | _TEXT,
)
_CODING = st.builds(Coding, system=st.none() | _URI, code=_ID, display=st.none() | _TEXT)
_CONCEPT = st.builds(CodeableText, text=st.none() | _TEXT, codings=st.lists(_CODING, min_size=1, max_size=2))
_INSTANT = st.datetimes(min_value=datetime(1990, 1, 1), max_value=datetime(2100, 1, 1)).map(
    lambda d: d.replace(microsecond=0).isoformat() + "Z"
)
_LABEL = st.builds(
    SecurityLabel,
    system=st.none() | _URI,
    code=st.sampled_from(["R", "V", "PSY", "SUD", "ETH", ""]),
    display=st.none() | _TEXT,
)
_STATUSES = {
    "draft": "preparation",
    "in_progress": "in-progress",
    "on_hold": "on-hold",
    "not_done": "not-done",
    "stopped": "stopped",
    "completed": "completed",
    "void": "entered-in-error",
    "unknown": "unknown",
}


@st.composite
def writeback_messages(draw: st.DrawFn) -> Message:
    """Generate a message as the platform writes one back: the write-back fields, consistent with each other."""
    mid = draw(_ID)
    status = draw(st.sampled_from(sorted(_STATUSES)))
    parent = draw(st.none() | _ID.filter(lambda i: i != mid))
    reply = [Ref(reference=f"Communication/{parent}")] if parent else []
    as_part = draw(st.booleans())
    labels = draw(st.lists(_LABEL, max_size=3, unique_by=lambda label: (label.system, label.code)))
    return Message(
        id=mid,
        # The platform's thread rule for a message written back: its parent, else itself.
        thread_id=parent or mid,
        status=status,
        fhir_status=_STATUSES[status],
        category=draw(st.lists(_CONCEPT, max_size=2)),
        priority=draw(st.none() | st.sampled_from(["routine", "urgent", "asap", "stat"])),
        patient=draw(st.none() | _REF),
        encounter=draw(st.none() | st.builds(Ref, reference=_ID.map(lambda i: f"Encounter/{i}"))),
        sender=draw(st.none() | _REF),
        recipients=draw(st.lists(_REF, max_size=3)),
        sent_at=draw(st.none() | _INSTANT),
        received_at=draw(st.none() | _INSTANT),
        topic=draw(st.none() | _CONCEPT),
        # A leading byte-order mark in a decoded attachment is read as encoding, not as words: not generated.
        body=draw(st.none() | st.text(min_size=1, max_size=200).filter(lambda s: s.strip() != "" and s[0] != "\ufeff")),
        in_response_to=[] if as_part else reply,
        part_of=reply if as_part else [],
        security=sorted(labels, key=lambda label: (label.system or "", label.code)),
        source=ctx().source("Communication", mid),
    )


# Not round-tripped, on purpose: ``source`` (the gateway writes it for the stored EHR version, with the EHR's
# identifiers and versions), ``id`` (the EHR assigns it on create; the test assigns it as the EHR would),
# ``attachments`` and ``content_references`` (the platform writes text, not files), ``deleted`` (a tombstone is
# never written back) and ``unmapped`` (bookkeeping of what the EHR sent beyond the mapped elements).
_NOT_ROUND_TRIPPED = {"source", "attachments", "content_references", "deleted", "unmapped"}


@pytest.mark.parametrize("vendor", ["generic", "oracle-health"])
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=writeback_messages())
def test_platform_to_fhir_to_platform_gives_back_the_same_message(vendor: str, record: Message) -> None:
    context = ctx(vendor=vendor, timezone=None)
    resource = to_fhir(record, context)
    # What the EHR stores is JSON: nothing in the write-back may depend on Python objects.
    stored = json.loads(json.dumps(resource)) | {"id": record.id}
    back = to_platform(stored, context)
    assert back.model_dump(exclude=_NOT_ROUND_TRIPPED) == record.model_dump(exclude=_NOT_ROUND_TRIPPED)
    assert {"system": WRITEBACK_SYSTEM, "value": record.id} in resource["identifier"]


@pytest.mark.parametrize("vendor", ["generic", "oracle-health"])
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(record=writeback_messages())
def test_a_message_sent_as_its_vendor_adjusted_model_gives_back_the_same_message(vendor: str, record: Message) -> None:
    """Whatever the R4 validator takes, a write-back sends (the R4B model's export, with Oracle Health's
    attachment) and it reads back the same."""
    context = ctx(vendor=vendor, timezone=None)
    written = to_fhir(record, context)
    assume(not has_errors(validate_resource(written)))
    back = to_platform(sent(written, vendor) | {"id": record.id}, context)
    assert back.model_dump(exclude=_NOT_ROUND_TRIPPED) == record.model_dump(exclude=_NOT_ROUND_TRIPPED)


_RAW_LABEL = st.one_of(
    st.fixed_dictionaries({"code": _ID}, optional={"system": _URI, "display": _TEXT}),
    st.fixed_dictionaries({"system": _URI}),
    _ID,
)


def _meta(labels: list[Any]) -> dict[str, Any]:
    return {"security": labels}


@settings(max_examples=100, deadline=None)
@given(
    own=st.lists(_RAW_LABEL, max_size=4),
    contained=st.lists(_RAW_LABEL, max_size=3),
    parent=st.lists(_RAW_LABEL, max_size=3),
    binary=st.lists(_RAW_LABEL, max_size=3),
)
def test_fhir_to_platform_never_drops_a_security_label(
    own: list[Any], contained: list[Any], parent: list[Any], binary: list[Any]
) -> None:
    resource = communication(
        id="m2",
        meta=_meta(own),
        contained=[{"resourceType": "Organization", "id": "o1", "meta": _meta(contained)}],
        inResponseTo=[{"reference": "Communication/m1"}],
        payload=[{"contentReference": {"reference": "Binary/b1"}}],
    )
    related = {
        "Communication/m1": communication(id="m1", meta=_meta(parent)),
        "Binary/b1": {"resourceType": "Binary", "id": "b1", "meta": _meta(binary), "contentType": "application/pdf"},
    }
    record = to_platform(resource, ctx(related=related))
    expected = {
        (label.get("system"), label.get("code", "")) if isinstance(label, dict) else (None, label)
        for label in own + contained + parent + binary
    }
    kept = {(label.system, label.code) for label in record.security}
    assert expected <= kept
    thread = fold(None, record, ctx())
    assert expected <= {(label.system, label.code) for label in thread.security}


# Corpus


@pytest.mark.corpus
@pytest.mark.parametrize("resource", corpus_params("Communication", with_id=True))
def test_every_corpus_communication_maps(resource: dict[str, Any]) -> None:
    original = copy.deepcopy(resource)
    record = to_platform(resource, ctx())
    assert resource == original, "the mapper must not modify its input"
    assert record.id == resource["id"]
    assert record.status == "completed"
    assert record.sent_at is None or record.sent_at.endswith("Z")
    assert Message.model_validate_json(record.model_dump_json()) == record
    assert classify(None, record) == ["message.received"]
    assert classify(record, to_platform(resource, ctx("2"))) == []
    assert fold(None, record, ctx()).message_ids == [record.id]


def test_hl7_example_maps_to_an_alert_with_its_text_and_times() -> None:
    record = to_platform(hl7_example("Communication-example.json"), ctx())
    assert record.body == "Patient 1 has a very high serum potassium value (7.2 mmol/L on 2014-Dec-12 at 5:55 pm)"
    assert (record.sent_at, record.received_at) == ("2014-12-13T02:01:10Z", "2014-12-13T02:01:11Z")
    assert (record.sender, record.recipients) == (Ref(reference="Device/f001"), [Ref(reference="Practitioner/example")])
    assert record.patient == Ref(reference="Patient/example")
    assert record.category[0].text == "Alert"
    assert record.content_references == [Ref(reference=None, display="Serum Potassium Observation")]
    assert record.part_of == [Ref(reference=None, display="Serum Potassium Observation")]
    assert record.thread_id == "example"
    assert record.source.identifiers[0].value == "2345678901"
    assert record.unmapped == ["instantiatesUri", "medium", "text"]


def test_hl7_attachment_example_lists_its_files_without_a_body() -> None:
    record = to_platform(hl7_example("Communication-fm-attachment.json"), ctx())
    assert record.body is None
    assert record.attachments == [
        MessageAttachment(content_type="application/pdf", title="accident notes 20100201.pdf", inline=True),
        MessageAttachment(content_type="application/pdf", size=104274, url="http://example.org/docs/AB12345"),
    ]
