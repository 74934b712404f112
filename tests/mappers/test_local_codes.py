"""Local codes read as LOINC: an Epic-style flowsheet-coded PHQ-9 scores and flags through the tenant's map, and
LOINC spelled as its OID is LOINC everywhere.

Epic codes a flowsheet row as ``urn:oid:1.2.840.114350.1.13.<customer>.<environment>.7.2.707679|<row id>``; row
ids differ per customer, so they live in the tenant's map. The rows below are made up; the LOINC codes are PHQ-9's.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from mappers import context
from mappers.codes import LocalCodes
from mappers.instruments import ANSWER_FOR_SCORE, LOINC_OID, PHQ9
from mappers.survey import to_platform as survey_to_platform
from mappers.survey_response import classify, to_platform
from mappers.vendors import profile
from tests.mappers.conftest import ctx
from tests.mappers.test_survey_response import CANONICAL, held, response

FLOWSHEET = "urn:oid:1.2.840.114350.1.13.0.1.7.2.707679"
ROWS = [f"1570{n:03d}" for n in range(1, 10)]
PANEL_ROW = "1570000"
# The clinic's flowsheet answers: its own codes for "Not at all" ... "Nearly every day".
ANSWERS = "urn:oid:1.2.840.114350.1.13.0.1.7.4.698288.1570"
POINTS = [2, 2, 1, 1, 0, 0, 1, 1, 2]  # item 9 "More than half the days"

TENANT_CODES = LocalCodes(
    loinc={
        f"{FLOWSHEET}|{PANEL_ROW}": "44249-1",
        **{f"{FLOWSHEET}|{row}": code for row, code in zip(ROWS, PHQ9.item_codes, strict=True)},
        **{f"{ANSWERS}|{points}": ANSWER_FOR_SCORE[points] for points in range(4)},
    }
)


def flowsheet_form() -> dict[str, Any]:
    """Return a PHQ-9 whose panel, questions and answers carry only the clinic's flowsheet codes."""
    options = [{"valueCoding": {"system": ANSWERS, "code": str(points)}} for points in range(4)]
    return {
        "resourceType": "Questionnaire",
        "id": "flowsheet-phq9",
        "url": CANONICAL,
        "status": "active",
        "code": [{"system": FLOWSHEET, "code": PANEL_ROW, "display": "PHQ-9"}],
        "item": [
            {
                "linkId": f"row-{row}",
                "type": "choice",
                "code": [{"system": FLOWSHEET, "code": row}],
                "answerOption": options,
            }
            for row in ROWS
        ],
    }


def flowsheet_answers() -> dict[str, Any]:
    return response(
        [
            (f"row-{row}", {"valueCoding": {"system": ANSWERS, "code": str(p)}})
            for row, p in zip(ROWS, POINTS, strict=True)
        ]
    )


def test_a_flowsheet_coded_phq9_scores_and_flags_through_the_tenants_map() -> None:
    record = to_platform(flowsheet_answers(), ctx(related=held(flowsheet_form()), local_codes=TENANT_CODES))
    assert (record.instrument, record.total_score, record.severity) == ("phq-9", 10, "moderate")
    assert (record.risk_flags, record.score_reason) == (["self_harm"], None)
    assert classify(None, record) == ["survey_response.completed", "risk.flagged"]
    # The answers keep what the patient chose, in the EHR's codes; the item is named by its LOINC code.
    assert record.answers[8].value.model_dump() == {"system": ANSWERS, "code": "2", "display": None}  # type: ignore[union-attr]
    assert record.answers[8].item_code is not None and record.answers[8].item_code.code == PHQ9.item_codes[8]
    survey = survey_to_platform(flowsheet_form(), ctx(local_codes=TENANT_CODES))
    assert (survey.instrument, survey.items[0].code.code if survey.items[0].code else None) == ("phq-9", "44250-9")


def test_without_the_map_the_same_form_is_neither_scored_nor_silently_dropped() -> None:
    record = to_platform(flowsheet_answers(), ctx(related=held(flowsheet_form())))
    assert (record.instrument, record.total_score, record.risk_flags) == (None, None, [])
    assert record.score_reason == "not_an_instrument"
    assert len(record.answers) == 9


def test_a_panel_code_alone_in_the_map_lets_position_do_the_rest() -> None:
    panel_only = LocalCodes(loinc={k: v for k, v in TENANT_CODES.loinc.items() if v in ("44249-1",) or "698288" in k})
    questionnaire = flowsheet_form()
    for item in questionnaire["item"]:
        del item["code"]
    record = to_platform(flowsheet_answers(), ctx(related=held(questionnaire), local_codes=panel_only))
    assert (record.total_score, record.risk_flags) == (10, ["self_harm"])


def test_loinc_spelled_as_its_oid_is_loinc_without_any_map() -> None:
    questionnaire = flowsheet_form()
    questionnaire["code"] = [{"system": LOINC_OID, "code": "44249-1"}]
    for item, code in zip(questionnaire["item"], PHQ9.item_codes, strict=True):
        item["code"] = [{"system": LOINC_OID, "code": code}]
        item["answerOption"] = [{"valueCoding": {"system": LOINC_OID, "code": ANSWER_FOR_SCORE[n]}} for n in range(4)]
    resource = response(
        [
            (f"row-{row}", {"valueCoding": {"system": LOINC_OID, "code": ANSWER_FOR_SCORE[p]}})
            for row, p in zip(ROWS, POINTS, strict=True)
        ]
    )
    record = to_platform(resource, ctx(related=held(questionnaire)))
    assert (record.instrument, record.total_score, record.risk_flags) == ("phq-9", 10, ["self_harm"])


def test_response_items_coded_locally_score_without_their_questionnaire() -> None:
    resource = flowsheet_answers() | {"questionnaire": None}
    for item, row in zip(resource["item"], ROWS, strict=True):
        item["code"] = [{"system": FLOWSHEET, "code": row}]
    record = to_platform(resource, ctx(local_codes=TENANT_CODES))
    assert (record.instrument, record.total_score, record.risk_flags) == ("phq-9", 10, ["self_harm"])


def test_the_tenants_codes_win_over_its_vendors(monkeypatch: pytest.MonkeyPatch) -> None:
    vendor = LocalCodes(loinc_systems=frozenset({"LN"}), loinc={"urn:x|1": "44250-9", "urn:x|2": "44255-8"})
    epic = profile("epic")
    monkeypatch.setattr(context, "profile", lambda name: type(epic)(**{**vars(epic), "local_codes": vendor}))
    mapping = ctx(vendor="epic", local_codes=LocalCodes(loinc={"urn:x|2": "44259-0"}))
    codes = mapping.codes()
    assert (codes.loinc["urn:x|1"], codes.loinc["urn:x|2"], codes.loinc_systems) == ("44250-9", "44259-0", {"LN"})


def test_every_vendor_profiles_local_codes_are_valid() -> None:
    for name in ("generic", "epic", "oracle-health", "athenahealth"):
        assert isinstance(profile(name).local_codes, LocalCodes)


@pytest.mark.parametrize(
    "config",
    [
        {"loinc": {"no-bar": "44250-9"}},
        {"loinc": {"urn:x|1": "not-loinc"}},
        {"items": {CANONICAL: {"q1": "phq9-item-1"}}},
        {"unknown": {}},
    ],
)
def test_a_map_that_is_not_local_codes_to_loinc_is_refused(config: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        LocalCodes.model_validate(config)
