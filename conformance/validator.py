"""Validate one parsed FHIR R4 (4.0.1) resource offline, as strictly as the HL7 reference validator where the
gateway's data allows, fast enough for every request.

The resource's JSON is walked once against compact tables generated from the specification's definitions
(``definitions``, ``engine``): unknown elements, JSON kinds, cardinality, choice types, primitive formats (a lone
UTF-16 surrogate is no valid string) and required bindings of code, Coding and CodeableConcept elements, with the
codes of HL7's code systems (``coded``); each type's invariants run as the walk leaves it: every R4 invariant of
severity error, compiled from its FHIRPath (``invariants``, ``r4_invariants``) or written by hand
(``datatypes``, ``resources``, ``bundled``), references and narratives checked as they are met (``reference``,
``narrative``). Then what needs the whole document: contained and Bundle references, a QuestionnaireResponse
against its Questionnaire (``questionnaire``), and the profiles the resource claims (``profile``).
Questionnaires, profiles, value sets and code systems beyond R4 come in a ``Support`` (``support``).

Nothing is read at import: the tables are built by the first validation (``definitions.tables()``,
``rules.finishers()``, both cached), which takes about a tenth of a second.

Diagnostics name the element and the problem; they never repeat a value of the resource, which may be PHI.
"""

from __future__ import annotations

from collections.abc import Sequence

from conformance.instance import validate
from conformance.outcome import Issue
from conformance.support import Support

__all__ = ["Support", "validate_resource"]


def validate_resource(resource: object, *, support: Support | None = None, profiles: Sequence[str] = ()) -> list[Issue]:
    """Validate parsed JSON as one FHIR R4 resource and return the issues found (never raises).

    ``support`` adds Questionnaires, profiles, value sets and code systems; ``profiles`` names profiles the
    resource must meet besides those its ``meta.profile`` claims.
    """
    try:
        return validate(resource, support, tuple(profiles))
    except RecursionError:
        return [Issue("fatal", "exception", None, "The resource is nested too deeply to validate")]
    except Exception as exc:  # an input must never crash the edge; the type name carries no data
        return [Issue("fatal", "exception", None, f"The validator failed on this input ({type(exc).__name__})")]
