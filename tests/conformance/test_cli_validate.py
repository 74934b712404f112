"""``fhir-gateway validate``: offline validation of files, with support, as text or OperationOutcomes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import main

QUESTIONNAIRE = {
    "resourceType": "Questionnaire",
    "url": "http://x.org/Q/intake",
    "status": "active",
    "item": [{"linkId": "name", "type": "string", "required": True}],
}


def write(folder: Path, name: str, content: object) -> Path:
    path = folder / name
    path.write_text(json.dumps(content))
    return path


def test_exit_codes_and_json_outcomes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write(tmp_path, "good.json", {"resourceType": "Patient", "gender": "female"})
    bad = write(tmp_path, "bad.json", {"resourceType": "Patient", "gender": "f"})
    assert main(["validate", str(good)]) == 0
    assert "good.json: valid" in capsys.readouterr().out
    assert main(["validate", "--format", "json", str(good), str(bad)]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line["valid"] for line in lines] == [True, False]
    assert lines[1]["outcome"]["issue"][0]["expression"] == ["Patient.gender"]
    assert main(["validate", str(tmp_path / "missing.json")]) == 2
    assert main(["validate", "--support", str(tmp_path / "missing"), str(good)]) == 2


def test_support_gives_the_questionnaire_a_response_is_checked_against(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    response = {
        "resourceType": "QuestionnaireResponse",
        "questionnaire": "http://x.org/Q/intake",
        "status": "completed",
    }
    path = write(tmp_path, "qr.json", response)
    assert main(["validate", str(path)]) == 0  # unknown questionnaire: a warning
    support = tmp_path / "support"
    support.mkdir()
    write(support, "q.json", QUESTIONNAIRE)
    assert main(["validate", "--support", str(support), str(path)]) == 1
    assert "No response found for required item 'name'" in capsys.readouterr().out
