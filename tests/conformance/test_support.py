"""Support: conformance resources given to the validator, from files, folders and Bundles."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conformance.support import Support


def test_support_reads_files_folders_and_bundles_and_ignores_other_resources(tmp_path: Path) -> None:
    questionnaire = {"resourceType": "Questionnaire", "url": "http://x.org/Q/1", "version": "2", "status": "active"}
    value_set = {"resourceType": "ValueSet", "url": "http://x.org/VS/1", "status": "active"}
    patient = {"resourceType": "Patient", "id": "p"}
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": value_set}, {"resource": patient}]}
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "q.json").write_text(json.dumps(questionnaire))
    (tmp_path / "b.json").write_text("\ufeff" + json.dumps(bundle))
    (tmp_path / "notes.txt").write_text("not read")
    support = Support.load([tmp_path])
    assert support.questionnaire("http://x.org/Q/1") == questionnaire
    assert support.questionnaire("http://x.org/Q/1|2") == questionnaire
    assert support.find("ValueSet", "http://x.org/VS/1") == value_set
    assert len(support) == 3  # the Questionnaire by url and by url|version, and the ValueSet


def test_support_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        Support.load([tmp_path / "missing.json"])
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not JSON"):
        Support.load([tmp_path / "bad.json"])
