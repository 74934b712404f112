"""Definitions the validator is given besides R4 itself: Questionnaires, profiles, value sets and code systems.

A ``Support`` is built once (from ``--support`` files, or by the gateway from what it stores) and passed to every
validation. It holds conformance resources by canonical URL (and ``url|version``); Bundles are unpacked, other
resource types are ignored. An ImplementationGuide contributes its ``global`` profiles. Reading files is the one
thing here that touches the file system, and only ``load`` does it.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from conformance.definitions import as_list

KINDS = ("Questionnaire", "StructureDefinition", "ValueSet", "CodeSystem")


class Support:
    """Conformance resources by canonical URL, and the global profiles per resource type."""

    def __init__(self, resources: Iterable[object] = ()) -> None:
        self.by_kind: dict[str, dict[str, dict[str, Any]]] = {kind: {} for kind in KINDS}
        self.global_profiles: dict[str, list[str]] = {}
        for resource in resources:
            self.add(resource)

    def add(self, resource: object) -> None:
        """Add one resource (or every resource of a Bundle); other types are ignored."""
        if not isinstance(resource, Mapping):
            return
        kind = resource.get("resourceType")
        if kind == "Bundle":
            for entry in as_list(resource.get("entry")):
                if isinstance(entry, Mapping):
                    self.add(entry.get("resource"))
            return
        if kind == "ImplementationGuide":
            for item in as_list(resource.get("global")):
                if isinstance(item, Mapping) and isinstance(item.get("type"), str) and item.get("profile"):
                    self.global_profiles.setdefault(item["type"], []).append(str(item["profile"]))
            return
        if kind not in self.by_kind:
            return
        url = resource.get("url")
        if not isinstance(url, str):
            return
        table = self.by_kind[kind]
        table.setdefault(url, dict(resource))
        version = resource.get("version")
        if isinstance(version, str):
            table[f"{url}|{version}"] = dict(resource)

    def find(self, kind: str, url: str) -> dict[str, Any] | None:
        """Return a resource of a kind by canonical URL (a ``|version`` suffix is honoured when known)."""
        table = self.by_kind.get(kind, {})
        found = table.get(url)
        if found is None and "|" in url:
            found = table.get(url.split("|", 1)[0])
        return found

    def questionnaire(self, url: str) -> dict[str, Any] | None:
        """Return a Questionnaire by canonical URL."""
        return self.find("Questionnaire", url)

    def profile(self, url: str) -> dict[str, Any] | None:
        """Return a StructureDefinition by canonical URL."""
        return self.find("StructureDefinition", url)

    def __len__(self) -> int:
        return sum(len(table) for table in self.by_kind.values())

    @classmethod
    def load(cls, paths: Iterable[Path]) -> Support:
        """Read JSON files, and the JSON files of folders (recursively), into a Support.

        Raises OSError when a path cannot be read and ValueError when a file is not JSON.
        """
        support = cls()
        for path in paths:
            files = sorted(path.rglob("*.json")) if path.is_dir() else [path]
            for file in files:
                try:
                    support.add(json.loads(file.read_bytes().decode("utf-8-sig")))
                except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                    raise ValueError(f"{file} is not JSON: {exc}") from None
        return support
