"""FHIR R4 Communication to the platform's Message and its MessageThread, and a Message back to a Communication.

Thread rule (``thread_id``), deterministic: a function of the message and of the stored Communications it names.
1. Follow the message's parent, the first literal ``Communication`` reference in ``partOf`` (a thread header)
   else in ``inResponseTo``, up through the stored Communications the mapper is given; the thread is the id of
   the last Communication reached (the root). A reply whose parent is not stored yet is threaded under the
   parent's id, so a message and its replies share a thread whichever arrives first.
2. A message that replies to a Communication it names only by identifier or display (so it has a thread but no id
   to key it by) and has a ``topic`` is threaded by topic: ``topic-`` and a digest of its patient and its topic's
   first coding (else its text), so two patients' "Refill" threads never meet.
3. Otherwise the message starts its own thread: its own id.
A root message is never threaded by its topic, or it and the replies that name it would land in two threads.
The gateway gives a mapping only the resources it names (``needs``), so a chain is followed two levels up: a reply
three or more levels below its root is threaded under its grandparent unless each message names the root in
``partOf``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any, Final, Literal

from pydantic import Field

from mappers import writer
from mappers.context import MapContext
from mappers.elements import (
    MAPPING,
    concept,
    concepts,
    identifiers,
    instant,
    instant_text,
    items,
    merge_labels,
    ref,
    refs,
    security_labels,
    text,
)
from mappers.errors import TenantMismatch, WrongResourceType
from mappers.family import FRAME, Aggregate, Family, IndexFields, resource_id, tombstone, visibly_changed
from mappers.message_body import MessageAttachment, binary_keys, read_payload
from mappers.model import CodeableText, Identifier, Part, Record, Ref, SecurityLabel, Source
from mappers.writer import put

FHIR_TYPE: Final = "Communication"
# The business identifier of a platform-written message: what the connector's If-None-Exist matches on a retry.
WRITEBACK_SYSTEM: Final = "urn:fhir-gateway:platform-message"

MessageStatus = Literal["draft", "in_progress", "on_hold", "not_done", "stopped", "completed", "void", "unknown"]
Priority = Literal["routine", "urgent", "asap", "stat"]

STATUS: Final[Mapping[str, MessageStatus]] = {
    "preparation": "draft",
    "in-progress": "in_progress",
    "on-hold": "on_hold",
    "not-done": "not_done",
    "stopped": "stopped",
    "completed": "completed",
    "entered-in-error": "void",
    "unknown": "unknown",
}
_FHIR_STATUS: Final[Mapping[MessageStatus, str]] = {status: code for code, status in STATUS.items()}
_PRIORITIES: Final[Mapping[str, Priority]] = {"routine": "routine", "urgent": "urgent", "asap": "asap", "stat": "stat"}

# Elements this mapper reads; any other top-level element is listed in ``unmapped``.
_MAPPED: Final = frozenset(
    {"resourceType", "id", "meta", "identifier", "status", "category", "priority", "subject", "topic", "encounter",
     "sent", "received", "recipient", "sender", "payload", "inResponseTo", "partOf"}
)  # fmt: skip
_LITERAL: Final = re.compile(
    r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9.\-]{1,64})(?:/_history/[A-Za-z0-9.\-]{1,64})?$", re.ASCII
)
_MAX_CHAIN: Final = 64  # a reply chain deeper than this is data gone wrong, not a conversation


class Message(Record):
    """One secure message as the messaging service shows it: who, when, thread and plain-text body."""

    record_type: Literal["message"] = "message"
    thread_id: str
    status: MessageStatus
    fhir_status: str
    category: list[CodeableText] = Field(default_factory=list)
    priority: Priority | None = None
    patient: Ref | None = None
    encounter: Ref | None = None
    sender: Ref | None = None
    recipients: list[Ref] = Field(default_factory=list)
    sent_at: str | None = None
    received_at: str | None = None
    topic: CodeableText | None = None
    body: str | None = None
    attachments: list[MessageAttachment] = Field(default_factory=list)
    # Payload references the gateway could not read as the body (never resolved beyond a stored Binary).
    content_references: list[Ref] = Field(default_factory=list)
    in_response_to: list[Ref] = Field(default_factory=list)
    part_of: list[Ref] = Field(default_factory=list)
    # Top-level elements of the Communication this record does not carry (they stay in the stored version).
    unmapped: list[str] = Field(default_factory=list)


class ThreadMessage(Part):
    """What a thread keeps of each of its messages, so that an updated or deleted message refolds exactly."""

    id: str
    # Sent, else received (UTC with Z): where the message sits in the thread.
    at: str | None = None
    status: MessageStatus
    sender: Ref | None = None
    recipients: list[Ref] = Field(default_factory=list)
    patient: Ref | None = None
    topic: CodeableText | None = None
    security: list[SecurityLabel] = Field(default_factory=list)
    source: Source


class MessageThread(Record):
    """A conversation: its messages in order, who took part, and where it stands."""

    record_type: Literal["message_thread"] = "message_thread"
    patient: Ref | None = None
    participants: list[Ref] = Field(default_factory=list)
    topic: CodeableText | None = None
    message_ids: list[str] = Field(default_factory=list)
    message_count: int = 0
    last_message_at: str | None = None
    last_status: MessageStatus | None = None
    messages: list[ThreadMessage] = Field(default_factory=list)


def to_platform(resource: Mapping[str, Any], ctx: MapContext) -> Message:
    """Map a FHIR R4 Communication, parsed from JSON, to the platform's Message record."""
    fhir_id = resource_id(resource, FHIR_TYPE)

    fhir_status = resource.get("status")
    fhir_status = fhir_status if isinstance(fhir_status, str) else ""
    subject = ref(resource.get("subject"))
    # Communication.subject may be a Group; only a patient is the patient.
    declared = resource.get("subject", {}).get("type") if isinstance(resource.get("subject"), MAPPING) else None
    is_group = subject is not None and "Group" in (_literal(resource.get("subject"))[0], declared)
    patient = None if is_group else subject
    topic = concept(resource.get("topic"))
    thread_id, chain = _thread(resource, fhir_id, patient, topic, ctx)
    payload = read_payload(resource.get("payload"), ctx.related)
    unmapped = sorted(str(key) for key in resource if key not in _MAPPED)
    return Message(
        id=fhir_id,
        thread_id=thread_id,
        status=STATUS.get(fhir_status.strip().lower(), "unknown"),
        fhir_status=fhir_status,
        category=concepts(resource.get("category")),
        priority=_PRIORITIES.get((text(resource.get("priority")) or "").strip().lower()),
        patient=patient,
        encounter=ref(resource.get("encounter")),
        sender=ref(resource.get("sender")),
        recipients=refs(resource.get("recipient")),
        sent_at=instant_text(resource.get("sent"), ctx.timezone),
        received_at=instant_text(resource.get("received"), ctx.timezone),
        topic=topic,
        body=payload.body,
        attachments=payload.attachments,
        content_references=payload.unread,
        in_response_to=refs(resource.get("inResponseTo")),
        part_of=refs(resource.get("partOf")),
        unmapped=sorted({*unmapped, "subject"}) if is_group else unmapped,
        # Labels of every stored resource this record read: a reply in a restricted thread is restricted too.
        security=merge_labels(security_labels(each) for each in (resource, *chain, *payload.binaries)),
        source=ctx.source(FHIR_TYPE, fhir_id, identifiers(resource.get("identifier"))),
    )


def to_fhir(message: Message, ctx: MapContext) -> dict[str, Any]:
    """Map a platform Message to a FHIR R4 Communication to create in the EHR (no id: the EHR assigns it)."""
    if not isinstance(message, Message):
        raise WrongResourceType(f"expected a Message record, got {type(message).__name__}")
    if message.source.tenant != ctx.tenant:
        raise TenantMismatch(f"Message/{message.id} belongs to another tenant")
    if message.deleted:
        raise WrongResourceType(f"Message/{message.id} is deleted; a delete is not written as a Communication")
    known = message.fhir_status if STATUS.get(message.fhir_status) == message.status else None
    resource: dict[str, Any] = {"resourceType": FHIR_TYPE}
    put(resource, "meta", writer.meta(message.security))
    resource["identifier"] = writer.identifiers(_business_identifiers(message))
    resource["status"] = known or _FHIR_STATUS[message.status]
    put(resource, "category", writer.concepts(message.category))
    put(resource, "priority", message.priority)
    put(resource, "subject", writer.reference(message.patient))
    put(resource, "topic", writer.concept(message.topic))
    put(resource, "encounter", writer.reference(message.encounter))
    put(resource, "sent", message.sent_at)
    put(resource, "received", message.received_at)
    put(resource, "recipient", writer.references(message.recipients))
    put(resource, "sender", writer.reference(message.sender))
    if message.body is not None:
        # The same for every vendor: one that wants the body otherwise adjusts the typed resource
        # (``mappers.vendors.outbound``).
        resource["payload"] = [{"contentString": message.body}]
    put(resource, "inResponseTo", writer.references(message.in_response_to))
    put(resource, "partOf", writer.references(message.part_of))
    return resource


def needs(resource: Mapping[str, Any]) -> list[str]:
    """Name the stored resources the mapping reads: parent Communications (threading) and payload Binaries."""
    wanted: dict[str, None] = {}
    for field in ("partOf", "inResponseTo"):
        for value in items(resource.get(field)):
            rtype, rid = _literal(value)
            if rtype == FHIR_TYPE and rid != resource.get("id"):
                wanted[f"{FHIR_TYPE}/{rid}"] = None
    wanted.update(dict.fromkeys(binary_keys(resource.get("payload"))))
    return list(wanted)


def classify(previous: Message | None, current: Message) -> list[str]:
    """Name the change events from previous to current ([] when the platform would see no change)."""
    if current.deleted:
        return ["message.deleted"] if previous is not None and not previous.deleted else []
    if previous is None or previous.deleted:
        return ["message.received"]
    return ["message.updated"] if visibly_changed(previous, current) else []


def index_fields(message: Message) -> IndexFields:
    """Return the fields the platform API filters and sorts messages by (sorted by sent, else received)."""
    moment = instant(message.sent_at or message.received_at, None)
    return {
        "patient": message.patient.reference if message.patient else None,
        "sort": moment.timestamp() if moment else None,
        "status": message.status,
    }


def thread_key(message: Message) -> str:
    """Return the thread a message belongs to."""
    return message.thread_id


def fold(previous: MessageThread | None, message: Message, ctx: MapContext) -> MessageThread:
    """Return the thread after this message version (idempotent; an updated or deleted message refolds)."""
    entries = {entry.id: entry for entry in previous.messages} if previous is not None else {}
    if message.deleted:
        entries.pop(message.id, None)
    else:
        entries[message.id] = ThreadMessage(
            id=message.id,
            at=message.sent_at or message.received_at,
            status=message.status,
            sender=message.sender,
            recipients=message.recipients,
            patient=message.patient,
            topic=message.topic,
            security=message.security,
            source=message.source,
        )
    # Everything below depends on the set of messages only, never on the order they were folded in.
    ordered = sorted(entries.values(), key=lambda e: (e.at or "", e.id))
    people: dict[tuple[str | None, str | None], Ref] = {}
    for entry in ordered:
        for who in (entry.sender, *entry.recipients):
            if who is not None:
                people.setdefault((who.reference, None if who.reference else who.display), who)
    dated = [e.at for e in ordered if e.at]
    # A thread keeps every label any of its messages ever had: withheld too long is safe, shown too early is not.
    held = previous.security if previous is not None else []
    return MessageThread(
        id=message.thread_id,
        deleted=not ordered,
        patient=next((e.patient for e in ordered if e.patient is not None), None),
        participants=list(people.values()),
        topic=next((e.topic for e in ordered if e.topic is not None), None),
        message_ids=[e.id for e in ordered],
        message_count=len(ordered),
        last_message_at=max(dated) if dated else None,
        last_status=ordered[-1].status if ordered else None,
        messages=ordered,
        security=merge_labels([held, *(e.security for e in ordered)]),
        source=max(ordered, key=lambda e: (e.source.last_updated, e.id)).source if ordered else message.source,
    )


def _literal(value: object) -> tuple[str | None, str | None]:
    """Return (type, id) of a literal reference (relative, absolute or versioned), else (None, None)."""
    reference = text(value.get("reference")) if isinstance(value, MAPPING) else None
    match = _LITERAL.search(reference.strip()) if reference else None
    return (match.group(1), match.group(2)) if match else (None, None)


def _parent(resource: Mapping[str, Any]) -> str | None:
    for field in ("partOf", "inResponseTo"):
        for value in items(resource.get(field)):
            rtype, rid = _literal(value)
            if rtype == FHIR_TYPE and rid is not None:
                return rid
    return None


def _thread(
    resource: Mapping[str, Any], own_id: str, patient: Ref | None, topic: CodeableText | None, ctx: MapContext
) -> tuple[str, list[Mapping[str, Any]]]:
    """Return the thread id and the stored ancestors read to find it."""
    seen, chain, root = {own_id}, [], None
    current: Mapping[str, Any] = resource
    while (parent := _parent(current)) is not None and parent not in seen and len(seen) < _MAX_CHAIN:
        root = parent
        seen.add(parent)
        found = ctx.related.get(f"{FHIR_TYPE}/{parent}")
        if not isinstance(found, MAPPING):
            break
        chain.append(found)
        current = found
    if root is not None:
        return root, chain
    if topic is not None and _replies_without_id(resource):
        coding = next((c for c in topic.codings if c.code), None)
        key = f"{coding.system}|{coding.code}" if coding else " ".join((topic.text or "").casefold().split())
        digest = hashlib.sha256(f"{patient.reference if patient else ''}\n{key}".encode()).hexdigest()
        return f"topic-{digest[:24]}", chain
    return own_id, chain


def _replies_without_id(resource: Mapping[str, Any]) -> bool:
    """Tell whether the message names a parent Communication only by identifier or display."""
    replies = [v for v in items(resource.get("inResponseTo")) if isinstance(v, MAPPING)]
    replies += [v for v in items(resource.get("partOf")) if isinstance(v, MAPPING) and v.get("type") == FHIR_TYPE]
    return any(_literal(v)[0] is None and (ref(v) is not None or v.get("identifier")) for v in replies)


def _business_identifiers(message: Message) -> list[Identifier]:
    found = list(message.source.identifiers)
    if not any(i.system == WRITEBACK_SYSTEM for i in found):
        found.append(Identifier(system=WRITEBACK_SYSTEM, value=message.id))
    return found


FAMILY: Final = Family(
    fhir_type=FHIR_TYPE,
    record_type="message",
    route="messages",
    model=Message,
    to_platform=to_platform,
    classify=classify,
    deleted_record=tombstone,
    index_fields=index_fields,
    reads=FRAME | _MAPPED,
    needs=needs,
    aggregate=Aggregate(
        record_type="message_thread", route="message-threads", model=MessageThread, key=thread_key, fold=fold
    ),
)
