"""Time building one write-back of each kind, before and after typed models, on one core.

*After* is the builder as it runs (``gateway.writebacks.builders``): the mapper's R4 JSON constructed as its
fhir.resources R4B model, changed and vendor-adjusted as that object, exported, then checked by the model again
and by the R4 validator. *Before* is the same builder with the model steps taken out (the JSON goes straight to
the R4 validator), which is what the builders did until the typed models came in. *Delivery check* is the
worker's last check of a queued resource before it is sent (both checks again). Each figure is the best of
several timeit rounds of CPU time (``time.process_time``), as in ``validator_bench.py``. No Redis, no network.

    .venv/bin/python bench/writeback_bench.py [--rounds 7]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from validator_bench import best, cpu

from conformance import fhir_models
from gateway.writebacks import builders
from gateway.writebacks.models import (
    ActivityStatusRequest,
    AppointmentRequest,
    MessageRequest,
    SurveyResponseRequest,
)
from mappers.context import MapContext

LOINC = "http://loinc.org"
PHQ9_ITEMS = ["44250-9", "44255-8", "44259-0", "44254-1", "44251-7", "44258-2", "44252-5", "44253-3", "44260-8"]
MESSAGE = MessageRequest.model_validate(
    {"patient": "Patient/pat-1", "sender": "Patient/pat-1", "body": "Can we move Thursday's session to Friday?",
     "recipients": ["Practitioner/prac-1"], "category": "reminder", "priority": "routine"}
)  # fmt: skip
PHQ9 = SurveyResponseRequest.model_validate(
    {"survey": "http://loinc.org/q/44249-1", "patient": "Patient/pat-1", "authored_at": "2026-12-01T10:00:00-05:00",
     "answers": [{"link_id": f"q{n}", "item_code": {"system": LOINC, "code": code}, "value_type": "coding",
                  "value": {"system": LOINC, "code": "LA6569-3", "display": "Several days"}}
                 for n, code in enumerate(PHQ9_ITEMS, 1)]}
)  # fmt: skip
NUMBERS = SurveyResponseRequest.model_validate(
    {"survey": "http://example.org/Questionnaire/mood", "patient": "Patient/pat-1",
     "answers": [{"link_id": f"q{n}", "value_type": "integer", "value": n} for n in range(1, 10)]}
)  # fmt: skip
BOOKING = AppointmentRequest.model_validate(
    {"status": "scheduled", "patient": "Patient/pat-1", "practitioners": ["Practitioner/prac-1"],
     "start": "2026-12-10T09:00:00-05:00", "end": "2026-12-10T09:50:00-05:00",
     "service_type": [{"text": "Psychotherapy"}], "reason": [{"text": "Follow-up"}], "modality": "video"}
)  # fmt: skip
CAREPLAN = {
    "resourceType": "CarePlan", "id": "plan-1", "meta": {"versionId": "4"}, "status": "active", "intent": "plan",
    "subject": {"reference": "Patient/pat-1"}, "period": {"start": "2026-11-01T00:00:00Z"},
    "activity": [
        {"detail": {"kind": "Appointment", "status": "scheduled", "description": "Weekly CBT session",
                    "scheduledString": "Tuesdays 10:00"}},
        {"detail": {"kind": "Task", "status": "not-started", "description": "Sleep diary"}},
        {"reference": {"reference": "ServiceRequest/sr-1"}},
    ],
}  # fmt: skip


def context(vendor: str) -> MapContext:
    return MapContext(tenant="bench", vendor=vendor, version_id="0", last_updated="2026-12-01T15:00:00Z")


def workloads() -> list[tuple[str, Callable[[], builders.Target]]]:
    """Return each kind of write-back as a label and a call that builds it."""
    generic, oracle, epic = context("generic"), context("oracle-health"), context("epic")
    booked = builders.appointment(BOOKING, "wb-0", generic).resource
    stored = booked | {"id": "appt-1", "meta": {"versionId": "7"}}
    status = ActivityStatusRequest.model_validate({"status": "in_progress"}).status
    return [
        ("message (generic)", lambda: builders.message(MESSAGE, "wb-1", generic, None)),
        ("message (Oracle Health: base64 body)", lambda: builders.message(MESSAGE, "wb-1", oracle, None)),
        ("survey response, PHQ-9 (generic)", lambda: builders.survey_response(PHQ9, "wb-2", generic, None)),
        ("survey response, 9 integers (Epic: decimals)", lambda: builders.survey_response(NUMBERS, "wb-2", epic, None)),
        ("appointment booking", lambda: builders.appointment(BOOKING, "wb-3", generic)),
        ("cancellation", lambda: builders.cancellation(stored, "appt-1", "Patient is unwell", generic)),
        ("activity status", lambda: builders.activity_status(CAREPLAN, "plan-1", 1, status, generic)),
    ]


class _Untyped:
    """``fhir_models`` as the builders used it before: JSON passed through untouched, no model check."""

    Refused = fhir_models.Refused

    @staticmethod
    def written(resource: Any, model: Any, *changes: Any) -> dict[str, Any]:
        return dict(resource)

    @staticmethod
    def refusals(resource: Any) -> list[Any]:
        return []

    def __getattr__(self, name: str) -> Any:
        return getattr(fhir_models, name)


@contextlib.contextmanager
def untyped() -> Iterator[None]:
    """Run the builders without their model steps: what they did before (the R4 validator alone)."""
    namespace = vars(builders)
    namespace["fhir_models"] = _Untyped()
    try:
        yield
    finally:
        namespace["fhir_models"] = fhir_models


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7, help="timeit rounds per figure (best is kept)")
    args = parser.parse_args(argv)
    rows = workloads()
    for label, build in rows:  # every workload must build a resource both checks take
        if builders.refusals(build().resource):
            print(f"writeback_bench: the {label} workload is not valid", file=sys.stderr)
            return 2

    print(f"CPU: {cpu()}")
    print(f"Python {platform.python_version()} on {platform.system()} {platform.release()}")
    with contextlib.suppress(OSError):
        print(f"Load average before the run: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print()
    print("| write-back | before (R4 validator) | after (R4B model + R4 validator) | ratio | delivery check |")
    print("|---|---|---|---|---|")
    for label, build in rows:
        with untyped():
            before = best(build, args.rounds)
        after = best(build, args.rounds)
        resource = build().resource

        def check_once(resource: dict[str, Any] = resource) -> object:
            return builders.refusal(resource)

        check = best(check_once, args.rounds)
        print(
            f"| {label} | {before * 1e6:.0f} µs | {after * 1e6:.0f} µs | {after / before:.1f}x | {check * 1e6:.0f} µs |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
