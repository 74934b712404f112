"""Surveys through the gateway: a PHQ-9 response that arrives before its Questionnaire is scored when it comes."""

from __future__ import annotations

from typing import Any

from tests.conftest import Gateway

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
