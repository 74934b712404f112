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

from conformance.definitions import R4_RESOURCE_TYPES
from conformance.outcome import Issue, operation_outcome
from gateway.fhir.edge import Edge
from gateway.fhir.matching import Matcher
from gateway.fhir.search import Query, parse_query, subset
from gateway.store.connection import text
from gateway.store.parameters import indexed, reached, references


async def _included(edge: Edge, tenant: str, q: Query, matches: list[dict[str, Any]]) -> dict[str, set[str]]:
    """Return the ids, by type, that the query's ``_include`` and ``_revinclude`` add to the page."""
    wanted: dict[str, set[str]] = defaultdict(set)
    for inc in q.includes:
        param = indexed(q.rtype)[inc.param]
        for resource in matches:
            for target in references(reached(resource, param)):
                rtype, _, rid = target.partition("/")
                if rtype in R4_RESOURCE_TYPES and "://" not in target and inc.target in (None, rtype):
                    wanted[rtype].add(rid)
    if q.revincludes and matches:
        keys = edge.store.keys
        for inc in q.revincludes:
            sets = [keys.reference_index(tenant, inc.source, inc.param, f"{q.rtype}/{r['id']}") for r in matches]
            wanted[inc.source] |= {text(m) for m in await edge.store.redis.sunion(sets)}
    wanted[q.rtype] -= {r["id"] for r in matches}
    return wanted


async def searchset(
    edge: Edge, tenant: str, rtype: str, params: list[tuple[str, str]], base: str, *, strict: bool = False
) -> dict[str, Any]:
    """Run a search and return the searchset Bundle, with a ``next`` link when there is more."""
    settings, store = edge.settings, edge.store
    q = parse_query(rtype, params, settings.search_default_count, settings.search_max_count, strict=strict)
    hits = await Matcher(store.redis, store.keys, tenant, rtype).find(q, store.clock() * 1000)
    matches = [] if q.summary_count else await store.read_many(tenant, rtype, hits.ids)
    entries: list[dict[str, Any]] = [
        {"fullUrl": f"{base}/{rtype}/{r['id']}", "resource": subset(r, q.elements) if q.elements else r,
         "search": {"mode": "match"}}
        for r in matches
    ]  # fmt: skip
    budget = settings.search_max_count
    cut = False
    for itype, ids in sorted((await _included(edge, tenant, q, matches)).items()):
        chosen = sorted(ids)[: max(budget, 0)]
        cut = cut or len(chosen) < len(ids)
        budget -= len(chosen)
        for resource in await store.read_many(tenant, itype, chosen):
            entries.append(
                {"fullUrl": f"{base}/{itype}/{resource['id']}", "resource": resource, "search": {"mode": "include"}}
            )
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
