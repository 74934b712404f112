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


def install(types: dict[str, TypeDef], known: Tables) -> None:
    """Set the walk's hook of every Coding and CodeableConcept element, by the element's binding."""
    systems = known.code_systems

    def codings(run: Run, node: dict[str, Any], path: str, element: Element) -> None:
        """Check the codings of an unbound (or not enumerable) CodeableConcept against HL7's code systems."""
        found = node.get("coding")
        if type(found) is not list:
            return
        required = element.value_set is not None
        for index, coding in enumerate(found):
            if type(coding) is dict:
                system = coding.get("system")
                if type(system) is str and system in systems and coding.get("code") not in systems[system]:
                    _in_system(run, systems, coding, f"{path}.coding[{index}]", required)

    def coding(run: Run, node: dict[str, Any], path: str, element: Element) -> None:
        system = node.get("system")
        if type(system) is str and system in systems and node.get("code") not in systems[system]:
            _in_system(run, systems, node, path, element.value_set is not None)

    for spec in types.values():
        for element in spec.elements.values():
            if element.type not in ("CodeableConcept", "Coding") or element.name[0] == "_":
                continue
            bound = known.value_sets.get(element.value_set) if element.value_set is not None else None
            if bound is not None and all(codes is None for codes in bound.values()):
                bound = None  # nothing to judge offline (UCUM units)
            if element.type == "CodeableConcept":
                element.hook = codings if bound is None else _bound_concept(bound, systems)
            else:
                element.hook = coding if bound is None else _bound_coding(bound, systems)
    # A CodeableConcept's codings are checked with it, against its element's binding.
    types["CodeableConcept"].elements["coding"].hook = None


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
    run.error("code-invalid", f"{path}.code", _not_in(codes))
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
        run.error("code-invalid", f"{path}.code", text)
    else:
        run.warning("code-invalid", f"{path}.code", text)


def _vs(element: Element) -> str:
    return f" ({element.value_set})" if element.value_set else ""


def _not_in(codes: list[str]) -> str:
    if len(codes) <= _SHOWN:
        return f"The code is not in the required value set ({' | '.join(sorted(codes))})"
    return f"The code is not in the required value set ({len(codes)} codes)"
