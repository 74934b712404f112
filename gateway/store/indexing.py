"""What a stored resource is findable by (its identifiers, the patient it is about, its canonical URL), and the
conditions of conditional interactions that these indexes answer."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import unquote

from conformance.definitions import TYPES

_RELATIVE = re.compile(r"(?:^|/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/[^/]+)?$")
# Elements that point at the patient a resource is about, by resource type; every other type falls back to
# ``patient`` and ``subject``, which is where R4 puts it in most clinical resources.
_PATIENT_PATHS: dict[str, tuple[str, ...]] = {
    "Appointment": ("participant.actor",),
    "AppointmentResponse": ("actor",),
    "Communication": ("subject", "recipient", "sender"),
    "Group": ("member.entity",),
}
_DEFAULT_PATIENT_PATHS = ("patient", "subject", "beneficiary")


def relative_reference(reference: str | None) -> str | None:
    """Return ``Type/id`` for a relative or absolute literal reference, else None."""
    if not reference or reference.startswith(("#", "urn:")):
        return None
    match = _RELATIVE.search(reference)
    return f"{match.group(1)}/{match.group(2)}" if match else None


def _walk(node: Any, parts: list[str]) -> Iterator[Any]:
    if isinstance(node, list):
        for item in node:
            yield from _walk(item, parts)
        return
    if not parts:
        yield node
        return
    if isinstance(node, Mapping):
        yield from _walk(node.get(parts[0]), parts[1:])


def indexes_patient(rtype: str) -> bool:
    """Tell whether a resource of ``rtype`` can be in the patient index (an element it is read from may hold a
    Patient reference, per the R4 definitions)."""
    for path in _PATIENT_PATHS.get(rtype, _DEFAULT_PATIENT_PATHS):
        spec = TYPES.get(rtype)
        element = None
        for name in path.split("."):
            element = spec.elements.get(name) if spec is not None else None
            spec = element.spec if element is not None else None
        if (
            element is not None
            and element.type == "Reference"
            and (element.targets is None or element.targets & {"Patient", "Resource"})
        ):
            return True
    return False


def patient_references(resource: Mapping[str, Any]) -> set[str]:
    """Return the ``Patient/id`` references a resource is about."""
    rtype = resource.get("resourceType", "")
    paths = _PATIENT_PATHS.get(str(rtype), _DEFAULT_PATIENT_PATHS)
    found: set[str] = set()
    for path in paths:
        for ref in _walk(resource, path.split(".")):
            if isinstance(ref, Mapping):
                rel = relative_reference(ref.get("reference"))
                if rel and rel.startswith("Patient/"):
                    found.add(rel)
    return found


def canonical_urls(resource: Mapping[str, Any]) -> list[str]:
    """Return the canonical URL of a definitional resource, alone and with its version."""
    url, version = resource.get("url"), resource.get("version")
    if not isinstance(url, str) or not url:
        return []
    return [url, f"{url}|{version}"] if isinstance(version, str) and version else [url]


def identifiers(resource: Mapping[str, Any]) -> list[tuple[str | None, str]]:
    """Return the (system, value) pairs of ``identifier`` (a list in most types, single in a few)."""
    raw = resource.get("identifier")
    items = raw if isinstance(raw, list) else [raw] if isinstance(raw, Mapping) else []
    pairs: list[tuple[str | None, str]] = []
    for item in items:
        if isinstance(item, Mapping) and isinstance(item.get("value"), str):
            system = item.get("system")
            pairs.append((system if isinstance(system, str) else None, item["value"]))
    return pairs


def parse_condition(criteria: str) -> tuple[str | None, str]:
    """Return (system, value) of a conditional-operation query; only one ``identifier`` is indexed for this.

    Accepts ``identifier=system|value``, ``identifier=value`` and the ``Type?identifier=...`` form.
    Raises ValueError saying what is not supported.
    """
    query = criteria.split("?", 1)[1] if "?" in criteria else criteria
    name, _, value = query.partition("=")
    if name != "identifier" or not value or "&" in value or "," in value:
        raise ValueError("conditional operations support one identifier=[system|]value criterion")
    value = unquote(value)
    system, bar, code = value.rpartition("|")
    return (system if bar else None), (code if bar else value)
