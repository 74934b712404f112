"""FHIR R4 QuestionnaireResponse to the platform's SurveyResponse record with its scores, and back for write-backs.

Answers are flattened in document order (``mappers.answer_reader``). An answer's item code comes from its
Questionnaire (contained, or held by the gateway and delivered in ``ctx.related``), else from the response item's
LOINC ``definition``: R4 response items carry no codes of their own. A form coded only at the panel has its
questions recognized by the tenant's item map or by position (``mappers.recognition``), and the tenant's and
vendor's local codes count as LOINC (``ctx.codes()``). Each instrument the form holds is scored
(``mappers.scoring``). When the Questionnaire arrives after the response, the worker maps the response again and
it is scored then.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from typing import Any, Final, Literal

from pydantic import Field

from mappers import writer
from mappers.answer import Answer, codings, loinc_code, nest
from mappers.answer_reader import AnswerReader, may_score
from mappers.context import MapContext
from mappers.elements import (
    MAPPING,
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
from mappers.family import FRAME, Family, IndexFields, canonical_key, resource_id, tombstone, visibly_changed
from mappers.instruments import InstrumentKey
from mappers.model import Record, Ref
from mappers.recognition import recognized, scored_question
from mappers.scoring import FINISHED, InstrumentScore, Scored, SurveyResponseStatus, assess
from mappers.survey import SurveyItem, items_of, unread
from mappers.vendors import profile
from mappers.writer import put

FHIR_TYPE: Final = "QuestionnaireResponse"

STATUS: Final[Mapping[str, SurveyResponseStatus]] = {
    "in-progress": "in_progress",
    "completed": "completed",
    "amended": "amended",
    "entered-in-error": "entered_in_error",
    "stopped": "stopped",
}
_FHIR_STATUS: Final = {status: code for code, status in STATUS.items()}

# A relative literal reference to a Questionnaire (a canonical may be one, e.g. "Questionnaire/gcs").
_LITERAL: Final = re.compile(r"Questionnaire/([A-Za-z0-9.\-]{1,64})(?:/_history/[A-Za-z0-9.\-]{1,64})?", re.ASCII)
# The identifier system of write-backs that carry no business identifier of their own (If-None-Exist needs one).
WRITEBACK_SYSTEM: Final = "urn:ietf:rfc:3986"
_WRITEBACK_NAMESPACE: Final = uuid.UUID("6f1c7d8e-3b1a-5e0c-9a42-1f0d3c5b7a90")


class SurveyResponse(Scored, Record):
    """A patient's answers to a survey, with the instrument's score, severity and risk flags computed here."""

    record_type: Literal["survey_response"] = "survey_response"
    # The Questionnaire's canonical as the response gives it, and the id of the one the gateway read, if any.
    survey: str | None = None
    survey_id: str | None = None
    status: SurveyResponseStatus = "unknown"
    subject: Ref | None = None
    patient: Ref | None = None
    encounter: Ref | None = None
    author: Ref | None = None
    answered_by: Ref | None = None
    based_on: list[Ref] = Field(default_factory=list)
    part_of: list[Ref] = Field(default_factory=list)
    authored_at: str | None = None
    answers: list[Answer] = Field(default_factory=list)
    # The main instrument (the one the form asks most of), whose score the ``Scored`` fields are; every
    # instrument's is in ``scores``.
    instrument: InstrumentKey | None = None
    # A score per instrument the response holds, the main one first (a PHQ-9 and a GAD-7 in one form: two).
    scores: list[InstrumentScore] = Field(default_factory=list)
    # Element paths of the response the record does not carry (read them from source.fhir_url).
    unmapped: list[str] = Field(default_factory=list)


def needs(resource: Mapping[str, Any]) -> list[str]:
    """Ask for the response's Questionnaire: by canonical (exact, then unversioned) and by literal reference."""
    canonical = text(resource.get("questionnaire"))
    if canonical is None or canonical.startswith("#"):
        return []
    keys = [canonical_key("Questionnaire", canonical)]
    url, bar, _ = canonical.partition("|")
    if bar and url:
        keys.append(canonical_key("Questionnaire", url))
    literal = _LITERAL.fullmatch(url)
    if literal is not None:
        keys.append(f"Questionnaire/{literal.group(1)}")
    return keys


def to_platform(resource: Mapping[str, Any], ctx: MapContext) -> SurveyResponse:
    """Map a FHIR R4 QuestionnaireResponse, parsed from JSON, to the platform's scored SurveyResponse record."""
    fhir_id = resource_id(resource, FHIR_TYPE)

    codes = ctx.codes()
    form, form_id, read = _questionnaire(resource, ctx.related)
    inline = form is not None and form_id is None
    definitions: dict[str, SurveyItem] = {}
    form_codes: set[str] = set()
    uncoded = False
    if form is not None:
        for item in recognized(form, items_of(form, codes), codes):
            if item.link_id is not None:
                definitions.setdefault(item.link_id, item)
            form_codes.add(loinc_code(item.code) or "")
            uncoded = uncoded or (scored_question(item) and loinc_code(item.code) is None)
        form_codes |= {codes.loinc_of(c) or "" for c in codings(form.get("code"))}
    reader = AnswerReader(definitions, profile(ctx.vendor).qr_numbers_as_decimal, codes)
    reader.walk(resource.get("item"), [])
    status = STATUS.get(text(resource.get("status")) or "", "unknown")
    assessment = assess(
        reader.answers,
        status,
        form_codes | reader.codes,
        questionnaire_missing=form is None and text(resource.get("questionnaire")) is not None,
        uncoded=uncoded or any(loinc_code(a.item_code) is None and may_score(a) for a in reader.answers),
    )
    subject = ref(resource.get("subject"))
    return SurveyResponse(
        id=fhir_id,
        survey=text(resource.get("questionnaire")),
        survey_id=form_id,
        status=status,
        subject=subject,
        patient=subject if _is_patient(resource.get("subject")) else None,
        encounter=ref(resource.get("encounter")),
        author=ref(resource.get("author")),
        answered_by=ref(resource.get("source")),
        based_on=refs(resource.get("basedOn")),
        part_of=refs(resource.get("partOf")),
        authored_at=instant_text(resource.get("authored"), ctx.timezone),
        answers=reader.answers,
        **assessment.record_fields(),
        unmapped=sorted(reader.unread | unread(resource, _READ_CONTAINED if inline else _READ)),
        security=merge_labels(security_labels(r) for r in (resource, *read)),
        source=ctx.source(FHIR_TYPE, fhir_id, identifiers(resource.get("identifier"))),
    )


def to_fhir(response: SurveyResponse, ctx: MapContext) -> dict[str, Any]:
    """Map a platform SurveyResponse to a FHIR R4 QuestionnaireResponse to write back to the EHR."""
    resource: dict[str, Any] = {"resourceType": FHIR_TYPE, "id": response.id}
    put(resource, "meta", writer.meta(response.security))
    resource["identifier"] = _writeback_identifier(response, ctx)
    if response.survey is not None:
        resource["questionnaire"] = response.survey
    # A response of unknown state is never written back as finished.
    resource["status"] = _FHIR_STATUS.get(response.status, "in-progress")
    references = {
        "subject": response.subject or response.patient,
        "encounter": response.encounter,
        "author": response.author,
        "source": response.answered_by,
    }
    for key, value in references.items():
        put(resource, key, writer.reference(value))
    put(resource, "basedOn", writer.references(response.based_on))
    put(resource, "partOf", writer.references(response.part_of))
    put(resource, "authored", response.authored_at)
    # Integer answers as valueInteger for every vendor: Epic's decimals are an adjustment of the typed resource
    # (``mappers.vendors.outbound``).
    put(resource, "item", nest(response.answers))
    return resource


def if_none_exist(resource: Mapping[str, Any]) -> str | None:
    """Return the If-None-Exist search of a written-back QuestionnaireResponse (its identifier), or None."""
    identifier = resource.get("identifier")
    if not isinstance(identifier, MAPPING) or text(identifier.get("value")) is None:
        return None
    system = text(identifier.get("system"))
    return f"identifier={system}|{identifier['value']}" if system else f"identifier={identifier['value']}"


def classify(previous: SurveyResponse | None, current: SurveyResponse) -> list[str]:
    """Name the change events from previous to current, then ``risk.flagged`` when a flag is new and
    ``risk.unscored`` when an instrument's items newly cannot be recognized (so a person reads the answers)."""
    if current.deleted:
        return ["survey_response.deleted"] if previous is not None and not previous.deleted else []
    before = None if previous is None or previous.deleted else previous
    events: list[str] = []
    if current.status == "completed" and (before is None or before.status not in FINISHED):
        events.append("survey_response.completed")
    elif _amended(before, current):
        events.append("survey_response.amended")
    elif before is None or visibly_changed(before, current):
        # Also a late score: the Questionnaire arrived and the same answers now carry a total.
        events.append("survey_response.updated")
    if set(current.risk_flags) - set(before.risk_flags if before else ()):
        events.append("risk.flagged")
    if _unrecognized(current) - _unrecognized(before):
        events.append("risk.unscored")
    return events


def _unrecognized(response: SurveyResponse | None) -> set[str]:
    scores = response.scores if response is not None else []
    return {s.instrument for s in scores if s.score_reason == "unrecognized_items"}


def _amended(before: SurveyResponse | None, current: SurveyResponse) -> bool:
    if current.status == "amended" and (before is None or before.status != "amended"):
        return True
    # A finished response whose answers change has been amended, whatever status the EHR says.
    return before is not None and current.status in FINISHED and _said(before) != _said(current)


def _said(response: SurveyResponse) -> list[tuple[Any, ...]]:
    # What the patient answered, apart from codes and weights the gateway looks up.
    return [(a.link_id, a.path, a.value_type, a.value) for a in response.answers]


def index_fields(response: SurveyResponse) -> IndexFields:
    """Return the fields the platform API filters and sorts responses by (sorted by authored time)."""
    authored = instant(response.authored_at, None)
    return {
        "patient": response.patient.reference if response.patient else None,
        "sort": authored.timestamp() if authored else None,
        "status": response.status,
    }


# What this mapper reads; the narrative only renders the rest. Everything else is listed in ``unmapped``.
_READ: Final = frozenset(
    {"resourceType", "id", "meta", "text", "identifier", "questionnaire", "status", "subject", "encounter"}
    | {"author", "source", "basedOn", "partOf", "authored", "item"}
)
# A contained Questionnaire the response names is read; other contained resources only for their labels.
_READ_CONTAINED: Final = _READ | {"contained"}


def _questionnaire(
    resource: Mapping[str, Any], related: Mapping[str, Mapping[str, Any]]
) -> tuple[Mapping[str, Any] | None, str | None, list[Mapping[str, Any]]]:
    """Return the response's Questionnaire, the id of a held one, and every related resource read."""
    canonical = text(resource.get("questionnaire"))
    if canonical is not None and canonical.startswith("#"):
        for contained in items(resource.get("contained")):
            if (
                isinstance(contained, MAPPING)
                and contained.get("resourceType") == "Questionnaire"
                and contained.get("id") == canonical[1:]
            ):
                return contained, None, []
        return None, None, []
    read = [r for r in (related.get(key) for key in needs(resource)) if isinstance(r, MAPPING)]
    for candidate in read:
        if candidate.get("resourceType") == "Questionnaire":
            return candidate, text(candidate.get("id")), read
    return None, None, read


def _is_patient(value: object) -> bool:
    if not isinstance(value, MAPPING):
        return False
    reference = text(value.get("reference")) or ""
    path = reference.split("/_history/", 1)[0].rstrip("/").split("/")
    if len(path) >= 2 and path[-2] == "Patient":
        return True
    declared = text(value.get("type")) or ""
    return declared.rsplit("/", 1)[-1] == "Patient"


def _writeback_identifier(response: SurveyResponse, ctx: MapContext) -> dict[str, str]:
    for identifier in response.source.identifiers:
        if identifier.system and identifier.value:
            return {"system": identifier.system, "value": identifier.value}
    # Derived from tenant and record id, so a retried write-back finds the first one instead of duplicating it.
    derived = uuid.uuid5(_WRITEBACK_NAMESPACE, f"{ctx.tenant}/survey_response/{response.id}")
    return {"system": WRITEBACK_SYSTEM, "value": f"urn:uuid:{derived}"}


FAMILY: Final = Family(
    fhir_type=FHIR_TYPE,
    record_type="survey_response",
    route="survey-responses",
    model=SurveyResponse,
    to_platform=to_platform,
    classify=classify,
    deleted_record=tombstone,
    index_fields=index_fields,
    reads=FRAME | _READ_CONTAINED,
    needs=needs,
)
