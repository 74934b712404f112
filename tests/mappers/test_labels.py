"""Security labels, one rule for every family: none dropped, each once, the same labels making the same record."""

from __future__ import annotations

from typing import Any

import pytest

from mappers.elements import merge_labels
from mappers.model import SecurityLabel
from mappers.registry import MAPPED
from tests.mappers.conftest import ctx

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
LABELS = [{"system": CONFIDENTIALITY, "code": "R"}, {"system": ACT_CODE, "code": "PSY"}, "V"]


def labelled(rtype: str, labels: list[Any]) -> dict[str, Any]:
    contained = {"resourceType": "Provenance", "id": "p", "meta": {"security": [{"system": ACT_CODE, "code": "SUD"}]}}
    return {"resourceType": rtype, "id": "x1", "meta": {"security": labels}, "contained": [contained]}


@pytest.mark.parametrize("rtype", sorted(MAPPED))
def test_every_family_keeps_each_label_once_in_one_order(rtype: str) -> None:
    family = MAPPED[rtype]
    record = family.to_platform(labelled(rtype, LABELS), ctx())
    assert [(label.system, label.code) for label in record.security] == [
        (None, "V"),
        (ACT_CODE, "PSY"),
        (ACT_CODE, "SUD"),
        (CONFIDENTIALITY, "R"),
    ]
    # The same labels sent again in another order are no change the platform would see.
    again = family.to_platform(labelled(rtype, [*reversed(LABELS), LABELS[0]]), ctx("2"))
    assert again.security == record.security
    assert family.classify(record, again) == []


def test_merging_keeps_the_first_display_and_labels_without_a_code() -> None:
    first = SecurityLabel(system=CONFIDENTIALITY, code="R", display="restricted")
    merged = merge_labels(
        [[first], [first.model_copy(update={"display": "other"}), SecurityLabel(system=None, code="")]]
    )
    assert merged == [SecurityLabel(system=None, code=""), first]
