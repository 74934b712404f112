"""FHIR R4 Patient to the platform's Patient record, and the change a new version makes (a merge among them)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal

from pydantic import Field

from mappers.context import MapContext
from mappers.elements import MAPPING, concept, identifiers, items, ref, refs, security_labels, text
from mappers.family import FRAME, Family, IndexFields, resource_id, tombstone, visibly_changed
from mappers.model import CodeableText, Record, Ref
from mappers.person import (
    ContactPoint,
    Gender,
    PersonIdentifier,
    PersonName,
    contact_points,
    extension_ref,
    fhir_date,
    gender,
    is_active,
    lifecycle,
    person_identifiers,
    person_name,
    primary,
    unmapped,
)
from mappers.vendors import VendorProfile, profile

FHIR_TYPE: Final = "Patient"

# The top-level Patient elements this mapper reads; the rest is listed in the record's ``unmapped``.
_MAPPED: Final = frozenset(
    {
        "identifier",
        "active",
        "name",
        "telecom",
        "gender",
        "birthDate",
        "deceasedBoolean",
        "deceasedDateTime",
        "communication",
        "link",
        "generalPractitioner",
        "managingOrganization",
    }
)
# A merge retires the old record, so the EHR flips ``active`` with it: part of the merge, not a second change.
_MERGE_FIELDS: Final = ("merged_into", "active")


class Patient(Record):
    """A person receiving care, as messaging, reminders and surveys see them."""

    record_type: Literal["patient"] = "patient"
    active: bool = True
    deceased: bool = False
    name: PersonName | None = None
    mrn: str | None = None
    identifiers: list[PersonIdentifier] = Field(default_factory=list)
    birth_date: str | None = None
    gender: Gender | None = None
    telecom: list[ContactPoint] = Field(default_factory=list)
    preferred_language: CodeableText | None = None
    # The surviving record when the EHR merged this one into another (Patient.link of type replaced-by).
    merged_into: Ref | None = None
    general_practitioners: list[Ref] = Field(default_factory=list)
    managing_organization: Ref | None = None
    # The practice (tenant) and department the EHR files the patient under, where it names them (athenahealth).
    practice: Ref | None = None
    department: Ref | None = None
    # Element paths of the FHIR resource that the record does not carry (read them from source.fhir_url).
    unmapped: list[str] = Field(default_factory=list)


def to_platform(resource: Mapping[str, Any], ctx: MapContext) -> Patient:
    """Map a FHIR R4 Patient, parsed from JSON, to the platform's Patient record."""
    fhir_id = resource_id(resource, FHIR_TYPE)
    vendor = profile(ctx.vendor)
    found = person_identifiers(resource.get("identifier"), vendor)
    return Patient(
        id=fhir_id,
        active=is_active(resource.get("active")),
        deceased=resource.get("deceasedBoolean") is True or text(resource.get("deceasedDateTime")) is not None,
        name=person_name(resource.get("name")),
        mrn=primary(found, "mrn"),
        identifiers=found,
        birth_date=fhir_date(resource.get("birthDate")),
        gender=gender(resource.get("gender")),
        telecom=contact_points(resource.get("telecom")),
        preferred_language=_preferred_language(resource.get("communication")),
        merged_into=_merged_into(resource.get("link")),
        general_practitioners=refs(resource.get("generalPractitioner")),
        managing_organization=ref(resource.get("managingOrganization")),
        practice=extension_ref(resource, vendor.practice_extension),
        department=extension_ref(resource, vendor.department_extension),
        unmapped=unmapped(resource, _MAPPED, read=_vendor_extensions(vendor)),
        security=security_labels(resource),
        source=ctx.source(FHIR_TYPE, fhir_id, identifiers(resource.get("identifier"))),
    )


def classify(previous: Patient | None, current: Patient) -> list[str]:
    """Name the change events from previous to current ([] when the platform would see no change)."""
    if current.deleted or previous is None or previous.deleted:
        event = lifecycle("patient", previous, current)
        # A record that arrives already merged tells the platform both that it exists and where it went.
        merged = ["patient.merged"] if event == "patient.created" and current.merged_into else []
        return ([event] if event else []) + merged
    if current.merged_into is not None and current.merged_into != previous.merged_into:
        events = ["patient.merged"]
        if visibly_changed(previous, current, besides=_MERGE_FIELDS):
            events.append("patient.updated")
        return events
    return ["patient.updated"] if visibly_changed(previous, current) else []


def index_fields(patient: Patient) -> IndexFields:
    """Return the fields the platform API filters patients by (status: active, inactive or merged)."""
    status = "merged" if patient.merged_into else "active" if patient.active else "inactive"
    return {"patient": f"Patient/{patient.id}", "sort": None, "status": status}


def _vendor_extensions(vendor: VendorProfile) -> list[str]:
    return [url for url in (vendor.practice_extension, vendor.department_extension) if url is not None]


def _preferred_language(value: object) -> CodeableText | None:
    spoken = [c for c in items(value) if isinstance(c, MAPPING) and concept(c.get("language")) is not None]
    chosen = next((c for c in spoken if c.get("preferred") is True), spoken[0] if spoken else None)
    return concept(chosen.get("language")) if chosen is not None else None


def _merged_into(value: object) -> Ref | None:
    for link in items(value):
        if isinstance(link, MAPPING) and (text(link.get("type")) or "").strip().lower() == "replaced-by":
            found = ref(link.get("other"))
            if found is not None:
                return found
    return None


FAMILY: Final = Family(
    fhir_type=FHIR_TYPE,
    record_type="patient",
    route="patients",
    model=Patient,
    to_platform=to_platform,
    classify=classify,
    deleted_record=tombstone,
    index_fields=index_fields,
    reads=FRAME | _MAPPED | {"extension"},
)
