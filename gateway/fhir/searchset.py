"""The searchset Bundle: one page of matches, the total, and ``self`` and ``next`` links."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from conformance.outcome import operation_outcome
from gateway.fhir.edge import Edge
from gateway.fhir.search import parse_query, run_search


async def searchset(edge: Edge, tenant: str, rtype: str, params: list[tuple[str, str]], base: str) -> dict[str, Any]:
    """Run a search and return the searchset Bundle, with a ``next`` link when there is more."""
    settings, store = edge.settings, edge.store
    query = parse_query(params, settings.search_default_count, settings.search_max_count)
    hits = await run_search(store.redis, store.keys, tenant, rtype, query)
    resources = await store.read_many(tenant, rtype, hits.ids)
    self_params = [*query.echo, ("_count", str(query.count))]
    links = [{"relation": "self", "url": f"{base}/{rtype}?{urlencode(self_params)}"}]
    if hits.next_cursor:
        links.append(
            {"relation": "next", "url": f"{base}/{rtype}?{urlencode([*self_params, ('_cursor', hits.next_cursor)])}"}
        )
    entries: list[dict[str, Any]] = [
        {"fullUrl": f"{base}/{rtype}/{r['id']}", "resource": r, "search": {"mode": "match"}} for r in resources
    ]
    if hits.issues:
        entries.append({"resource": operation_outcome(hits.issues), "search": {"mode": "outcome"}})
    return {"resourceType": "Bundle", "type": "searchset", "total": hits.total, "link": links, "entry": entries}
