"""The Questionnaire mapper as the platform sees it: items, answer weights, instruments, labels and events."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from mappers.errors import MappingError
from mappers.family import tombstone as deleted_record
from mappers.instruments import GAD7, PHQ2, PHQ9, Instrument
from mappers.model import Coding, SecurityLabel
from mappers.registry import MAPPED
from mappers.survey import Survey, classify, to_platform
from tests.conftest import corpus_dir
from tests.mappers.conftest import corpus_file, corpus_params, ctx

LOINC = "http://loinc.org"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"


def questionnaire(**elements: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Questionnaire",
        "id": "q1",
        "url": "https://forms.example/Questionnaire/intake",
        "version": "2",
        "status": "draft",
        "title": "Intake",
        "item": [{"linkId": "name", "type": "string", "text": "Your name", "required": True}],
    }
    return resource | elements


def coded_items(instrument: Instrument, link_ids: list[str]) -> list[dict[str, Any]]:
    return [
        {"linkId": link_id, "type": "choice", "code": [{"system": LOINC, "code": code}]}
        for link_id, code in zip(link_ids, instrument.item_codes, strict=True)
    ]


def test_us_core_phq9_is_recognized_with_weighted_options() -> None:
    record = to_platform(corpus_file("us-core-examples/Questionnaire-phq-9-example.json"), ctx())
    assert (record.instrument, record.status, record.title) == ("phq-9", "active", "PHQ-9 Example")
    assert record.url == "http://hl7.org/fhir/us/core/Questionnaire/phq-9-example"
    assert [i.code.code for i in record.items if i.code][:9] == list(PHQ9.item_codes)
    first = record.items[0]
    assert (first.link_id, first.type, first.required, first.repeats) == ("/44250-9", "choice", True, False)
    assert [(o.value.code, o.weight) for o in first.answer_options if isinstance(o.value, Coding)] == [
        ("LA6568-5", 0),
        ("LA6569-3", 1),
        ("LA6570-1", 2),
        ("LA6571-9", 3),
    ]
    total = next(i for i in record.items if i.code and i.code.code == "44261-6")
    assert (total.type, total.required, total.answer_options) == ("decimal", False, [])


@pytest.mark.parametrize(
    "relative",
    [
        "hl7-r4-spec-examples/Questionnaire-phq-9-questionnaire.json",
        "lforms-fhir-app-r4/phq9.json",
        "sdc-ig-examples/Questionnaire-questionnaire-sdc-profile-example-cqf-PHQ9.json",
    ],
)
def test_every_coded_phq9_of_the_corpus_is_a_phq9(relative: str) -> None:
    assert to_platform(corpus_file(relative), ctx()).instrument == "phq-9"


def test_recognition_is_by_loinc_code_never_by_wording_or_link_ids() -> None:
    # SDC's example asks the nine questions without codes; only its total item's LOINC code names it.
    sdc = corpus_file("sdc-ig-examples/Questionnaire-questionnaire-sdc-profile-example-PHQ9.json")
    assert to_platform(sdc, ctx()).instrument == "phq-9"
    uncoded = copy.deepcopy(sdc)
    uncoded["item"][0]["item"][-1].pop("code")
    assert to_platform(uncoded, ctx()).instrument is None
    named_by_link_id = questionnaire(item=[{"linkId": code, "type": "choice"} for code in PHQ9.item_codes])
    assert to_platform(named_by_link_id, ctx()).instrument is None


# Any FHIR string can be a linkId: a clinic's own numbering, a GUID, a path, another vendor's code.
link_ids = st.lists(st.text(min_size=1, max_size=12).filter(str.strip), min_size=9, max_size=9, unique=True)


@given(st.sampled_from([PHQ9, GAD7, PHQ2]), link_ids)
def test_each_instrument_is_recognized_from_item_codes_alone(instrument: Instrument, ids: list[str]) -> None:
    items = coded_items(instrument, ids[: len(instrument.item_codes)])
    record = to_platform(questionnaire(item=items), ctx())
    assert record.instrument == instrument.key
    assert [i.link_id for i in record.items] == ids[: len(instrument.item_codes)]


def test_the_panel_code_alone_names_the_instrument() -> None:
    record = to_platform(questionnaire(code=[{"system": LOINC, "code": "69737-5"}]), ctx())
    assert record.instrument == "gad-7"
    assert record.codes == [Coding(system=LOINC, code="69737-5")]
    # A LOINC-looking code in another system is not LOINC's.
    other = questionnaire(code=[{"system": "http://example.org/forms", "code": "69737-5"}])
    assert to_platform(other, ctx()).instrument is None


def test_nested_items_are_flattened_in_order_with_the_link_ids_that_enclose_them() -> None:
    record = to_platform(
        questionnaire(
            item=[
                {
                    "linkId": "g1",
                    "type": "group",
                    "text": "About you",
                    "item": [
                        {"linkId": "q1", "type": "boolean", "item": [{"linkId": "q1.1", "type": "string"}]},
                        {"linkId": "q2", "type": "dateTime", "repeats": True},
                    ],
                },
                {"linkId": "q3", "type": "open-choice"},
            ]
        ),
        ctx(),
    )
    assert [(i.link_id, i.path, i.type) for i in record.items] == [
        ("g1", [], "group"),
        ("q1", ["g1"], "boolean"),
        ("q1.1", ["g1", "q1"], "string"),
        ("q2", ["g1"], "date_time"),
        ("q3", [], "open_choice"),
    ]
    assert record.items[3].repeats is True


def test_enable_when_conditions_keep_their_typed_answers() -> None:
    record = to_platform(corpus_file("sdc-ig-examples/Questionnaire-questionnaire-sdc-test-enableWhen.json"), ctx())
    conditions = {i.link_id: (i.enable_when, i.enable_behavior) for i in record.items if i.enable_when}
    boolean, behavior = conditions["e5da17a7-7546-45c5-9bcd-d0b09a74cc14"]
    assert [(c.question, c.operator, c.value_type, c.value) for c in boolean] == [
        ("83d5c1a6-5dc3-44d0-9d9e-d687c72e143e", "=", "boolean", True)
    ]
    assert behavior == "all"
    coded = conditions["945b97b5-6d74-4a55-9be1-1989751219fb"][0][0]
    assert coded.value == Coding(system="http://terminology.hl7.org/CodeSystem/v2-0532", code="Y")
    decimal = conditions["945b97b5-6d74-4a55-9be1-19897512jj89"][0][0]
    assert (decimal.operator, decimal.value_type, decimal.value) == ("<", "decimal", 2.1)


def test_option_weights_come_from_ordinal_value_or_item_weight() -> None:
    record = to_platform(
        questionnaire(
            item=[
                {
                    "linkId": "drinks",
                    "type": "choice",
                    "answerOption": [
                        {
                            "valueCoding": {"code": "never"},
                            "extension": [
                                {"url": "http://hl7.org/fhir/StructureDefinition/ordinalValue", "valueDecimal": 0}
                            ],
                        },
                        {
                            "valueCoding": {
                                "code": "weekly",
                                "extension": [
                                    {"url": "http://hl7.org/fhir/StructureDefinition/itemWeight", "valueDecimal": 2.5}
                                ],
                            }
                        },
                        {"valueString": "other", "initialSelected": True},
                        {"valueInteger": 7},
                    ],
                }
            ]
        ),
        ctx(),
    )
    options = record.items[0].answer_options
    assert [(o.value_type, o.weight) for o in options] == [
        ("coding", 0),
        ("coding", 2.5),
        ("string", None),
        ("integer", None),
    ]
    assert options[2].initial_selected is True


def test_what_the_record_does_not_carry_is_listed_as_unmapped() -> None:
    weight = {"url": "http://hl7.org/fhir/StructureDefinition/ordinalValue", "valueDecimal": 1}
    record = to_platform(
        questionnaire(
            copyright="(c) the publisher",
            extension=[{"url": "https://ehr.example/form-owner", "valueString": "x"}],
            item=[
                {
                    "linkId": "a",
                    "type": "choice",
                    "initial": [{"valueBoolean": True}],
                    "answerOption": [{"valueCoding": {"code": "y"}, "extension": [weight]}],
                }
            ],
        ),
        ctx(),
    )
    # The score weight is read, so it is not listed.
    assert record.unmapped == ["copyright", "extension('https://ehr.example/form-owner')", "item.initial"]
    assert classify(record, record.model_copy(update={"unmapped": []})) == []


def test_security_labels_are_kept_also_from_contained_resources() -> None:
    resource = questionnaire(
        meta={"security": [{"system": ACT_CODE, "code": "PSY"}]},
        contained=[{"resourceType": "ValueSet", "id": "vs", "meta": {"security": [{"code": "R"}]}}],
    )
    record = to_platform(resource, ctx())
    assert record.security == [SecurityLabel(system=None, code="R"), SecurityLabel(system=ACT_CODE, code="PSY")]
    assert deleted_record(record, ctx("2")).security == record.security


def test_messy_optional_elements_never_raise() -> None:
    record = to_platform(
        questionnaire(
            status=5,
            code="44249-1",
            subjectType="Patient",
            item=[
                "nonsense",
                {"linkId": 3, "type": "choice", "answerOption": ["x", {"valueCoding": "LA6568-5"}, {}]},
                {"type": "display", "text": "No link id", "enableWhen": [None, {"question": "a"}]},
                {"linkId": "deep", "item": {"linkId": "lone", "type": "integer"}},
            ],
        ),
        ctx(),
    )
    assert record.status == "unknown"
    assert record.subject_type == ["Patient"]
    assert [(i.link_id, i.path) for i in record.items] == [(None, []), (None, []), ("deep", []), ("lone", ["deep"])]
    assert record.items[0].answer_options == []
    assert record.items[1].enable_when[0].question == "a"


@pytest.mark.parametrize(
    "resource",
    [{"resourceType": "QuestionnaireResponse", "id": "x"}, {"id": "x"}, [], {"resourceType": "Questionnaire"}],
)
def test_input_that_is_not_a_questionnaire_raises_mapping_error(resource: Any) -> None:
    with pytest.raises(MappingError):
        to_platform(resource, ctx())


def mapped(version: str = "1", **elements: Any) -> Survey:
    return to_platform(questionnaire(**elements), ctx(version))


def test_classify_a_questionnaire_first_seen_active_is_published() -> None:
    assert classify(None, mapped(status="active")) == ["survey.published"]
    assert classify(None, mapped()) == ["survey.updated"]


def test_classify_a_draft_that_becomes_active_is_published_then_updated() -> None:
    active = mapped("2", status="active")
    assert classify(mapped(), active) == ["survey.published"]
    assert classify(active, mapped("3", status="active", title="Intake (new)")) == ["survey.updated"]
    assert classify(active, mapped("3", status="retired")) == ["survey.updated"]
    assert classify(active, mapped("3", status="active")) == []


def test_classify_deleted() -> None:
    active = mapped(status="active")
    tombstone = deleted_record(active, ctx("2"))
    assert tombstone.deleted and tombstone.source.fhir_url == "Questionnaire/q1/_history/2"
    assert classify(active, tombstone) == ["survey.deleted"]
    assert classify(tombstone, tombstone) == []
    assert classify(tombstone, mapped("3", status="active")) == ["survey.published"]


def test_registry_serves_surveys_sorted_by_date() -> None:
    family = MAPPED["Questionnaire"]
    assert (family.record_type, family.route) == ("survey", "surveys")
    record = family.to_platform(questionnaire(date="1970-01-02"), ctx())
    assert family.index_fields(record) == {"patient": None, "sort": 86400.0, "status": "draft"}
    timed = family.to_platform(questionnaire(date="1970-01-01T00:01:00Z"), ctx())
    assert family.index_fields(timed)["sort"] == 60.0
    assert family.model.model_validate_json(record.model_dump_json()) == record


@pytest.mark.corpus
@pytest.mark.parametrize("resource", corpus_params("Questionnaire"))
def test_every_corpus_questionnaire_maps(resource: dict[str, Any]) -> None:
    if not resource.get("id"):
        resource = resource | {"id": "assigned-by-gateway"}  # the gateway assigns an id before mapping
    original = copy.deepcopy(resource)
    record = to_platform(resource, ctx())
    assert resource == original, "the mapper must not modify its input"
    assert Survey.model_validate_json(record.model_dump_json()) == record
    assert classify(record, to_platform(resource, ctx("2"))) == []


def test_the_corpus_holds_questionnaires() -> None:
    root = corpus_dir()
    if not root.is_dir():
        pytest.skip(f"FHIR corpus not found at {root}")
    folders = {Path(str(p.id)).parts[0] for p in corpus_params("Questionnaire")}
    assert {"hl7-r4-spec-examples", "us-core-examples", "sdc-ig-examples", "lforms-fhir-app-r4"} <= folders
