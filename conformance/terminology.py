"""Value sets known offline: the core ones bound ``required`` (expanded in the tables), the systems of every
core value set, and value sets and code systems given as support (or contained in the resource at hand).

Membership is answered only when it can be decided offline: ``None`` means "cannot tell" (a system that cannot be
enumerated, such as SNOMED CT or LOINC, or a value set that is not known), and callers then do not report.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from conformance.definitions import as_list, tables
from conformance.support import Support

# system -> codes, None for every code of a system that cannot be enumerated here.
Expansion = dict[str, frozenset[str] | None]


def expansion(url: str, support: Support | None, contained: Iterable[Any] = ()) -> Expansion | None:
    """Return the codes per system of a value set, or None when the value set is not known."""
    base = url.split("|", 1)[0]
    if base.startswith("#"):
        for item in contained:
            if isinstance(item, dict) and item.get("resourceType") == "ValueSet" and item.get("id") == base[1:]:
                return _compose(item, support)
        return None
    if support is not None:
        found = support.find("ValueSet", url)
        if found is not None:
            return _compose(found, support)
    known = tables()
    core = known.value_sets.get(base)
    if core is not None:
        return {system: (frozenset(codes) if codes is not None else None) for system, codes in core.items()}
    systems = known.value_set_systems.get(base)
    if systems is not None:
        return dict.fromkeys(systems)
    return None


def contains(found: Expansion, system: object, code: object) -> bool | None:
    """Tell whether (system, code) is in an expansion; None when that cannot be decided offline."""
    if not isinstance(system, str):
        return None
    if system not in found:
        return False
    codes = found[system]
    if codes is None or not isinstance(code, str):
        return None
    return code in codes


def wrong_display(coding: dict[str, Any]) -> str | None:
    """Return the right display when a coding of a FHIR code system shows another one, else None."""
    system, code, display = coding.get("system"), coding.get("code"), coding.get("display")
    if not (isinstance(system, str) and isinstance(code, str) and isinstance(display, str)):
        return None
    known = tables().displays.get(system, {}).get(code)
    if known is None or " ".join(display.lower().split()) == " ".join(known.lower().split()):
        return None
    return known


def _compose(value_set: dict[str, Any], support: Support | None, depth: int = 0) -> Expansion:
    result: Expansion = {}
    expansion_part = value_set.get("expansion")
    if isinstance(expansion_part, dict) and isinstance(expansion_part.get("contains"), list):
        for item in _flatten(expansion_part["contains"]):
            if isinstance(item.get("system"), str) and isinstance(item.get("code"), str):
                _add(result, item["system"], {item["code"]})
    compose = value_set.get("compose")
    if not isinstance(compose, dict):
        return result
    for include in as_list(compose.get("include")):
        if not isinstance(include, dict):
            continue
        for nested in as_list(include.get("valueSet")):
            if isinstance(nested, str) and depth < 5:
                inner = expansion(nested, support)
                for system, codes in (inner or {}).items():
                    _add(result, system, codes)
        included = include.get("system")
        if not isinstance(included, str):
            continue
        system = included
        concepts = include.get("concept")
        if isinstance(concepts, list) and concepts:
            _add(
                result, system, {c["code"] for c in concepts if isinstance(c, dict) and isinstance(c.get("code"), str)}
            )
        elif include.get("filter"):
            _add(result, system, None)
        else:
            _add(result, system, _code_system(system, support))
    return result


def _code_system(url: str, support: Support | None) -> frozenset[str] | None:
    found = support.find("CodeSystem", url) if support is not None else None
    if found is None or found.get("content", "complete") != "complete":
        return None
    codes: set[str] = set()
    stack = list(as_list(found.get("concept")))
    while stack:
        concept = stack.pop()
        if isinstance(concept, dict):
            if isinstance(concept.get("code"), str):
                codes.add(concept["code"])
            stack.extend(as_list(concept.get("concept")))
    return frozenset(codes)


def _flatten(items: list[Any]) -> Iterable[dict[str, Any]]:
    for item in items:
        if isinstance(item, dict):
            yield item
            yield from _flatten(item.get("contains") or [])


def _add(result: Expansion, system: str, codes: Iterable[Any] | None) -> None:
    if system in result and result[system] is None:
        return
    if codes is None:
        result[system] = None
        return
    result[system] = (result.get(system) or frozenset()) | {c for c in codes if isinstance(c, str)}
