"""Invariants of the R4 data types, and the checks of extensions, codings and narratives.

Each function is one rule, named by its key where the specification has one (``per-1``); they run when the walk
leaves an object of the type they are registered on (see ``rules``).
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from conformance.definitions import PRIMITIVE_TYPES, as_list, tables
from conformance.engine import Run
from conformance.narrative import div_problems, has_content
from conformance.primitive import compare, moment

_UCUM = "http://unitsofmeasure.org"


def period(run: Run, node: dict[str, Any], path: str) -> None:
    """per-1: if present, start SHALL have a lower value than end (an error, as the reference validator has it).

    Values of different precision that FHIRPath cannot order (2024 against 2024-05-01) fail it too, as there.
    A lenient tenant still accepts a reversed period in an element no mapping reads (``gateway/policy.py``).
    """
    start, end = node.get("start"), node.get("end")
    if start is None or end is None:
        return
    left, right = moment(start), moment(end)
    if left is None or right is None:
        return
    order = compare(left, right)
    if order is None or order > 0:
        run.error("invariant", path, "per-1: if present, start SHALL have a lower value than end")


def quantity(run: Run, node: dict[str, Any], path: str) -> None:
    """qty-3: if a code for the unit is present, the system SHALL also be present (an error, as the reference
    validator has it; EHR exports that send local unit codes without a system fail it, and a lenient tenant still
    accepts them in elements no mapping reads)."""
    if "code" in node and "system" not in node:
        run.error("invariant", path, "qty-3: if a code for the unit is present, the system SHALL also be present")


def duration(run: Run, node: dict[str, Any], path: str) -> None:
    """drt-1: a duration's code SHALL be UCUM, with a value (a warning: LHC-Forms writes another system URL)."""
    quantity(run, node, path)
    if "code" in node and (node.get("system") != _UCUM or "value" not in node):
        run.warning("invariant", path, "drt-1: a duration's code must be UCUM, with a value")


def attachment(run: Run, node: dict[str, Any], path: str) -> None:
    """att-1: if the attachment has data, it SHALL have a contentType; and a stated size is the data's size."""
    data = node.get("data")
    if data is None:
        return
    if "contentType" not in node:
        run.error("invariant", path, "att-1: an attachment with data SHALL have a contentType")
    size = node.get("size")
    if type(size) is int and type(data) is str:
        try:
            actual = len(base64.b64decode("".join(data.split()), validate=True))
        except (binascii.Error, ValueError):
            return
        if actual != size:
            run.error("structure", f"{path}.size", f"The stated size does not match the data's size ({actual} bytes)")


def contact_point(run: Run, node: dict[str, Any], path: str) -> None:
    """cpt-2: a system is required if a value is provided."""
    if "value" in node and "system" not in node:
        run.error("invariant", path, "cpt-2: a contact point with a value SHALL have a system")


def ratio(run: Run, node: dict[str, Any], path: str) -> None:
    """rat-1: numerator and denominator SHALL both be present, or both absent (with an extension)."""
    if ("numerator" in node) != ("denominator" in node):
        run.error("invariant", path, "rat-1: numerator and denominator SHALL both be present, or both absent")


def timing_repeat(run: Run, node: dict[str, Any], path: str) -> None:
    """tim-1, tim-2, tim-6 to tim-10: the units and companions of Timing.repeat's values."""
    pairs = (
        ("duration", "durationUnit", "tim-1: if there's a duration, there needs to be duration units"),
        ("period", "periodUnit", "tim-2: if there's a period, there needs to be period units"),
        ("periodMax", "period", "tim-6: if there's a periodMax, there must be a period"),
        ("durationMax", "duration", "tim-7: if there's a durationMax, there must be a duration"),
        ("countMax", "count", "tim-8: if there's a countMax, there must be a count"),
    )
    for present, needed, text in pairs:
        if present in node and needed not in node:
            run.error("invariant", path, text)
    for name, key in (("duration", "tim-4"), ("period", "tim-5")):
        value = node.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            run.error("invariant", path, f"{key}: {name} SHALL be a non-negative value")
    if "offset" in node:
        when = node.get("when")
        if not when or (type(when) is list and any(w in ("C", "CM", "CD", "CV") for w in when)):
            run.error("invariant", path, "tim-9: if there's an offset, there must be a when (and not C, CM, CD, CV)")
    if "timeOfDay" in node and "when" in node:
        run.error("invariant", path, "tim-10: if there's a timeOfDay, there cannot be a when, or vice versa")


def narrative(run: Run, node: dict[str, Any], path: str) -> None:
    """txt-1: the narrative SHALL contain only the basic HTML formatting elements and attributes; txt-2: it SHALL
    have some non-whitespace content."""
    div = node.get("div")
    if type(div) is not str or not div:
        return
    problems = div_problems(div)
    for problem in problems:
        run.error("invalid", f"{path}.div", f"txt-1: {problem}")
    if not problems and not has_content(div):
        run.error("invariant", f"{path}.div", "txt-2: the narrative SHALL have some non-whitespace content")
    if 'href="#' in div or "href='#" in div:
        run.found.setdefault("#links", []).append((node, f"{path}.div"))


def extension(run: Run, node: dict[str, Any], path: str) -> None:
    """ext-1, a url without a version, and the value type a core extension allows."""
    values = [key for key in node if key.startswith(("value", "_value"))]
    if ("extension" in node) == bool(values):
        run.error("invariant", path, "ext-1: an extension must have either extensions or value[x], not both")
    url = node.get("url")
    if type(url) is not str:
        return
    if "|" in url:
        run.error("invalid", f"{path}.url", "The extension URL must not contain a version")
        return
    allowed = tables().extension_types.get(url)
    if allowed is None:
        found = run.support.profile(url) if run.support is not None else None
        if found is None:
            run.warning("extension", path, "The extension could not be resolved, so it is not checked")
            return
        allowed = _profile_value_types(found)
    if allowed and values:
        if values[0].lstrip("_") not in run.types["Extension"].elements:
            return  # an unknown property, which the walk has reported
        value_type = values[0].lstrip("_")[5:]
        primitive = value_type[:1].lower() + value_type[1:]
        if primitive not in allowed and value_type not in allowed:
            text = f"The extension's definition allows the types [{', '.join(sorted(allowed))}] but found {value_type}"
            # A primitive for another primitive (uri for url) is an error; a complex type where R4 has a primitive
            # is how later versions widened some core extensions (SDC's Expression), so only a warning.
            if primitive in PRIMITIVE_TYPES and allowed <= PRIMITIVE_TYPES:
                run.error("structure", path, text)
            else:
                run.warning("structure", path, text)


def nested_extension(run: Run, node: dict[str, Any], path: str) -> None:
    """ext-1 for an extension inside an extension, whose url is the name of a part."""
    values = [key for key in node if key.startswith(("value", "_value"))]
    if ("extension" in node) == bool(values):
        run.error("invariant", path, "ext-1: an extension must have either extensions or value[x], not both")


def _as_dict(value: object) -> dict[str, Any]:
    return value if type(value) is dict else {}


def _profile_value_types(definition: dict[str, Any]) -> frozenset[str]:
    for key in ("snapshot", "differential"):
        for element in as_list(_as_dict(definition.get(key)).get("element")):
            if isinstance(element, dict) and element.get("path") == "Extension.value[x]":
                if element.get("max") == "0":
                    return frozenset()
                types = as_list(element.get("type"))
                return frozenset(str(t.get("code")) for t in types if isinstance(t, dict))
    return frozenset()
