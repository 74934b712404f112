"""The conformance runner against the app in-process: a tiny corpus in, a Markdown report out."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conformance.report import differences, run_report
from gateway.cli import main
from tests.conftest import EHR_A, PLATFORM_A, Gateway
from tests.gateway.fixtures import appointment


def _write(path: Path, resource: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(resource), encoding="utf-8")


def _corpus(root: Path) -> None:
    _write(root / "good" / "patient.json", {"resourceType": "Patient", "id": "rp-1", "name": [{"family": "Report"}]})
    _write(
        root / "good" / "appointment.json",
        appointment(participant=[{"actor": {"reference": "Patient/rp-1"}, "status": "accepted"}]),
    )
    _write(
        root / "good" / "transaction.json",
        {
            "resourceType": "Bundle",
            "type": "transaction",
            "entry": [
                {
                    "fullUrl": "urn:uuid:0f6b1a52-1111-4a3c-9d2e-000000000001",
                    "resource": {"resourceType": "Patient", "name": [{"family": "Bundled"}]},
                    "request": {"method": "POST", "url": "Patient"},
                },
                {
                    "resource": appointment(
                        identifier=[{"system": "urn:example", "value": "rp-appt-2"}],
                        participant=[
                            {
                                "actor": {"reference": "urn:uuid:0f6b1a52-1111-4a3c-9d2e-000000000001"},
                                "status": "accepted",
                            }
                        ],
                    ),
                    "request": {"method": "POST", "url": "Appointment"},
                },
            ],
        },
    )
    _write(root / "bad" / "patient.json", {"resourceType": "Patient", "id": "rp-bad", "birthDate": "yesterday"})
    _write(root / "skipped" / "patient.json", {"resourceType": "Patient", "id": "rp-skip"})
    (root / "bad" / "notes.json").write_text("[1, 2]", encoding="utf-8")


async def test_the_runner_reports_what_the_gateway_accepted_rejected_and_mapped(
    gateway: Gateway, tmp_path: Path
) -> None:
    corpus = tmp_path / "tiny"
    _corpus(corpus)
    out = tmp_path / "report.md"
    report = await run_report(
        corpus,
        out,
        gateway.http,
        ehr_token=EHR_A,
        platform_token=PLATFORM_A,
        exclude=["skipped/*"],
        record_routes=["appointments", "patients"],
        command="tools/conformance_report.sh",
        settle_seconds=0.3,
    )
    by_path = {f.path: f for f in report.files}
    assert set(by_path) == {
        "bad/notes.json",
        "bad/patient.json",
        "good/appointment.json",
        "good/patient.json",
        "good/transaction.json",
    }
    assert all(by_path[p].accepted for p in by_path if p.startswith("good/"))
    assert all(not by_path[p].mismatches for p in by_path)
    assert by_path["good/transaction.json"].entries_accepted == 2
    bad = by_path["bad/patient.json"]
    assert not bad.accepted
    assert bad.status == 422 or bad.status == 400
    assert any("Patient.birthDate" in d for d in bad.defects)
    assert bad.local_errors > 0
    assert not by_path["bad/notes.json"].accepted

    coverage = {c.route: c for c in report.coverage}
    assert coverage["appointments"].records == 2
    assert coverage["patients"].records == 2

    text = out.read_text(encoding="utf-8")
    assert "| good | 3 | 3 | 0 |" in text
    assert "| bad | 2 | 0 | 2 |" in text
    assert "`bad/patient.json`" in text and "Patient.birthDate" in text
    assert "| appointments | 2 |" in text
    assert "tools/conformance_report.sh" in text
    assert "`skipped/patient.json`" not in text
    assert "Left out: `skipped/*`" in text


def test_a_changed_read_back_is_a_mismatch() -> None:
    sent = {"resourceType": "Patient", "id": "x", "meta": {"versionId": "9"}, "name": [{"family": "A"}]}
    assert list(differences(sent, {**sent, "meta": {}, "id": "y"}, "Patient")) == []
    assert list(differences(sent, {**sent, "name": [{"family": "B"}]}, "Patient")) == ["Patient.name[0].family"]
    assert list(differences(sent, {**sent, "gender": "male"}, "Patient")) == ["Patient.gender"]
    local = frozenset({"urn:uuid:1"})
    ref = {"resourceType": "Observation", "subject": {"reference": "urn:uuid:1"}}
    assert list(differences(ref, {**ref, "subject": {"reference": "Patient/5"}}, "Observation", local)) == []


def test_the_command_needs_both_tokens(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEWAY_EHR_TOKEN", raising=False)
    monkeypatch.delenv("GATEWAY_PLATFORM_TOKEN", raising=False)
    args = ["conformance", "run", "--corpus", str(tmp_path), "--url", "http://127.0.0.1:9", "--out", "r.md"]
    assert main([*args, "--ehr-token", "e" * 20]) == 2
    assert main([*args, "--platform-token", "p" * 20, "--corpus", str(tmp_path / "absent"), "--token", "e" * 20]) == 2
