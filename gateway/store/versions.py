"""What each decided operation writes into its set's plan: a version's body, its current state, its index entries,
its job and its dedupe key; and the steps of deciding a set that need no Redis (the written-twice check, the state
reads to make and their answers taken, every operation decided in turn).

``Store._decide`` makes the round trips (the state, references, retries); the functions here only work on values
and build the plan, so the compiled build (setup.py) compiles them with the rest of the decide phase.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from conformance.outcome import Issue, operation_outcome
from gateway import encoding
from gateway.clock import epoch_of, instant, instant_ms
from gateway.errors import BadRequest, PreconditionFailed
from gateway.store import ehr_meta
from gateway.store.decisions import Decision, still_resolved
from gateway.store.indexing import IndexEntry, index_entries, pack_index
from gateway.store.keys import Keyspace, lane
from gateway.store.operation import Create, Current, Delete, Result, Update, digest
from gateway.store.plan import Form, Plan
from gateway.store.snapshot import Read
from mappers.registry import MAPPED

# The forms (``Plan.put``) of what every version writes: its body, its current state and its job.
_VERSION: Form = ("HSET", (None, None))
_CURRENT: Form = (
    "HSET",
    ("vid", None, "lu", None, "hash", None, "deleted", None, "evid", None, "elu", None, "idx", None),
)
_JOB: Form = ("XADD", ("*", "type", None, "id", None, "vid", None, "op", None, "attempt", 0))


@lru_cache(maxsize=4096)
def _type_keys(keys: Keyspace, tenant: str, rtype: str) -> tuple[str, str, str, str, str, str]:
    """Return the keys every version of a type is written to (its last-updated and id indexes, the type's and the
    tenant's version indexes, its jobs' inbound lane) and what its index keys start with: built once, not for
    each resource a set writes."""
    return (
        keys.last_updated_index(tenant, rtype),
        keys.ids_index(tenant, rtype),
        keys.type_versions(tenant, rtype),
        keys.all_versions(tenant),
        keys.inbound(tenant, lane(rtype)),
        keys.index_root(tenant, rtype),
    )


def prepare(d: Decision, mapping: Mapping[str, str]) -> None:
    """Rewrite and digest a create's content with the ids its references have in ``mapping`` now."""
    assert isinstance(d.op, Create)
    content, evid, elu = ehr_meta.split(d.rewritten(mapping))
    d.prepared = (content, evid, elu, digest(content), {ref: mapping.get(ref) for ref in d.references()})


def refuse_written_twice(decisions: list[Decision]) -> None:
    """Refuse (400) a set that writes a resource twice: every operation is decided from the state before the set,
    so the second would lose the first's write."""
    touched: dict[tuple[str, str], Decision] = {}
    for d in decisions:
        if isinstance(d.op, Create) and d.match is None:
            continue
        key = (d.op.rtype, d.rid)
        if key in touched:
            first = touched[key].op.path or "an earlier entry"
            raise BadRequest(
                f"{d.op.rtype}/{d.rid} is written twice in one set (also by {first})",
                expression=d.op.path or d.op.rtype,
            )
        touched[key] = d


def state_reads(k: Keyspace, tenant: str, decisions: list[Decision]) -> tuple[list[Decision], list[Read]]:
    """Return the decisions on resources that may exist (all but a create given a new id) and the reads of their
    state: each one's current-state hash and whether some record's mapping read it (two reads each, in order)."""
    existing = [d for d in decisions if d.match is not None or not isinstance(d.op, Create)]
    reads: list[Read] = []
    for d in existing:
        reads += (("hgetall", k.current(tenant, d.op.rtype, d.rid)),
                  ("exists", k.dependents(tenant, f"{d.op.rtype}/{d.rid}")))  # fmt: skip
    return existing, reads


def take_states(existing: list[Decision], replies: list[Any]) -> None:
    """Give each decision of ``state_reads`` the state its two reads answered."""
    for d, raw, watched in zip(existing, replies[::2], replies[1::2], strict=True):
        d.current = Current.from_hash(raw)
        d.watched = d.op.rtype not in MAPPED and bool(watched)


def decide_all(
    k: Keyspace,
    tenant: str,
    decisions: list[Decision],
    mapping: Mapping[str, str],
    plan: Plan,
    now: float,
    *,
    dedupe_seconds: int,
    packed: bool,
    max_backlog: int,
) -> list[Result]:
    """Decide every operation of a set at the instant ``now`` (``decide_one`` each) and return their results; the
    plan is refused past ``max_backlog`` jobs waiting in the lane of its jobs (the default lane when they go to
    both)."""
    lu, lu_ms = instant(now), int(now * 1000)
    results: list[Result] = []
    lanes: set[str] = set()
    for d in decisions:
        result, wrote_job = decide_one(
            k, tenant, d, mapping, plan, lu, lu_ms, dedupe_seconds=dedupe_seconds, packed=packed
        )
        if wrote_job:
            lanes.add(lane(d.op.rtype))
        results.append(result)
    if lanes:
        # The risk lane has a backlog of its own: a backlog of other work never refuses a risk-bearing write.
        busiest = "" if "" in lanes else lanes.pop()
        plan.limit_backlog([k.inbound(tenant, busiest), k.retry(tenant, busiest)], max_backlog)
    return results


def decide_one(
    k: Keyspace,
    tenant: str,
    d: Decision,
    mapping: Mapping[str, str],
    plan: Plan,
    lu: str,
    lu_ms: int,
    *,
    dedupe_seconds: int,
    packed: bool,
) -> tuple[Result, bool]:
    """Decide one operation whose current state and references are known: add its writes and checks to ``plan``
    and return its result and whether it wrote a job. ``packed``: the store format keeps packed index entries."""
    op, rid = d.op, d.rid
    cur_key = k.current(tenant, op.rtype, rid)

    if isinstance(op, Delete):
        cur = d.current
        plan.expect_field(cur_key, "vid", str(cur.vid) if cur else None)
        if cur is None or cur.deleted:
            return Result(204, op.rtype, rid, outcome="absent"), False
        return write_version(
            k, tenant, op.rtype, rid, None, cur, plan, lu, lu_ms, packed=packed, deleted=True, watched=d.watched,
            cur_key=cur_key,
        )  # fmt: skip

    if d.prepared is not None and still_resolved(d, mapping):
        content, evid, elu, dg, _ = d.prepared
    else:
        content, evid, elu = ehr_meta.split(d.rewritten(mapping))
        dg = digest(content)

    if d.match is not None:  # a conditional create or a retried create that found its resource
        vid = d.current.vid if d.current else None
        plan.expect_field(cur_key, "vid", str(vid) if vid else None)
        return Result(200, op.rtype, rid, vid=vid, outcome="matched"), False

    cur = d.current
    if isinstance(op, Update):
        plan.expect_field(cur_key, "vid", str(cur.vid) if cur else None)
        if op.if_match is not None and (cur is None or cur.deleted or op.if_match != str(cur.vid)):
            raise PreconditionFailed(
                f"If-Match {op.if_match} does not match the current version of {op.rtype}/{rid}",
                expression=op.rtype,
            )
        if cur and not cur.deleted and cur.digest == dg:
            return Result(200, op.rtype, rid, vid=cur.vid, last_updated=cur.last_updated, issues=op.issues), False
        new_lu, old_lu = epoch_of(elu), epoch_of(cur.ehr_last_updated if cur else None)
        if op.ehr_ordered and cur and not cur.deleted and new_lu is not None and old_lu is not None and new_lu < old_lu:
            note = Issue(
                "warning",
                "conflict",
                f"{op.rtype}.meta.lastUpdated",
                "not applied: this EHR version is older than the one held",
            )
            return (
                Result(200, op.rtype, rid, vid=cur.vid, last_updated=cur.last_updated, issues=[note], outcome="stale"),
                False,
            )
    else:
        plan.expect_field(cur_key, "vid", None)
        if dedupe_seconds > 0 and not op.if_none_exist and op.dedupe:
            plan.put(("SET", (None, "EX", dedupe_seconds)), k.dedupe(tenant, op.rtype, dg), rid)

    # Type, id and meta first, then the content's other elements in their order (the keys merged in after the
    # first three keep their places; the type and meta are set again over the content's own).
    stored = {"resourceType": op.rtype, "id": rid, "meta": None, **content}
    stored["resourceType"], stored["id"] = op.rtype, rid
    stored["meta"] = ehr_meta.stamp(content, evid, elu)
    result, job = write_version(
        k, tenant, op.rtype, rid, stored, cur, plan, lu, lu_ms, packed=packed, digest_=dg, ehr=(evid, elu),
        watched=d.watched, cur_key=cur_key,
    )  # fmt: skip
    if op.issues:
        outcome = json.dumps(operation_outcome(op.issues))
        plan.write("HSET", k.issues(tenant, op.rtype, rid), str(result.vid), outcome)
        result.issues = list(op.issues)
    return result, job


def write_version(
    k: Keyspace,
    tenant: str,
    rtype: str,
    rid: str,
    stored: dict[str, Any] | None,
    cur: Current | None,
    plan: Plan,
    lu: str,
    lu_ms: int,
    *,
    packed: bool,
    deleted: bool = False,
    digest_: str = "",
    ehr: tuple[str | None, str | None] = (None, None),
    watched: bool = False,
    cur_key: str | None = None,
) -> tuple[Result, bool]:
    """Add a resource's next version (``stored``, or a tombstone) to ``plan``: its body, current state, index
    entries and version indexes, and its job; return its result and whether it wrote a job."""
    vid = (cur.vid if cur else 0) + 1
    if cur is not None and cur.last_updated >= lu:  # the same fixed-width UTC form: text order is time order
        # The version before was written in this millisecond (or later, by a process whose clock is ahead):
        # this one is a millisecond after it. A resource's versions then never share a lastUpdated, and history
        # (newest first by lastUpdated) lists them in order, also version 10 after 9 in one millisecond.
        before = epoch_of(cur.last_updated)
        if before is not None:
            lu_ms = round(before * 1000) + 1
            lu = instant_ms(lu_ms)
    lu_index, ids_index, type_versions, all_versions, inbound, root = _type_keys(k, tenant, rtype)
    new_index: list[IndexEntry] = []
    if stored is not None:
        stored["meta"] = {"versionId": str(vid), "lastUpdated": lu, **stored["meta"]}
        new_index = index_entries(k, tenant, stored)
    move_index(plan, rid, cur.index if cur else [], new_index)
    if deleted:
        plan.write("ZREM", lu_index, rid)
        plan.write("ZREM", ids_index, rid)
    else:
        plan.add("ZADD", lu_index, lu_ms, rid)
        plan.add("ZADD", ids_index, 0, rid)
    plan.add("ZADD", type_versions, lu_ms, f"{rid}/{vid}")
    plan.add("ZADD", all_versions, lu_ms, f"{rtype}/{rid}/{vid}")
    raw = encoding.dumps(stored) if stored else None
    plan.put(_VERSION, k.history(tenant, rtype, rid), str(vid), raw or "")
    plan.put(
        _CURRENT, cur_key or k.current(tenant, rtype, rid),
        vid, lu, digest_, "1" if deleted else "0", ehr[0] or "", ehr[1] or "",
        index_field(root, new_index, packed),
    )  # fmt: skip
    # Mapped types always make a job; another type only when some record's mapping read it (a Binary body).
    job = rtype in MAPPED or watched
    if job:
        plan.put(_JOB, inbound, rtype, rid, vid, "delete" if deleted else "upsert")
    status = 204 if deleted else (201 if cur is None else 200)
    outcome = "deleted" if deleted else ("created" if status == 201 else "updated")
    return Result(status, rtype, rid, vid=vid, last_updated=lu, resource=stored, outcome=outcome, raw=raw), job


def index_field(root: str, entries: list[IndexEntry], packed: bool) -> bytes:
    """Return a version's ``idx`` field: its index entries as JSON, packed under ``root`` (the type's
    ``Keyspace.index_root``) when the store format in force packs them (format 2)."""
    return encoding.dumps(pack_index(root, entries) if packed else entries)


def move_index(plan: Plan, rid: str, old: list[IndexEntry], new: list[IndexEntry]) -> None:
    """Move the resource from the index entries of its last version to those of this one."""
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
    plan.add_entries(rid, new)  # index_entries lists them sorted and once each
