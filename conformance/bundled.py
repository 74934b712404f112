"""Bundle rules: bdl-1 to bdl-12, fullUrls, links, search entries, and references resolved between entries.

References inside a Bundle resolve by the specification's rules: an absolute reference (``urn:uuid:``, a URL)
matches an entry's fullUrl; a relative one (``Type/id``) is made absolute against the RESTful base of the
referring entry's fullUrl; ``/_history/vid`` must also match the entry's ``meta.versionId``. In a document or a
message every reference must resolve to one entry when the Bundle holds a resource of that type and id; in a
transaction, document or message a ``urn:`` reference must name an entry's fullUrl. A RESTful fullUrl
(``http://x/fhir/Patient/1``) must end with its resource's type and id.
"""

from __future__ import annotations

import re
from typing import Any

from conformance.definitions import TypeDef, as_list, tables
from conformance.engine import Run, Scope
from conformance.primitive import uuid_problem
from conformance.reference import split

_RESTFUL = re.compile(r"(.*/)([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})")
_ONCE = ("self", "first", "previous", "next", "last")
_SELF_TYPE = re.compile(r"(?:.*/)?([A-Z][A-Za-z]+)(?:/_search)?(?:\?.*)?")
_TYPES_PARAMETER = re.compile(r"[?&]_type=([^&]+)")


def bundle(run: Run, node: dict[str, Any], path: str) -> None:
    """bdl-1 to bdl-4 and bdl-9 to bdl-12; the rest is checked once the entries are walked."""
    kind = node.get("type")
    run.bundles.append((node, path))
    if type(kind) is not str or kind not in (run.types["Bundle"].elements["type"].codes or ()):
        return  # the walk has reported the type; rules that depend on it would only repeat that
    entries = [e for e in as_list(node.get("entry")) if type(e) is dict] if type(node.get("entry")) is list else []
    if "total" in node and kind not in ("searchset", "history"):
        run.error("invariant", f"{path}.total", "bdl-1: total only when a search or history")
    if kind != "searchset":
        for e in entries:
            if "search" in e:
                run.error("invariant", path, "bdl-2: entry.search only when a search")
                break
    needs_request = kind in ("batch", "transaction", "history")
    needs_response = kind in ("batch-response", "transaction-response", "history")
    for index, entry in enumerate(entries):
        if ("request" in entry) != needs_request:
            text = "mandatory for batch, transaction and history" if needs_request else "only for batch or history"
            run.error("invariant", f"{path}.entry[{index}]", f"bdl-3: entry.request is {text}")
        if ("response" in entry) != needs_response:
            text = "mandatory for responses and history" if needs_response else "only for responses or history"
            run.error("invariant", f"{path}.entry[{index}]", f"bdl-4: entry.response is {text}")
    if kind == "document":
        identifier = node.get("identifier")
        if not (type(identifier) is dict and "system" in identifier and "value" in identifier):
            run.error("invariant", path, "bdl-9: a document must have an identifier with a system and a value")
        if "timestamp" not in node:
            run.error("invariant", path, "bdl-10: a document must have a date")
        first = entries[0].get("resource") if entries else None
        if not (type(first) is dict and first.get("resourceType") == "Composition"):
            run.error("invariant", path, "bdl-11: a document must have a Composition as the first resource")
    if kind == "message":
        first = entries[0].get("resource") if entries else None
        if not (type(first) is dict and first.get("resourceType") == "MessageHeader"):
            run.error("invariant", path, "bdl-12: a message must have a MessageHeader as the first resource")


def entry(run: Run, node: dict[str, Any], path: str) -> None:
    """bdl-5 and bdl-8."""
    if not ("resource" in node or "request" in node or "response" in node):
        run.error("invariant", path, "bdl-5: an entry must have a resource, a request or a response")
    full_url = node.get("fullUrl")
    if type(full_url) is str:
        if "/_history/" in full_url:
            run.error("invariant", f"{path}.fullUrl", "bdl-8: fullUrl cannot be a version specific reference")
        problem = uuid_problem(full_url)
        if problem is not None:
            # A warning here (an error for other URIs): exports use urn:uuid: fullUrls only as local names.
            run.warning("value", f"{path}.fullUrl", problem)


def register(types: dict[str, TypeDef]) -> None:
    """Register the Bundle invariants on the type tables."""
    types["Bundle"].invariants.append(bundle)
    types["Bundle.entry"].invariants.append(entry)


class _Entry:
    __slots__ = ("base", "full_url", "index", "resource", "restful", "scope", "type_id", "version")

    def __init__(self, index: int, node: dict[str, Any], scope: Scope | None) -> None:
        self.index = index
        full_url = node.get("fullUrl")
        self.full_url = full_url if type(full_url) is str else None
        resource = node.get("resource")
        self.resource = resource if type(resource) is dict else None
        self.scope = scope
        self.type_id: tuple[str, str] | None = None
        self.version: str | None = None
        if self.resource is not None:
            resource_type, resource_id = self.resource.get("resourceType"), self.resource.get("id")
            if type(resource_type) is str and type(resource_id) is str:
                self.type_id = (resource_type, resource_id)
            meta = self.resource.get("meta")
            if type(meta) is dict and type(meta.get("versionId")) is str:
                self.version = meta["versionId"]
        # A urn:uuid: fullUrl has no '/', which the pattern needs.
        found = _RESTFUL.fullmatch(self.full_url) if self.full_url and "/" in self.full_url else None
        self.restful = found
        self.base = found.group(1) if found is not None and ":" in found.group(1) else None


def finish(run: Run, resource: object) -> None:
    """Check every Bundle met in the walk once its entries' resources are known."""
    if not run.bundles:
        return
    scopes = {id(scope.node): scope for scope in run.scopes}
    for node, path in run.bundles:
        raw = node.get("entry")
        entries = [
            _Entry(index, item, scopes.get(id(item.get("resource"))))
            for index, item in enumerate(raw if type(raw) is list else ())
            if type(item) is dict
        ]
        kind = node.get("type")
        _full_urls(run, entries, path, kind)
        _links(run, node, path)
        if kind == "searchset":
            _search(run, node, raw if type(raw) is list else [], path)
        _resolve(run, entries, kind)


def _full_urls(run: Run, entries: list[_Entry], path: str, kind: object) -> None:
    seen: set[tuple[str, str | None]] = set()
    for item in entries:
        full_url = item.full_url
        if full_url is None:
            continue
        if ":" not in full_url.split("/", 1)[0]:
            run.error("invalid", f"{path}.entry[{item.index}].fullUrl", "The fullUrl must be an absolute URL")
            continue
        found = item.restful
        if (
            found is not None
            and found.group(2) in run.resource_types
            and item.type_id is not None
            and (found.group(2), found.group(3)) != item.type_id
            and full_url.startswith(("http:", "https:"))
        ):
            # An error, as in the reference validator (three of HL7's own R4 examples fail it).
            run.error(
                "invalid",
                f"{path}.entry[{item.index}].fullUrl",
                "The fullUrl looks like a RESTful server URL, so it must end with the resource's type and id",
            )
        if kind != "history":
            key = (full_url, item.version)
            if key in seen:
                run.error(
                    "invariant",
                    f"{path}.entry[{item.index}]",
                    "bdl-7: fullUrl must be unique in a bundle, or else versionIds differ",
                )
            seen.add(key)


def _links(run: Run, node: dict[str, Any], path: str) -> None:
    links = node.get("link")
    if type(links) is not list:
        return
    seen: set[str] = set()
    for index, link in enumerate(links):
        relation = link.get("relation") if type(link) is dict else None
        if relation in _ONCE:
            if relation in seen:
                run.error("invalid", f"{path}.link[{index}]", f"The link relation '{relation}' can only occur once")
            seen.add(relation)


def _search(run: Run, node: dict[str, Any], entries: list[Any], path: str) -> None:
    expected = _searched_types(node)
    for index, item in enumerate(entries):
        if type(item) is not dict:
            continue
        search, resource = item.get("search"), item.get("resource")
        mode = search.get("mode") if type(search) is dict else None
        if type(resource) is not dict:
            continue
        here = f"{path}.entry[{index}].resource"
        resource_type = resource.get("resourceType")
        if mode == "outcome" and resource_type != "OperationOutcome":
            run.error("invalid", here, "An entry with search mode 'outcome' must be an OperationOutcome")
        if mode == "match":
            if "id" not in resource:
                run.error("invalid", here, "Search results must have ids")
            if expected and (type(resource_type) is not str or resource_type not in expected):
                shown = ", ".join(sorted(expected))
                run.error("invalid", here, f"This is not a resource type the search was for ({shown})")


def _searched_types(node: dict[str, Any]) -> set[str]:
    for link in as_list(node.get("link")):
        if type(link) is dict and link.get("relation") == "self" and type(link.get("url")) is str:
            url = link["url"]
            listed = _TYPES_PARAMETER.search(url)
            if listed is not None:
                return {t for t in listed.group(1).split(",") if t in tables().resource_types}
            found = _SELF_TYPE.fullmatch(url.split("?", 1)[0])
            if found is not None and found.group(1) in tables().resource_types:
                return {found.group(1)}
    return set()


def _resolve(run: Run, entries: list[_Entry], kind: object) -> None:
    by_url: dict[str, list[_Entry]] = {}
    by_type_id: dict[tuple[str, str], list[_Entry]] = {}
    strict = kind in ("document", "message")
    for item in entries:
        if item.full_url is not None:
            found = by_url.get(item.full_url)
            if found is None:
                by_url[item.full_url] = [item]
            else:
                found.append(item)
        if strict and item.type_id is not None:  # read only for documents and messages
            by_type_id.setdefault(item.type_id, []).append(item)
    # A urn: reference names an entry of the Bundle (or nothing at all) in these kinds.
    local_names = strict or kind == "transaction"
    for item in entries:
        if item.scope is None or (item.base is None and not local_names):
            continue  # nothing to resolve: only a RESTful fullUrl gives relative references a base
        for path, reference, _targets in item.scope.references:
            if reference[0] == "#" or "?" in reference:
                continue
            colon = reference.find(":")
            if colon >= 0 and (colon < reference.find("/") or "/" not in reference):  # a ':' before any '/'
                if local_names and reference.startswith("urn:") and reference not in by_url:
                    run.error("not-found", path, "The reference cannot be found in the bundle")
                continue
            if item.base is None:
                continue
            parts = split(reference)
            if parts is None:
                continue
            resource_type, resource_id, version = parts
            candidates = by_url.get(f"{item.base}{resource_type}/{resource_id}", [])
            if version is not None:
                matches = [c for c in candidates if c.version == version]
                if candidates and not matches:
                    run.error("invalid", path, "The version the reference names is not in the bundle")
                continue
            if len(candidates) > 1:
                run.error("invalid", path, f"Found {len(candidates)} matches for the reference in the bundle")
            elif not candidates and strict and (resource_type, resource_id) in by_type_id:
                # A warning: one of HL7's message examples refers to an entry this way.
                run.warning(
                    "invalid",
                    path,
                    "The reference does not resolve in the bundle: a resource with this type and id is there, "
                    "but its fullUrl does not match by the rules for relative references",
                )
