"""References: their form and target type as the walk meets them, and contained resources at the end (ref-1,
dom-2 to dom-5).

A relative reference is ``Type/id`` or ``Type/id/_history/vid`` with a Type the element allows; ``Type?query``
is a conditional reference (transactions), left alone. An absolute URL that ends in ``/Type/id`` is checked the
same way. A fragment ``#id`` must name a contained resource, and every contained resource must be referred to
from its container (or refer to it with ``#``).
"""

from __future__ import annotations

import re
from typing import Any

from conformance.definitions import Element
from conformance.engine import Run, Scope

_RELATIVE = re.compile(r"([^/?#:]+)/([^/?#]+)(?:/_history/([^/?#]+))?")
_RESTFUL = re.compile(r"(?:https?://.+/)?([A-Z][A-Za-z]+)/([A-Za-z0-9\-.]{1,64})(?:/_history/([A-Za-z0-9\-.]{1,64}))?")
_ANY = frozenset({"Resource", "DomainResource"})
_CORE_CANONICAL = re.compile(r"http://hl7\.org/fhir/([A-Z][A-Za-z]+)/[^/|]+(?:\|.*)?")


def split(reference: str) -> tuple[str, str, str | None] | None:
    """Return (type, id, version) of a relative or RESTful absolute reference, else None."""
    found = _RESTFUL.fullmatch(reference)
    if found is None:
        return None
    return found.group(1), found.group(2), found.group(3)


def check_reference(run: Run, node: dict[str, Any], path: str, element: Element) -> None:
    """Check the form and target type of Reference.reference, and record it for resolution."""
    if "type" in node:
        _declared_type(run, node["type"], path, element.targets)
    reference = node.get("reference")
    if type(reference) is not str or not reference:
        return
    here = f"{path}.reference"
    scope = run.scope
    if scope is not None:
        scope.references.append((here, reference, element.targets))
    if reference[0] == "#":
        if scope is not None:
            scope.add_local(reference)
        return
    slash = reference.find("/")
    if slash < 0:  # urn:uuid:..., or no reference form at all (what the branches below make of it, sooner)
        if "?" not in reference and ":" not in reference:
            run.error("invalid", here, "Relative references must be of the form [ResourceName]/[id]")
        return
    if slash > 0 and reference.count("/") == 1 and ":" not in reference and "?" not in reference:
        resource_type = reference[:slash]  # the common case, Type/id
        if slash == len(reference) - 1:
            run.error("invalid", here, "Relative references must be of the form [ResourceName]/[id]")
            return
    elif "?" in reference:
        return  # a conditional reference, resolved by the server in a transaction
    elif ":" in reference[: slash if slash > 0 else len(reference)]:
        found = _RESTFUL.fullmatch(reference)
        if found is None or found.group(1) not in run.resource_types:
            return
        resource_type = found.group(1)
    else:
        relative = _RELATIVE.fullmatch(reference)
        if relative is None:
            run.error("invalid", here, "Relative references must be of the form [ResourceName]/[id]")
            return
        resource_type = relative.group(1)
    if resource_type not in run.resource_types:
        run.error("structure", here, "The reference does not start with a FHIR R4 resource type")
        return
    targets = element.targets
    if targets is not None and resource_type not in targets and not targets & _ANY:
        run.error("structure", here, f"{resource_type} is not a valid target here ({', '.join(sorted(targets))})")


def _declared_type(run: Run, declared: object, path: str, targets: frozenset[str] | None) -> None:
    if type(declared) is not str or ":" in declared:
        return
    if declared not in run.resource_types:
        run.error("structure", f"{path}.type", "Reference.type is not a FHIR R4 resource type")
    elif targets is not None and declared not in targets and not targets & _ANY:
        run.error("structure", f"{path}.type", f"{declared} is not a valid target here ({', '.join(sorted(targets))})")


def check_canonical_type(run: Run, value: object, path: str, targets: frozenset[str] | None) -> None:
    """Reject a core canonical URL (``http://hl7.org/fhir/Type/id``) of a type the element does not allow."""
    if type(value) is not str or targets is None:
        return
    found = _CORE_CANONICAL.fullmatch(value)
    if found is not None and found.group(1) in run.resource_types and found.group(1) not in targets:
        run.error(
            "invalid",
            path,
            f"The canonical URL refers to a {found.group(1)}, expecting one of {', '.join(sorted(targets))}",
        )


def finish_scope(run: Run, scope: Scope) -> None:
    """Resolve fragment references against the contained resources, and check the contained resources."""
    ids: dict[str, str] = {}
    contained = scope.contained or ()
    local = scope.local or ()
    for path, item in contained:
        contained_id = item.get("id")
        if type(contained_id) is str:
            ids[contained_id] = path
        if "contained" in item:
            run.error("invariant", path, "dom-2: a contained resource must not contain resources")
        meta = item.get("meta")
        if type(meta) is dict:
            if "versionId" in meta or "lastUpdated" in meta:
                run.error("invariant", path, "dom-4: a contained resource must not have meta.versionId or lastUpdated")
            if "security" in meta:
                run.error("invariant", path, "dom-5: a contained resource must not have security labels")
    for path, reference, _targets in scope.references:
        if reference[0] == "#" and len(reference) > 1 and reference[1:] not in ids:
            run.error("invariant", path, "ref-1: a fragment reference must name a contained resource")
    for path, item in contained:
        contained_id = item.get("id")
        if type(contained_id) is not str:
            run.error("invariant", path, "dom-3: a contained resource must have an id that is referred to")
        elif f"#{contained_id}" not in local and not _refers_to_container(item):
            run.error(
                "invariant",
                path,
                "dom-3: the contained resource is not referred to from elsewhere in the resource, nor does it "
                "refer to the containing resource",
            )


def _refers_to_container(node: object) -> bool:
    stack = [node]
    while stack:
        item = stack.pop()
        if type(item) is dict:
            if item.get("reference") == "#":
                return True
            stack.extend(item.values())
        elif type(item) is list:
            stack.extend(item)
    return False
