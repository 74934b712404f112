"""Mutations of valid FHIR JSON that make it invalid by R4's rules, one rule category at a time.

Each operator takes a deep copy of a valid document, the typed objects in it (``typed_json``) and a random
generator, changes one thing that R4 forbids, and returns a short description, or None when the document offers
nothing to change. The categories: primitives (lexical forms and JSON kinds), cardinality (required elements,
arrays, unknown elements), bindings (code, Coding and CodeableConcept elements bound ``required``), invariants
(one recipe per invariant), and Bundle rules. ``hl7-codes`` changes codings of HL7 code systems under bindings
that are not required: a warning is expected there, not an error.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from conformance.definitions import PRIMITIVE, Element, tables
from tests.conformance.invariant_recipes import recipes
from tests.conformance.typed_json import typed_objects

Objects = list[tuple[str, dict[str, Any], str]]
Operator = Callable[[dict[str, Any], Objects, random.Random, str | None], str | None]

_BAD_PRIMITIVES: dict[str, list[object]] = {
    "date": ["2023-02-30", "2023/01/01", 20230101],
    "dateTime": ["2023-13-01T10:00:00Z", "2023-01-01T10:00:00", "yesterday"],
    "instant": ["2023-01-01", "2023-01-01T25:00:00Z"],
    "time": ["25:00:00", "10:00"],
    "boolean": ["true", 1],
    "integer": ["7", 1.5, 2**31],
    "positiveInt": [0, "1"],
    "unsignedInt": [-1, "0"],
    "decimal": ["1.0", True],
    "code": [" leading", "two  spaces", ""],
    "id": ["bad_id!", "a" * 65],
    "uri": ["has space", ""],
    "url": ["has space"],
    "canonical": ["has space"],
    "string": ["", "lone \ud800 surrogate", 5],
    "markdown": ["", "lone \udc00 surrogate"],
    "base64Binary": ["not base64!"],
    "uuid": ["urn:uuid:NOT-A-UUID"],
    "oid": ["urn:oid:not.an.oid"],
}


def _elements(objects: Objects) -> list[tuple[dict[str, Any], str, Element]]:
    """Return (object, JSON name, element) for every property present in the objects."""
    types = tables().types
    found = []
    for type_key, node, _path in objects:
        spec = types[type_key]
        for key in node:
            element = spec.elements.get(key)
            if element is not None:
                found.append((node, key, element))
    return found


def primitive(document: dict[str, Any], objects: Objects, rng: random.Random, kind: str | None) -> str | None:
    """Give a primitive (of the type ``kind``) a value its type forbids."""
    candidates = [
        (node, key, element)
        for node, key, element in _elements(objects)
        if element.kind == PRIMITIVE
        and element.type in _BAD_PRIMITIVES
        and key != "resourceType"
        and kind in (None, element.type)
    ]
    if not candidates:
        return None
    node, key, element = rng.choice(candidates)
    bad = rng.choice(_BAD_PRIMITIVES[element.type])
    if type(node[key]) is list:
        node[key][rng.randrange(len(node[key]))] = bad
    else:
        node[key] = bad
    return f"{element.type} {key} = {bad!r}"


def cardinality(document: dict[str, Any], objects: Objects, rng: random.Random, kind: str | None) -> str | None:
    """Remove a required element, repeat a single one, empty an array, or add an unknown element."""
    elements = _elements(objects)
    choices: list[Callable[[], str | None]] = []
    required = [(n, k, e) for n, k, e in elements if e.min >= 1 and e.choice is None and k[0] != "_"]
    single = [(n, k, e) for n, k, e in elements if e.max == 1 and k[0] != "_" and k != "resourceType"]
    arrays = [(n, k, e) for n, k, e in elements if e.max != 1 and type(n[k]) is list]
    if required:

        def remove() -> str:
            node, key, _element = rng.choice(required)
            del node[key]
            node.pop("_" + key, None)
            return f"removed required {key}"

        choices.append(remove)
    if single:

        def repeat() -> str:
            node, key, _element = rng.choice(single)
            node[key] = [node[key], node[key]]
            return f"{key} repeated"

        choices.append(repeat)
    if arrays:

        def empty() -> str:
            node, key, _element = rng.choice(arrays)
            node[key] = []
            return f"{key} emptied"

        choices.append(empty)

    def unknown() -> str:
        _type, node, _path = rng.choice(objects)
        node["unknownElement"] = "x"
        return "unknown element"

    choices.append(unknown)
    return _pick(choices, kind, rng)


def _pick(choices: list[Callable[[], str | None]], kind: str | None, rng: random.Random) -> str | None:
    named = [c for c in choices if kind is None or c.__name__ == kind]
    return rng.choice(named)() if named else None


def binding(document: dict[str, Any], objects: Objects, rng: random.Random, kind: str | None) -> str | None:
    """Break a required binding: a code outside its value set, a CodeableConcept or Coding outside it."""
    known = tables()
    candidates: list[tuple[str, Callable[[], str]]] = []
    for node, key, element in _elements(objects):
        if element.type == "code" and element.codes is not None and key != "resourceType":
            candidates.append(("code", _set(node, key, "not-a-code")))
        elif element.type == "CodeableConcept" and element.value_set in known.value_sets:
            expansion = known.value_sets[element.value_set]
            if any(codes is None for codes in expansion.values()):
                continue
            for concept in node[key] if type(node[key]) is list else [node[key]]:
                codings = concept.get("coding") or []
                candidates.append(("CodeableConcept", _text_only(concept)))
                candidates.append(("CodeableConcept", _other_system(concept)))
                if codings:
                    candidates.append(("Coding", _set(codings[0], "code", "not-a-code")))
    candidates = [(name, change) for name, change in candidates if kind in (None, name)]
    if not candidates:
        return None
    name, change = rng.choice(candidates)
    return f"{name}: {change()}"


def hl7_code(document: dict[str, Any], objects: Objects, rng: random.Random, kind: str | None) -> str | None:
    """Give a coding of an HL7 code system, under no required binding, a code the system does not define."""
    systems = tables().code_systems
    codings = [
        node
        for type_key, node, path in objects
        if type_key == "Coding"
        and node.get("system") in systems
        and ".clinicalStatus" not in path
        and ".verificationStatus" not in path
    ]
    if not codings:
        return None
    coding = rng.choice(codings)
    coding["code"] = "not-a-code"
    return f"{coding['system']} code"


def _set(node: dict[str, Any], key: str, value: object) -> Callable[[], str]:
    def change() -> str:
        if type(node.get(key)) is list:
            node[key] = [value]
        else:
            node[key] = value
        return f"{key} = {value!r}"

    return change


def _text_only(concept: dict[str, Any]) -> Callable[[], str]:
    def change() -> str:
        concept.pop("coding", None)
        concept["text"] = "text only"
        return "text only"

    return change


def _other_system(concept: dict[str, Any]) -> Callable[[], str]:
    def change() -> str:
        concept["coding"] = [{"system": "http://snomed.info/sct", "code": "55561003"}]
        return "coded only in SNOMED CT"

    return change


# -- invariants ------------------------------------------------------------------------------------------------


def invariant(document: dict[str, Any], objects: Objects, rng: random.Random, kind: str | None) -> str | None:
    """Break one invariant (``kind``) on an object of its type."""
    known = recipes()
    candidates = [
        (key, node)
        for key, (type_key, _change) in known.items()
        for found, node, _path in objects
        if found == type_key and kind in (None, key)
    ]
    rng.shuffle(candidates)
    for key, node in candidates:
        if known[key][1](node):
            return key
    return None


# -- Bundles ---------------------------------------------------------------------------------------------------


def bundle_rule(document: dict[str, Any], objects: Objects, rng: random.Random, kind: str | None) -> str | None:
    """Break a Bundle rule: a fullUrl that names another id, a urn: reference nothing defines, a repeated
    fullUrl, a missing request in a transaction, a total outside a search, a versioned fullUrl."""
    if document.get("resourceType") != "Bundle" or not document.get("entry"):
        return None
    entries = [e for e in document["entry"] if type(e) is dict]
    bundle_type = document.get("type")
    choices: list[Callable[[], str | None]] = []
    restful = [e for e in entries if str(e.get("fullUrl", "")).startswith("http") and "id" in e.get("resource", {})]
    urn_references = [
        node
        for type_key, node, path in objects
        if type_key == "Reference" and str(node.get("reference", "")).startswith("urn:uuid:")
    ]
    if restful:

        def other_id() -> str:
            rng.choice(restful)["resource"]["id"] = "another-id"
            return "fullUrl names another id"

        choices.append(other_id)
    if bundle_type == "transaction" and urn_references:

        def dangling() -> str:
            rng.choice(urn_references)["reference"] = "urn:uuid:00000000-0000-4000-8000-000000000000"
            return "urn:uuid reference to no entry"

        choices.append(dangling)
    with_urls = [e for e in entries if "fullUrl" in e]
    if len(with_urls) >= 2 and bundle_type != "history":

        def repeated() -> str | None:
            first, second = rng.sample(with_urls, 2)
            second["fullUrl"] = first["fullUrl"]
            for entry in (first, second):
                entry.get("resource", {}).get("meta", {}).pop("versionId", None)
            return "fullUrl repeated (bdl-7)"

        choices.append(repeated)
    if bundle_type in ("transaction", "batch"):

        def no_request() -> str:
            rng.choice(entries).pop("request", None)
            return "entry without request (bdl-3)"

        choices.append(no_request)
    if bundle_type not in ("searchset", "history"):

        def total() -> str:
            document["total"] = len(entries)
            return "total outside a search (bdl-1)"

        choices.append(total)
    if with_urls:

        def versioned() -> str:
            entry = rng.choice(with_urls)
            entry["fullUrl"] = "http://example.org/fhir/Basic/1/_history/1"
            return "versioned fullUrl (bdl-8)"

        choices.append(versioned)
    return _pick(choices, kind, rng)


CATEGORIES: dict[str, Operator] = {
    "primitives": primitive,
    "cardinality": cardinality,
    "bindings": binding,
    "invariants": invariant,
    "bundles": bundle_rule,
    "hl7-codes": hl7_code,
}


# The kinds of change of each category, tried in turn so that each gets its share of the sample.
KINDS: dict[str, list[str | None]] = {
    "primitives": list(_BAD_PRIMITIVES),
    "cardinality": ["remove", "repeat", "empty", "unknown"],
    "bindings": ["code", "CodeableConcept", "Coding"],
    "invariants": list(recipes()),
    "bundles": ["other_id", "dangling", "repeated", "no_request", "total", "versioned"],
    "hl7-codes": [None],
}


def mutate(document: dict[str, Any], category: str, rng: random.Random, kind: str | None = None) -> str | None:
    """Change ``document`` in place (the caller copies it) by one operator of the category (of one kind)."""
    return CATEGORIES[category](document, list(typed_objects(document)), rng, kind)


_TYPED: dict[int, tuple[dict[str, Any], Objects]] = {}


def _typed(key: int, document: dict[str, Any]) -> Objects:
    """Return the typed objects of an unchanged document (kept while the document is)."""
    found = _TYPED.get(key)
    if found is None or found[0] is not document:
        found = _TYPED[key] = (document, list(typed_objects(document)))
    return found[1]


def offers(document: dict[str, Any], category: str, kind: str | None) -> bool:
    """Tell cheaply whether a document may offer a change of this kind (before copying it)."""
    if kind is None or category in ("cardinality", "bundles", "hl7-codes"):
        return True
    objects = _typed(id(document), document)
    if category == "invariants":
        return any(found == recipes()[kind][0] for found, _node, _path in objects)
    if category == "primitives":
        return any(e.type == kind for _n, _k, e in _elements(objects))
    return True
