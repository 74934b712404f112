"""Surveys through the gateway: a PHQ-9 response that arrives before its Questionnaire is scored when it comes;
forms coded only at the panel, coded with a clinic's flowsheet rows, or holding two instruments."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from gateway.settings import ClientsConfig
from tests.conftest import CLIENTS, EHR_B, PLATFORM_B, Gateway

LOINC = "http://loinc.org"
CANONICAL = "https://forms.clinic-a.example/Questionnaire/phq9|3"
# The nine PHQ-9 questions by LOINC code, with the clinic's own linkIds (which say nothing about the codes).
PHQ9 = ["44250-9", "44255-8", "44259-0", "44254-1", "44251-7", "44258-2", "44252-5", "44253-3", "44260-8"]
ANSWER = {0: "LA6568-5", 1: "LA6569-3", 2: "LA6570-1", 3: "LA6571-9"}


def questionnaire() -> dict[str, Any]:
    url, _, version = CANONICAL.partition("|")
    return {
        "resourceType": "Questionnaire",
        "id": "phq9-clinic",
        "url": url,
        "version": version,
        "status": "active",
        "title": "Mood check-in",
        "item": [
            {"linkId": f"q{n}", "type": "choice", "required": True, "code": [{"system": LOINC, "code": code}]}
            for n, code in enumerate(PHQ9, start=1)
        ],
    }


def response(rid: str, scores: list[int], **elements: Any) -> dict[str, Any]:
    return {
        "resourceType": "QuestionnaireResponse",
        "id": rid,
        "questionnaire": CANONICAL,
        "status": "completed",
        "subject": {"reference": "Patient/pat-1"},
        "authored": "2026-03-02T15:04:05-05:00",
        "item": [
            {"linkId": f"q{n}", "answer": [{"valueCoding": {"system": LOINC, "code": ANSWER[score]}}]}
            for n, score in enumerate(scores, start=1)
        ],
        **elements,
    }


async def _events(gateway: Gateway) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = (await gateway.platform("/changes")).json()["events"]
    return events


async def test_a_response_before_its_questionnaire_is_scored_and_flagged_when_the_questionnaire_arrives(
    gateway: Gateway,
) -> None:
    # Item 9 answered "Several days", everything else "Not at all": a total of 1, and a self-harm flag.
    put = await gateway.ehr("PUT", "/QuestionnaireResponse/qr-late", json=response("qr-late", [0] * 8 + [1]))
    assert put.status_code in (200, 201), put.text
    await gateway.drain()
    early = (await gateway.platform("/survey-responses/qr-late")).json()
    assert (early["total_score"], early["instrument"], early["risk_flags"]) == (None, None, [])
    assert early["score_reason"] == "questionnaire_not_found"
    assert [e["type"] for e in await _events(gateway)] == ["survey_response.completed"]

    put = await gateway.ehr("PUT", "/Questionnaire/phq9-clinic", json=questionnaire())
    assert put.status_code in (200, 201), put.text
    await gateway.drain()

    survey = (await gateway.platform("/surveys/phq9-clinic")).json()
    assert (survey["instrument"], survey["status"], survey["title"]) == ("phq-9", "active", "Mood check-in")
    assert [i["code"]["code"] for i in survey["items"]] == PHQ9
    scored = (await gateway.platform("/survey-responses/qr-late")).json()
    assert scored["instrument"] == "phq-9"
    assert (scored["total_score"], scored["severity"], scored["score_reason"]) == (1, "minimal", None)
    assert scored["risk_flags"] == ["self_harm"]
    assert scored["survey_id"] == "phq9-clinic"
    assert scored["patient"]["reference"] == "Patient/pat-1"
    assert scored["authored_at"] == "2026-03-02T20:04:05Z"

    events = await _events(gateway)
    assert [(e["type"], e["record_id"]) for e in events] == [
        ("survey_response.completed", "qr-late"),
        ("survey.published", "phq9-clinic"),
        ("survey_response.updated", "qr-late"),
        ("risk.flagged", "qr-late"),
    ]
    assert events[-1]["record"]["risk_flags"] == ["self_harm"]
    assert events[-1]["record"]["total_score"] == 1


async def test_a_response_after_its_questionnaire_is_scored_at_once_and_flagged_once(gateway: Gateway) -> None:
    await gateway.ehr("PUT", "/Questionnaire/phq9-clinic", json=questionnaire())
    await gateway.drain()
    await gateway.ehr("PUT", "/QuestionnaireResponse/qr-now", json=response("qr-now", [3, 3, 2, 2, 2, 1, 1, 1, 2]))
    await gateway.drain()
    record = (await gateway.platform("/survey-responses/qr-now")).json()
    assert (record["total_score"], record["severity"], record["risk_flags"]) == (17, "moderately_severe", ["self_harm"])

    # The clinician corrects item 1: the answers changed on a completed response, an amendment; no new flag.
    amended = response("qr-now", [2, 3, 2, 2, 2, 1, 1, 1, 2], status="amended")
    await gateway.ehr("PUT", "/QuestionnaireResponse/qr-now", json=amended)
    await gateway.drain()
    await gateway.ehr("DELETE", "/QuestionnaireResponse/qr-now")
    await gateway.drain()
    events = [(e["type"], e["record_id"]) for e in await _events(gateway)]
    assert events == [
        ("survey.published", "phq9-clinic"),
        ("survey_response.completed", "qr-now"),
        ("risk.flagged", "qr-now"),
        ("survey_response.amended", "qr-now"),
        ("survey_response.deleted", "qr-now"),
    ]
    tombstone = (await gateway.platform("/survey-responses/qr-now")).json()
    assert tombstone["deleted"] is True
    assert tombstone["total_score"] == 16


# --- instruments however forms code them (issue #14 items 7-9) --------------------------------------------------

FLOWSHEET = "urn:oid:1.2.840.114350.1.13.0.1.7.2.707679"
GAD7 = ["69725-0", "68509-9", "69733-4", "69734-2", "69735-9", "69689-8", "69736-7"]
LIST = [{"valueCoding": {"system": LOINC, "code": code}} for code in ANSWER.values()]


@pytest.fixture
def clients() -> ClientsConfig:
    """Clinic-a reads its flowsheet rows q1..q9 as PHQ-9's questions (its ``local_codes``)."""
    config = copy.deepcopy(CLIENTS)
    rows = {f"{FLOWSHEET}|row-{n}": code for n, code in enumerate(PHQ9, start=1)}
    config["tenants"]["clinic-a"]["local_codes"] = {"loinc": rows}
    return ClientsConfig.model_validate(config)


def panel_form(fid: str, questions: int, **elements: Any) -> dict[str, Any]:
    """Return a PHQ-9 coded only at the panel: uncoded questions q1, q2... offering LOINC's answer list."""
    items = [{"linkId": f"q{n}", "type": "choice", "answerOption": LIST} for n in range(1, questions + 1)]
    url = f"https://forms.clinic-a.example/Questionnaire/{fid}"
    return {"resourceType": "Questionnaire", "id": fid, "url": url, "status": "active",
            "code": [{"system": LOINC, "code": "44249-1"}], "item": items, **elements}  # fmt: skip


def answers_to(form: dict[str, Any], rid: str, scores: list[int], prefix: str = "q") -> dict[str, Any]:
    items = [
        {"linkId": f"{prefix}{n}", "answer": [{"valueCoding": {"system": LOINC, "code": ANSWER[score]}}]}
        for n, score in enumerate(scores, start=1)
    ]
    return response(rid, []) | {"questionnaire": form["url"], "item": items}


async def _put_all(gateway: Gateway, *resources: dict[str, Any]) -> None:
    for resource in resources:
        put = await gateway.ehr("PUT", f"/{resource['resourceType']}/{resource['id']}", json=resource)
        assert put.status_code in (200, 201), put.text
    await gateway.drain()


async def test_a_phq9_coded_only_at_the_panel_is_scored_and_flagged(gateway: Gateway) -> None:
    form = panel_form("phq9-panel", 9)
    await _put_all(gateway, form)  # mapped first: a response's risk lane is read before the form's lane
    await _put_all(gateway, answers_to(form, "qr-panel", [0, 1, 0, 0, 1, 0, 0, 0, 3]))
    record = (await gateway.platform("/survey-responses/qr-panel")).json()
    assert (record["instrument"], record["total_score"], record["score_reason"]) == ("phq-9", 5, None)
    assert record["risk_flags"] == ["self_harm"]
    events = [(e["type"], e["record_id"]) for e in await _events(gateway)]
    assert events == [
        ("survey.published", "phq9-panel"),
        ("survey_response.completed", "qr-panel"),
        ("risk.flagged", "qr-panel"),
    ]


async def test_a_panel_whose_questions_cannot_be_recognized_raises_risk_unscored(gateway: Gateway) -> None:
    # Ten questions where PHQ-9 has nine: which is item 9 is not for the gateway to guess.
    form = panel_form("phq9-ten", 10)
    await _put_all(gateway, form)  # mapped first: a response's risk lane is read before the form's lane
    await _put_all(gateway, answers_to(form, "qr-ten", [0] * 8 + [3, 0]))
    record = (await gateway.platform("/survey-responses/qr-ten")).json()
    assert (record["instrument"], record["total_score"], record["score_reason"]) == (
        "phq-9",
        None,
        "unrecognized_items",
    )
    events = await _events(gateway)
    assert [(e["type"], e["record_id"]) for e in events] == [
        ("survey.published", "phq9-ten"),
        ("survey_response.completed", "qr-ten"),
        ("risk.unscored", "qr-ten"),
    ]
    assert events[-1]["record"]["scores"][0]["score_reason"] == "unrecognized_items"
    filtered = (await gateway.platform("/changes", params={"types": "risk.*"})).json()["events"]
    assert [e["type"] for e in filtered] == ["risk.unscored"]


async def test_a_flowsheet_coded_form_scores_through_the_tenants_local_codes(gateway: Gateway) -> None:
    form = questionnaire() | {"id": "phq9-flowsheet", "url": "https://forms.clinic-a.example/Questionnaire/flow"}
    for n, item in enumerate(form["item"], start=1):
        item["code"] = [{"system": FLOWSHEET, "code": f"row-{n}"}]
    answered = answers_to(form, "qr-flow", [1] * 8 + [2])
    await _put_all(gateway, form)  # mapped first: a response's risk lane is read before the form's lane
    await _put_all(gateway, answered)
    record = (await gateway.platform("/survey-responses/qr-flow")).json()
    assert (record["total_score"], record["severity"], record["risk_flags"]) == (10, "moderate", ["self_harm"])
    # Another tenant without the map: the same form is no instrument to it.
    for resource in (form, answered):
        await gateway.ehr("PUT", f"/{resource['resourceType']}/{resource['id']}", token=EHR_B, json=resource)
    await gateway.drain()
    other = (await gateway.platform("/survey-responses/qr-flow", token=PLATFORM_B)).json()
    assert (other["instrument"], other["risk_flags"]) == (None, [])


async def test_a_phq9_and_a_gad7_in_one_response_each_get_a_score(gateway: Gateway) -> None:
    items = [
        {"linkId": f"{prefix}{n}", "type": "choice", "code": [{"system": LOINC, "code": code}]}
        for prefix, codes in (("p", PHQ9), ("g", GAD7))
        for n, code in enumerate(codes, start=1)
    ]
    form = questionnaire() | {
        "id": "intake",
        "url": "https://forms.clinic-a.example/Questionnaire/intake",
        "item": items,
    }
    answered = answers_to(form, "qr-intake", [0] * 8 + [1], prefix="p")
    answered["item"] += answers_to(form, "qr-intake", [2] * 7, prefix="g")["item"]
    await _put_all(gateway, form)  # mapped first: a response's risk lane is read before the form's lane
    await _put_all(gateway, answered)
    record = (await gateway.platform("/survey-responses/qr-intake")).json()
    assert [(s["instrument"], s["total_score"], s["severity"]) for s in record["scores"]] == [
        ("phq-9", 1, "minimal"),
        ("gad-7", 14, "moderate"),
    ]
    assert (record["instrument"], record["total_score"], record["risk_flags"]) == ("phq-9", 1, ["self_harm"])
    survey = (await gateway.platform("/surveys/intake")).json()
    assert survey["instruments"] == ["phq-9", "gad-7"]
    events = [(e["type"], e["record_id"]) for e in await _events(gateway)]
    assert events[-2:] == [("survey_response.completed", "qr-intake"), ("risk.flagged", "qr-intake")]
