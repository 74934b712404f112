"""The CarePlan and Goal mappers as the platform sees them: plans, goals, activities, labels, events, write-back."""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from datetime import UTC
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conformance import fhir_models
from mappers import goal as goal_mapper
from mappers.elements import merge_labels
from mappers.errors import MappingError, TenantMismatch
from mappers.family import tombstone as deleted_record
from mappers.goal import Goal, GoalTarget, Quantity, QuantityRange
from mappers.model import CodeableText, Coding, Identifier, Ref, SecurityLabel
from mappers.registry import MAPPED, record_routes
from mappers.treatment_plan import (
    ACTIVITY_STATUS,
    Activity,
    ActivitySchedule,
    Period,
    PlanGoal,
    ProgressNote,
    TreatmentPlan,
    classify,
    needs,
    set_activity_status,
    to_fhir,
    to_platform,
)
from tests.conftest import CORPUS
from tests.mappers.conftest import corpus_params, ctx, hl7_example

CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ACHIEVEMENT = "http://terminology.hl7.org/CodeSystem/goal-achievement"
LOINC = "http://loinc.org"
US_CORE_CATEGORY = "http://hl7.org/fhir/us/core/CodeSystem/careplan-category"


def careplan(**elements: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "CarePlan",
        "id": "cp-1",
        "status": "active",
        "intent": "plan",
        "title": "Depression treatment plan",
        "subject": {"reference": "Patient/p1", "display": "Pat"},
        "period": {"start": "2024-03-01"},
        "goal": [{"reference": "Goal/g1", "display": "PHQ-9 below 5"}],
        "activity": [
            {
                "detail": {
                    "kind": "Appointment",
                    "code": {"text": "Weekly therapy session"},
                    "status": "scheduled",
                    "scheduledString": "Tuesdays 10am",
                }
            }
        ],
    }
    return resource | elements


def goal(**elements: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Goal",
        "id": "g1",
        "lifecycleStatus": "active",
        "achievementStatus": {"coding": [{"system": ACHIEVEMENT, "code": "in-progress"}]},
        "description": {"text": "PHQ-9 score below 5"},
        "subject": {"reference": "Patient/p1"},
        "startDate": "2024-03-01",
        "target": [
            {
                "measure": {"coding": [{"system": LOINC, "code": "44261-6", "display": "PHQ-9 total"}]},
                "detailQuantity": {"value": 5, "comparator": "<", "unit": "{score}"},
                "dueDate": "2024-06-01",
            }
        ],
    }
    return resource | elements


def related(*goals: dict[str, Any]) -> dict[str, Any]:
    return {f"Goal/{g['id']}": g for g in goals}


# --- the plan's own fields ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fhir_status", "status"),
    [
        ("draft", "draft"),
        ("active", "active"),
        ("on-hold", "on_hold"),
        ("revoked", "revoked"),
        ("completed", "completed"),
        ("entered-in-error", "void"),
        ("unknown", "unknown"),
        ("finished", "unknown"),
    ],
)
def test_plan_status_is_normalized(fhir_status: str, status: str) -> None:
    assert to_platform(careplan(status=fhir_status), ctx()).status == status


def test_intent_title_category_and_people_are_kept() -> None:
    record = to_platform(
        careplan(
            intent="order",
            category=[{"coding": [{"system": "http://snomed.info/sct", "code": "736353004"}], "text": "BH plan"}],
            addresses=[{"reference": "Condition/dep", "display": "Major depressive disorder"}],
            careTeam=[{"reference": "CareTeam/ct1", "display": "Outpatient BH team"}],
            description="Weekly CBT and medication review",
        ),
        ctx(),
    )
    assert record.intent == "order"
    assert record.title == "Depression treatment plan"
    assert record.description == "Weekly CBT and medication review"
    assert record.category == [
        CodeableText(text="BH plan", codings=[Coding(system="http://snomed.info/sct", code="736353004")])
    ]
    assert record.patient == Ref(reference="Patient/p1", display="Pat")
    assert record.addresses == [Ref(reference="Condition/dep", display="Major depressive disorder")]
    assert record.care_team == [Ref(reference="CareTeam/ct1", display="Outpatient BH team")]
    assert to_platform(careplan(intent="wish"), ctx()).intent is None


def test_period_keeps_dates_and_converts_date_times_to_utc() -> None:
    record = to_platform(careplan(period={"start": "2024-03", "end": "2024-06-30T17:00:00-04:00"}), ctx())
    assert record.period == Period(start="2024-03", end="2024-06-30T21:00:00Z")
    local = to_platform(careplan(period={"start": "2024-01-10T09:00:00"}), ctx())
    assert local.period == Period(start="2024-01-10T14:00:00Z")
    # Without the clinic's zone a local time names no instant, and no period at all is better than a wrong one.
    assert to_platform(careplan(period={"start": "2024-01-10T09:00:00"}), ctx(timezone=None)).period is None


# --- goals ------------------------------------------------------------------------------------------------------


def test_a_goal_not_held_yet_shows_its_reference_only() -> None:
    record = to_platform(careplan(), ctx())
    assert record.goals == [PlanGoal(id="g1", reference=Ref(reference="Goal/g1", display="PHQ-9 below 5"))]
    assert record.goals[0].resolved is False and record.goals[0].description is None


def test_a_held_goal_shows_description_statuses_targets_and_dates() -> None:
    held = goal(
        target=[
            {"measure": {"text": "PHQ-9"}, "detailQuantity": {"value": 5, "comparator": "<"}, "dueDate": "2024-06-01"},
            {
                "detailRange": {"low": {"value": 6, "unit": "h"}, "high": {"value": 8, "unit": "h"}},
                "dueDate": "2024-05",
            },
            {"detailString": "Walk daily", "dueDuration": {"value": 2, "unit": "weeks"}},
            {"detailCodeableConcept": {"coding": [{"display": "Sleeps through the night"}]}},
            {"detailBoolean": False},
        ]
    )
    (found,) = to_platform(careplan(), ctx(related=related(held))).goals
    assert found.resolved and found.id == "g1"
    assert found.reference == Ref(reference="Goal/g1", display="PHQ-9 below 5")
    assert found.description == "PHQ-9 score below 5"
    assert (found.lifecycle_status, found.achievement_status) == ("active", "in_progress")
    assert found.start_date == "2024-03-01"
    assert found.due_date == "2024-05", "the earliest target due date is when the goal is due"
    assert found.targets[0] == GoalTarget(
        measure=CodeableText(text="PHQ-9"), detail_quantity=Quantity(value=5, comparator="<"), due_date="2024-06-01"
    )
    assert found.targets[1].detail_range == QuantityRange(
        low=Quantity(value=6, unit="h"), high=Quantity(value=8, unit="h")
    )
    assert (found.targets[2].detail_text, found.targets[2].due_duration) == (
        "Walk daily",
        Quantity(value=2, unit="weeks"),
    )
    assert [t.detail_text for t in found.targets[3:]] == ["Sleeps through the night", "false"]


def test_contained_goals_are_read_from_the_plan_itself() -> None:
    record = to_platform(hl7_example("CarePlan-integrate.json"), ctx())
    assert len(record.goals) == 5 and all(g.resolved for g in record.goals)
    assert record.goals[1].description == "Eve will improve her GERDS symptoms"
    assert record.goals[1].reference == Ref(reference="#g2")
    assert record.goals[1].id is None, "a contained goal has no id of its own on the platform"


def test_needs_asks_for_each_referenced_goal_once_and_never_for_contained_ones() -> None:
    resource = careplan(
        goal=[
            {"reference": "Goal/g1"},
            {"reference": "https://ehr.example/fhir/Goal/g2/_history/4"},
            {"reference": "Goal/g1"},
            {"reference": "#local"},
            {"reference": "urn:uuid:4a3c"},
            {"display": "Feel better"},
            {"reference": "Condition/c1"},
        ]
    )
    assert needs(resource) == ["Goal/g1", "Goal/g2"]
    assert needs({"resourceType": "CarePlan", "goal": "nonsense"}) == []
    found = to_platform(resource, ctx(related=related(goal(), goal(id="g2", description={"text": "Sleep 7h"}))))
    assert [g.description for g in found.goals] == ["PHQ-9 score below 5", "Sleep 7h", "PHQ-9 score below 5"] + [
        None
    ] * 4


@pytest.mark.parametrize(
    ("achievement", "expected"),
    [
        ({"coding": [{"system": ACHIEVEMENT, "code": "achieved"}]}, "achieved"),
        (
            {"coding": [{"system": "urn:local", "code": "X1"}, {"system": ACHIEVEMENT, "code": "no-change"}]},
            "no_change",
        ),
        ({"text": "Not Attainable"}, "not_attainable"),
        ({"text": "going great"}, None),
        ("achieved", None),
    ],
)
def test_goal_achievement_status_is_read_from_the_hl7_code(achievement: Any, expected: str | None) -> None:
    assert goal_mapper.to_platform(goal(achievementStatus=achievement), ctx()).achievement_status == expected


def test_a_goal_record_on_its_own() -> None:
    record = goal_mapper.to_platform(
        goal(
            priority={"text": "high"},
            category=[{"text": "behavioral"}],
            addresses=[{"reference": "Condition/dep"}],
            note=[{"text": "Patient chose this goal"}, {"time": "2024-01-01"}],
            statusDate="2024-03-02",
            identifier=[{"system": "urn:oid:1.2.3", "value": "G-77"}],
        ),
        ctx(),
    )
    assert (record.id, record.record_type, record.lifecycle_status) == ("g1", "goal", "active")
    assert record.patient == Ref(reference="Patient/p1")
    assert record.priority == CodeableText(text="high")
    assert record.notes == ["Patient chose this goal"]
    assert record.status_date == "2024-03-02"
    assert record.source.identifiers == [Identifier(system="urn:oid:1.2.3", value="G-77")]
    assert record.source.fhir_url == "Goal/g1/_history/1"
    assert goal_mapper.index_fields(record) == {"patient": "Patient/p1", "sort": 1709251200.0, "status": "active"}


# --- what is left unmapped ------------------------------------------------------------------------------------


def test_the_plan_lists_the_element_paths_it_left_unmapped() -> None:
    record = to_platform(hl7_example("CarePlan-example.json"), ctx())
    assert {"author", "encounter", "created", "activity.outcomeReference", "activity.detail.performer"} <= set(
        record.unmapped
    )
    assert not {"status", "goal", "activity.detail.status", "activity.detail.code", "meta", "id"} & set(record.unmapped)
    # Conditions contained beside the goals are not carried; contained goals alone leave nothing out.
    assert "contained" in record.unmapped
    only_goals = careplan(
        contained=[{"resourceType": "Goal", "id": "c"}], extension=[{"url": "urn:x", "valueString": "y"}]
    )
    assert to_platform(only_goals, ctx()).unmapped == ["extension('urn:x')"]
    assert (
        classify(to_platform(careplan(), ctx()), to_platform(careplan(encounter={"reference": "E/1"}), ctx("2"))) == []
    )


def test_the_goal_lists_the_element_paths_it_left_unmapped() -> None:
    record = goal_mapper.to_platform(goal(expressedBy={"reference": "Patient/p1"}, outcomeCode=[{"text": "ok"}]), ctx())
    assert record.unmapped == ["expressedBy", "outcomeCode"]


# --- security labels ------------------------------------------------------------------------------------------


def test_labels_of_the_plan_its_contained_goals_and_its_held_goals_are_all_kept() -> None:
    resource = careplan(
        meta={"security": [{"system": CONFIDENTIALITY, "code": "R"}]},
        contained=[{"resourceType": "Goal", "id": "c", "meta": {"security": [{"system": ACT_CODE, "code": "ETH"}]}}],
        goal=[{"reference": "#c"}, {"reference": "Goal/g1"}],
    )
    held = goal(meta={"security": [{"system": ACT_CODE, "code": "PSY"}, {"system": CONFIDENTIALITY, "code": "R"}]})
    record = to_platform(resource, ctx(related=related(held)))
    assert [(label.system, label.code) for label in record.security] == [
        (ACT_CODE, "ETH"),
        (ACT_CODE, "PSY"),
        (CONFIDENTIALITY, "R"),
    ]
    assert deleted_record(record, ctx("2")).security == record.security
    assert to_platform(to_fhir(record, ctx()), ctx()).security == record.security


# --- activities -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("code", "status"), sorted(ACTIVITY_STATUS.items()))
def test_activity_status_is_normalized(code: str, status: str) -> None:
    resource = careplan(activity=[{"detail": {"status": code}}])
    assert to_platform(resource, ctx()).activities[0].status == status


def test_activity_fields() -> None:
    record = to_platform(
        careplan(
            activity=[
                "junk",
                {
                    "progress": [
                        {"text": "Attended 3 of 4 sessions", "time": "2024-03-20T15:00:00Z", "authorString": "Dr B"},
                        {"text": "   "},
                    ],
                    "detail": {
                        "kind": "Appointment",
                        "code": {"coding": [{"system": "http://snomed.info/sct", "code": "304891004"}]},
                        "status": "in-progress",
                        "scheduledPeriod": {"start": "2024-03-05", "end": "2024-05-28"},
                        "description": "Cognitive behavioral therapy",
                        "doNotPerform": False,
                    },
                },
                {"reference": {"reference": "MedicationRequest/sertraline", "display": "Sertraline 50 mg"}},
                {"detail": {"description": "No alcohol", "doNotPerform": True, "status": "bogus"}},
            ]
        ),
        ctx(),
    )
    therapy, medication, avoid = record.activities
    # The index is the position in CarePlan.activity, what a write-back names, even past a malformed entry.
    assert [a.index for a in record.activities] == [1, 2, 3]
    assert therapy.kind == "Appointment"
    assert therapy.code is not None and therapy.code.codings[0].code == "304891004"
    assert therapy.status == "in_progress"
    assert therapy.scheduled == ActivitySchedule(kind="period", start="2024-03-05", end="2024-05-28")
    assert therapy.description == "Cognitive behavioral therapy"
    assert therapy.progress == [
        ProgressNote(
            text="Attended 3 of 4 sessions", time="2024-03-20T15:00:00Z", author=Ref(reference=None, display="Dr B")
        )
    ]
    assert medication.kind == "MedicationRequest"
    assert medication.reference == Ref(reference="MedicationRequest/sertraline", display="Sertraline 50 mg")
    assert medication.status is None, "a referenced activity's status lives in the referenced request"
    assert avoid.do_not_perform is True and avoid.status == "unknown"


DAILY = {"frequency": 1, "period": 1, "periodUnit": "d"}


@pytest.mark.parametrize(
    ("timing", "expected"),
    [
        ({"repeat": DAILY}, "once a day"),
        ({"repeat": DAILY | {"frequency": 2, "when": ["ACM", "HS"]}}, "twice a day before breakfast, at bedtime"),
        ({"repeat": DAILY | {"period": 2, "periodUnit": "wk", "dayOfWeek": ["tue"]}}, "once every 2 weeks on tue"),
        ({"repeat": {"period": 4, "periodMax": 6, "periodUnit": "h"}}, "every 4-6 hours"),
        (
            {"repeat": DAILY | {"periodUnit": "h", "duration": 50, "durationUnit": "min", "count": 12}},
            "once an hour for 50 minutes 12 times in total",
        ),
        ({"repeat": {"timeOfDay": ["08:00:00", "20:30:00"]}}, "at 08:00, 20:30"),
        ({"code": {"coding": [{"code": "BID", "display": "twice a day"}]}, "repeat": {"frequency": 9}}, "twice a day"),
        ({"event": ["2024-04-01", "2024-04-15"]}, "on 2024-04-01, 2024-04-15"),
    ],
)
def test_scheduled_timing_is_summarized_in_words(timing: dict[str, Any], expected: str) -> None:
    resource = careplan(activity=[{"detail": {"status": "scheduled", "scheduledTiming": timing}}])
    scheduled = to_platform(resource, ctx()).activities[0].scheduled
    assert scheduled == ActivitySchedule(kind="timing", text=expected)


def test_scheduled_timing_bounds_become_the_schedule_period() -> None:
    record = to_platform(hl7_example("CarePlan-preg.json"), ctx())
    assert record.activities[1].scheduled == ActivitySchedule(kind="timing", start="2013-02-14", end="2013-02-28")
    assert record.activities[0].reference == Ref(reference=None, display="Prenatal vitamin MedicationRequest")


# --- vendor quirk: Oracle Health (Cerner) narrative descriptions ------------------------------------------------


def cerner_careplan(**elements: Any) -> dict[str, Any]:
    """A CarePlan shaped like Oracle Health's Millennium R4 ones: the description lives only in the narrative."""
    resource = {
        "resourceType": "CarePlan",
        "id": "1234567",
        "meta": {"versionId": "2", "lastUpdated": "2024-03-01T15:04:05.000Z"},
        "text": {
            "status": "additional",
            "div": (
                '<div xmlns="http://www.w3.org/1999/xhtml"><style>p {color: red}</style>'
                "<p><b>Care Plan</b></p><p><b>Title</b>: Depression</p>"
                "<p><b>Description</b>: Weekly CBT &amp; sertraline&#160;review</p>"
                "<script>alert(1)</script><ul><li>Track mood</li><li>PHQ-9 monthly</li></ul></div>"
            ),
        },
        "status": "active",
        "intent": "plan",
        "category": [{"coding": [{"system": US_CORE_CATEGORY, "code": "assess-plan"}]}],
        "subject": {"reference": "Patient/12724066", "display": "SMART, NANCY"},
        "period": {"start": "2024-03-01T15:00:00.000Z"},
    }  # fmt: skip
    return resource | elements


def test_oracle_health_description_comes_from_the_narrative_as_plain_text() -> None:
    record = to_platform(cerner_careplan(), ctx(vendor="oracle-health"))
    assert record.description == (
        "Care Plan\nTitle: Depression\nDescription: Weekly CBT & sertraline review\nTrack mood\nPHQ-9 monthly"
    )
    assert "alert" not in record.description and "color" not in record.description
    assert record.period == Period(start="2024-03-01T15:00:00Z")


def test_narrative_is_only_a_fallback_and_only_for_vendors_that_need_it() -> None:
    given_description = to_platform(cerner_careplan(description="From the EHR"), ctx(vendor="oracle-health"))
    assert given_description.description == "From the EHR"
    # Other EHRs' narrative is a generated summary of the structured fields, not a description.
    assert to_platform(cerner_careplan(), ctx(vendor="generic")).description is None
    assert to_platform(cerner_careplan(text={"div": 7}), ctx(vendor="oracle-health")).description is None


# --- messy and wrong input ------------------------------------------------------------------------------------


def test_messy_optional_elements_never_raise() -> None:
    record = to_platform(
        {
            "resourceType": "CarePlan",
            "id": "odd",
            "status": 5,
            "intent": ["plan"],
            "period": "2024",
            "subject": "Patient/1",
            "goal": ["Goal/1", {"reference": 7}, {"reference": "Goal/1"}],
            "contained": [{"resourceType": "Goal"}, "x"],
            "activity": {"detail": {"status": 3, "scheduledTiming": {"repeat": {"frequency": "two", "period": True}}}},
            "meta": {"security": ["R", {"system": ACT_CODE}]},
        },
        ctx(related={"Goal/1": {"resourceType": "Patient", "id": "1"}}),
    )
    assert (record.status, record.intent, record.period, record.patient) == ("unknown", None, None, None)
    # A related resource that is not a Goal is not read as one.
    assert record.goals == [PlanGoal(id="1", reference=Ref(reference="Goal/1"))]
    assert record.activities == [Activity(index=0)]
    assert record.security == [SecurityLabel(system=None, code="R"), SecurityLabel(system=ACT_CODE, code="")]
    odd_goal = goal_mapper.to_platform(
        {"resourceType": "Goal", "id": "x", "lifecycleStatus": 1, "target": ["x", {"detailQuantity": {"value": "5"}}]},
        ctx(),
    )
    assert (odd_goal.lifecycle_status, odd_goal.targets, odd_goal.description) == ("unknown", [], None)


@pytest.mark.parametrize(
    "resource", [{"resourceType": "Goal", "id": "g"}, {"id": "x"}, [], {"resourceType": "CarePlan", "id": ""}]
)
def test_input_that_is_not_a_careplan_raises_mapping_error(resource: Any) -> None:
    with pytest.raises(MappingError):
        to_platform(resource, ctx())


def test_goal_mapper_refuses_a_careplan() -> None:
    with pytest.raises(MappingError):
        goal_mapper.to_platform(careplan(), ctx())


# --- change events --------------------------------------------------------------------------------------------


def mapped(version: str = "1", related_goals: Mapping[str, Any] | None = None, **elements: Any) -> TreatmentPlan:
    return to_platform(careplan(**elements), ctx(version, related=related_goals or {}))


def test_classify_first_version_is_created_and_a_visible_change_updated() -> None:
    assert classify(None, mapped()) == ["treatment_plan.created"]
    assert classify(mapped(), mapped("2", title="Anxiety plan")) == ["treatment_plan.updated"]
    assert classify(mapped(), mapped("2", activity=[{"detail": {"status": "completed"}}])) == ["treatment_plan.updated"]


def test_classify_completed_wins_over_other_changes() -> None:
    assert classify(mapped(), mapped("2", status="completed", title="Done")) == ["treatment_plan.completed"]
    assert classify(mapped(status="completed"), mapped("2", status="completed", title="x")) == [
        "treatment_plan.updated"
    ]


def test_classify_a_goal_arriving_by_refresh_is_an_update() -> None:
    before = mapped()
    # A refresh maps the same stored version again, now with the Goal held.
    after = mapped(related_goals=related(goal()))
    assert classify(before, after) == ["treatment_plan.updated"]
    achieved = goal(achievementStatus={"coding": [{"system": ACHIEVEMENT, "code": "achieved"}]})
    assert classify(after, mapped(related_goals=related(achieved))) == ["treatment_plan.updated"]
    assert classify(after, mapped(related_goals=related(goal()))) == []


def test_classify_deleted_and_recreated() -> None:
    previous = mapped()
    tombstone = deleted_record(previous, ctx("2"))
    assert tombstone.deleted and tombstone.source.fhir_url == "CarePlan/cp-1/_history/2"
    assert classify(previous, tombstone) == ["treatment_plan.deleted"]
    assert classify(tombstone, tombstone) == []
    assert classify(tombstone, mapped("3")) == ["treatment_plan.created"]
    with pytest.raises(TenantMismatch):
        deleted_record(previous, ctx("2", tenant="clinic-b"))


def test_classify_new_version_with_nothing_visible_changed_is_none() -> None:
    assert classify(mapped(), to_platform(careplan(), ctx("2", ehr_version_id="9"))) == []


def goal_record(version: str = "1", **elements: Any) -> Goal:
    return goal_mapper.to_platform(goal(**elements), ctx(version))


def test_goal_events() -> None:
    achieved = {"coding": [{"system": ACHIEVEMENT, "code": "achieved"}]}
    assert goal_mapper.classify(None, goal_record()) == ["goal.created"]
    assert goal_mapper.classify(goal_record(), goal_record("2", startDate="2024-03-04")) == ["goal.updated"]
    assert goal_mapper.classify(goal_record(), goal_record("2", achievementStatus=achieved)) == ["goal.achieved"]
    assert (
        goal_mapper.classify(goal_record(achievementStatus=achieved), goal_record("2", achievementStatus=achieved))
        == []
    )
    assert goal_mapper.classify(goal_record(), goal_record("2")) == []
    tombstone = deleted_record(goal_record(), ctx("2"))
    assert goal_mapper.classify(goal_record(), tombstone) == ["goal.deleted"]
    assert goal_mapper.classify(tombstone, goal_record("3")) == ["goal.created"]


def test_registry_serves_treatment_plans_and_goals() -> None:
    plan_family, goal_family = MAPPED["CarePlan"], MAPPED["Goal"]
    assert (plan_family.record_type, plan_family.route) == ("treatment_plan", "treatment-plans")
    assert (goal_family.record_type, goal_family.route) == ("goal", "goals")
    assert record_routes()["treatment-plans"] == ("treatment_plan", TreatmentPlan)
    assert record_routes()["goals"] == ("goal", Goal)
    record = plan_family.to_platform(careplan(period={"start": "1970-01-02"}), ctx())
    assert plan_family.index_fields(record) == {"patient": "Patient/p1", "sort": 86400.0, "status": "active"}
    assert plan_family.needs(careplan()) == ["Goal/g1"]
    assert plan_family.model.model_validate_json(record.model_dump_json()) == record
    group = plan_family.to_platform(careplan(subject={"reference": "Group/g"}), ctx())
    assert plan_family.index_fields(group)["patient"] is None


# --- write-back ---------------------------------------------------------------------------------------------------


def test_to_fhir_writes_the_plan_back_as_a_careplan() -> None:
    record = to_platform(hl7_example("CarePlan-example.json"), ctx())
    resource = to_fhir(record, ctx())
    assert resource["resourceType"] == "CarePlan" and resource["id"] == "example"
    assert (resource["status"], resource["intent"]) == ("active", "plan")
    assert resource["subject"] == {"reference": "Patient/example", "display": "Peter James Chalmers"}
    assert resource["goal"] == [{"reference": "Goal/example"}]
    assert resource["identifier"] == [{"value": "12345"}]
    assert resource["activity"][0]["detail"]["status"] == "completed"
    assert resource["activity"][0]["detail"]["code"]["coding"][0] == {
        "system": "http://loinc.org",
        "code": "3141-9",
        "display": "Weight Measured",
    }
    # What the plan did not carry is not invented on the way back: only the unmapped list differs.
    assert to_platform(resource, ctx()) == record.model_copy(update={"unmapped": []})
    with pytest.raises(TenantMismatch):
        to_fhir(record, ctx(tenant="clinic-b"))


def test_to_fhir_writes_resolved_goals_as_their_references() -> None:
    record = to_platform(careplan(), ctx(related=related(goal())))
    resource = to_fhir(record, ctx())
    assert resource["goal"] == [{"reference": "Goal/g1", "display": "PHQ-9 below 5"}]
    assert to_platform(resource, ctx(related=related(goal()))) == record


def with_activity_status(stored: dict[str, Any], index: Any, status: Any) -> dict[str, Any]:
    """Change a stored CarePlan's activity status as the write-back does: on its R4B model, then exported."""
    return fhir_models.written(stored, fhir_models.CarePlan, lambda typed: set_activity_status(typed, index, status))


def test_with_activity_status_changes_only_that_activity() -> None:
    stored = hl7_example("CarePlan-gpvisit.json")
    before = copy.deepcopy(stored)
    updated = with_activity_status(stored, 1, "in-progress")
    assert stored == before, "the stored resource is not modified"
    # Compared with the stored plan as its model exports it (which writes a +00:00 offset as Z).
    original = fhir_models.written(stored, fhir_models.CarePlan)
    assert original["period"] == {"start": "2013-01-01T10:30:00Z"} != stored["period"]
    assert updated["activity"][1]["detail"]["status"] == "in-progress"
    assert updated["activity"][0] == original["activity"][0]
    assert {k: v for k, v in updated.items() if k != "activity"} == {
        k: v for k, v in original.items() if k != "activity"
    }
    record = to_platform(updated, ctx())
    assert [a.status for a in record.activities] == ["completed", "in_progress"]
    # The platform's own spelling of a status is accepted too.
    assert with_activity_status(stored, 1, "on_hold")["activity"][1]["detail"]["status"] == "on-hold"


def test_with_activity_status_drops_a_reason_that_explained_the_old_status() -> None:
    stored = hl7_example("CarePlan-example.json")
    assert "statusReason" in stored["activity"][0]["detail"]
    assert "statusReason" not in with_activity_status(stored, 0, "in-progress")["activity"][0]["detail"]
    assert "statusReason" in with_activity_status(stored, 0, "completed")["activity"][0]["detail"]


@pytest.mark.parametrize(
    ("index", "status", "message"),
    [
        (0, "done", "not an R4 CarePlan activity status"),
        (0, "In-Progress", "not an R4 CarePlan activity status"),
        (0, None, "not an R4 CarePlan activity status"),
        (5, "completed", "has no activity 5"),
        (-1, "completed", "has no activity -1"),
        (True, "completed", "has no activity True"),
        (1, "completed", "has no detail"),
    ],
)
def test_with_activity_status_refuses_what_it_cannot_apply(index: Any, status: Any, message: str) -> None:
    resource = careplan(activity=[{"detail": {"status": "scheduled"}}, {"reference": {"reference": "Task/t1"}}])
    with pytest.raises(ValueError, match=message):
        with_activity_status(resource, index, status)


# --- properties -----------------------------------------------------------------------------------------------

_chars = st.characters(codec="utf-8", exclude_categories=("Cs", "Cc"))
words = st.text(_chars, min_size=1, max_size=12).filter(lambda s: s.strip() != "")
fhir_ids = st.from_regex(r"[A-Za-z0-9\-.]{1,20}", fullmatch=True)
dates = st.dates().map(lambda d: d.isoformat()) | st.from_regex(r"(19|20)[0-9]{2}(-(0[1-9]|1[0-2]))?", fullmatch=True)
date_times = st.datetimes(timezones=st.just(UTC)).map(lambda d: d.replace(microsecond=0).isoformat()[:19] + "Z")
moments = dates | date_times


def opt(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


codings = st.builds(Coding, system=opt(words), code=opt(words), display=opt(words)).filter(
    lambda c: bool(c.system or c.code or c.display)
)
codeable = st.builds(CodeableText, text=opt(words), codings=st.lists(codings, max_size=2)).filter(
    lambda c: bool(c.text or c.codings)
)
literal_refs = st.builds(lambda t, i: f"{t}/{i}", st.sampled_from(["Patient", "MedicationRequest", "Task"]), fhir_ids)
refs = st.builds(Ref, reference=opt(words | literal_refs), display=opt(words)).filter(
    lambda r: bool(r.reference or r.display)
)
labels = st.lists(
    st.builds(SecurityLabel, system=opt(words), code=st.just("") | words, display=opt(words)),
    max_size=4,
    unique_by=lambda label: (label.system, label.code),
).map(lambda found: merge_labels([found]))
periods = st.builds(Period, start=opt(moments), end=opt(moments)).filter(lambda p: bool(p.start or p.end))
schedules = st.one_of(
    st.builds(ActivitySchedule, kind=st.just("string"), text=words),
    st.builds(ActivitySchedule, kind=st.just("period"), start=opt(moments), end=opt(moments)),
    st.builds(ActivitySchedule, kind=st.just("timing"), text=opt(words), start=opt(moments), end=opt(moments)),
).filter(lambda s: bool(s.text or s.start or s.end))
notes = st.builds(ProgressNote, text=words, time=opt(moments), author=opt(refs))
_TYPED = re.compile(r"^([A-Z][A-Za-z]+)/")


@st.composite
def activities(draw: st.DrawFn) -> list[Activity]:
    found: list[Activity] = []
    for index in range(draw(st.integers(0, 3))):
        reference = draw(opt(refs))
        typed = _TYPED.match(reference.reference or "") if reference else None
        # A reference says its kind; an activity may still name another (detail.kind), never none at all.
        kind = draw(st.sampled_from([typed.group(1)]) | words) if typed else draw(opt(words))
        found.append(
            Activity(
                index=index,
                kind=kind,
                reference=reference,
                code=draw(opt(codeable)),
                status=draw(opt(st.sampled_from(sorted(ACTIVITY_STATUS.values())))),
                do_not_perform=draw(st.booleans()),
                scheduled=draw(opt(schedules)),
                description=draw(opt(words)),
                progress=draw(st.lists(notes, max_size=2)),
            )
        )
    return found


@st.composite
def plan_goals(draw: st.DrawFn) -> PlanGoal:
    gid = draw(fhir_ids)
    reference, goal_id = draw(
        st.sampled_from(
            [(f"Goal/{gid}", gid), (f"https://ehr.example/fhir/Goal/{gid}", gid), (f"#{gid}", None), (None, None)]
        )
    )
    display = draw(words) if reference is None else draw(opt(words))
    return PlanGoal(id=goal_id, reference=Ref(reference=reference, display=display))


@st.composite
def treatment_plans(draw: st.DrawFn) -> TreatmentPlan:
    plan_id = draw(fhir_ids)
    found_identifiers = draw(
        st.lists(
            st.builds(Identifier, system=opt(words), value=opt(words), use=opt(words)).filter(
                lambda i: bool(i.system or i.value)
            ),
            max_size=2,
        )
    )
    return TreatmentPlan(
        id=plan_id,
        status=draw(st.sampled_from(["draft", "active", "on_hold", "revoked", "completed", "void", "unknown"])),
        intent=draw(opt(st.sampled_from(["proposal", "plan", "order", "option"]))),
        category=draw(st.lists(codeable, max_size=2)),
        title=draw(opt(words)),
        description=draw(opt(words)),
        period=draw(opt(periods)),
        patient=draw(opt(refs)),
        addresses=draw(st.lists(refs, max_size=2)),
        care_team=draw(st.lists(refs, max_size=2)),
        goals=draw(st.lists(plan_goals(), max_size=3)),
        activities=draw(activities()),
        security=draw(labels),
        source=ctx().source("CarePlan", plan_id, found_identifiers),
    )


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(treatment_plans())
def test_platform_to_fhir_to_platform_gives_back_the_same_plan(plan: TreatmentPlan) -> None:
    assert to_platform(to_fhir(plan, ctx()), ctx()) == plan


label_codings = st.fixed_dictionaries(
    {"code": st.sampled_from(["R", "V", "N", "ETH", "SUD", "PSY", "PSYTHPN", "42CFRPart2", "HIV", " "])},
    optional={
        "system": st.sampled_from([CONFIDENTIALITY, ACT_CODE, "urn:local"]),
        "display": words,
    },
)
raw_labels = st.lists(label_codings | st.sampled_from(["R", "PSY"]), max_size=3)


def label_keys(raw: list[Any]) -> set[tuple[str | None, str]]:
    keys = set()
    for label in raw:
        if isinstance(label, str):
            keys.add((None, label))
        else:
            keys.add((label.get("system"), label["code"].strip() and label["code"]))
    return keys


@settings(max_examples=200, deadline=None)
@given(
    plan_labels=raw_labels,
    contained_labels=raw_labels,
    held_labels=st.lists(raw_labels, min_size=0, max_size=3),
    vendor=st.sampled_from(["generic", "epic", "oracle-health", "athenahealth"]),
)
def test_fhir_to_platform_never_drops_a_security_label(
    plan_labels: list[Any], contained_labels: list[Any], held_labels: list[list[Any]], vendor: str
) -> None:
    held = [goal(id=f"g{i}", meta={"security": found}) for i, found in enumerate(held_labels)]
    resource = careplan(
        meta={"security": plan_labels},
        contained=[{"resourceType": "Goal", "id": "c1", "meta": {"security": contained_labels}}],
        goal=[{"reference": "#c1"}] + [{"reference": f"Goal/{g['id']}"} for g in held],
    )
    record = to_platform(resource, ctx(vendor=vendor, related=related(*held)))
    expected = label_keys(plan_labels) | label_keys(contained_labels)
    for found in held_labels:
        expected |= label_keys(found)
    kept = {(label.system, label.code) for label in record.security}
    assert kept == expected
    assert {(label.system, label.code) for label in to_platform(to_fhir(record, ctx()), ctx()).security} == kept
    for each in held:
        assert label_keys(each["meta"]["security"]) <= {
            (label.system, label.code) for label in goal_mapper.to_platform(each, ctx()).security
        }


# --- the corpus -----------------------------------------------------------------------------------------------


def _as_stored(resource: dict[str, Any], bundle: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Return the CarePlan as the gateway stores it from its Bundle (urn:uuid goal references rewritten) and the
    Goals it would hold for it."""
    if bundle is None:
        return resource, {}
    aliases: dict[str, str] = {}
    held: dict[str, Any] = {}
    for entry in bundle.get("entry", []):
        found = entry.get("resource", {}) if isinstance(entry, dict) else {}
        if found.get("resourceType") == "Goal" and isinstance(found.get("id"), str):
            aliases[entry.get("fullUrl", "")] = f"Goal/{found['id']}"
            held[f"Goal/{found['id']}"] = found
    stored = copy.deepcopy(resource)
    for reference in stored.get("goal", []):
        reference["reference"] = aliases.get(reference.get("reference"), reference.get("reference"))
    return stored, held


CORPUS_RESOURCES = corpus_params("CarePlan", "Goal", with_id=True, with_bundle=True)


def test_the_corpus_has_the_careplans_and_goals_it_promises() -> None:
    if not CORPUS.is_dir():
        pytest.skip(f"no FHIR corpus at {CORPUS}")
    types = [p.values[0]["resourceType"] for p in CORPUS_RESOURCES]
    assert types.count("CarePlan") >= 11 + 63 + 2
    assert types.count("Goal") >= 31


@pytest.mark.corpus
@pytest.mark.parametrize(("resource", "bundle"), CORPUS_RESOURCES)
def test_every_corpus_careplan_and_goal_maps(resource: dict[str, Any], bundle: Mapping[str, Any] | None) -> None:
    original = copy.deepcopy(resource)
    if resource["resourceType"] == "Goal":
        found = goal_mapper.to_platform(resource, ctx())
        assert resource == original, "the mapper must not modify its input"
        assert found.description is not None and found.lifecycle_status != "unknown"
        assert Goal.model_validate_json(found.model_dump_json()) == found
        assert goal_mapper.classify(None, found) == ["goal.created"]
        return
    stored, held = _as_stored(resource, bundle)
    record = to_platform(stored, ctx(related=held))
    assert resource == original, "the mapper must not modify its input"
    assert record.id == resource["id"] and record.status != "unknown"
    assert TreatmentPlan.model_validate_json(record.model_dump_json()) == record
    assert classify(None, record) == ["treatment_plan.created"]
    assert classify(record, to_platform(stored, ctx("2", related=held))) == []
    # Every goal the plan carries or shares a Bundle with is read; only goals held elsewhere stay references.
    local = {f"#{c['id']}" for c in resource.get("contained", []) if c.get("resourceType") == "Goal"} | set(held)
    for plan_goal in record.goals:
        assert plan_goal.resolved == (plan_goal.reference.reference in local)
        assert not plan_goal.resolved or plan_goal.description is not None
    written = to_fhir(record, ctx())
    assert [g.reference for g in to_platform(written, ctx()).goals] == [g.reference for g in record.goals]
    assert to_platform(written, ctx()).activities == record.activities
    for activity in record.activities:
        if activity.status is not None:
            changed = to_platform(with_activity_status(stored, activity.index, "stopped"), ctx(related=held))
            assert [a.status for a in changed.activities if a.index == activity.index] == ["stopped"]
