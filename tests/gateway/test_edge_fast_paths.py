"""The edge's faster paths answer exactly as the plain ones they replace (issue #13).

Each is checked against the code it replaced, kept here as the reference: new ids against ``uuid.uuid4``'s text,
a Bundle entry's request url against ``urlsplit``, a request's audit entries against one ``entry`` and ``add`` per
write, a plan's forms found by identity against found by value, and a write's answer that splices the stored bytes
against the one that wrote the resource again. A create's digest, and so its dedupe key, is the one the gateway
computed before these changes: a create retried across an upgrade still finds its first resource.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import uuid
from typing import Any
from urllib.parse import urlsplit

import orjson
from hypothesis import given
from hypothesis import strategies as st

from gateway import encoding
from gateway.fhir.bundle import Prefer, _response_entry
from gateway.fhir.entries import split_url
from gateway.store import Plan, Result, audit, digest
from gateway.store.connection import LaneRedis
from gateway.store.ids import formatted, new_ids
from gateway.store.keys import Keyspace
from tests.conftest import Gateway
from tests.gateway.fixtures import post_entry, put_entry, transaction

# -- ids ---------------------------------------------------------------------------------------------------------


@given(st.binary(min_size=16, max_size=16))
def test_an_id_is_the_text_uuid4_makes_of_the_same_bytes(raw: bytes) -> None:
    assert formatted(raw) == str(uuid.UUID(bytes=raw, version=4))


def test_new_ids_are_distinct_version_4_uuids() -> None:
    assert new_ids(0) == []
    ids = new_ids(500)
    assert len(set(ids)) == 500
    for rid in ids:
        parsed = uuid.UUID(rid)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and str(parsed) == rid


# -- request urls ------------------------------------------------------------------------------------------------

_URL_TEXT = st.text(alphabet=st.sampled_from(list("Pa9/-._:?#=&% \t\n[]$|~Zz")), max_size=24)


@given(_URL_TEXT | st.text(max_size=16) | st.sampled_from(["Patient", "Appointment/b-1", "//h/Patient", "/P", "a:b"]))
def test_a_request_url_splits_as_urlsplit_splits_it(url: str) -> None:
    try:
        parts = urlsplit(url)
    except ValueError:
        expected: Any = ValueError
    else:
        expected = (parts.scheme, parts.path, parts.query)
    try:
        got: Any = split_url(url)
    except ValueError:
        got = ValueError
    assert got == expected


# -- audit entries -----------------------------------------------------------------------------------------------

_WORDS = st.sampled_from(["", "Appointment", "p-1", "1", "Patient/p", "create", "update", "x"])
_ROWS = st.lists(st.tuples(_WORDS, _WORDS, _WORDS, _WORDS, _WORDS, st.sampled_from([200, 201, 204, 0])), max_size=12)


@given(_ROWS, _WORDS, _WORDS, st.sampled_from(["", "transaction", "patch"]), st.booleans())
def test_a_requests_audit_entries_make_the_plan_one_entry_at_a_time_made(
    rows: list[audit.Written], client: str, params: str, interaction: str, earlier: bool
) -> None:
    keys = Keyspace("gw")
    trail = audit.RequestAudit("10.0.0.1", interaction, 1_000, 2_000, client="c", params=params)
    expected, got = Plan(), Plan()
    if earlier:  # a plan that already holds an entry of another request's form
        for plan in (expected, got):
            audit.add(plan, keys, "t", ["at", "1", "type", "Patient", "id", "x", "outcome", "201"], 5)
    for interaction_, rtype, rid, vid, patient, outcome in rows:
        fields = audit.entry(trail, tenant="t", client=client, rtype=rtype, rid=rid, vid=vid, outcome=outcome,
                             interaction=interaction_, patient=patient)  # fmt: skip
        audit.add(expected, keys, "t", fields, trail.minid)
    audit.add_written(got, keys, trail, "t", client, rows)
    assert got == expected
    assert list(got.commands()) == list(expected.commands())


# -- plan forms --------------------------------------------------------------------------------------------------

_FORMS = [("HSET", ("vid", None, "lu", None)), ("XADD", ("*", "type", None)), ("HSET", (None, None))]
_STEPS = st.lists(st.tuples(st.sampled_from(range(3)), st.booleans(), st.sampled_from(["put", "mark", "undo"])))


@given(_STEPS)
def test_a_form_is_found_by_identity_as_by_value(steps: list[tuple[int, bool, str]]) -> None:
    """The same plan whether each write passes the declared form object or an equal copy, marks and undos between."""
    shared, copied = Plan(), Plan()
    marks: list[Any] = [None, None]
    for number, copy, step in steps:
        form = _FORMS[number]
        if step == "put":
            values = [f"v{i}" for i in range(form[1].count(None))]
            shared.put(form, "k", *values)
            copied.put((form[0], tuple(list(form[1]))) if copy else form, "k", *values)
        elif step == "mark":
            marks = [shared.mark(), copied.mark()]
        elif marks[0] is not None:
            shared.undo(marks[0])
            copied.undo(marks[1])
            marks = [None, None]
    assert shared == copied
    assert list(shared.commands()) == list(copied.commands())
    for plan in (shared, copied):
        assert plan._form_ids == {id(form): (form, number) for number, form in enumerate(plan.forms, 1)}


# -- a write's answer --------------------------------------------------------------------------------------------

_TEXT = st.text(alphabet=st.sampled_from(list('aé"\\\u2028\x1f\x7f ✓0')), max_size=8)
_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) | _TEXT,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_TEXT, inner, max_size=3),
    max_leaves=12,
)
_RESOURCES = st.dictionaries(_TEXT, _VALUES, max_size=4).map(
    lambda body: {"resourceType": "Basic", "id": "b1", "meta": {"versionId": "1", "lastUpdated": "2026-01-01"}, **body}
)


@given(st.lists(_RESOURCES, min_size=1, max_size=3), st.booleans(), st.booleans())
def test_an_answer_splicing_the_stored_bytes_is_the_answer_writing_the_resource(
    resources: list[dict[str, Any]], representation: bool, outcome: bool
) -> None:
    prefer = Prefer(representation=representation, outcome=outcome)

    def answer(spliced: bool) -> bytes:
        entries = []
        for n, resource in enumerate(resources):
            raw = encoding.dumps(resource) if spliced and n % 2 == 0 else None  # some entries (a match) have none
            result = Result(201, "Basic", "b1", vid=1, last_updated="2026-01-01", resource=resource, raw=raw)
            entries.append(_response_entry(result, "http://x/fhir/R4", prefer))
        return encoding.dumps({"resourceType": "Bundle", "type": "transaction-response", "entry": entries})

    assert answer(spliced=True) == answer(spliced=False)


_APPOINTMENT = {
    "resourceType": "Appointment",
    "status": "booked",
    "description": 'Visit — été \u2028 "q"',
    "start": "2027-01-04T14:00:00Z",
    "end": "2027-01-04T14:30:00Z",
    "minutesDuration": 30,
    "participant": [{"actor": {"reference": "Patient/p1"}, "status": "accepted"}],
    "meta": {"tag": [{"code": "x"}]},
}
# What the gateway before these changes (9738e12) computed for _APPOINTMENT, and for it with an integer past 64 bits.
_DIGEST = "0ca07f078a85391542f6c32ac8885d15a8a4ce17328ce5e4704b99e97d11d3e2"
_WIDE_DIGEST = "ee9336f8310e1ed63402c17a8d7e8f2895eb44fccecdc8320be91e0da852092e"


def test_a_digest_is_the_one_the_gateway_computed_before() -> None:
    assert digest(_APPOINTMENT) == _DIGEST
    assert digest({**_APPOINTMENT, "priority": 2**70}) == _WIDE_DIGEST
    plain = json.dumps(_APPOINTMENT, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    assert hashlib.sha256(plain).hexdigest() == _DIGEST


async def test_a_create_retried_across_the_upgrade_finds_its_first_resource(gateway: Gateway) -> None:
    """A dedupe key an older gateway wrote (its digest) is the one this gateway looks up: no second resource."""
    services = gateway.services
    first = await gateway.ehr("POST", "/Appointment", json=_APPOINTMENT)
    assert first.status_code == 201
    rid = first.headers["Location"].split("/Appointment/")[1].split("/")[0]
    key = services.keys.dedupe("clinic-a", "Appointment", _DIGEST)
    assert (await services.redis.get(key)) == rid.encode()
    again = await gateway.ehr("POST", "/Appointment", json=_APPOINTMENT)
    assert again.status_code == 200
    assert again.headers["Location"] == first.headers["Location"]


async def test_a_created_resource_is_answered_with_its_stored_bytes(gateway: Gateway) -> None:
    services = gateway.services
    created = await gateway.ehr("POST", "/Appointment", json={**_APPOINTMENT, "description": "other é"})
    assert created.status_code == 201
    rid = created.headers["Location"].split("/Appointment/")[1].split("/")[0]
    stored = await services.redis.hget(services.keys.history("clinic-a", "Appointment", rid), "1")
    assert created.content == stored == encoding.dumps(encoding.loads(stored))


async def test_a_transaction_answered_with_representations_splices_the_stored_bytes(gateway: Gateway) -> None:
    services = gateway.services
    patient_urn = f"urn:uuid:{uuid.uuid4()}"
    appointment = {**_APPOINTMENT, "participant": [{"actor": {"reference": patient_urn}, "status": "accepted"}]}
    bundle = transaction(
        post_entry({"resourceType": "Patient", "name": [{"family": "Ünïcode \u2028"}]}, patient_urn),
        post_entry(appointment, f"urn:uuid:{uuid.uuid4()}"),
        put_entry({"resourceType": "Basic", "id": f"b{os.getpid()}", "code": {"text": "x"}}),
    )
    answer = await gateway.ehr("POST", "", json=bundle, headers={"Prefer": "return=representation"})
    assert answer.status_code == 200
    body = answer.json()
    assert answer.content == encoding.dumps(body)  # the compact form the answer was written in before
    for entry in body["entry"]:
        rtype, rid = entry["response"]["location"].split("/")[:2]
        stored = await services.redis.hget(services.keys.history("clinic-a", rtype, rid), "1")
        assert orjson.dumps(entry["resource"]) == stored
        assert encoding.dumps(entry["resource"]) in answer.content


# -- the order creates are decided in ----------------------------------------------------------------------------


class _Op:
    def __init__(self, full_url: str | None) -> None:
        self.full_url = full_url


class _Create:
    def __init__(self, full_url: str | None, targets: frozenset[str]) -> None:
        self.op = _Op(full_url)
        self.targets = targets

    def references(self) -> frozenset[str]:
        return self.targets


def _order_as_before(creates: list[Any]) -> list[list[Any]]:
    """``store._dependency_order`` (now ``decisions.dependency_order``) as 9738e12 wrote it."""
    turns: list[list[Any]] = []
    pending = {id(d): d for d in creates}
    urls_pending = {getattr(d.op, "full_url", None) for d in creates} - {None}
    while pending:
        ready = [
            d for d in pending.values() if not (d.references() & (urls_pending - {getattr(d.op, "full_url", None)}))
        ] or list(pending.values())
        for d in ready:
            del pending[id(d)]
            urls_pending.discard(getattr(d.op, "full_url", None))
        turns.append(ready)
    return turns


_URLS = st.sampled_from(["urn:uuid:1", "urn:uuid:2", "urn:uuid:3", "Patient/p"])


@given(st.lists(st.tuples(st.none() | _URLS, st.frozensets(_URLS, max_size=3)), max_size=8))
def test_creates_are_decided_in_the_turns_they_were_before(specs: list[tuple[str | None, frozenset[str]]]) -> None:
    from gateway.store.decisions import dependency_order

    creates = [_Create(url, targets) for url, targets in specs]
    assert list(dependency_order(creates)) == _order_as_before(creates)  # type: ignore[arg-type]


async def test_written_resources_are_counted_once_each_by_type_and_outcome(gateway: Gateway) -> None:
    """Counted per type and outcome for the whole set: the totals one increment per resource made."""
    from gateway.metrics import REGISTRY

    def count(rtype: str, outcome: str) -> float:
        value = REGISTRY.get_sample_value("gateway_resources_total", {"type": rtype, "outcome": outcome})
        return value or 0.0

    rid = f"b{uuid.uuid4().hex[:8]}"
    await gateway.ehr("PUT", f"/Basic/{rid}", json={"resourceType": "Basic", "id": rid, "code": {"text": "x"}})
    before = {(t, o): count(t, o) for t in ("Basic", "Patient") for o in ("created", "updated", "unchanged")}
    bundle = transaction(
        post_entry({"resourceType": "Patient", "name": [{"family": "A"}]}),
        post_entry({"resourceType": "Patient", "name": [{"family": "B"}]}),
        put_entry({"resourceType": "Basic", "id": rid, "code": {"text": "y"}}),
        put_entry({"resourceType": "Basic", "id": f"{rid}-2", "code": {"text": "x"}}),
    )
    assert (await gateway.ehr("POST", "", json=bundle)).status_code == 200
    after = {key: count(*key) - value for key, value in before.items()}
    assert after == {("Basic", "created"): 1, ("Basic", "updated"): 1, ("Basic", "unchanged"): 0,
                     ("Patient", "created"): 2, ("Patient", "updated"): 0, ("Patient", "unchanged"): 0}  # fmt: skip


def test_a_fragment_beside_an_integer_past_64_bits_is_written_as_its_value() -> None:
    """orjson refuses the integer, and the standard library writes the whole: the fragment as the value it holds
    (it raised TypeError before, so a transaction answer splicing a read entry beside such a resource failed)."""
    inner = {"resourceType": "Basic", "id": "b1", "code": {"text": "é \u2028"}, "n": 1.5}
    value = {"entry": [{"resource": orjson.Fragment(encoding.dumps(inner))}, {"resource": {"wide": 2**70}}]}
    plain = {"entry": [{"resource": inner}, {"resource": {"wide": 2**70}}]}
    assert encoding.dumps(value) == encoding.dumps(plain)


async def test_a_transaction_reads_beside_a_wide_integer(gateway: Gateway) -> None:
    """A read entry (its stored bytes spliced in) and a written resource holding an integer past 64 bits, answered
    with representations: one answer, as the plain values would have been written."""
    rid = f"r{uuid.uuid4().hex[:8]}"
    await gateway.ehr("PUT", f"/Basic/{rid}", json={"resourceType": "Basic", "id": rid, "code": {"text": "x"}})
    wide = {"resourceType": "Observation", "status": "final", "code": {"text": "w"},
            "valueQuantity": {"value": 10**30, "unit": "u"}}  # fmt: skip
    bundle = transaction(post_entry(wide), {"request": {"method": "GET", "url": f"Basic/{rid}"}})
    answer = await gateway.ehr("POST", "", json=bundle, headers={"Prefer": "return=representation"})
    assert answer.status_code == 200, answer.text
    body = encoding.loads(answer.content)
    assert body["entry"][0]["resource"]["valueQuantity"]["value"] == 10**30
    assert body["entry"][1]["resource"]["id"] == rid
    assert answer.content == encoding.dumps(body)


# -- a set of creates decided without reading first --------------------------------------------------------------


def _scripts_run(redis: Any, calls: list[str]) -> tuple[str, Any]:
    """Record the sha of every script ``redis`` runs into ``calls`` (the scripts go through its lane, a client made
    elsewhere through ``execute_command``); return the name and method replaced, to put back."""
    name = "lane" if isinstance(redis, LaneRedis) else "execute_command"
    real = getattr(redis, name)

    async def recording(*args: Any, **options: Any) -> Any:
        if args and str(args[0]).upper() == "EVALSHA":
            calls.append(str(args[1]))
        return await real(*args, **options)

    setattr(redis, name, recording)
    return name, real


async def test_a_set_of_new_resources_is_accepted_in_one_round_trip_and_a_retry_still_finds_it(
    gateway: Gateway,
) -> None:
    """A transaction of plain creates commits without reading the dedupe keys first; the same Bundle sent again
    fails the commit's check that they are absent, is decided again with them read, and answers the first ids."""
    store = gateway.services.store
    snapshot, commit = store._snapshot._script.sha, store._committer._run.sha
    patient_urn = f"urn:uuid:{uuid.uuid4()}"
    appointment = {**_APPOINTMENT, "participant": [{"actor": {"reference": patient_urn}, "status": "accepted"}]}
    bundle = transaction(
        post_entry({"resourceType": "Patient", "name": [{"family": f"F{uuid.uuid4().hex[:8]}"}]}, patient_urn),
        post_entry(appointment, f"urn:uuid:{uuid.uuid4()}"),
    )
    await gateway.ehr("POST", "/Basic", json={"resourceType": "Basic", "code": {"text": "warm"}})  # scripts loaded
    calls: list[str] = []
    name, real = _scripts_run(store._redis, calls)
    try:
        first = await gateway.ehr("POST", "", json=bundle)
        first_calls, calls[:] = list(calls), []
        again = await gateway.ehr("POST", "", json=bundle)
    finally:
        setattr(store._redis, name, real)
    assert first.status_code == again.status_code == 200
    assert first_calls == [commit]  # no snapshot read before it
    statuses = [e["response"]["status"] for e in again.json()["entry"]]
    assert statuses == ["200 OK", "200 OK"]
    assert [e["response"]["location"] for e in again.json()["entry"]] == [
        e["response"]["location"] for e in first.json()["entry"]
    ]
    assert calls[:2] == [commit, snapshot]  # the guess failed its check, then the keys were read
    patient_id = first.json()["entry"][0]["response"]["location"].split("/")[1]
    by_patient = gateway.services.keys.reference_prefix("clinic-a", "Appointment", "patient") + f"Patient/{patient_id}"
    assert await store._redis.scard(by_patient) == 1  # one Appointment, not two


async def test_a_retried_create_is_found_when_each_write_is_decided_only_once(redis_url: str, key_prefix: str) -> None:
    """With one decision per write (``conditional_retries`` 1), that decision reads the dedupe keys: a retried
    create is answered with its first resource, not refused as a conflict."""
    from gateway.store import Create, Store, connect

    store = Store(connect(redis_url, cluster=False, timeout=5.0), Keyspace(key_prefix), max_backlog=1_000_000,
                  dedupe_seconds=300, retries=1)  # fmt: skip
    try:
        body = {"resourceType": "Basic", "code": {"text": "once"}}
        [first] = await store.apply("clinic-a", [Create("Basic", dict(body))])
        [again] = await store.apply("clinic-a", [Create("Basic", dict(body))])
    finally:
        await store.redis.aclose()
    assert (first.status, first.outcome) == (201, "created")
    assert (again.status, again.rid, again.outcome) == (200, first.rid, "matched")


async def test_the_same_new_bundle_sent_eight_times_at_once_makes_its_resources_once(gateway: Gateway) -> None:
    """Concurrent copies of a Bundle of creates all take their resources to be new; one commits, the others fail
    its check, read the dedupe keys and answer the same ids."""
    patient_urn = f"urn:uuid:{uuid.uuid4()}"
    appointment = {**_APPOINTMENT, "participant": [{"actor": {"reference": patient_urn}, "status": "accepted"}]}
    bundle = transaction(
        post_entry({"resourceType": "Patient", "name": [{"family": f"G{uuid.uuid4().hex[:8]}"}]}, patient_urn),
        post_entry(appointment, f"urn:uuid:{uuid.uuid4()}"),
    )
    answers = await asyncio.gather(*[gateway.ehr("POST", "", json=bundle) for _ in range(8)])
    assert [a.status_code for a in answers] == [200] * 8
    statuses = sorted(tuple(e["response"]["status"] for e in a.json()["entry"]) for a in answers)
    assert statuses == [("200 OK", "200 OK")] * 7 + [("201 Created", "201 Created")]
    locations = {tuple(e["response"]["location"] for e in a.json()["entry"]) for a in answers}
    assert len(locations) == 1
    patient_id = next(iter(locations))[0].split("/")[1]
    services = gateway.services
    by_patient = services.keys.reference_prefix("clinic-a", "Appointment", "patient") + f"Patient/{patient_id}"
    assert await services.redis.scard(by_patient) == 1
