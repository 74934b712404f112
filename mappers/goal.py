"""FHIR R4 Goal to the platform's Goal record, and the goal readers a treatment plan shares."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final, Literal

from pydantic import Field

from mappers.context import MapContext
from mappers.elements import (
    MAPPING,
    concept,
    concepts,
    identifiers,
    instant,
    instant_text,
    items,
    ref,
    refs,
    security_labels,
    text,
)
from mappers.family import FRAME, Family, IndexFields, resource_id, tombstone, visibly_changed
from mappers.model import CodeableText, Part, Record, Ref

FHIR_TYPE: Final = "Goal"

GoalLifecycle = Literal[
    "proposed",
    "planned",
    "accepted",
    "active",
    "on_hold",
    "completed",
    "cancelled",
    "void",
    "rejected",
    "unknown",
]
GoalAchievement = Literal[
    "in_progress",
    "improving",
    "worsening",
    "no_change",
    "achieved",
    "sustaining",
    "not_achieved",
    "no_progress",
    "not_attainable",
]

LIFECYCLE: Final[Mapping[str, GoalLifecycle]] = {
    "proposed": "proposed",
    "planned": "planned",
    "accepted": "accepted",
    "active": "active",
    "on-hold": "on_hold",
    "completed": "completed",
    "cancelled": "cancelled",
    "entered-in-error": "void",
    "rejected": "rejected",
}
ACHIEVEMENT: Final[Mapping[str, GoalAchievement]] = {
    "in-progress": "in_progress",
    "improving": "improving",
    "worsening": "worsening",
    "no-change": "no_change",
    "achieved": "achieved",
    "sustaining": "sustaining",
    "not-achieved": "not_achieved",
    "no-progress": "no_progress",
    "not-attainable": "not_attainable",
}
ACHIEVEMENT_SYSTEM: Final = "http://terminology.hl7.org/CodeSystem/goal-achievement"

# A FHIR date (year, year-month or full date) stays as given: a plan ending "2017-06" means the month, not its
# first midnight in UTC.
_DATE: Final = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?", re.ASCII)
# The resource's frame, never content a record should carry (meta.security is read by ``security_labels``).
_FRAME: Final = frozenset({"resourceType", "id", "meta", "text", "language", "implicitRules"})
_READ: Final = frozenset(
    {
        "identifier", "lifecycleStatus", "achievementStatus", "category", "priority", "description", "subject",
        "startDate", "target", "statusDate", "addresses", "note",
    }
)  # fmt: skip
_TARGET_READ: Final = frozenset(
    {
        "measure", "detailQuantity", "detailRange", "detailCodeableConcept", "detailString", "detailBoolean",
        "detailInteger", "detailRatio", "dueDate", "dueDuration",
    }
)  # fmt: skip


class Quantity(Part):
    """A measured amount (value, comparator, unit and its coded form)."""

    value: float | None = None
    comparator: str | None = None
    unit: str | None = None
    system: str | None = None
    code: str | None = None


class QuantityRange(Part):
    """A range of amounts; either end may be open."""

    low: Quantity | None = None
    high: Quantity | None = None


class GoalTarget(Part):
    """What a goal aims at: the measure, the detail (as text, an amount or a range) and when it is due."""

    measure: CodeableText | None = None
    detail_text: str | None = None
    detail_quantity: Quantity | None = None
    detail_range: QuantityRange | None = None
    due_date: str | None = None
    due_duration: Quantity | None = None


class GoalFacts(Part):
    """What a plan shows of each of its goals, read from the Goal resource."""

    description: str | None = None
    lifecycle_status: GoalLifecycle | None = None
    achievement_status: GoalAchievement | None = None
    targets: list[GoalTarget] = Field(default_factory=list)
    start_date: str | None = None
    # The earliest target due date: when the patient is expected to get there.
    due_date: str | None = None


class Goal(Record):
    """A goal of a patient's care, as the treatment-plan service shows and tracks it."""

    record_type: Literal["goal"] = "goal"
    description: str | None = None
    lifecycle_status: GoalLifecycle = "unknown"
    achievement_status: GoalAchievement | None = None
    targets: list[GoalTarget] = Field(default_factory=list)
    start_date: str | None = None
    due_date: str | None = None
    patient: Ref | None = None
    category: list[CodeableText] = Field(default_factory=list)
    priority: CodeableText | None = None
    addresses: list[Ref] = Field(default_factory=list)
    status_date: str | None = None
    notes: list[str] = Field(default_factory=list)
    # Element paths of the FHIR resource the record does not carry (read them from source.fhir_url).
    unmapped: list[str] = Field(default_factory=list)


def when(value: object, zone_name: str | None) -> str | None:
    """Read a FHIR date as given, or a dateTime as ISO UTC with Z (a local time needs the clinic's zone)."""
    if not isinstance(value, str):
        return None
    if _DATE.fullmatch(value.strip()):
        return value.strip()
    return instant_text(value, zone_name)


def epoch(value: str | None) -> float | None:
    """Return epoch seconds of a date (its first instant in UTC) or a UTC dateTime, for sorting."""
    if value is None:
        return None
    match = _DATE.fullmatch(value)
    if match is None:
        moment = instant(value, None)
        return moment.timestamp() if moment else None
    year, month, day = (int(g) if g else 1 for g in match.groups())
    try:
        return datetime(year, month, day, tzinfo=UTC).timestamp()
    except ValueError:
        return None


def patient_key(subject: Ref | None) -> str | None:
    """Return ``Patient/<id>`` when the subject is a literal Patient reference (not a Group), else None."""
    found = literal(subject.reference if subject else None)
    return found if found and found.startswith("Patient/") else None


_LITERAL: Final = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[A-Za-z0-9\-.]{1,64})?$")


def literal(reference: str | None) -> str | None:
    """Return ``Type/id`` of a relative or absolute literal reference (not ``#id`` or ``urn:``), else None."""
    if not reference or reference.startswith(("#", "urn:")):
        return None
    match = _LITERAL.search(reference)
    return f"{match.group(1)}/{match.group(2)}" if match else None


def unread(value: object, read: frozenset[str], prefix: str = "") -> set[str]:
    """Return the paths of the elements of an element (or of every element of an array) not in ``read``."""
    paths: set[str] = set()
    for each in items(value):
        if not isinstance(each, MAPPING):
            continue
        for key, found in each.items():
            if key in ("extension", "modifierExtension"):
                # Extensions are listed by URL: which one went unread is what a maintainer needs to know.
                urls = {text(e.get("url")) or "" for e in items(found) if isinstance(e, MAPPING)}
                paths |= {f"{prefix}{key}('{url}')" for url in urls}
            elif key not in read:
                paths.add(f"{prefix}{key}")
    return paths


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def quantity(value: object) -> Quantity | None:
    """Return a Quantity (or Duration, Age...), or None when it says nothing."""
    if not isinstance(value, MAPPING):
        return None
    found = Quantity(
        value=_number(value.get("value")),
        comparator=text(value.get("comparator")),
        unit=text(value.get("unit")),
        system=text(value.get("system")),
        code=text(value.get("code")),
    )
    return found if found.model_dump(exclude_none=True) else None


def _range(value: object) -> QuantityRange | None:
    if not isinstance(value, MAPPING):
        return None
    low, high = quantity(value.get("low")), quantity(value.get("high"))
    return QuantityRange(low=low, high=high) if low or high else None


def concept_words(value: CodeableText | None) -> str | None:
    """Return the words a person reads for a concept: its text, else a coding's display, else a code."""
    if value is None:
        return None
    if value.text:
        return value.text
    return next((c.display for c in value.codings if c.display), None) or next(
        (c.code for c in value.codings if c.code), None
    )


def _detail_text(target: Mapping[str, Any]) -> str | None:
    for key in ("detailString", "detailInteger", "detailBoolean"):
        found = target.get(key)
        if isinstance(found, bool):
            return "true" if found else "false"
        if isinstance(found, int):
            return str(found)
        if text(found):
            return str(found)
    coded = concept_words(concept(target.get("detailCodeableConcept")))
    if coded:
        return coded
    ratio = target.get("detailRatio")
    if isinstance(ratio, MAPPING):
        numerator, denominator = quantity(ratio.get("numerator")), quantity(ratio.get("denominator"))
        if numerator and denominator and numerator.value is not None and denominator.value is not None:
            return f"{numerator.value:g}{_unit(numerator)}/{denominator.value:g}{_unit(denominator)}"
    return None


def _unit(amount: Quantity) -> str:
    return f" {amount.unit or amount.code}" if amount.unit or amount.code else ""


def _target(value: object, zone_name: str | None) -> GoalTarget | None:
    if not isinstance(value, MAPPING):
        return None
    found = GoalTarget(
        measure=concept(value.get("measure")),
        detail_text=_detail_text(value),
        detail_quantity=quantity(value.get("detailQuantity")),
        detail_range=_range(value.get("detailRange")),
        due_date=when(value.get("dueDate"), zone_name),
        due_duration=quantity(value.get("dueDuration")),
    )
    return found if found.model_dump(exclude_none=True) else None


def _achievement(value: object) -> GoalAchievement | None:
    said = concept(value)
    if said is None:
        return None
    # The HL7 code system first; then any coding or the text that spells one of its codes (a vendor's copy).
    ordered = sorted(said.codings, key=lambda c: c.system != ACHIEVEMENT_SYSTEM)
    for word in [c.code for c in ordered] + [said.text]:
        if word:
            normalized = word.strip().lower().replace(" ", "-").replace("_", "-")
            if normalized in ACHIEVEMENT:
                return ACHIEVEMENT[normalized]
    return None


def goal_facts(resource: Mapping[str, Any], zone_name: str | None) -> GoalFacts:
    """Read what a plan shows of a Goal (description, statuses, targets, dates); never raises."""
    lifecycle = text(resource.get("lifecycleStatus"))
    targets = [t for t in (_target(v, zone_name) for v in items(resource.get("target"))) if t is not None]
    due = sorted(t.due_date for t in targets if t.due_date)
    return GoalFacts(
        description=concept_words(concept(resource.get("description"))),
        lifecycle_status=LIFECYCLE.get(lifecycle.strip().lower(), "unknown") if lifecycle else "unknown",
        achievement_status=_achievement(resource.get("achievementStatus")),
        targets=targets,
        start_date=when(resource.get("startDate"), zone_name),
        due_date=due[0] if due else None,
    )


def to_platform(resource: Mapping[str, Any], ctx: MapContext) -> Goal:
    """Map a FHIR R4 Goal, parsed from JSON, to the platform's Goal record."""
    fhir_id = resource_id(resource, FHIR_TYPE)
    facts = goal_facts(resource, ctx.timezone)
    return Goal(
        id=fhir_id,
        description=facts.description,
        lifecycle_status=facts.lifecycle_status or "unknown",
        achievement_status=facts.achievement_status,
        targets=facts.targets,
        start_date=facts.start_date,
        due_date=facts.due_date,
        patient=ref(resource.get("subject")),
        category=concepts(resource.get("category")),
        priority=concept(resource.get("priority")),
        addresses=refs(resource.get("addresses")),
        status_date=when(resource.get("statusDate"), ctx.timezone),
        notes=[words for note in items(resource.get("note")) if (words := _note_text(note))],
        unmapped=sorted(unread(resource, _READ | _FRAME) | unread(resource.get("target"), _TARGET_READ, "target.")),
        security=security_labels(resource),
        source=ctx.source(FHIR_TYPE, fhir_id, identifiers(resource.get("identifier"))),
    )


def _note_text(value: object) -> str | None:
    return text(value.get("text")) if isinstance(value, MAPPING) else None


def classify(previous: Goal | None, current: Goal) -> list[str]:
    """Name the change events from previous to current ([] when the platform would see no change)."""
    if current.deleted:
        return ["goal.deleted"] if previous is not None and not previous.deleted else []
    if previous is None or previous.deleted:
        return ["goal.created"]
    if current.achievement_status == "achieved" and previous.achievement_status != "achieved":
        # Wins over other edits made with it: reaching a goal is what the patient and the team celebrate.
        return ["goal.achieved"]
    if visibly_changed(previous, current):
        return ["goal.updated"]
    return []


def index_fields(goal: Goal) -> IndexFields:
    """Return the fields the platform API filters and sorts goals by (sorted by start, else due date)."""
    return {
        "patient": patient_key(goal.patient),
        "sort": epoch(goal.start_date or goal.due_date),
        "status": goal.lifecycle_status,
    }


FAMILY: Final = Family(
    fhir_type=FHIR_TYPE,
    record_type="goal",
    route="goals",
    model=Goal,
    to_platform=to_platform,
    classify=classify,
    deleted_record=tombstone,
    index_fields=index_fields,
    reads=FRAME | _READ | _FRAME,
)
