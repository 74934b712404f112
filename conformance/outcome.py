"""Issues found in a FHIR request and the R4 OperationOutcome that reports them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

_FAILING = frozenset({"error", "fatal"})


@dataclass(frozen=True, slots=True)
class Issue:
    """One finding: severity and FHIR issue-type code, the element path it concerns, and a short text."""

    severity: str
    code: str
    expression: str | None
    diagnostics: str


def operation_outcome(issues: Sequence[Issue]) -> dict[str, Any]:
    """Build an R4 OperationOutcome for the issues (one informational issue when there are none)."""
    if not issues:
        issues = [Issue("information", "informational", None, "All OK")]
    return {"resourceType": "OperationOutcome", "issue": [_issue_json(issue) for issue in issues]}


def has_errors(issues: Sequence[Issue]) -> bool:
    """Tell whether any issue is an error or fatal."""
    return any(issue.severity in _FAILING for issue in issues)


def prefixed(issues: Sequence[Issue], prefix: str) -> list[Issue]:
    """Re-root the issue paths at prefix: ``Appointment.status`` -> ``Bundle.entry[2].resource.status``.

    An issue without a path concerns the whole resource, so it gets the prefix itself.
    """
    return [replace(issue, expression=_reroot(issue.expression, prefix)) for issue in issues]


def _reroot(expression: str | None, prefix: str) -> str:
    if expression is None:
        return prefix
    cut = len(expression)
    for mark in (".", "["):
        at = expression.find(mark)
        if at != -1:
            cut = min(cut, at)
    return prefix + expression[cut:]


def _issue_json(issue: Issue) -> dict[str, Any]:
    body: dict[str, Any] = {"severity": issue.severity, "code": issue.code}
    if issue.diagnostics:
        body["diagnostics"] = issue.diagnostics
    if issue.expression:
        body["expression"] = [issue.expression]
    return body
