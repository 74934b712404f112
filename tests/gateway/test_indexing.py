"""The index entries of a stored resource are what its search parameters' paths and types mean: the compiled
extractor (one walk of a resource for all of its type's parameters, key prefixes built once) gives exactly what a
plain reading of the paths, parameter by parameter, with the keyspace's own key builders gives."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gateway.store.indexing import IndexEntry, canonical_urls, index_entries
from gateway.store.keys import Keyspace
from gateway.store.parameters import dates, indexed, normalized, references, strings, tokens
from tests.conftest import corpus_dir
from tests.gateway.test_parameters import walked


def reference_entries(keys: Keyspace, tenant: str, stored: Mapping[str, Any]) -> list[IndexEntry]:
    """The index entries as the store computed them before the extractor: each parameter's paths read one by one
    (``walked``: their plain meaning), each key built by ``Keyspace``."""
    rtype, rid = str(stored.get("resourceType")), str(stored.get("id"))
    found: set[IndexEntry] = set()
    for url in canonical_urls(stored):
        found.add(("s", keys.url_index(tenant, rtype, url), ""))
    for name, param in indexed(rtype).items():
        values = [value for path in param.paths for value in walked(stored, path)]
        if not values:
            continue
        if param.type == "reference":
            found.update(("s", keys.reference_index(tenant, rtype, name, t), "") for t in references(values))
        elif param.type == "token":
            for system, code in tokens(values):
                found.add(("s", keys.token_index(tenant, rtype, name, system or "", code), ""))
                found.add(("s", keys.token_index(tenant, rtype, name, None, code), ""))
                if system:
                    found.add(("s", keys.token_index(tenant, rtype, name, system, None), ""))
        elif param.type == "date":
            span = dates(values)
            if span is not None:
                found.add(("z", keys.date_index(tenant, rtype, name, "lo"), repr(span[0])))
                found.add(("z", keys.date_index(tenant, rtype, name, "hi"), repr(span[1])))
        elif param.type == "string":
            for text in strings(values):
                found.add(("l", keys.string_index(tenant, rtype, name), f"{normalized(text)}\0{rid}"))
                found.add(("l", keys.string_index(tenant, rtype, name, exact=True), f"{text}\0{rid}"))
    return sorted(found)


def _resources(node: Any) -> Iterator[dict[str, Any]]:
    """Every resource in a JSON document: itself, a Bundle's entries, contained resources, at any depth."""
    if isinstance(node, list):
        for item in node:
            yield from _resources(item)
    elif isinstance(node, dict):
        if isinstance(node.get("resourceType"), str):
            yield node
        for value in node.values():
            yield from _resources(value)


@pytest.mark.corpus
def test_every_corpus_resource_gets_the_entries_its_paths_mean() -> None:
    keys, checked, typed = Keyspace("gw-test"), 0, set()
    for path in sorted(corpus_dir().rglob("*.json")):
        try:
            document = json.loads(path.read_text(encoding="utf-8-sig"))
        except (UnicodeDecodeError, ValueError):
            continue  # the corpus holds deliberately broken validator inputs
        for resource in _resources(document):
            resource.setdefault("id", "r1")
            assert index_entries(keys, "clinic-a", resource) == reference_entries(keys, "clinic-a", resource), (
                f"{path.name}: {resource['resourceType']}/{resource.get('id')}"
            )
            checked += 1
            typed.add(resource["resourceType"])
    assert checked > 1000 and {"Appointment", "Patient", "Observation", "Encounter"} <= typed


# Made-up resources of any indexed type: the elements its parameters' paths name, holding the shapes the value
# readers take apart (Codings, Identifiers, references of every type a filter wants, dates of every precision,
# Periods, timings, names, addresses) and key parts that must be escaped.
TYPES = sorted(rtype for rtype in ("Appointment", "Patient", "Observation", "Encounter", "CarePlan", "Communication",
                                   "QuestionnaireResponse", "Questionnaire", "PlanDefinition", "Practitioner",
                                   "DocumentReference", "MedicationRequest", "Condition", "Procedure")
               if indexed(rtype))  # fmt: skip
WANTED = sorted({s["is"] for r in TYPES for p in indexed(r).values() for path in p.paths for s in path
                 if isinstance(s, dict) and "is" in s} | {"Patient", "Group"})  # fmt: skip
WHERE = [s["where"] for r in TYPES for p in indexed(r).values() for path in p.paths for s in path
         if isinstance(s, dict) and "where" in s]  # fmt: skip
NAMES = sorted(
    {s for r in TYPES for p in indexed(r).values() for path in p.paths for s in path if isinstance(s, str)}
    | {element for element, _ in WHERE}
    | {"coding", "system", "code", "value", "reference", "start", "end", "event", "url", "version"}
    | {"text", "family", "given", "prefix", "suffix", "line", "city", "postalCode", "country"}
)
texts = st.sampled_from(
    ["booked", "Ab  Ça", "x|y", "50%*", "", " ", "urn:oid:1.2|3", "http://loinc.org", "Zoë", "a\\,b", "final"]
) | st.text(max_size=6)
references_ = st.builds(
    lambda kind, rid, form: form.format(kind, rid),
    st.sampled_from(WANTED),
    st.sampled_from(["p1", "x-2", "a.b"]),
    st.sampled_from(["{}/{}", "http://ehr/fhir/{}/{}", "{}/{}/_history/2", "#{}{}", "urn:uuid:{}{}", "{}"]),
)
INSTANTS = ["2024", "2024-02", "2024-02-29", "2023-02-29", "2024-03-10T01:30:00-05:00", "2024-03-10T06:30:00.123Z",
            "9999-12-31", "2024-13", "2021-01-01T00:00", "1980-01-01T10:00:00Z"]  # fmt: skip
instants = st.sampled_from(INSTANTS)
codings = st.fixed_dictionaries({}, optional={"system": texts, "code": texts, "value": texts})
LEAVES = {
    "reference": st.fixed_dictionaries({"reference": references_}) | texts,
    "token": st.booleans() | texts | codings | st.fixed_dictionaries({"coding": st.lists(codings, max_size=3)}),
    "date": instants
    | st.fixed_dictionaries({}, optional={"start": instants, "end": instants})
    | st.fixed_dictionaries({"event": st.lists(instants | st.integers(), max_size=3)}),
    "string": texts
    | st.fixed_dictionaries({}, optional={"family": texts, "given": st.lists(texts, max_size=2), "city": texts}),
}
leaves = (
    st.none()
    | st.integers(-2, 2)
    | references_
    | st.sampled_from([expected for _, expected in WHERE] or ["official"])
    | st.one_of(*LEAVES.values())
)
shapes = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(NAMES), inner, max_size=5),
    max_leaves=10,
)


def _put(draw: st.DrawFn, path: tuple[Any, ...], leaf: Any) -> Any:
    """A value that ``path`` reaches ``leaf`` in (or, where a filter does not pass, misses it), inside lists or
    not."""
    if not path:
        return leaf
    step, rest = path[0], path[1:]
    if isinstance(step, str):
        inner = _put(draw, rest, leaf)
        return {step: draw(st.sampled_from([inner, [inner], [None, inner, draw(shapes)]]))}
    node = _put(draw, rest, leaf)
    node = dict(node) if isinstance(node, dict) else draw(st.fixed_dictionaries({}, optional={"display": texts}))
    if "is" in step:
        node["reference"] = draw(st.sampled_from([f"{step['is']}/p1", f"http://ehr/{step['is']}/9"]) | references_)
    else:
        element, expected = step["where"]
        node[element] = draw(st.sampled_from([expected, "other"]))
    return node


@st.composite
def resources(draw: st.DrawFn) -> dict[str, Any]:
    """A resource of an indexed type: values along some of its parameters' paths, and elements of any shape."""
    rtype = draw(st.sampled_from(TYPES))
    params = indexed(rtype)
    own = sorted({p[0] for param in params.values() for p in param.paths} | {"url", "version"})
    body: dict[str, Any] = draw(st.dictionaries(st.sampled_from(own), shapes, max_size=3))
    for name in draw(st.lists(st.sampled_from(sorted(params)), max_size=6)):
        path = draw(st.sampled_from(params[name].paths))
        for root, value in _put(draw, path, draw(LEAVES.get(params[name].type, shapes) | shapes)).items():
            body[root] = [body[root], value] if root in body else value
    return {**body, "resourceType": rtype, "id": draw(st.sampled_from(["r1", "a-b.c"]))}


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(resources(), st.sampled_from(["clinic-a", "t|*%"]), st.sampled_from(["gw", "gw-test"]))
def test_made_up_resources_get_the_entries_their_paths_mean(resource: dict[str, Any], tenant: str, prefix: str) -> None:
    keys = Keyspace(prefix)
    assert index_entries(keys, tenant, resource) == reference_entries(keys, tenant, resource)
