"""Codings checked against what R4 defines: the required bindings of Coding and CodeableConcept elements, and the
codes of the code systems HL7 defines.

As the reference validator does for a ``required`` binding: a CodeableConcept must carry a coding from the bound
value set (text alone, or codings only from other systems, is an error), and a coding in a system the value set
draws on must have one of its codes. Independently of bindings, a coding in a code system HL7 defines for R4
(``http://terminology.hl7.org/CodeSystem/...``, ``http://hl7.org/fhir/...``) must use a code of that system: a
warning, or an error where the element's binding is required. A value set or system that cannot be enumerated
offline (SNOMED CT, LOINC, UCUM) is never judged. Hooks run when the walk leaves the element.
"""

from __future__ import annotations

from typing import Any

from conformance.definitions import Element, Tables, TypeDef
from conformance.engine import Hook, Run

_SHOWN = 8


def register(types: dict[str, TypeDef], known: Tables) -> None:
    """Check every Coding's system, and its code against HL7's code systems (before the engine prepares)."""
    systems = known.code_systems

    def coding(run: Run, node: dict[str, Any], path: str) -> None:
        """A coding's system is an absolute URI naming a code system, and its code one of that system's."""
        system = node.get("system")
        if type(system) is not str or not system:
            return
        if system in systems:
            code = node.get("code")
            if type(code) is str and code not in systems[system]:
                _in_system(run, systems, node, path, False)
        elif ":" not in system:
            run.error("invalid", f"{path}.system", "Coding.system must be an absolute reference, not a local reference")
        elif system.startswith(("http://hl7.org/fhir/ValueSet/", "http://terminology.hl7.org/ValueSet/")):
            run.error("invalid", f"{path}.system", "The Coding refers to a value set, not a code system")

    types["Coding"].invariants.append(coding)


def install(types: dict[str, TypeDef], known: Tables) -> None:
    """Set the hook of each Coding and CodeableConcept element bound ``required`` (after the engine prepares)."""
    systems = known.code_systems
    for spec in types.values():
        for element in spec.elements.values():
            if element.type not in ("CodeableConcept", "Coding") or element.value_set is None:
                continue
            bound = known.value_sets.get(element.value_set)
            if bound is None or all(codes is None for codes in bound.values()):
                continue  # nothing to judge offline (UCUM units, a value set the tables lack)
            if element.type == "CodeableConcept":
                element.hook = _bound_concept(bound, systems)
            else:
                element.hook = _bound_coding(bound, systems)


def _bound_concept(bound: dict[str, list[str] | None], systems: dict[str, frozenset[str]]) -> Hook:
    def check(run: Run, node: dict[str, Any], path: str, element: Element) -> None:
        codings = node.get("coding")
        if type(codings) is not list or not codings:
            run.error(
                "code-invalid", path, f"No code provided, and a code from the value set is required{_vs(element)}"
            )
            return
        found = False
        for index, coding in enumerate(codings):
            if type(coding) is dict:
                verdict = _in_value_set(run, bound, systems, coding, f"{path}.coding[{index}]")
                found = found or verdict is not False
        if not found:
            run.error(
                "code-invalid",
                path,
                f"None of the codings provided are in the value set, and a coding from it is required{_vs(element)}",
            )

    return check


def _bound_coding(bound: dict[str, list[str] | None], systems: dict[str, frozenset[str]]) -> Hook:
    def check(run: Run, node: dict[str, Any], path: str, element: Element) -> None:
        if _in_value_set(run, bound, systems, node, path) is False:
            run.error("code-invalid", path, f"The coding is not in the value set, which is required{_vs(element)}")

    return check


def _in_value_set(
    run: Run, bound: dict[str, list[str] | None], systems: dict[str, frozenset[str]], coding: dict[str, Any], path: str
) -> bool | None:
    """Tell whether a coding is in a required value set (None: cannot tell); report a bad code of its systems."""
    system, code = coding.get("system"), coding.get("code")
    if type(system) is not str or system not in bound:
        _in_system(run, systems, coding, path, True)
        return False
    codes = bound[system]
    if codes is None or type(code) is not str:
        return None
    if code in codes:
        return True
    _error_not_warning(run, f"{path}.code", _not_in(codes))
    return None  # reported here, once


def _in_system(run: Run, systems: dict[str, frozenset[str]], coding: dict[str, Any], path: str, required: bool) -> None:
    system, code = coding.get("system"), coding.get("code")
    if type(system) is not str or type(code) is not str:
        return
    codes = systems.get(system)
    if codes is None or code in codes:
        return
    text = f"The code is not defined in the code system {system}"
    if required:
        _error_not_warning(run, f"{path}.code", text)
    else:
        run.warning("code-invalid", f"{path}.code", text)


def _error_not_warning(run: Run, path: str, text: str) -> None:
    """Report an error where the coding's own check warned already (under a required binding it is an error)."""
    run.issues[:] = [i for i in run.issues if not (i.expression == path and i.code == "code-invalid")]
    run.error("code-invalid", path, text)


def _vs(element: Element) -> str:
    return f" ({element.value_set})" if element.value_set else ""


def _not_in(codes: list[str]) -> str:
    if len(codes) <= _SHOWN:
        return f"The code is not in the required value set ({' | '.join(sorted(codes))})"
    return f"The code is not in the required value set ({len(codes)} codes)"
