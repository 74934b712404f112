"""Profiles: StructureDefinitions given as support, applied to the resources that claim them.

A resource is checked against a profile when its ``meta.profile`` names it, when an ImplementationGuide given as
support makes it global for the resource's type, or when the caller names it. What is applied, from the
profile's differential (or its snapshot when it has no differential), and from its base profiles when those are
given too: cardinality (min and max), fixed and pattern values, required bindings to value sets that can be
expanded offline, and slices discriminated by value or pattern (``$this`` or a child path), by type, or by an
extension's url. A slice whose discriminator is not one of those is not checked, rather than guessed at.
A profile that cannot be found is a warning: the resource is still checked against R4.
"""

from __future__ import annotations

from typing import Any

from conformance.definitions import as_list
from conformance.engine import Run
from conformance.terminology import contains, expansion

_CORE = "http://hl7.org/fhir/StructureDefinition/"
_UNSUPPORTED = object()


def finish(run: Run, resource: object) -> None:
    """Apply the profiles each resource claims (and those named by the caller to the top-level resource)."""
    plain = run.support is None and not run.profiles
    for index, scope in enumerate(run.scopes):
        node = scope.node
        meta = node.get("meta")
        if plain and not (type(meta) is dict and "profile" in meta):
            continue  # no profile claimed, none named, no support's global profiles
        resource_type = node.get("resourceType")
        if type(resource_type) is not str:
            continue
        claimed: list[tuple[str, bool]] = []
        if type(meta) is dict and type(meta.get("profile")) is list:
            claimed += [(url, False) for url in meta["profile"] if type(url) is str]
        if run.support is not None:
            claimed += [(url, False) for url in run.support.global_profiles.get(resource_type, ())]
        if index == 0:
            claimed += [(url, True) for url in run.profiles]
        seen: set[str] = set()
        for url, named in claimed:
            if url in seen:
                continue
            seen.add(url)
            definition = run.support.profile(url) if run.support is not None else None
            if definition is None:
                if named or not url.startswith(_CORE):
                    run.warning(
                        "not-found", scope.path, "The profile is not known, so the resource is not checked against it"
                    )
                continue
            _apply(run, node, scope.path, definition, url, 0)


def _apply(run: Run, node: dict[str, Any], path: str, definition: dict[str, Any], url: str, depth: int) -> None:
    if definition.get("type") != node.get("resourceType") or depth > 5:
        return
    base = definition.get("baseDefinition")
    if type(base) is str and not base.startswith(_CORE) and run.support is not None:
        parent = run.support.profile(base)
        if parent is not None:
            _apply(run, node, path, parent, base, depth + 1)
    part = definition.get("differential") or definition.get("snapshot")
    if type(part) is not dict:
        return
    elements = [e for e in as_list(part.get("element")) if type(e) is dict and type(e.get("path")) is str]
    by_id = {str(e.get("id") or e["path"]): e for e in elements}
    for element in elements:
        element_id = str(element.get("id") or element["path"])
        if "." not in element_id:
            continue
        _Constraint(run, node, path, url, by_id).check(element_id, element)


class _Constraint:
    def __init__(self, run: Run, node: dict[str, Any], path: str, url: str, by_id: dict[str, dict[str, Any]]):
        self.run = run
        self.node = node
        self.path = path
        self.url = url
        self.by_id = by_id

    def check(self, element_id: str, element: dict[str, Any]) -> None:
        steps = element_id.split(".")[1:]
        parents: list[tuple[dict[str, Any], str]] = [(self.node, self.path)]
        prefix = element_id.split(".")[0]
        for step in steps[:-1]:
            prefix = f"{prefix}.{step}"
            found = self._children(parents, step, prefix)
            if found is _UNSUPPORTED:
                return
            assert isinstance(found, list)
            parents = [(value, here) for value, here in found if type(value) is dict]
        last = steps[-1]
        for parent, here in parents:
            found = self._children([(parent, here)], last, f"{prefix}.{last}")
            if found is _UNSUPPORTED:
                return
            assert isinstance(found, list)
            self._cardinality(element, found, here, last)
            for value, value_path in found:
                self._value(element, value, value_path)

    def _children(self, parents: list[tuple[dict[str, Any], str]], step: str, element_id: str) -> object:
        name, _, slice_name = step.partition(":")
        found: list[tuple[Any, str]] = []
        for parent, here in parents:
            for key, value in parent.items():
                if key != name and not (
                    name.endswith("[x]") and key.startswith(name[:-3]) and key[len(name) - 3 :][:1].isupper()
                ):
                    continue
                if type(value) is list:
                    found += [(item, f"{here}.{key}[{i}]") for i, item in enumerate(value)]
                else:
                    found.append((value, f"{here}.{key}"))
        if not slice_name:
            return found
        member = self._slice_test(element_id)
        if member is None:
            return _UNSUPPORTED
        return [(value, here) for value, here in found if member(value)]

    def _slice_test(self, slice_id: str) -> Any:
        """Return a test for membership of the slice ``Path:name``, or None when its discriminator is not supported."""
        base_id, _, _name = slice_id.rpartition(":")
        base = self.by_id.get(base_id, {})
        slicing = base.get("slicing") if type(base.get("slicing")) is dict else None
        slice_element = self.by_id.get(slice_id, {})
        discriminators = (slicing or {}).get("discriminator") or []
        if not discriminators and base_id.endswith(("extension", "modifierExtension")):
            discriminators = [{"type": "value", "path": "url"}]
        tests = []
        for discriminator in discriminators:
            kind, where = discriminator.get("type"), discriminator.get("path")
            if kind in ("value", "pattern"):
                expected = self._expected(slice_id, slice_element, str(where))
                if expected is None:
                    return None
                tests.append((str(where), expected))
            elif kind == "type" and where in ("$this", "resource"):
                codes = [t.get("code") for t in as_list(slice_element.get("type")) if type(t) is dict]
                child = self.by_id.get(f"{slice_id}.resource", {}) if where == "resource" else slice_element
                codes = [t.get("code") for t in as_list(child.get("type")) if type(t) is dict] or codes
                if not codes:
                    return None
                tests.append((f"@type:{where}", codes))
            else:
                return None
        if not tests:
            return None

        def member(value: object) -> bool:
            for where, expected in tests:
                if where.startswith("@type:"):
                    target = value.get("resource") if where.endswith("resource") and type(value) is dict else value
                    if not (type(target) is dict and target.get("resourceType") in expected):
                        return False
                    continue
                actual = value if where == "$this" else _at(value, where)
                if not _matches(actual, expected):
                    return False
            return True

        return member

    def _expected(self, slice_id: str, slice_element: dict[str, Any], where: str) -> Any:
        source = slice_element if where == "$this" else self.by_id.get(f"{slice_id}.{where}", {})
        for key, value in source.items():
            if key.startswith(("fixed", "pattern")):
                return value
        if where == "url" and slice_id.split(".")[-1].split(":")[0] in ("extension", "modifierExtension"):
            for entry in as_list(slice_element.get("type")):
                profiles = entry.get("profile") if type(entry) is dict else None
                if type(profiles) is list and profiles:
                    return profiles[0]
        return None

    def _cardinality(self, element: dict[str, Any], found: list[tuple[Any, str]], here: str, name: str) -> None:
        count = len(found)
        label = f"{element.get('path')}" + (f":{element['sliceName']}" if "sliceName" in element else "")
        minimum = element.get("min")
        if type(minimum) is int and count < minimum:
            self.run.error(
                "structure", here, f"{label}: minimum required = {minimum}, but only found {count} (from {self.url})"
            )
        maximum = element.get("max")
        if type(maximum) is str and maximum != "*" and maximum.isdigit() and count > int(maximum):
            self.run.error("structure", here, f"{label}: max allowed = {maximum}, but found {count} (from {self.url})")

    def _value(self, element: dict[str, Any], value: object, here: str) -> None:
        for key, expected in element.items():
            if key.startswith("fixed") and value != expected:
                self.run.error("value", here, f"The value is not the one the profile fixes (from {self.url})")
            elif key.startswith("pattern") and not _matches(value, expected):
                self.run.error("value", here, f"The value does not match the profile's pattern (from {self.url})")
        binding = element.get("binding")
        if type(binding) is dict and binding.get("strength") == "required" and type(binding.get("valueSet")) is str:
            found = expansion(binding["valueSet"], self.run.support)
            if found is None:
                return
            for system, code in _codes(value):
                if contains(found, system, code) is False:
                    self.run.error(
                        "code-invalid", here, f"The code is not in the profile's value set (from {self.url})"
                    )
                    return


def _at(value: object, where: str) -> object:
    for step in where.split("."):
        if type(value) is list:
            value = value[0] if value else None
        if type(value) is not dict:
            return None
        value = value.get(step)
    return value


def _matches(actual: object, pattern: object) -> bool:
    """Tell whether a value matches a pattern: every property of the pattern is there with a matching value."""
    if type(pattern) is dict:
        if type(actual) is list:
            return any(_matches(item, pattern) for item in actual)
        if type(actual) is not dict:
            return False
        return all(_matches(actual.get(key), expected) for key, expected in pattern.items())
    if type(pattern) is list:
        return all(_matches(actual, item) for item in pattern)
    if type(actual) is list:
        return any(item == pattern for item in actual)
    return actual == pattern


def _codes(value: object) -> list[tuple[object, object]]:
    if type(value) is str:
        return []  # a bare code: its system is the value set's, which a membership test by system cannot use
    if type(value) is dict:
        if "coding" in value and type(value["coding"]) is list:
            return [(c.get("system"), c.get("code")) for c in value["coding"] if type(c) is dict]
        if "code" in value:
            return [(value.get("system"), value.get("code"))]
    return []
