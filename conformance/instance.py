"""Validate one resource: the walk, then the checks that need the whole resource (references, Bundles,
Questionnaires, profiles)."""

from __future__ import annotations

from conformance import rules
from conformance.engine import Run
from conformance.outcome import Issue
from conformance.support import Support


def validate(resource: object, support: Support | None = None, profiles: tuple[str, ...] = ()) -> list[Issue]:
    """Validate parsed JSON as one FHIR R4 resource and return the issues found."""
    steps = rules.finishers()
    run = Run(support, profiles)
    run.resource(resource, None)
    for finish in steps:
        finish(run, resource)
    return run.issues
