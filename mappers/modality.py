"""How a visit happens (in person, by video, by phone) and the patient's video link, read from an Appointment.

The rule. Signals come from three places:
1. Telehealth data: the vendor's (Oracle Health's contained meeting rooms) or R5's ``Appointment.virtualService``
   as an R4 cross-version extension. A room or a link says video; a virtual service's channel may say phone.
2. The visit's codes in serviceType, appointmentType and serviceCategory: v3 ParticipationMode FACE / PHYSICAL,
   VIDEOCONF, PHONE, and SNOMED CT 185317003 (telephone encounter), 448337001 (telemedicine consultation).
3. Where a concept has none of those codes, the words of its text and displays: phone or audio-only, else video,
   videoconference, telehealth, telemedicine or virtual, else in person, face to face or office visit.
The modality is the strongest signal found: video beats phone beats in person, because a remote visit shown as
in person sends a patient to an empty clinic. No signal gives None: an appointment at a Location is not evidence
of an in-person visit (Oracle Health's video visits name the clinic too).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, Final, Literal
from urllib.parse import urlsplit

from mappers.elements import MAPPING, items, text
from mappers.model import CodeableText
from mappers.vendors import VendorProfile

Modality = Literal["in_person", "video", "phone"]

VIRTUAL_SERVICE: Final = "http://hl7.org/fhir/5.0/StructureDefinition/extension-Appointment.virtualService"
PARTICIPATION_MODE: Final = "http://terminology.hl7.org/CodeSystem/v3-ParticipationMode"
SNOMED: Final = "http://snomed.info/sct"

_RANK: Final[Mapping[Modality, int]] = {"in_person": 1, "phone": 2, "video": 3}
_CODES: Final[Mapping[tuple[str, str], Modality]] = {
    (PARTICIPATION_MODE, "FACE"): "in_person",
    (PARTICIPATION_MODE, "PHYSICAL"): "in_person",
    (PARTICIPATION_MODE, "VIDEOCONF"): "video",
    (PARTICIPATION_MODE, "PHONE"): "phone",
    (SNOMED, "185317003"): "phone",
    (SNOMED, "448337001"): "video",
}
_CHANNEL: Final[Mapping[Modality, str]] = {"video": "VIDEOCONF", "phone": "PHONE"}
# In this order: "Telehealth - phone" is a phone call, "Video office visit" a video visit.
_WORDS: Final[tuple[tuple[Modality, re.Pattern[str]], ...]] = (
    ("phone", re.compile(r"\b(?:tele)?phone\b|\baudio[- ]?only\b", re.I)),
    ("video", re.compile(r"\bvideo(?:conf\w*|visit)?\b|\btele-?(?:health|medicine|visit)\b|\bvirtual\b", re.I)),
    ("in_person", re.compile(r"\bin[- ]person\b|\bface[- ]to[- ]face\b|\boffice visit\b", re.I)),
)
# The cross-version extension names a choice element's sub-extension by its name, some writers by name + type.
_ADDRESS: Final = ("address", "addressUrl", "addressString", "addressContactPoint")


def strongest(*found: Modality | None) -> Modality | None:
    """Return the modality that wins among several signals, or None."""
    best: Modality | None = None
    for modality in found:
        if modality is not None and (best is None or _RANK[modality] > _RANK[best]):
            best = modality
    return best


def from_concepts(concepts: Iterable[CodeableText]) -> Modality | None:
    """Read the modality the visit's codes or words say."""
    return strongest(*(_from_concept(c) for c in concepts))


def _from_concept(concept: CodeableText) -> Modality | None:
    coded = strongest(*(_CODES.get((c.system or "", (c.code or "").strip())) for c in concept.codings))
    if coded is not None:
        return coded
    words = " ".join(w for w in [concept.text, *(c.display for c in concept.codings)] if w)
    return next((m for m, pattern in _WORDS if pattern.search(words)), None)


def web_link(value: object) -> str | None:
    """Return an http(s) URL with a host, else None: a link a patient is sent must not be anything else."""
    candidate = text(value)
    if candidate is None:
        return None
    candidate = candidate.strip()
    try:
        parts = urlsplit(candidate)
    except ValueError:
        return None
    return candidate if parts.scheme.lower() in ("http", "https") and parts.hostname else None


def virtual_service(resource: Mapping[str, Any]) -> tuple[Modality | None, str | None]:
    """Read R5's virtualService (as the cross-version extension, or native): its modality and its link."""
    found: Modality | None = None
    link: str | None = None
    details = [
        {text(sub.get("url")): sub for sub in items(ext.get("extension")) if isinstance(sub, MAPPING)}
        for ext in items(resource.get("extension"))
        if isinstance(ext, MAPPING) and ext.get("url") == VIRTUAL_SERVICE
    ]
    for detail in details:
        channel = detail.get("channelType", {}).get("valueCoding")
        address: Mapping[str, Any] = next((detail[name] for name in _ADDRESS if name in detail), {})
        point = address.get("valueContactPoint")
        here = _service(channel, address.get("valueUrl") or address.get("valueString"), point)
        found, link = strongest(found, here[0]), link or here[1]
    # An R5 server, or a lenient feed, may send the element itself.
    for native in items(resource.get("virtualService")):
        if isinstance(native, MAPPING):
            here = _service(native.get("channelType"), native.get("addressUrl"), native.get("addressContactPoint"))
            found, link = strongest(found, here[0]), link or here[1]
    return found, link


def _service(channel: object, address: object, point: object) -> tuple[Modality | None, str | None]:
    modality: Modality = "video"
    if isinstance(channel, MAPPING) and channel.get("system") == PARTICIPATION_MODE:
        modality = _CODES.get((PARTICIPATION_MODE, str(channel.get("code"))), "video")
    if isinstance(point, MAPPING):
        if point.get("system") == "phone":
            modality = "phone"
        address = address or (point.get("value") if point.get("system") == "url" else None)
    link = web_link(address)
    # A phone channel's address is a number to call, not a link to open.
    return modality, link if modality == "video" else None


def virtual_service_extension(modality: Modality, link: str | None) -> dict[str, Any]:
    """Write a virtual service as the R5 cross-version extension on an R4 Appointment."""
    parts: list[dict[str, Any]] = [
        {"url": "channelType", "valueCoding": {"system": PARTICIPATION_MODE, "code": _CHANNEL[modality]}}
    ]
    if link is not None:
        parts.append({"url": "address", "valueUrl": link})
    return {"url": VIRTUAL_SERVICE, "extension": parts}


def contained_links(resource: Mapping[str, Any], vendor: VendorProfile) -> tuple[dict[str, str | None], bool]:
    """Read the vendor's telehealth links from contained resources: the link by role, and whether any was there."""
    if not vendor.telehealth_contained:
        return {}, False
    contained = list(items(resource.get("contained")))
    labels = _participant_labels(resource)
    rooms: dict[int, tuple[str | None, str | None]] = {}
    for index, room in enumerate(contained):
        if isinstance(room, MAPPING) and room.get("resourceType") == "HealthcareService":
            words = [*_type_words(room.get("type")), *labels.get(str(room.get("id")), [])]
            rooms[index] = (_role(words, vendor), _room_link(room))
    links: dict[str, str | None] = {}
    for role, index in vendor.telehealth_contained.items():
        labelled = [link for who, link in rooms.values() if who == role]
        if labelled:
            links[role] = labelled[0]
        elif index in rooms and rooms[index][0] is None:
            # The documented index is the fallback, only for a room that no label gives to someone else.
            links[role] = rooms[index][1]
        else:
            links[role] = None
    return links, any(who is not None or link is not None for who, link in rooms.values())


def _room_link(room: Mapping[str, Any]) -> str | None:
    for point in items(room.get("telecom")):
        if isinstance(point, MAPPING) and point.get("system") == "url":
            link = web_link(point.get("value"))
            if link is not None:
                return link
    return None


def _type_words(value: object) -> list[str]:
    words: list[str] = []
    for concept in items(value):
        if isinstance(concept, MAPPING):
            displays = [c.get("display") for c in items(concept.get("coding")) if isinstance(c, MAPPING)]
            words += [w for w in map(text, [concept.get("text"), *displays]) if w]
    return words


def _participant_labels(resource: Mapping[str, Any]) -> dict[str, list[str]]:
    # Participants name the rooms they reference ("#28" typed "Patient Virtual Meeting Room").
    labels: dict[str, list[str]] = {}
    for participant in items(resource.get("participant")):
        if not isinstance(participant, MAPPING) or not isinstance(participant.get("actor"), MAPPING):
            continue
        reference = text(participant["actor"].get("reference"))
        if reference and reference.startswith("#"):
            labels.setdefault(reference[1:], []).extend(_type_words(participant.get("type")))
    return labels


def _role(words: list[str], vendor: VendorProfile) -> str | None:
    said = " ".join(words).lower()
    roles = {role for role, names in vendor.telehealth_labels.items() if any(n.lower() in said for n in names)}
    # A label that names two roles says nothing about whose link it is.
    return roles.pop() if len(roles) == 1 else None
