"""The searchset Bundle: one page of matches, the resources ``_include`` / ``_revinclude`` ask for, the total, and
``self`` and ``next`` links.

The ``self`` link repeats only the parameters the search applied, so a client can see what was ignored (R4
search.html). An OperationOutcome entry (``search.mode = outcome``) appears only when the includes had to be cut
short; nothing else is mixed into the entries a client reads as resources.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any
from urllib.parse import urlencode

import orjson

from conformance.definitions import R4_RESOURCE_TYPES
from conformance.outcome import Issue, operation_outcome
from gateway import encoding
from gateway.fhir.edge import Edge
from gateway.fhir.matching import Matcher
from gateway.fhir.search import Query, parse_query, subset
from gateway.store import compact
from gateway.store.connection import text
from gateway.store.parameters import indexed, reached, references


async def _included(
    edge: Edge, tenant: str, q: Query, ids: list[str], matches: list[dict[str, Any]]
) -> dict[str, set[str]]:
    """Return the ids, by type, that the query's ``_include`` and ``_revinclude`` add to the page."""
    wanted: dict[str, set[str]] = defaultdict(set)
    for inc in q.includes:
        param = indexed(q.rtype)[inc.param]
        for resource in matches:
            for target in references(reached(resource, param)):
                rtype, _, rid = target.partition("/")
                if rtype in R4_RESOURCE_TYPES and "://" not in target and inc.target in (None, rtype):
                    wanted[rtype].add(rid)
    if q.revincludes and ids:
        keys = edge.store.keys
        for inc in q.revincludes:
            sets = [keys.reference_index(tenant, inc.source, inc.param, f"{q.rtype}/{rid}") for rid in ids]
            wanted[inc.source] |= {text(m) for m in await edge.store.redis.sunion(sets)}
    wanted[q.rtype] -= set(ids)
    return wanted


def _resources(raws: list[bytes], parsed: list[dict[str, Any]], elements: list[str] | None) -> list[Any]:
    """Return the entries' resources: the stored bytes spliced in as they are when nothing changes them.

    ``_elements`` rewrites the matches; a version in an older form is parsed and written again as reads do (and
    then, so that one Bundle is written one way, every resource is).
    """
    if not elements and all(compact.is_compact(raw) for raw in raws):
        return [orjson.Fragment(raw) for raw in raws]
    matches = [subset(r, elements) for r in parsed] if elements else parsed
    return matches + [encoding.loads(raw) for raw in raws[len(parsed) :]]


async def searchset(
    edge: Edge, tenant: str, rtype: str, params: list[tuple[str, str]], base: str, *, strict: bool = False
) -> dict[str, Any]:
    """Run a search and return the searchset Bundle, with a ``next`` link when there is more."""
    settings, store = edge.settings, edge.store
    q = parse_query(rtype, params, settings.search_default_count, settings.search_max_count, strict=strict)
    hits = await Matcher(store.redis, store.keys, tenant, rtype).find(q, store.clock() * 1000)
    rows = [] if q.summary_count else await store.read_many_json(tenant, rtype, hits.ids)
    parsed = [encoding.loads(raw) for _, raw in rows] if q.elements or q.includes else []
    found = [(rtype, rid, raw, "match") for rid, raw in rows]
    budget = settings.search_max_count
    cut = False
    for itype, ids in sorted((await _included(edge, tenant, q, [rid for rid, _ in rows], parsed)).items()):
        chosen = sorted(ids)[: max(budget, 0)]
        cut = cut or len(chosen) < len(ids)
        budget -= len(chosen)
        found += [(itype, rid, raw, "include") for rid, raw in await store.read_many_json(tenant, itype, chosen)]
    resources = _resources([raw for _, _, raw, _ in found], parsed, q.elements)
    entries: list[dict[str, Any]] = [
        {"fullUrl": f"{base}/{etype}/{rid}", "resource": resource, "search": {"mode": mode}}
        for (etype, rid, _, mode), resource in zip(found, resources, strict=True)
    ]
    if cut:
        note = Issue("warning", "too-costly", "_include", f"only the first {settings.search_max_count} included "
                     "resources are in the page")  # fmt: skip
        entries.append({"resource": operation_outcome([note]), "search": {"mode": "outcome"}})
    self_params = [*q.echo, ("_count", str(q.count))]
    cursor = [("_cursor", value) for name, value in params if name == "_cursor"]
    links = [{"relation": "self", "url": f"{base}/{rtype}?{urlencode([*self_params, *cursor])}"}]
    if hits.next_cursor:
        links.append(
            {"relation": "next", "url": f"{base}/{rtype}?{urlencode([*self_params, ('_cursor', hits.next_cursor)])}"}
        )
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if hits.total is not None:
        bundle["total"] = hits.total
    bundle["link"] = links
    if entries:
        bundle["entry"] = entries
    return bundle
