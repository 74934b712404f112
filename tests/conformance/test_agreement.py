"""Agreement with the HL7 reference (Java) validator on its own R4 test cases.

The cases are those of ``fhir-test-cases/validator-r4/index.json`` in the shared corpus that have an expected
Java outcome and no ``packages`` or ``profile``; a case is invalid when Java's error plus fatal count is above
zero. Twelve invalid cases are out of scope (their errors need a terminology server, a signature check, or the
rejection of extensions that cannot be resolved, which the gateway turns into warnings on purpose). Each case's
supporting files are given to the validator as support, as ``--support`` would. The test prints the agreement
by module and fails when fewer than 84 of the 88 in-scope invalid cases are caught, or any valid case is
rejected.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from conformance.validator import Support, validate_resource
from tests.conformance.test_validator import CORPUS

pytestmark = pytest.mark.corpus

CASES = CORPUS / "fhir-test-cases" / "validator-r4"
OUT_OF_SCOPE = {
    "bundle-id-5": "a display name that needs a terminology server (CVX)",
    "uk-msg": "SNOMED CT codes and displays (terminology server)",
    "ips-nz-pj": "errors that need the IPS package and a terminology server",
    "signatures-example-2": "a digital signature check",
    "pat-dob-ext": "rejecting an extension that cannot be resolved",
    "pat-example-extensions": "rejecting an extension that cannot be resolved",
    "nested-questionnaire-nested-valueset": "rejecting an extension that cannot be resolved",
    "patient-with-turvakielto": "rejecting an extension that cannot be resolved",
    "maiden-name-extension": "an extension's context, from a later version of the extension",
    "choice-async-qr": "a value set expanded by a terminology server",
    "string-with-coding-async-qr": "a value set expanded by a terminology server",
    "bundle-ea-testcase": "rejecting extensions that cannot be resolved, and the CQF Measure package",
}
MIN_CAUGHT = 84


def _cases() -> list[dict[str, Any]]:
    index = json.loads((CASES / "index.json").read_text(encoding="utf-8"))
    return [
        case
        for case in index
        if case.get("expected_java_base")
        and case.get("expected_counts")
        and not case["packages"]
        and not case["profile"]
    ]


def _read(path: Path) -> Any:
    return json.loads(path.read_bytes().decode("utf-8-sig"))


def _support(case: dict[str, Any]) -> Support:
    support = Support()
    for name in case["supporting"]:
        path = CASES / "supporting" / name
        if path.suffix == ".json":
            support.add(_read(path))
    return support


def test_the_validator_agrees_with_the_reference_validator(capsys: pytest.CaptureFixture[str]) -> None:
    if not (CASES / "index.json").is_file():
        pytest.skip(f"the validator test cases are not at {CASES} (set GATEWAY_CORPUS_DIR)")
    # module -> [caught, invalid, accepted, valid]
    table: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    missed: list[str] = []
    rejected: dict[str, list[str]] = {}
    for case in _cases():
        if case["name"] in OUT_OF_SCOPE:
            continue
        counts = case["expected_counts"]
        invalid = counts["error"] + counts["fatal"] > 0
        issues = validate_resource(_read(CASES / case["file"]), support=_support(case))
        failing = [i for i in issues if i.severity in ("error", "fatal")]
        row = table[case["module"]]
        if invalid:
            row[1] += 1
            row[0] += bool(failing)
            if not failing:
                missed.append(case["name"])
        else:
            row[3] += 1
            row[2] += not failing
            if failing:
                rejected[case["name"]] = [f"{i.expression}: {i.diagnostics}" for i in failing[:3]]
    caught, invalid_total = sum(r[0] for r in table.values()), sum(r[1] for r in table.values())
    accepted, valid_total = sum(r[2] for r in table.values()), sum(r[3] for r in table.values())
    lines = ["", "| module | invalid caught | valid accepted |", "|---|---|---|"]
    lines += [f"| {module} | {r[0]}/{r[1]} | {r[2]}/{r[3]} |" for module, r in sorted(table.items())]
    lines += [f"| **all** | **{caught}/{invalid_total}** | **{accepted}/{valid_total}** |"]
    lines += [f"missed: {', '.join(missed) or 'none'}", f"out of scope: {len(OUT_OF_SCOPE)} invalid cases"]
    with capsys.disabled():
        print("\n".join(lines))
    assert invalid_total == 88 and valid_total == 83, "the test cases changed; review OUT_OF_SCOPE"
    assert rejected == {}
    assert caught >= MIN_CAUGHT, f"only {caught} of {invalid_total} invalid cases caught; missed {missed}"
