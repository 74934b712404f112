"""What a mapper needs to know besides the FHIR resource: tenant, vendor, clinic zone, version and local codes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from mappers.codes import LocalCodes
from mappers.model import Identifier, Source
from mappers.vendors import profile


@dataclass(frozen=True, kw_only=True, slots=True)
class MapContext:
    """The gateway's facts about one stored FHIR version, handed to a pure mapper."""

    tenant: str
    vendor: str = "generic"
    # The clinic's IANA zone; FHIR instants carry offsets, not zones, so the zone comes from configuration.
    timezone: str | None = None
    # The gateway's own version and time (ISO UTC with Z) of the stored FHIR resource.
    version_id: str
    last_updated: str
    # The source EHR's meta as received, before the gateway stored its own version.
    ehr_version_id: str | None = None
    ehr_last_updated: str | None = None
    # Stored resources the mapping asked for (its family's ``needs``), by key: ``Goal/123`` for a literal
    # reference, ``Questionnaire?url=<canonical>`` for a canonical one. A key the gateway does not hold is absent.
    related: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # The tenant's own codes read as LOINC (its ``local_codes`` in the clients file).
    local_codes: LocalCodes = field(default_factory=LocalCodes)

    def codes(self) -> LocalCodes:
        """Return the codes this mapping reads as LOINC: the tenant's, over its vendor profile's."""
        return profile(self.vendor).local_codes.under(self.local_codes)

    def source(self, fhir_type: str, fhir_id: str, identifiers: Sequence[Identifier] = ()) -> Source:
        """Build the source reference of a record made from this stored version."""
        # A dict, not keywords: validated with no keyword arguments to gather (every record has one).
        return Source.model_validate(self.source_fields(fhir_type, fhir_id, list(identifiers)))

    def source_fields(
        self, fhir_type: str, fhir_id: str, identifiers: list[Identifier] | list[dict[str, str | None]]
    ) -> dict[str, Any]:
        """Return what ``source`` makes a Source of, as a dict: for a record that builds its Source as it validates
        (one validation instead of one per part); ``identifiers`` as Identifiers or as their fields."""
        return {
            "tenant": self.tenant,
            "vendor": self.vendor,
            "fhir_type": fhir_type,
            "fhir_id": fhir_id,
            "version_id": self.version_id,
            "last_updated": self.last_updated,
            "ehr_version_id": self.ehr_version_id,
            "ehr_last_updated": self.ehr_last_updated,
            "identifiers": identifiers,
            "fhir_url": f"{fhir_type}/{fhir_id}/_history/{self.version_id}",
        }
