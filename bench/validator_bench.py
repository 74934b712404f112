"""Time the offline R4 validator beside fhir.resources model validation, on one core.

Two workloads: HL7's Appointment example (``Appointment-example.json`` of the corpus), and a 100-entry transaction
Bundle made from it (one Patient and 99 Appointments that refer to it by ``urn:uuid:``, as EHR feeds send them).
Each figure is the best of several timeit rounds of CPU time on this process's core (``time.process_time``), so
other work on the machine inflates it as little as it can; still, run on a quiet machine before publishing (the
load average is printed). fhir.resources validates R4B models (it has
no R4 package), which is the closest model-parsing baseline.

    .venv/bin/python bench/validator_bench.py [--rounds 7] [--corpus ../shared/corpus]
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import platform
import sys
import time
import timeit
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conformance.fhir_models import model_class
from conformance.validator import validate_resource

DEFAULT_CORPUS = Path(os.environ.get("GATEWAY_CORPUS_DIR", Path(__file__).resolve().parents[2] / "shared" / "corpus"))


def cpu() -> str:
    """Describe the processor, from /proc/cpuinfo where there is one."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()}, {os.cpu_count()} logical cores"
    except OSError:
        pass
    return f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical cores"


def bundle_of(appointment: dict[str, Any], size: int) -> dict[str, Any]:
    """Return a transaction Bundle: one Patient and size-1 Appointments naming it by urn:uuid."""
    patient_url = f"urn:uuid:{uuid.UUID(int=1)}"
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": patient_url,
            "resource": {
                "resourceType": "Patient",
                "identifier": [{"system": "http://example.org/mrn", "value": "bench-1"}],
                "name": [{"family": "Chalmers", "given": ["Peter", "James"]}],
                "gender": "male",
                "birthDate": "1974-12-25",
            },
            "request": {"method": "POST", "url": "Patient"},
        }
    ]
    for index in range(1, size):
        resource = copy.deepcopy(appointment)
        resource["id"] = f"bench-{index}"
        resource["participant"][0]["actor"]["reference"] = patient_url
        entries.append(
            {
                "fullUrl": f"urn:uuid:{uuid.UUID(int=index + 1)}",
                "resource": resource,
                "request": {"method": "PUT", "url": f"Appointment/bench-{index}"},
            }
        )
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries}


def best(function: Callable[[], object], rounds: int, target_seconds: float = 0.4) -> float:
    """Return the best time of one call in seconds, over ``rounds`` timeit rounds of about target_seconds each."""
    timer = timeit.Timer(function, timer=time.process_time)
    number, _ = timer.autorange()
    number = max(1, int(number * target_seconds / 0.2))
    return min(timer.repeat(repeat=rounds, number=number)) / number


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="timeit rounds per figure (best is kept)")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS, help="the shared FHIR corpus folder")
    args = parser.parse_args(argv)
    source = args.corpus / "hl7-r4-spec-examples" / "Appointment-example.json"
    if not source.is_file():
        print(f"validator_bench: {source} not found (pass --corpus or set GATEWAY_CORPUS_DIR)", file=sys.stderr)
        return 2
    appointment = json.loads(source.read_bytes())
    bundle = bundle_of(appointment, 100)
    for document in (appointment, bundle):
        problems = [i for i in validate_resource(document) if i.severity in ("error", "fatal")]
        if problems:
            print(f"validator_bench: the workload is not valid: {problems[:3]}", file=sys.stderr)
            return 2
    appointment_model, bundle_model = model_class("Appointment"), model_class("Bundle")
    assert appointment_model is not None and bundle_model is not None

    print(f"CPU: {cpu()}")
    print(f"Python {platform.python_version()} on {platform.system()} {platform.release()}")
    with contextlib.suppress(OSError):
        print(f"Load average before the run: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows = [
        ("Appointment (HL7 example)", "µs", 1e6, appointment, appointment_model),
        ("100-entry transaction Bundle", "ms", 1e3, bundle, bundle_model),
    ]
    print()
    print("| workload | this validator | fhir.resources (R4B models) | speed-up |")
    print("|---|---|---|---|")
    for label, unit, scale, document, model in rows:
        ours = best(lambda document=document: validate_resource(document), args.rounds)
        theirs = best(lambda document=document, model=model: model.model_validate(document), args.rounds)
        print(f"| {label} | {ours * scale:.1f} {unit} | {theirs * scale:.1f} {unit} | {theirs / ours:.1f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
