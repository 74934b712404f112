"""FHIR R4 CarePlan (with its Goals) to the platform's TreatmentPlan record, and back for an activity's status.

A plan's goals are separate Goal resources (or contained ones): the family asks the gateway for each
``Goal/<id>`` it references, and a goal not held yet shows as its reference until it arrives and the plan is
mapped again.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Literal

from pydantic import Field

from mappers import goal, writer
from mappers.context import MapContext
from mappers.elements import (
    MAPPING,
    concept,
    concepts,
    identifiers,
    items,
    merge_labels,
    ref,
    refs,
    security_labels,
    text,
)
from mappers.errors import TenantMismatch
from mappers.family import FRAME, Family, IndexFields, resource_id, tombstone, visibly_changed
from mappers.goal import GoalFacts, epoch, literal, patient_key, when
from mappers.model import CodeableText, Part, Record, Ref, SecurityLabel
from mappers.narrative import plain_text
from mappers.vendors import profile
from mappers.writer import compact, put

if TYPE_CHECKING:
    from conformance import fhir_models

FHIR_TYPE: Final = "CarePlan"

PlanStatus = Literal["draft", "active", "on_hold", "revoked", "completed", "void", "unknown"]
PlanIntent = Literal["proposal", "plan", "order", "option"]
ActivityStatus = Literal[
    "not_started",
    "scheduled",
    "in_progress",
    "on_hold",
    "completed",
    "cancelled",
    "stopped",
    "unknown",
    "void",
]

STATUS: Final[Mapping[str, PlanStatus]] = {
    "draft": "draft",
    "active": "active",
    "on-hold": "on_hold",
    "revoked": "revoked",
    "completed": "completed",
    "entered-in-error": "void",
    "unknown": "unknown",
}
# R4 CarePlanActivityStatus (required binding of CarePlan.activity.detail.status).
ACTIVITY_STATUS: Final[Mapping[str, ActivityStatus]] = {
    "not-started": "not_started",
    "scheduled": "scheduled",
    "in-progress": "in_progress",
    "on-hold": "on_hold",
    "completed": "completed",
    "cancelled": "cancelled",
    "stopped": "stopped",
    "unknown": "unknown",
    "entered-in-error": "void",
}
INTENT: Final[Mapping[str, PlanIntent]] = {"proposal": "proposal", "plan": "plan", "order": "order", "option": "option"}
_PLAN_CODE: Final[Mapping[str, str]] = {word: code for code, word in STATUS.items()}
_ACTIVITY_CODE: Final[Mapping[str, str]] = {word: code for code, word in ACTIVITY_STATUS.items()}

_READ: Final = frozenset(
    {
        "resourceType", "id", "meta", "text", "language", "implicitRules", "identifier", "status", "intent",
        "category", "title", "description", "subject", "period", "careTeam", "addresses", "goal", "activity",
        "contained",
    }
)  # fmt: skip
_ACTIVITY_READ: Final = frozenset({"reference", "detail", "progress"})
_DETAIL_READ: Final = frozenset(
    {"kind", "code", "status", "doNotPerform", "scheduledString", "scheduledPeriod", "scheduledTiming", "description"}
)
_UNIT: Final = {"s": "second", "min": "minute", "h": "hour", "d": "day", "wk": "week", "mo": "month", "a": "year"}
_WHEN: Final = {
    "MORN": "in the morning", "AFT": "in the afternoon", "EVE": "in the evening", "NIGHT": "at night",
    "HS": "at bedtime", "WAKE": "on waking", "C": "with a meal", "CM": "with breakfast", "CD": "with lunch",
    "CV": "with dinner", "AC": "before a meal", "ACM": "before breakfast", "ACD": "before lunch",
    "ACV": "before dinner", "PC": "after a meal", "PCM": "after breakfast", "PCD": "after lunch",
    "PCV": "after dinner",
}  # fmt: skip


class Period(Part):
    """A start and an end: FHIR dates as given, date-times in UTC with Z."""

    start: str | None = None
    end: str | None = None


class ActivitySchedule(Part):
    """When an activity happens, as the EHR gave it: free text, a period, or a timing and its summary."""

    kind: Literal["string", "period", "timing"]
    # The scheduledString, or the timing's summary ("twice a day before breakfast").
    text: str | None = None
    start: str | None = None
    end: str | None = None


class ProgressNote(Part):
    """A note on how an activity is going."""

    text: str
    time: str | None = None
    author: Ref | None = None


class Activity(Part):
    """One activity of a plan; ``index`` is its position in ``CarePlan.activity``, the key of a write-back."""

    index: int
    # The R4 activity kind (``Appointment``, ``MedicationRequest``...) or the referenced resource's type.
    kind: str | None = None
    reference: Ref | None = None
    code: CodeableText | None = None
    # None when the activity is a reference: its status lives in the referenced resource.
    status: ActivityStatus | None = None
    do_not_perform: bool = False
    scheduled: ActivitySchedule | None = None
    description: str | None = None
    progress: list[ProgressNote] = Field(default_factory=list)


class PlanGoal(GoalFacts):
    """A goal of the plan: its reference, and what its Goal says once the gateway holds it."""

    # The Goal's id, for ``/platform/v1/goals/{id}``; None for contained goals and unresolvable references.
    id: str | None = None
    reference: Ref
    resolved: bool = False


class TreatmentPlan(Record):
    """A patient's treatment plan with its goals and activities, as the treatment-plan service shows it."""

    record_type: Literal["treatment_plan"] = "treatment_plan"
    status: PlanStatus
    intent: PlanIntent | None = None
    category: list[CodeableText] = Field(default_factory=list)
    title: str | None = None
    description: str | None = None
    period: Period | None = None
    patient: Ref | None = None
    addresses: list[Ref] = Field(default_factory=list)
    care_team: list[Ref] = Field(default_factory=list)
    goals: list[PlanGoal] = Field(default_factory=list)
    activities: list[Activity] = Field(default_factory=list)
    # Element paths of the FHIR resource the record does not carry (read them from source.fhir_url).
    unmapped: list[str] = Field(default_factory=list)


def needs(resource: Mapping[str, Any]) -> list[str]:
    """Return the ``Goal/<id>`` keys of the stored Goals a plan references (contained ones need nothing)."""
    if not isinstance(resource, MAPPING):
        return []
    keys = (literal(found.reference) for found in refs(resource.get("goal")))
    return list(dict.fromkeys(key for key in keys if key and key.startswith("Goal/")))


def to_platform(resource: Mapping[str, Any], ctx: MapContext) -> TreatmentPlan:
    """Map a FHIR R4 CarePlan, parsed from JSON, with the Goals in ``ctx.related``, to a TreatmentPlan."""
    fhir_id = resource_id(resource, FHIR_TYPE)
    fhir_status = resource.get("status")
    intent = resource.get("intent")
    goals, goal_labels = _goals(resource, ctx)
    description = text(resource.get("description"))
    if description is None and profile(ctx.vendor).careplan_description_in_narrative:
        narrative = resource.get("text")
        description = plain_text(narrative.get("div")) if isinstance(narrative, MAPPING) else None
    return TreatmentPlan(
        id=fhir_id,
        status=STATUS.get(fhir_status.strip().lower(), "unknown") if isinstance(fhir_status, str) else "unknown",
        intent=INTENT.get(intent.strip().lower()) if isinstance(intent, str) else None,
        category=concepts(resource.get("category")),
        title=text(resource.get("title")),
        description=description,
        period=_period(resource.get("period"), ctx.timezone),
        patient=ref(resource.get("subject")),
        addresses=refs(resource.get("addresses")),
        care_team=refs(resource.get("careTeam")),
        goals=goals,
        activities=[
            _activity(index, value, ctx.timezone)
            for index, value in enumerate(items(resource.get("activity")))
            if isinstance(value, MAPPING)
        ],
        security=merge_labels([security_labels(resource), *goal_labels]),
        source=ctx.source(FHIR_TYPE, fhir_id, identifiers(resource.get("identifier"))),
        unmapped=_unmapped(resource),
    )


def to_fhir(plan: TreatmentPlan, ctx: MapContext) -> dict[str, Any]:
    """Build the FHIR R4 CarePlan of a treatment plan (goals as references), carrying every security label."""
    if plan.source.tenant != ctx.tenant:
        raise TenantMismatch(f"CarePlan/{plan.id} belongs to another tenant")
    resource: dict[str, Any] = {"resourceType": FHIR_TYPE, "id": plan.id}
    put(resource, "meta", writer.meta(plan.security))
    put(resource, "identifier", writer.identifiers(plan.source.identifiers))
    resource["status"] = _PLAN_CODE[plan.status]
    put(resource, "intent", plan.intent)
    put(resource, "category", writer.concepts(plan.category))
    put(resource, "title", plan.title)
    put(resource, "description", plan.description)
    put(resource, "subject", writer.reference(plan.patient))
    put(resource, "period", _period_fhir(plan.period))
    put(resource, "careTeam", writer.references(plan.care_team))
    put(resource, "addresses", writer.references(plan.addresses))
    put(resource, "goal", writer.references(g.reference for g in plan.goals))
    put(resource, "activity", [_activity_fhir(a) for a in sorted(plan.activities, key=lambda a: a.index)])
    return resource


def set_activity_status(careplan: fhir_models.CarePlan, index: int, status: str) -> None:
    """Set activity ``index``'s ``detail.status`` of a stored CarePlan (its R4B model, in place) to ``status``.

    ``status`` is an R4 CarePlanActivityStatus code (``in-progress``) or its platform spelling (``in_progress``);
    a ValueError says why a status or an index cannot be applied.
    """
    code = (status if status in ACTIVITY_STATUS else _ACTIVITY_CODE.get(status)) if isinstance(status, str) else None
    if code is None:
        raise ValueError(f"{str(status)[:40]!r} is not an R4 CarePlan activity status ({', '.join(ACTIVITY_STATUS)})")
    activities = careplan.activity or []
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < len(activities):
        raise ValueError(f"CarePlan/{careplan.id} has no activity {index!r}")
    detail = activities[index].detail
    if detail is None:
        # A referenced activity's status belongs to the referenced request; adding a detail would break cpl-3.
        raise ValueError(f"activity {index} of CarePlan/{careplan.id} has no detail, so no status of its own")
    if detail.status != code:
        # The reason explained the old status; shown beside the new one it would mislead.
        detail.statusReason = None
    detail.status = code


def classify(previous: TreatmentPlan | None, current: TreatmentPlan) -> list[str]:
    """Name the change events from previous to current ([] when the platform would see no change)."""
    if current.deleted:
        return ["treatment_plan.deleted"] if previous is not None and not previous.deleted else []
    if previous is None or previous.deleted:
        return ["treatment_plan.created"]
    if current.status == "completed" and previous.status != "completed":
        return ["treatment_plan.completed"]
    # Includes a goal's change arriving by a refresh: the plan's version is the same, what it shows is not.
    return ["treatment_plan.updated"] if visibly_changed(previous, current) else []


def index_fields(plan: TreatmentPlan) -> IndexFields:
    """Return the fields the platform API filters and sorts plans by (sorted by the period's start)."""
    return {
        "patient": patient_key(plan.patient),
        "sort": epoch(plan.period.start if plan.period else None),
        "status": plan.status,
    }


def _goals(resource: Mapping[str, Any], ctx: MapContext) -> tuple[list[PlanGoal], list[list[SecurityLabel]]]:
    contained = {
        c["id"]: c
        for c in items(resource.get("contained"))
        if isinstance(c, MAPPING) and c.get("resourceType") == goal.FHIR_TYPE and isinstance(c.get("id"), str)
    }
    found: list[PlanGoal] = []
    labels: list[list[SecurityLabel]] = []
    for reference in refs(resource.get("goal")):
        target = reference.reference or ""
        key = literal(target)
        gid = key.partition("/")[2] if key and key.startswith("Goal/") else None
        held: Mapping[str, Any] | None = None
        if target.startswith("#"):
            held = contained.get(target[1:])
        elif gid is not None:
            candidate = ctx.related.get(f"Goal/{gid}")
            if isinstance(candidate, MAPPING) and candidate.get("resourceType") == goal.FHIR_TYPE:
                held = candidate
                # Its labels restrict the plan that shows it; contained Goals' are already the plan's own.
                labels.append(security_labels(candidate))
        if held is None:
            found.append(PlanGoal(id=gid, reference=reference))
        else:
            facts = goal.goal_facts(held, ctx.timezone)
            found.append(PlanGoal(id=gid, reference=reference, resolved=True, **dict(facts)))
    return found, labels


def _unmapped(resource: Mapping[str, Any]) -> list[str]:
    activities = [a for a in items(resource.get("activity")) if isinstance(a, MAPPING)]
    paths = (
        goal.unread(resource, _READ)
        | goal.unread(activities, _ACTIVITY_READ, "activity.")
        | goal.unread([a.get("detail") for a in activities], _DETAIL_READ, "activity.detail.")
    )
    # Contained Goals are read as the plan's goals (and every contained resource's labels); the rest is not.
    if any(
        isinstance(c, MAPPING) and c.get("resourceType") != goal.FHIR_TYPE for c in items(resource.get("contained"))
    ):
        paths.add("contained")
    return sorted(paths)


def _period(value: object, zone_name: str | None) -> Period | None:
    if not isinstance(value, MAPPING):
        return None
    start, end = when(value.get("start"), zone_name), when(value.get("end"), zone_name)
    return Period(start=start, end=end) if start or end else None


def _activity(index: int, value: Mapping[str, Any], zone_name: str | None) -> Activity:
    reference = ref(value.get("reference"))
    detail = value.get("detail")
    detail = detail if isinstance(detail, MAPPING) else {}
    status = text(detail.get("status"))
    kind = text(detail.get("kind")) or _kind(value.get("reference"))
    return Activity(
        index=index,
        kind=kind,
        reference=reference,
        code=concept(detail.get("code")),
        status=ACTIVITY_STATUS.get(status.strip().lower(), "unknown") if status else None,
        do_not_perform=detail.get("doNotPerform") is True,
        scheduled=_schedule(detail, zone_name),
        description=text(detail.get("description")),
        progress=[note for note in (_note(n, zone_name) for n in items(value.get("progress"))) if note is not None],
    )


def _kind(value: object) -> str | None:
    if not isinstance(value, MAPPING):
        return None
    found = literal(text(value.get("reference")))
    if found is not None:
        return found.partition("/")[0]
    declared = text(value.get("type"))
    return declared.rsplit("/", 1)[-1] if declared else None


def _schedule(detail: Mapping[str, Any], zone_name: str | None) -> ActivitySchedule | None:
    if text(detail.get("scheduledString")):
        return ActivitySchedule(kind="string", text=detail["scheduledString"])
    period = _period(detail.get("scheduledPeriod"), zone_name)
    if period is not None:
        return ActivitySchedule(kind="period", start=period.start, end=period.end)
    timing = detail.get("scheduledTiming")
    if not isinstance(timing, MAPPING):
        return None
    repeat = timing.get("repeat")
    repeat = repeat if isinstance(repeat, MAPPING) else {}
    bounds = _period(repeat.get("boundsPeriod"), zone_name) or Period()
    summary = goal.concept_words(concept(timing.get("code"))) or _summary(timing, repeat)
    if summary is None and bounds.start is None and bounds.end is None:
        return None
    return ActivitySchedule(kind="timing", text=summary, start=bounds.start, end=bounds.end)


def _count(value: object) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) and value > 0 else None


def _times(low: float, high: float | None) -> str:
    if high is not None and high > low:
        return f"{low:g}-{high:g} times"
    return {1.0: "once", 2.0: "twice"}.get(low, f"{low:g} times")


def _every(period: float, high: float | None, unit: object) -> str:
    word = _UNIT.get(unit, str(unit)) if isinstance(unit, str) else "period"
    if high is not None and high > period:
        return f"every {period:g}-{high:g} {word}s"
    if period == 1:
        return f"an {word}" if word == "hour" else f"a {word}"
    return f"every {period:g} {word}s"


def _summary(timing: Mapping[str, Any], repeat: Mapping[str, Any]) -> str | None:
    """Say a Timing in words: "twice a day before breakfast, for 10 times in total"."""
    parts: list[str] = []
    frequency, period = _count(repeat.get("frequency")), _count(repeat.get("period"))
    if period is not None:
        every = _every(period, _count(repeat.get("periodMax")), repeat.get("periodUnit"))
        if frequency is None:
            parts.append(every if every.startswith("every") else f"once {every}")
        else:
            parts.append(f"{_times(frequency, _count(repeat.get('frequencyMax')))} {every}")
    days = [d for d in items(repeat.get("dayOfWeek")) if text(d)]
    if days:
        parts.append("on " + ", ".join(days))
    moments = [t.removesuffix(":00") for t in items(repeat.get("timeOfDay")) if text(t)]
    if moments:
        parts.append("at " + ", ".join(moments))
    meals = [_WHEN.get(w, w) for w in items(repeat.get("when")) if text(w)]
    if meals:
        parts.append(", ".join(meals))
    duration = _count(repeat.get("duration"))
    if duration is not None:
        unit = repeat.get("durationUnit")
        word = _UNIT.get(unit, str(unit)) if isinstance(unit, str) else ""
        parts.append(f"for {duration:g} {word}{'s' if duration != 1 else ''}".rstrip())
    count = _count(repeat.get("count"))
    if count is not None:
        parts.append(f"{count:g} times in total")
    events = [e for e in items(timing.get("event")) if text(e)]
    if events:
        parts.append("on " + ", ".join(events))
    return " ".join(parts) or None


def _note(value: object, zone_name: str | None) -> ProgressNote | None:
    if not isinstance(value, MAPPING) or not text(value.get("text")):
        return None
    author = ref(value.get("authorReference"))
    if author is None and text(value.get("authorString")):
        author = Ref(reference=None, display=value["authorString"])
    return ProgressNote(text=value["text"], time=when(value.get("time"), zone_name), author=author)


def _period_fhir(value: Period | None) -> dict[str, Any] | None:
    return compact(start=value.start, end=value.end) if value else None


def _activity_fhir(activity: Activity) -> dict[str, Any]:
    schedule: dict[str, Any] = {}
    if activity.scheduled is not None:
        planned = activity.scheduled
        if planned.kind == "string":
            schedule = compact(scheduledString=planned.text)
        elif planned.kind == "period":
            schedule = compact(scheduledPeriod=compact(start=planned.start, end=planned.end))
        else:
            # The summary travels as the timing's text; the EHR's coded repeat was not kept, so none is invented.
            bounds = compact(start=planned.start, end=planned.end)
            timing = compact(code=compact(text=planned.text), repeat=compact(boundsPeriod=bounds))
            schedule = {"scheduledTiming": timing}
    detail = compact(
        code=writer.concept(activity.code),
        status=_ACTIVITY_CODE[activity.status] if activity.status else None,
        doNotPerform=True if activity.do_not_perform else None,
        description=activity.description,
        **schedule,
    )
    # The kind is written when a detail carries it, or when the reference alone would say another kind.
    if activity.kind is not None and (detail or activity.kind != _kind(writer.reference(activity.reference))):
        detail = {"kind": activity.kind, **detail}
    progress = [
        compact(
            text=note.text,
            time=note.time,
            authorReference=writer.reference(note.author) if note.author and note.author.reference else None,
            authorString=note.author.display if note.author and not note.author.reference else None,
        )
        for note in activity.progress
    ]
    return compact(reference=writer.reference(activity.reference), progress=progress, detail=detail)


FAMILY: Final = Family(
    fhir_type=FHIR_TYPE,
    record_type="treatment_plan",
    route="treatment-plans",
    model=TreatmentPlan,
    to_platform=to_platform,
    classify=classify,
    deleted_record=tombstone,
    index_fields=index_fields,
    reads=FRAME | _READ,
    needs=needs,
)
