"""The EHR's own version of a resource, kept beside the gateway's: the one module that knows the convention.

The gateway gives every stored version its own ``meta.versionId`` and ``meta.lastUpdated``. The version the EHR
gave it travels in two ``meta.extension`` entries, so a record can name it and a write-back can send ``If-Match``
with it::

    {"url": "urn:fhir-gateway:extension:ehr-versionId", "valueId": "..."}
    {"url": "urn:fhir-gateway:extension:ehr-lastUpdated", "valueInstant": "..."}

The version a body carries is recorded, never trusted for ordering on its own: only a caller that knows the body
is the EHR's own copy (the poller; a push with ``X-Ehr-Source: true``) asks the store to skip a version older than
the one held. A body that still carries these extensions is a copy read from the gateway: its ``meta.versionId``
and ``meta.lastUpdated`` are the gateway's, so the EHR version recorded is the one the extensions name.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

VERSION_ID = "urn:fhir-gateway:extension:ehr-versionId"
LAST_UPDATED = "urn:fhir-gateway:extension:ehr-lastUpdated"
_OURS = (VERSION_ID, LAST_UPDATED)


def _other_extensions(meta: Mapping[str, Any]) -> list[Any]:
    return [e for e in meta.get("extension", []) if not (isinstance(e, Mapping) and e.get("url") in _OURS)]


def split(resource: Mapping[str, Any]) -> tuple[dict[str, Any], str | None, str | None]:
    """Split a resource into its content (no id, no version meta) and the versionId and lastUpdated it carried."""
    content = dict(resource)  # a copy, then the id taken out: the same keys in the same order, built in C
    content.pop("id", None)
    meta = content.get("meta")
    evid = elu = None
    if meta is not None and isinstance(meta, Mapping):
        meta = dict(meta)
        evid = meta.pop("versionId", None)
        elu = meta.pop("lastUpdated", None)
        if any(isinstance(e, Mapping) and e.get("url") in _OURS for e in meta.get("extension") or []):
            evid, elu = read(meta)  # a copy the gateway served: its versionId and lastUpdated are the gateway's
        if extensions := _other_extensions(meta):
            meta["extension"] = extensions
        else:
            meta.pop("extension", None)
        if meta:
            content["meta"] = meta
        else:
            content.pop("meta")
    return content, (evid if isinstance(evid, str) else None), (elu if isinstance(elu, str) else None)


def stamp(content: Mapping[str, Any], evid: str | None, elu: str | None) -> dict[str, Any]:
    """Return the content's ``meta`` with the EHR's version added as extensions."""
    meta = dict(content.get("meta") or {})
    extensions = list(meta.get("extension", []))
    if evid:
        extensions.append({"url": VERSION_ID, "valueId": evid})
    if elu:
        extensions.append({"url": LAST_UPDATED, "valueInstant": elu})
    if extensions:
        meta["extension"] = extensions
    return meta


def read(meta: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """Return the EHR's versionId and lastUpdated a stored version's ``meta`` carries."""
    found = {e.get("url"): e for e in meta.get("extension", []) if isinstance(e, Mapping)}
    return found.get(VERSION_ID, {}).get("valueId"), found.get(LAST_UPDATED, {}).get("valueInstant")


def for_ehr(stored: Mapping[str, Any]) -> tuple[dict[str, Any], str]:
    """Return a stored resource as the EHR knows it (no gateway version meta) and the EHR's versionId ("" if none)."""
    resource = copy.deepcopy(dict(stored))
    meta = resource.pop("meta", None)
    if not isinstance(meta, Mapping):
        return resource, ""
    version, _ = read(meta)
    kept = {k: v for k, v in meta.items() if k not in ("versionId", "lastUpdated", "extension")}
    if extensions := _other_extensions(meta):
        kept["extension"] = extensions
    if kept:
        resource["meta"] = kept
    return resource, str(version or "")
