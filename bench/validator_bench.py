"""Time the offline R4 validator beside fhir.resources model validation, on one core.

Two workloads: HL7's Appointment example (``Appointment-example.json`` of the corpus), and a 100-entry transaction
Bundle made from it (one Patient and 99 Appointments that refer to it by ``urn:uuid:``, as EHR feeds send them).
Then the cost of each check added for issue #14, measured by switching it off. Each figure is the best of several
timeit rounds of CPU time on this process's core (``time.process_time``), so other work on the machine inflates it
as little as it can; still, run on a quiet machine before publishing (the load average is printed). fhir.resources
validates R4B models (it has no R4 package), which is the closest model-parsing baseline.

    .venv/bin/python bench/validator_bench.py [--rounds 7] [--corpus ../shared/corpus] [--workloads-only]
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
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conformance import bundled, invariants
from conformance.definitions import tables
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
    parser.add_argument(
        "--workloads-only",
        action="store_true",
        help="time this validator on the two workloads only (no fhir.resources, no table of checks)",
    )
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
        if args.workloads_only:
            print(f"| {label} | {ours * scale:.2f} {unit} | - | - |")
            continue
        theirs = best(lambda document=document, model=model: model.model_validate(document), args.rounds)
        print(f"| {label} | {ours * scale:.1f} {unit} | {theirs * scale:.1f} {unit} | {theirs / ours:.1f}x |")
    if args.workloads_only:
        return 0
    print()
    print("What each check added for issue #14 costs (the time without it, subtracted from the time with all):")
    print()
    print("| check | Appointment | 100-entry Bundle |")
    print("|---|---|---|")
    for name, switch in ADDITIONS.items():
        costs = []
        for _label, _unit, scale, document, _model in rows:
            # With and without, in turn, so that a change in the machine's load hits both alike.
            with_it, without_it = [], []
            for _ in range(3):
                with_it.append(best(partial(validate_resource, document), max(2, args.rounds // 2)))
                with switch():
                    without_it.append(best(partial(validate_resource, document), max(2, args.rounds // 2)))
            costs.append((min(with_it) - min(without_it)) * scale)
        print(f"| {name} | {costs[0]:+.1f} µs | {costs[1]:+.2f} ms |")
    return 0


@contextlib.contextmanager
def _without_coded_hooks() -> Iterator[None]:
    """Switch off the required-binding and HL7 code system checks of Coding and CodeableConcept elements."""
    saved = [
        (element, element.hook)
        for spec in tables().types.values()
        for element in spec.elements.values()
        if element.type in ("Coding", "CodeableConcept") and element.hook is not None
    ]
    for element, _hook in saved:
        element.hook = None
    try:
        yield
    finally:
        for element, hook in saved:
            element.hook = hook


@contextlib.contextmanager
def _without_compiled_invariants() -> Iterator[None]:
    """Take the invariants compiled from R4's FHIRPath off every type."""
    saved = [(spec, spec.after) for spec in tables().types.values() if spec.after]
    for spec, after in saved:
        kept = tuple(check for check in after or () if getattr(check, "__module__", "") != invariants.__name__)
        spec.after = kept or None
    try:
        yield
    finally:
        for spec, after in saved:
            spec.after = after


@contextlib.contextmanager
def _without_bundle_resolution() -> Iterator[None]:
    """Skip resolving references between a Bundle's entries (urn: references in transactions among them)."""
    original = bundled._resolve

    def skip(run: object, entries: object, kind: object) -> None:
        return None

    bundled._resolve = skip
    try:
        yield
    finally:
        bundled._resolve = original


ADDITIONS: dict[str, Callable[[], contextlib.AbstractContextManager[None]]] = {
    "required bindings on Coding/CodeableConcept, HL7 code systems": _without_coded_hooks,
    "the 150 invariants compiled from FHIRPath": _without_compiled_invariants,
    "references between Bundle entries (urn: in transactions is new)": _without_bundle_resolution,
}


if __name__ == "__main__":
    sys.exit(main())
