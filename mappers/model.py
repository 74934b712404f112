"""The normalized platform model: what every record shares, and the change events the platform API serves.

Each record class lives in its family's mapper module, beside the functions that make it (``Appointment`` in
``mappers.appointment``, ``SurveyResponse`` in ``mappers.survey_response``...); this module holds only what
records share: the ``Record`` base, its ``Source`` and ``SecurityLabel``, the compact FHIR datatypes, and ``Part``,
the strict base of every model.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class Part(BaseModel):
    """A platform model or a piece of one: a field it does not know is a bug in a mapper or a client, not data."""

    model_config = ConfigDict(extra="forbid")


class SecurityLabel(Part):
    """A `meta.security` label (confidentiality, sensitivity, Part 2) carried to every derived record."""

    system: str | None
    code: str
    display: str | None = None


class Identifier(Part):
    """A business identifier of the source resource."""

    system: str | None
    value: str | None
    use: str | None = None


class Ref(Part):
    """A FHIR reference exactly as given (e.g. "Patient/123"); the gateway never resolves it."""

    reference: str | None
    display: str | None = None


class Coding(Part):
    """One code of a concept."""

    system: str | None = None
    code: str | None = None
    display: str | None = None


class CodeableText(Part):
    """A compact CodeableConcept: its text and its codings."""

    text: str | None = None
    codings: list[Coding] = Field(default_factory=list)


class Source(Part):
    """Where a record came from: tenant, EHR, FHIR type, id and the stored version it was mapped from."""

    tenant: str
    vendor: str
    fhir_type: str
    fhir_id: str
    version_id: str
    last_updated: str
    ehr_version_id: str | None = None
    ehr_last_updated: str | None = None
    identifiers: list[Identifier] = Field(default_factory=list)
    fhir_url: str


class Record(Part):
    """The part every normalized record shares: id, type, security labels, tombstone flag, source."""

    id: str
    record_type: str
    security: list[SecurityLabel] = Field(default_factory=list)
    deleted: bool = False
    source: Source


class ChangeEvent(Part):
    """One entry of a tenant's change feed: what happened to which record, with the record as it now is."""

    id: str
    type: str
    tenant: str
    occurred_at: str
    record_type: str
    record_id: str
    record: dict[str, Any]
