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

from gateway import encoding
from gateway.store.indexing import (
    IndexEntry,
    _index_keys,
    canonical_urls,
    compact_entries,
    decode_index,
    encode_index,
    expand_index,
    index_entries,
)
from gateway.store.keys import Keyspace
from gateway.store.maintenance import move_index
from gateway.store.parameters import _indexed, dates, indexed, normalized, references, strings, tokens
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


# The ``idx`` field of ``cur``: the compact form (keys relative to the type's index prefix) holds the same entries as
# the old form (a JSON list of [kind, full key, member]), and a write moves a resource's index entries from either
# exactly as the old code moved them from the old form.


def _old_move_index(plan: Any, rid: str, old: list[IndexEntry], new: list[IndexEntry]) -> None:
    """``move_index`` as it was before the compact form: full-key entries."""
    if old:
        kept_scores = {(kind, key): member for kind, key, member in new if kind == "z"}
        for kind, key, member in set(old) - set(new):
            if kind == "s":
                plan.write("SREM", key, rid)
            elif kind == "l":
                plan.write("ZREM", key, member)
            elif (kind, key) not in kept_scores:
                plan.write("ZREM", key, rid)
        new = sorted(set(new) - set(old))
    for kind, key, member in new:
        if kind == "s":
            plan.add("SADD", key, rid)
        elif kind == "l":
            plan.add("ZADD", key, 0, member)
        else:
            plan.add("ZADD", key, member, rid)


class _Recorded:
    """A plan that records its writes (removals, in any order) and its adds (in order)."""

    def __init__(self) -> None:
        self.writes: list[tuple[Any, ...]] = []
        self.adds: list[tuple[Any, ...]] = []

    def write(self, command: str, key: str, *args: Any) -> None:
        self.writes.append((command, key, *args))

    def add(self, command: str, key: str, *args: Any) -> None:
        self.adds.append((command, key, *args))


@settings(suppress_health_check=[HealthCheck.too_slow])
@given(resources(), st.sampled_from(["clinic-a", "t|*%"]), st.sampled_from(["gw", "gw-test"]))
def test_the_compact_form_holds_the_entries_of_the_old_form(resource: dict[str, Any], tenant: str, prefix: str) -> None:
    keys = Keyspace(prefix)
    index_prefix = keys.index_prefix(tenant, resource["resourceType"])
    compact = compact_entries(resource)
    old = reference_entries(keys, tenant, resource)
    assert expand_index(index_prefix, compact) == old
    assert decode_index(encode_index(compact, index_prefix, compact=True), index_prefix) == compact
    assert (
        decode_index(encode_index(compact, index_prefix, compact=True).decode(), index_prefix) == compact
    )  # as text, as from_hash may hold it
    assert decode_index(encoding.dumps(old), index_prefix) == compact  # the old form, as the old code wrote it
    assert decode_index(json.dumps(old), index_prefix) == compact  # and as the reindex wrote it
    plain = [key for kind, key, _ in old if kind == "s"]  # the form before entries had kinds: set keys
    assert decode_index(json.dumps(plain), index_prefix) == [e for e in compact if e[0] not in ("z", "l")]
    assert len(encode_index(compact, index_prefix, compact=True)) <= len(encoding.dumps(old))


@settings(suppress_health_check=[HealthCheck.too_slow], max_examples=200)
@given(resources(), resources(), st.sampled_from(["clinic-a", "t|*%"]), st.sampled_from(["old", "compact", "none"]))
def test_a_write_moves_the_entries_as_the_old_code_did(
    before: dict[str, Any], after: dict[str, Any], tenant: str, stored_as: str
) -> None:
    keys = Keyspace("gw")
    after = {**after, "resourceType": before["resourceType"], "id": before["id"]}  # a next version of the same one
    index_prefix = keys.index_prefix(tenant, before["resourceType"])
    old, new = index_entries(keys, tenant, before), index_entries(keys, tenant, after)
    if stored_as == "none":  # a create, or a version after a delete
        old = []
    raw = (
        encoding.dumps(old)
        if stored_as == "old"
        else encode_index(decode_index(encoding.dumps(old), index_prefix), index_prefix, compact=True)
    )
    expected, moved = _Recorded(), _Recorded()
    _old_move_index(expected, before["id"], old, new)
    move_index(moved, index_prefix, before["id"], decode_index(raw, index_prefix), compact_entries(after))
    assert sorted(moved.writes) == sorted(expected.writes)
    assert moved.adds == expected.adds


def test_an_old_entry_the_compact_form_cannot_hold_is_still_removed() -> None:
    keys = Keyspace("gw")
    index_prefix = keys.index_prefix("clinic-a", "Appointment")
    old = [["s", "gw:{clinic-a}:idx:Patient:tok:x:|y", ""], ["z", "gw:{clinic-a}:other lo", "1.0"],
           ["l", f"{index_prefix}str:a b", "t\0r1"], ["s", f"{index_prefix}tok:status:|booked", ""],
           ["s", f"{index_prefix}zip:1", ""], ["s", index_prefix, ""]]  # fmt: skip
    moved = _Recorded()
    move_index(moved, index_prefix, "r1", decode_index(json.dumps(old), index_prefix), [])
    assert sorted(moved.writes) == sorted(
        [
            ("SREM", "gw:{clinic-a}:idx:Patient:tok:x:|y", "r1"),
            ("SREM", f"{index_prefix}tok:status:|booked", "r1"),
            ("SREM", f"{index_prefix}zip:1", "r1"),
            ("SREM", index_prefix, "r1"),
            ("ZREM", "gw:{clinic-a}:other lo", "r1"),
            ("ZREM", f"{index_prefix}str:a b", "t\0r1"),
        ]
    )


def test_the_compact_form_tells_the_kinds_of_entries_apart() -> None:
    """A "z" or "l" entry's key ends at its first space (date and string parameter names have none); a set entry is
    its bare key, which starts with neither kind letter (nor the mark of an old form's foreign entry)."""
    for rtype in _indexed():
        for name, (kind, key, other) in _index_keys(rtype).items():
            if kind in ("date", "string"):
                assert " " not in name and key[0] == other[0] == ("z" if kind == "date" else "l"), (rtype, name)
                assert key.endswith(" ") and other.endswith(" ") and key.count(" ") == other.count(" ") == 1
            else:
                assert key[0] not in ("z", "l", "!") and key.startswith(("tok:", "ref:")), (rtype, name)
    assert all(entry.startswith("url:") for entry in compact_entries({"resourceType": "Questionnaire", "url": "u"}))
