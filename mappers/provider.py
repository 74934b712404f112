"""FHIR R4 Practitioner and PractitionerRole to the platform's Provider and ProviderRole records.

The two FHIR types are two record types: a record's id is its FHIR id, and Practitioner/1 and PractitionerRole/1
are different things, so each has its own key space and route (``providers``, ``provider-roles``) and its own
events (``provider.*``, ``provider_role.*``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, Literal, TypeVar

from pydantic import Field

from mappers.context import MapContext
from mappers.elements import MAPPING, concept, concepts, identifiers, items, ref, refs, security_labels
from mappers.family import FRAME, Family, IndexFields, resource_id, tombstone
from mappers.model import CodeableText, Record, Ref
from mappers.person import (
    ContactPoint,
    Gender,
    PersonIdentifier,
    PersonName,
    contact_points,
    gender,
    is_active,
    lifecycle,
    person_identifiers,
    person_name,
    primary,
    unmapped,
)
from mappers.vendors import profile

PRACTITIONER: Final = "Practitioner"
PRACTITIONER_ROLE: Final = "PractitionerRole"

# A practitioner has no medical record number; a vendor's MRN system prefix (Epic's OIDs) must not label one.
_NOT_FOR_PROVIDERS: Final = frozenset({"mrn"})
_PRACTITIONER_MAPPED: Final = frozenset({"identifier", "active", "name", "telecom", "gender", "qualification"})
_ROLE_MAPPED: Final = frozenset(
    {
        "identifier",
        "active",
        "practitioner",
        "organization",
        "code",
        "specialty",
        "location",
        "healthcareService",
        "telecom",
    }
)

P = TypeVar("P", "Provider", "ProviderRole")


class Provider(Record):
    """A clinician (FHIR Practitioner): who a patient sees, messages or is reminded about."""

    record_type: Literal["provider"] = "provider"
    active: bool = True
    name: PersonName | None = None
    npi: str | None = None
    identifiers: list[PersonIdentifier] = Field(default_factory=list)
    gender: Gender | None = None
    telecom: list[ContactPoint] = Field(default_factory=list)
    qualifications: list[CodeableText] = Field(default_factory=list)
    # Element paths of the FHIR resource that the record does not carry (read them from source.fhir_url).
    unmapped: list[str] = Field(default_factory=list)


class ProviderRole(Record):
    """What a clinician does where (FHIR PractitionerRole): roles and specialties at an organization's locations."""

    record_type: Literal["provider_role"] = "provider_role"
    active: bool = True
    practitioner: Ref | None = None
    organization: Ref | None = None
    locations: list[Ref] = Field(default_factory=list)
    healthcare_services: list[Ref] = Field(default_factory=list)
    roles: list[CodeableText] = Field(default_factory=list)
    specialties: list[CodeableText] = Field(default_factory=list)
    npi: str | None = None
    identifiers: list[PersonIdentifier] = Field(default_factory=list)
    telecom: list[ContactPoint] = Field(default_factory=list)
    # Element paths of the FHIR resource that the record does not carry (read them from source.fhir_url).
    unmapped: list[str] = Field(default_factory=list)


def to_platform(resource: Mapping[str, Any], ctx: MapContext) -> Provider:
    """Map a FHIR R4 Practitioner, parsed from JSON, to the platform's Provider record."""
    fhir_id = resource_id(resource, PRACTITIONER)
    found = person_identifiers(resource.get("identifier"), profile(ctx.vendor), ignore=_NOT_FOR_PROVIDERS)
    return Provider(
        id=fhir_id,
        active=is_active(resource.get("active")),
        name=person_name(resource.get("name")),
        npi=primary(found, "npi"),
        identifiers=found,
        gender=gender(resource.get("gender")),
        telecom=contact_points(resource.get("telecom")),
        qualifications=[
            code
            for q in items(resource.get("qualification"))
            if isinstance(q, MAPPING) and (code := concept(q.get("code"))) is not None
        ],
        unmapped=unmapped(resource, _PRACTITIONER_MAPPED),
        security=security_labels(resource),
        source=ctx.source(PRACTITIONER, fhir_id, identifiers(resource.get("identifier"))),
    )


def role_to_platform(resource: Mapping[str, Any], ctx: MapContext) -> ProviderRole:
    """Map a FHIR R4 PractitionerRole, parsed from JSON, to the platform's ProviderRole record."""
    fhir_id = resource_id(resource, PRACTITIONER_ROLE)
    found = person_identifiers(resource.get("identifier"), profile(ctx.vendor), ignore=_NOT_FOR_PROVIDERS)
    return ProviderRole(
        id=fhir_id,
        active=is_active(resource.get("active")),
        practitioner=ref(resource.get("practitioner")),
        organization=ref(resource.get("organization")),
        locations=refs(resource.get("location")),
        healthcare_services=refs(resource.get("healthcareService")),
        roles=concepts(resource.get("code")),
        specialties=concepts(resource.get("specialty")),
        npi=primary(found, "npi"),
        identifiers=found,
        telecom=contact_points(resource.get("telecom")),
        unmapped=unmapped(resource, _ROLE_MAPPED),
        security=security_labels(resource),
        source=ctx.source(PRACTITIONER_ROLE, fhir_id, identifiers(resource.get("identifier"))),
    )


def classify(previous: Provider | None, current: Provider) -> list[str]:
    """Name a provider's change events from previous to current ([] when the platform would see no change)."""
    event = lifecycle("provider", previous, current)
    return [event] if event else []


def classify_role(previous: ProviderRole | None, current: ProviderRole) -> list[str]:
    """Name a provider role's change events from previous to current ([] when nothing visible changed)."""
    event = lifecycle("provider_role", previous, current)
    return [event] if event else []


def index_fields(record: Provider | ProviderRole) -> IndexFields:
    """Return the fields the platform API filters providers and roles by (status: active or inactive)."""
    return {"patient": None, "sort": None, "status": "active" if record.active else "inactive"}


FAMILY: Final = Family(
    fhir_type=PRACTITIONER,
    record_type="provider",
    route="providers",
    model=Provider,
    to_platform=to_platform,
    classify=classify,
    deleted_record=tombstone,
    index_fields=index_fields,
    reads=FRAME | _PRACTITIONER_MAPPED,
)
ROLE_FAMILY: Final = Family(
    fhir_type=PRACTITIONER_ROLE,
    record_type="provider_role",
    route="provider-roles",
    model=ProviderRole,
    to_platform=role_to_platform,
    classify=classify_role,
    deleted_record=tombstone,
    index_fields=index_fields,
    reads=FRAME | _ROLE_MAPPED,
)
