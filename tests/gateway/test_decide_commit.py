"""The decide phase's faster paths (issue #13) send Redis exactly what the code before them sent.

A transaction's commit is captured as the commit script receives it (its keys and arguments): the bytes stored,
the digests and dedupe keys, the index entries and the ``idx`` kept beside each version, the audit entries. Two
checks:

- the commits of deterministic runs (the benchmark's Bundles through the edge, then again as retries and with
  changes, and hand-made resources of several types created, updated, matched and deleted) hash to what the code at
  84f3f51 (main before the sixth round) made of the same runs, but for a later version's stamp where the one before
  was written in the same millisecond (see ``GOLDEN``): old and new gateways write the same keys, fields and
  bytes, side by side in a rolling upgrade, and a create retried across the upgrade finds its first resource;
- made-up resources of every indexed shape (``test_indexing.resources``) are committed alike by the store as it is
  and by the store with the code the round replaced put back (kept here as the reference).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import subprocess
import sys
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gateway.store.indexing as indexing_module
import gateway.store.parameters as parameters_module
import gateway.store.store as store_module
import gateway.store.versions as versions_module
from gateway import encoding
from gateway.embedded import EmbeddedRedis
from gateway.fhir import bundle as bundles
from gateway.store import Keyspace, Plan, Store, audit, ehr_meta
from gateway.store.connection import connect
from gateway.store.indexing import IndexEntry, canonical_urls
from gateway.store.keys import escape
from gateway.store.operation import Create, Delete, Operation, Update
from gateway.store.parameters import dates, indexed, indexed_values, normalized, references, strings, tokens
from tests.gateway.test_indexing import resources
from tests.gateway.test_parameters import datetime_range

ROOT = Path(__file__).resolve().parents[2]
NOW = 1_800_000_000.25  # every decision's instant (its versions' lastUpdated, the audit entries' time)

# What the code at 84f3f51 committed for ``_golden_runs`` (sha256 of ``_normalized`` commits): see the docstring. A
# change meant to alter what is written changes it: print ``golden(<a folder>)`` (``PYTHONHASHSEED=0``) with the code
# before the change and after, and say in the commit why old and new gateways can still run side by side.
# Since each version of a resource is stamped at least a millisecond after the one before, the later versions the
# runs write at their one instant (NOW) are a millisecond on: their lastUpdated and version scores, nothing else,
# differ from 84f3f51's (f3821a4a...).
GOLDEN = "ff59d96dfbbe26ed9a62e2db53c08cc21825fbe4e3c68e2d2e75133cb03a09ad"


def bench_bundle(rng: random.Random, run: str, size: int, seq: int) -> bytes:
    """``bench/gateway_bench.py``'s ``make_bundle`` as of 84f3f51 (a copy, so that the hash below follows the store
    alone), its urn:uuids drawn from ``rng``: a Patient, then Appointments pointing at it, half PUT and half POST."""
    patient_urn = f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}"
    tag = f"{run}-{size}-{seq}"
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": patient_urn,
            "resource": {
                "resourceType": "Patient",
                "identifier": [{"system": "urn:gwbench:mrn", "value": f"mrn-{tag}"}],
                "name": [{"family": "Bench", "given": [f"Synthetic{seq}"]}],
                "birthDate": "1980-01-01",
            },
            "request": {"method": "POST", "url": "Patient"},
        }
    ]
    day = datetime(2027, 1, 4, 14, 0, tzinfo=UTC) + timedelta(days=seq % 300)
    for i in range(size - 1):
        start = day + timedelta(minutes=15 * i)
        appointment: dict[str, Any] = {
            "resourceType": "Appointment",
            "identifier": [{"system": "urn:gwbench:appt", "value": f"appt-{tag}-{i}"}],
            "status": "booked",
            "description": "Synthetic benchmark visit",
            "start": start.isoformat().replace("+00:00", "Z"),
            "end": (start + timedelta(minutes=30)).isoformat().replace("+00:00", "Z"),
            "participant": [
                {"actor": {"reference": patient_urn}, "status": "accepted"},
                {"actor": {"reference": "Practitioner/bench-prac-1"}, "status": "accepted"},
            ],
        }
        if i % 2 == 0:
            rid = f"b{tag}-{i}"
            appointment["id"] = rid
            entries.append({"resource": appointment, "request": {"method": "PUT", "url": f"Appointment/{rid}"}})
        else:
            entries.append(
                {
                    "fullUrl": f"urn:uuid:{uuid.UUID(int=rng.getrandbits(128), version=4)}",
                    "resource": appointment,
                    "request": {"method": "POST", "url": "Appointment"},
                }
            )
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    return json.dumps(bundle, separators=(",", ":")).encode()


@contextmanager
def _captured(store: Store, commits: list[tuple[list[Any], list[Any]]], *, apply: bool = True) -> Iterator[None]:
    """Record every commit the store makes, as the commit script receives it (and run it, when ``apply``), but for
    those whose checks failed: they write nothing (a create taken to be new that was a retry makes one)."""
    script = store._committer._script

    async def recording(keys: list[Any], args: list[Any]) -> Any:
        reply = await script(keys=keys, args=args) if apply else [b"ok"]
        if reply[0] != b"conflict":
            commits.append((list(keys), list(args)))
        return reply

    store._committer._script = recording  # type: ignore[assignment]
    try:
        yield
    finally:
        store._committer._script = script


def _normalized(commits: list[tuple[list[Any], list[Any]]], prefix: str) -> bytes:
    """The commits as comparable bytes: the run's own key prefix left out, every value with its Python type."""

    def one(value: Any) -> Any:
        if isinstance(value, str):
            return ["s", value.replace(prefix, "<prefix>")]
        if isinstance(value, bytes):
            return ["b", value.decode("utf-8", "backslashreplace").replace(prefix, "<prefix>")]
        return [type(value).__name__, repr(value)]

    return orjson.dumps([[[one(k) for k in keys], [one(a) for a in args]] for keys, args in commits])


def _ids() -> Any:
    """A stand-in for ``new_ids``: the same ids in every run."""
    counter = iter(range(1_000_000))

    def new_ids(n: int) -> list[str]:
        return [str(uuid.UUID(int=next(counter) * 7919 + 1, version=4)) for _ in range(n)]

    return new_ids


def _store(url: str, prefix: str) -> Store:
    return Store(connect(url, cluster=False, timeout=5.0), Keyspace(prefix), max_backlog=10_000_000,
                 dedupe_seconds=300, retries=5, clock=lambda: NOW)  # fmt: skip


@contextmanager
def _trail() -> Iterator[None]:
    now_ms = int(NOW * 1000)
    token = audit.current.set(audit.RequestAudit("127.0.0.1", "transaction", now_ms - 86_400_000, now_ms, "bench"))
    try:
        yield
    finally:
        audit.current.reset(token)


def _hand_made() -> list[list[Operation]]:
    """Sets of operations over resources of several types: every search type, canonical URLs, the EHR's version
    meta, key parts to escape, accents, an integer past 64 bits, conditional creates, updates and deletes."""
    patient = {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:mrn", "value": "m-1"}, {"system": "urn:x|y", "value": "50%*"}, {"value": "v"}],
        "name": [{"family": "Zoë  Ça", "given": ["Ab", "Ab"], "prefix": ["Dr"]}, {"text": "  "}],
        "address": [{"line": ["1 Main St"], "city": "Springfield", "postalCode": "01234"}],
        "gender": "female",
        "birthDate": "1980-02-29",
        "active": True,
        "meta": {"versionId": "ehr-7", "lastUpdated": "2026-01-02T03:04:05.678+01:00", "tag": [{"code": "t"}]},
        "managingOrganization": {"reference": "http://ehr/fhir/Organization/o-1/_history/3"},
    }
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}, {"code": "local"}], "text": "HR"},
        "subject": {"reference": "urn:uuid:00000000-0000-4000-8000-00000000000a"},
        "effectivePeriod": {"start": "2026-03-10T01:30:00-05:00", "end": "2026-03-10T06:30:00.123Z"},
        "valueQuantity": {"value": 123456789012345678901234567890, "unit": "/min"},
        "performer": [{"reference": "Practitioner/d-1"}, {"reference": "#contained"}],
    }
    encounter = {
        "resourceType": "Encounter",
        "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": "Patient?identifier=urn:mrn|m-1"},
        "period": {"start": "2026-03-10"},
        "meta": {"extension": [{"url": "urn:fhir-gateway:extension:ehr-versionId", "valueId": "9"},
                               {"url": "urn:x", "valueString": "kept"}]},
    }  # fmt: skip
    questionnaire = {
        "resourceType": "Questionnaire",
        "url": "http://example.org/q|odd",
        "version": "2.0",
        "status": "active",
        "name": "Intake",
        "date": "2026-02",
    }
    urn = "urn:uuid:00000000-0000-4000-8000-00000000000a"
    changed = {**patient, "gender": "other", "birthDate": "1980-03-01", "name": [{"family": "Other"}]}
    return [
        [
            Create("Patient", dict(patient), full_url=urn),
            Create("Observation", dict(observation)),
            Create("Questionnaire", dict(questionnaire)),
        ],
        [Create("Encounter", dict(encounter)), Update("Practitioner", "d-1", {"resourceType": "Practitioner",
                                                                             "id": "d-1", "name": [{"family": "D"}]})],
        [Create("Patient", dict(patient), if_none_exist="identifier=urn:mrn|m-1")],
        [Create("Questionnaire", dict(questionnaire))],  # a retry: the first one's id
        [Update("Practitioner", "d-1", {"resourceType": "Practitioner", "id": "d-1", "name": [{"family": "D"}]})],
        [Update("Patient", "", changed, criteria="identifier=urn:mrn|m-1")],
        [Update("Questionnaire", "q-2", {**questionnaire, "id": "q-2", "version": "3"}),
         Delete("Practitioner", "d-1")],
        [Delete("Practitioner", "d-1"), Update("Practitioner", "d-2", {"resourceType": "Practitioner"})],
    ]  # fmt: skip


async def _golden_runs(url: str, prefix: str) -> bytes:
    """Commit the deterministic runs on a fresh prefix and return their commits, normalized."""
    from gateway.fhir.edge import Edge
    from gateway.settings import ClientsConfig, Settings

    rng = random.Random(13)
    bodies = [bench_bundle(rng, "golden", size, seq) for size in (20, 100) for seq in range(3)]
    store = _store(url, prefix)
    edge = Edge(store, Settings(redis_url="redis://unused"), ClientsConfig.model_validate({"clients": []}))
    commits: list[tuple[list[Any], list[Any]]] = []
    real_ids = store_module.new_ids
    store_module.new_ids = _ids()  # type: ignore[assignment]
    try:
        with _captured(store, commits), _trail():
            for body in [*bodies, *bodies[:2], bodies[0].replace(b'"booked"', b'"cancelled"')]:
                await bundles.process(edge, "bench", orjson.loads(body), "http://bench/fhir/R4", bundles.Prefer())
            for ops in _hand_made():
                await store.apply("clinic-a", ops)
    finally:
        store_module.new_ids = real_ids  # type: ignore[assignment]
        await store.redis.aclose()
    return _normalized(commits, prefix)


def golden(folder: str) -> str:
    """Return the sha256 of ``_golden_runs``'s commits on a private server, with a fixed prefix and ``PYTHONHASHSEED=0``
    (the order a resource's old index entries are removed in, and so its keys' order, follows their strings' hashes,
    which the prefix is part of)."""
    with EmbeddedRedis(Path(folder)) as server:
        made = asyncio.run(_golden_runs(server.url, "gwtest-golden"))
    assert made.count(b"Appointment") > 1000 and made.count(b"Questionnaire") > 10
    return hashlib.sha256(made).hexdigest()


def test_the_commits_are_the_ones_main_made(tmp_path: Path) -> None:
    code = f"from tests.gateway.test_decide_commit import golden; print(golden({str(tmp_path)!r}))"
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=False)
    assert run.returncode == 0, run.stderr[-3000:]
    assert run.stdout.split()[-1] == GOLDEN


# -- made-up resources, against the code the round replaced ------------------------------------------------------


def index_entries_before(keys: Keyspace, tenant: str, stored: Mapping[str, Any]) -> list[IndexEntry]:
    """``index_entries`` as it was at 84f3f51: each parameter's values read by name, then turned into entries."""
    rtype, rid = str(stored.get("resourceType")), str(stored.get("id"))
    by_name: dict[str, tuple[str, str, str]] = {}
    for name, param in indexed(rtype).items():
        if param.type == "reference":
            by_name[name] = (param.type, keys.reference_prefix(tenant, rtype, name), "")
        elif param.type == "token":
            by_name[name] = (param.type, keys.token_prefix(tenant, rtype, name), "")
        elif param.type == "date":
            lo, hi = keys.date_index(tenant, rtype, name, "lo"), keys.date_index(tenant, rtype, name, "hi")
            by_name[name] = (param.type, lo, hi)
        elif param.type == "string":
            exact = keys.string_index(tenant, rtype, name, exact=True)
            by_name[name] = (param.type, keys.string_index(tenant, rtype, name), exact)
    found: set[IndexEntry] = set()
    for url in canonical_urls(stored):
        found.add(("s", keys.url_prefix(tenant, rtype) + url, ""))
    for name, values in indexed_values(stored, rtype).items():
        if not values:
            continue
        kind, key, other = by_name[name]
        if kind == "reference":
            found.update([("s", key + escape(t), "") for t in references(values)])
        elif kind == "token":
            for system, code in tokens(values):
                c = escape(code)
                found.add(("s", f"{key}{escape(system) if system else ''}|{c}", ""))
                found.add(("s", f"{key}*|{c}", ""))
                if system:
                    found.add(("s", f"{key}{escape(system)}|*", ""))
        elif kind == "date":
            span = dates(values)
            if span is not None:
                found.add(("z", key, repr(span[0])))
                found.add(("z", other, repr(span[1])))
        elif kind == "string":
            for text in strings(values):
                found.add(("l", key, f"{normalized(text)}\0{rid}"))
                found.add(("l", other, f"{text}\0{rid}"))
    return sorted(found)


@contextmanager
def _before() -> Iterator[None]:
    """Put back the code the round replaced."""
    saved = versions_module.index_entries, parameters_module._range, indexing_module.index_entries
    versions_module.index_entries = index_entries_before  # type: ignore[assignment]
    indexing_module.index_entries = index_entries_before  # type: ignore[assignment]
    parameters_module._range = datetime_range  # type: ignore[assignment]
    parameters_module._cached_range.cache_clear()
    try:
        yield
    finally:
        versions_module.index_entries, parameters_module._range, indexing_module.index_entries = saved
        parameters_module._cached_range.cache_clear()


@pytest.fixture(scope="module")
def private_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with EmbeddedRedis(tmp_path_factory.mktemp("redis-commits")) as server:
        yield server.url


_TYPES = st.sampled_from(["Create", "Update", "conditional"])


@settings(suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture], deadline=None)
@given(st.lists(st.tuples(resources(), _TYPES), min_size=1, max_size=4))
def test_made_up_resources_are_committed_as_before(private_redis: str, made: list[tuple[Any, str]]) -> None:
    ops: list[Operation] = []
    for i, (resource, how) in enumerate(made):
        rtype = resource["resourceType"]
        if how == "Create":
            ops.append(Create(rtype, dict(resource), full_url=f"urn:uuid:{uuid.UUID(int=i + 1)}"))
        elif how == "conditional":
            ops.append(Create(rtype, dict(resource), if_none_exist=f"identifier=urn:x|v{i}"))
        else:
            ops.append(Update(rtype, f"u{i}", {**resource, "id": f"u{i}"}))
    prefix = f"gwtest-{uuid.uuid4().hex[:10]}"
    assert asyncio.run(_commits(private_redis, prefix, ops, old=False)) == asyncio.run(
        _commits(private_redis, prefix, ops, old=True)
    )


async def _commits(url: str, prefix: str, ops: list[Operation], *, old: bool) -> bytes:
    """Decide ``ops`` (nothing is written) and return the commit, normalized, or the error the set failed with."""
    store = _store(url, prefix)
    commits: list[tuple[list[Any], list[Any]]] = []
    real_ids = store_module.new_ids
    store_module.new_ids = _ids()  # type: ignore[assignment]
    try:
        with _captured(store, commits, apply=False), _trail(), _before() if old else _nothing():
            await store.apply("clinic-a", ops)
    except Exception as exc:  # the same refusal either way
        return repr(exc).encode()
    finally:
        store_module.new_ids = real_ids  # type: ignore[assignment]
        await store.redis.aclose()
    return _normalized(commits, prefix)


@contextmanager
def _nothing() -> Iterator[None]:
    yield


# -- a resource's index entries added at once --------------------------------------------------------------------

_ENTRIES = st.lists(
    st.tuples(
        st.sampled_from(["s", "l", "z"]), st.sampled_from(["k1", "k2", "k3"]), st.sampled_from(["", "1.5", "a\0r"])
    ),
    max_size=8,
)


@given(st.lists(st.tuples(st.sampled_from(["r1", "r2"]), _ENTRIES), min_size=1, max_size=3), st.booleans())
def test_index_entries_are_added_as_one_add_each_adds_them(sets: list[tuple[str, list[Any]]], marked: bool) -> None:
    one_each, at_once = Plan(), Plan()
    for plan in (one_each, at_once):
        plan.write("DEL", "k2")
        if marked:
            plan.mark()
    for rid, entries in sets:
        for kind, key, member in entries:
            if kind == "s":
                one_each.add("SADD", key, rid)
            elif kind == "l":
                one_each.add("ZADD", key, 0, member)
            else:
                one_each.add("ZADD", key, member, rid)
        at_once.add_entries(rid, entries)
    assert (at_once.keys, at_once.adds, at_once._journal) == (one_each.keys, one_each.adds, one_each._journal)


# -- a resource split into its content and the EHR's version -----------------------------------------------------


def split_before(resource: Mapping[str, Any]) -> tuple[dict[str, Any], str | None, str | None]:
    """``ehr_meta.split`` as it was at 84f3f51 (the content built by a comprehension)."""
    content = {k: v for k, v in resource.items() if k != "id"}
    meta = content.get("meta")
    evid = elu = None
    if isinstance(meta, Mapping):
        meta = dict(meta)
        evid = meta.pop("versionId", None)
        elu = meta.pop("lastUpdated", None)
        if any(isinstance(e, Mapping) and e.get("url") in ehr_meta._OURS for e in meta.get("extension") or []):
            evid, elu = ehr_meta.read(meta)
        if extensions := ehr_meta._other_extensions(meta):
            meta["extension"] = extensions
        else:
            meta.pop("extension", None)
        if meta:
            content["meta"] = meta
        else:
            content.pop("meta")
    return content, (evid if isinstance(evid, str) else None), (elu if isinstance(elu, str) else None)


_EXTENSIONS = st.lists(
    st.fixed_dictionaries(
        {"url": st.sampled_from([ehr_meta.VERSION_ID, ehr_meta.LAST_UPDATED, "urn:x"])},
        optional={"valueId": st.sampled_from(["7", "8"]), "valueInstant": st.sampled_from(["2026-01-01T00:00:00Z"])},
    ),
    max_size=3,
)
_METAS = st.none() | st.integers() | st.fixed_dictionaries(
    {}, optional={"versionId": st.sampled_from(["1", 2]), "lastUpdated": st.sampled_from(["2026-01-02T03:04:05Z"]),
                  "extension": _EXTENSIONS, "tag": st.just([{"code": "t"}])}
)  # fmt: skip


@given(
    st.dictionaries(st.sampled_from(["resourceType", "id", "status", "meta", "a", "b"]), st.integers(), max_size=6),
    st.sampled_from(["absent", "first", "last"]),
    _METAS,
)
def test_a_resource_splits_as_before(body: dict[str, Any], where: str, meta: Any) -> None:
    body.pop("meta", None)
    if where == "first":
        body = {"meta": meta, **body}
    elif where == "last":
        body["meta"] = meta
    before = split_before(body)
    after = ehr_meta.split(body)
    assert after == before and list(after[0]) == list(before[0])
    assert encoding.dumps(after[0]) == encoding.dumps(before[0])
