"""An appointment's participants: who takes part, and of what kind, read from FHIR and written back.

A participant's kind comes from its reference's resource type (``Patient/1`` is a patient), else from the type the
reference declares (``urn:uuid:`` and display-only references), else it is ``other``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from typing import Any, Final, Literal

from pydantic import Field

from mappers import writer
from mappers.elements import MAPPING, concepts, ref_fields, text
from mappers.model import CodeableText, Part, Ref
from mappers.writer import put

ParticipantKind = Literal[
    "patient",
    "practitioner",
    "practitioner_role",
    "related_person",
    "location",
    "device",
    "healthcare_service",
    "other",
]


class Participant(Part):
    """One participant of an appointment, its kind taken from the reference's resource type."""

    actor: Ref | None = None
    kind: ParticipantKind = "other"
    required: str | None = None
    status: str | None = None
    roles: list[CodeableText] = Field(default_factory=list)


_KIND: Final[Mapping[str, ParticipantKind]] = {
    "Patient": "patient",
    "Practitioner": "practitioner",
    "PractitionerRole": "practitioner_role",
    "RelatedPerson": "related_person",
    "Location": "location",
    "Device": "device",
    "HealthcareService": "healthcare_service",
}
_TYPE_OF: Final[Mapping[ParticipantKind, str]] = {kind: rtype for rtype, kind in _KIND.items()}

# Relative, absolute and versioned literal references all end in Type/id[/_history/vid].
_REFERENCE: Final = re.compile(
    r"(?:^|/)([A-Z][A-Za-z]+)/[A-Za-z0-9.\-]{1,64}(?:/_history/[A-Za-z0-9.\-]{1,64})?$", re.ASCII
)


def kind_of(value: object) -> ParticipantKind:
    """Return the kind of a Reference, from its literal reference or, failing that, its declared type."""
    if not isinstance(value, MAPPING):
        return "other"
    reference = text(value.get("reference"))
    kind = _literal_kind(reference) if reference else None
    if kind is not None:
        return kind
    # urn:uuid: and identifier-only references may still say their type, as a name or a profile URL.
    declared = text(value.get("type"))
    return _KIND.get(declared.rsplit("/", 1)[-1], "other") if declared else "other"


@functools.lru_cache(maxsize=4096)
def _literal_kind(reference: str) -> ParticipantKind | None:
    """Return the kind a literal reference names, or None when it is no literal reference (read once per reference:
    an EHR's appointments name the same practitioners and patients again and again)."""
    match = _REFERENCE.search(reference)
    return _KIND.get(match.group(1), "other") if match is not None else None


def _kind(actor: object, fields: dict[str, str | None] | None) -> ParticipantKind:
    """Return ``kind_of(actor)`` for an actor whose Ref ``fields`` are read (its reference read once), or "other"
    for none."""
    if fields is None:
        return "other"
    reference = fields["reference"]
    kind = _literal_kind(reference) if reference else None
    return kind if kind is not None else kind_of(actor)


def participant_fields(value: object) -> dict[str, Any]:
    """Read an Appointment.participant as the fields a Participant is validated from (its actor a Ref's fields, or
    None; nothing for anything but an object): the Appointment builds its participants as it validates (one
    validation instead of one per participant)."""
    if not isinstance(value, MAPPING):
        return {}
    actor = value.get("actor")
    who = ref_fields(actor)
    roles = value.get("type")
    return {
        "actor": who,
        "kind": _kind(actor, who),
        "required": text(value.get("required")),
        "status": text(value.get("status")),
        "roles": concepts(roles) if roles is not None else [],
    }


def participant_json(participant: Participant, waiting: str) -> dict[str, Any]:
    """Write an Appointment.participant, its status ``waiting`` when the record does not say one."""
    entry: dict[str, Any] = {}
    put(entry, "type", writer.concepts(participant.roles))
    if participant.actor is not None:
        actor = writer.reference(participant.actor)
        if participant.kind != "other" and kind_of(actor) != participant.kind:
            # urn:uuid: and display-only references say their type only this way.
            actor["type"] = _TYPE_OF[participant.kind]
        entry["actor"] = actor
    put(entry, "required", participant.required)
    entry["status"] = participant.status or waiting
    return entry
