"""The per-tenant validation policy: ``strict`` refuses any error; ``lenient`` accepts what maps safely.

Real EHR data is messy, and a clinic's feed must not stop on a cosmetic error. Under ``lenient`` a resource
whose errors all lie in elements no mapping reads is accepted; its issues are stored beside the version and
counted in ``gateway_lenient_accepted_total``. What an error "touches" is the top-level element its expression
names (``Appointment.priority`` touches ``priority``; ``Bundle.entry[3].resource.onsetDateTime`` touches
``onsetDateTime`` of that entry's resource). An error is tolerated only when:

- it is an ``error``, not ``fatal``, and names an element below the resource root (an issue on the whole resource,
  such as a root invariant, names no element it could be confined to);
- that element is not one every reader depends on: ``id``, ``meta`` (security labels travel to every record),
  ``text`` (narrative safety: unsafe XHTML is never stored), ``implicitRules`` and ``modifierExtension`` (they
  change what the resource means);
- for a mapped type, the element is not one its mapper reads (``MAPPED_ELEMENTS``: the top-level elements each
  family declares its ``to_platform`` reads, ``Family.reads``; ``tests/gateway/test_policy.py`` removes every
  other element of real resources and checks the record does not change). Every family reads ``contained``: the
  labels of contained resources travel to the record;
- for a type no family maps, the error is not structural: an unknown element, a wrong JSON shape or a missing
  required element (issue codes ``structure``, ``required``) make the resource something other than what the
  sender meant, so it is refused; a bad value, code, invariant or reference inside an element is kept with
  its issues, since only the stored FHIR is served for such types.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Literal

from conformance.outcome import Issue
from mappers.registry import MAPPED

Policy = Literal["strict", "lenient"]

_ALWAYS_READ = frozenset({"id", "meta", "text", "implicitRules", "modifierExtension", "resourceType"})
_STRUCTURAL = frozenset({"structure", "required", "exception"})
_ELEMENT = re.compile(r"^_?([A-Za-z][A-Za-z0-9]*)")

# The top-level elements each mapped family's ``to_platform`` reads, as the family declares them (``Family.reads``).
MAPPED_ELEMENTS: Mapping[str, frozenset[str]] = {rtype: family.reads for rtype, family in MAPPED.items()}


def touched_element(expression: str | None, root: str) -> str | None:
    """Return the top-level element an issue's expression names below ``root``, or None when it names none."""
    if not expression or not expression.startswith(f"{root}."):
        return None
    match = _ELEMENT.match(expression[len(root) + 1 :])
    return match.group(1) if match else None


def tolerated(issue: Issue, rtype: str, root: str | None = None) -> bool:
    """Tell whether ``lenient`` may accept a resource of ``rtype`` despite ``issue`` (see the module docstring)."""
    if issue.severity not in ("error", "fatal"):
        return True
    if issue.severity == "fatal":
        return False
    element = touched_element(issue.expression, rtype if root is None else root)
    if element is None or element in _ALWAYS_READ:
        return False
    mapped = MAPPED_ELEMENTS.get(rtype)
    if mapped is not None:
        return element not in mapped
    return issue.code not in _STRUCTURAL


def accepts(policy: str, rtype: str, issues: Sequence[Issue], root: str | None = None) -> bool:
    """Tell whether a resource with these issues is accepted under ``policy``."""
    failing = [i for i in issues if i.severity in ("error", "fatal")]
    if not failing:
        return True
    return policy == "lenient" and all(tolerated(i, rtype, root) for i in failing)
