"""The walk: one pass over a resource's JSON against the R4 type tables, checking as it goes.

It owns what every type shares: unknown properties, JSON arrays against cardinality, nulls and empty objects,
required properties, one choice type at a time, primitive values and required code bindings. Type-specific
rules (invariants, references, narrative, extensions) are registered on the ``TypeDef`` they belong to and run
when the walk leaves an object of that type. Resources nest (contained, Bundle entries, Parameters); each one
the walk enters records its references so that contained and Bundle references can be resolved at the end.

Diagnostics name the element and the problem; they repeat a value only when it is a code or URL of the
specification, never a value from the resource, which may be PHI.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from conformance.definitions import COMPLEX, PRIMITIVE, Element, TypeDef, tables
from conformance.outcome import Issue
from conformance.primitive import MAX_STRING as _MAX_STRING
from conformance.primitive import SURROGATE as surrogate
from conformance.primitive import Moments, checkers, lenient_uri
from conformance.support import Support

# Unknown keys and resource types are echoed in paths only when they look like element names.
NAME = re.compile(r"_?[A-Za-z][A-Za-z0-9_]{0,63}")
_TYPE_NAME = re.compile(r"[A-Z][A-Za-z]{0,63}")
_SHOWN_CODES = 12
_URI_TYPES = frozenset({"uri", "url", "canonical"})
_STRING, _TOKEN, _COMPLEX, _COMPLEX_ARRAY, _BOUND_CODE, _PRIMITIVE, _ARRAY, _RESOURCE, _MOMENT, _REFERENCE = range(10)
# A code or URI whose checker accepts any printable text without spaces, except these prefixes for a URI.
_URNS = ("urn:uuid:", "urn:oid:")
_TOKENS = frozenset({"uri", "url", "canonical", "code"})
_PLAIN_STRINGS = frozenset({"string", "markdown"})

# Called when the walk leaves an object of a property: run, object, path, property.
Hook = Callable[["Run", dict[str, Any], str, Element], None]


class Scope:
    """One resource that owns references: a top-level resource, a Bundle entry or a Parameters resource."""

    __slots__ = ("contained", "local", "node", "path", "references")

    def __init__(self, node: dict[str, Any], path: str) -> None:
        self.node = node
        self.path = path
        # (path, reference text, allowed target types) of every Reference.reference inside, contained included.
        self.references: list[tuple[str, str, frozenset[str] | None]] = []
        # Fragment references ('#x') made by any element (references, canonicals, uris); None until one is met.
        self.local: set[str] | None = None
        # The contained resources (path, JSON); None until one is met.
        self.contained: list[tuple[str, dict[str, Any]]] | None = None

    def add_local(self, fragment: str) -> None:
        """Note a fragment reference ('#x')."""
        if self.local is None:
            self.local = {fragment}
        else:
            self.local.add(fragment)


class Run:
    """The state of one validation: the issues found and the resources being walked."""

    __slots__ = ("bundles", "found", "issues", "profiles", "resource_types", "scope", "scopes", "support", "types")

    def __init__(self, support: Support | None, profiles: tuple[str, ...] = ()) -> None:
        known = tables()
        self.types = known.types
        self.resource_types = known.resource_types
        self.issues: list[Issue] = []
        self.support = support
        self.profiles = profiles
        self.scope: Scope | None = None
        self.scopes: list[Scope] = []
        # Bundles met in the walk: (bundle JSON, path).
        self.bundles: list[tuple[dict[str, Any], str]] = []
        # Resources other rules need after the walk, by resource type: (JSON, path).
        self.found: dict[str, list[tuple[dict[str, Any], str]]] = {}

    def error(self, code: str, path: str | None, text: str) -> None:
        """Report an error."""
        self.issues.append(Issue("error", code, path, text))

    def warning(self, code: str, path: str | None, text: str) -> None:
        """Report a warning."""
        self.issues.append(Issue("warning", code, path, text))

    def information(self, code: str, path: str | None, text: str) -> None:
        """Report an informational issue."""
        self.issues.append(Issue("information", code, path, text))

    # -- resources ------------------------------------------------------------------------------------------

    def resource(self, node: object, path: str | None, *, owner: bool = True) -> Scope | None:
        """Validate a resource; ``owner`` when it owns its references (not a contained resource)."""
        if type(node) is not dict:
            self.error("structure", path, "A resource must be a JSON object")
            return None
        resource_type = node.get("resourceType")
        if resource_type is None:
            self.error("required", path, "The resource has no resourceType")
            return None
        if type(resource_type) is not str:
            self.error("structure", path, "resourceType must be a string")
            return None
        if resource_type not in self.resource_types:
            shown = resource_type if path is None and _TYPE_NAME.fullmatch(resource_type) else path
            self.error("not-supported", shown, "resourceType is not a FHIR R4 resource type")
            return None
        here = path or resource_type
        spec = self.types[resource_type]
        if not owner:
            self.walk(node, spec, here)
            return None
        outer = self.scope
        scope = self.scope = Scope(node, here)
        self.scopes.append(scope)
        try:
            self.walk(node, spec, here)
        finally:
            self.scope = outer
        return scope

    # -- the walk -------------------------------------------------------------------------------------------

    def walk(self, node: dict[str, Any], spec: TypeDef, path: str) -> None:
        """Check one JSON object against its type, then run the type's invariants."""
        get = spec.elements.get
        for key, value in node.items():
            element = get(key)
            if element is None:
                if not (key == "resourceType" and spec.is_resource):
                    self.unknown(path, key)
                continue
            # The modes in order of frequency (in the corpus); each has a fast path for a valid value and falls
            # back to the full check, which says what is wrong.
            mode = element.mode
            if mode == _TOKEN:
                # A code or URI without whitespace is valid as it stands (printable text has no other whitespace
                # and no lone surrogate), but for the urn:uuid: and urn:oid: forms of a URI.
                if type(value) is str and value and value.isprintable() and " " not in value:
                    first = value[0]
                    if first == "#":
                        if element.local and self.scope is not None:
                            self.scope.add_local(value)
                        continue
                    if first != "u" or not element.urns or not value.startswith(_URNS):
                        continue
                if element.check(value) is not None:
                    self._primitive(element, value, f"{path}.{key}")
                elif element.local and value[0] == "#" and self.scope is not None:
                    self.scope.add_local(value)
            elif mode == _STRING:
                if type(value) is str and value and (value.isascii() or surrogate(value) is None):
                    continue
                self._primitive(element, value, f"{path}.{key}")
            elif mode == _COMPLEX_ARRAY:
                if type(value) is list and value:
                    sub = element.spec
                    hook = element.hook
                    index = 0
                    for item in value:
                        if type(item) is dict and item:
                            here = f"{path}.{key}[{index}]"
                            self.walk(item, sub, here)  # type: ignore[arg-type]
                            if hook is not None:
                                hook(self, item, here, element)
                            if len(item) == 1 and "id" in item:
                                self._only_id(node, element, here)
                        else:
                            self._bad_item(element, item, f"{path}.{key}[{index}]")
                        index += 1
                    if 0 < element.max < index:
                        self.error("structure", f"{path}.{key}", f"At most {element.max} items are allowed")
                else:
                    self._bad_array(value, f"{path}.{key}")
            elif mode == _COMPLEX:
                if type(value) is dict and value:
                    here = f"{path}.{key}"
                    self.walk(value, element.spec, here)  # type: ignore[arg-type]
                    if element.hook is not None:
                        element.hook(self, value, here, element)
                    if len(value) == 1 and "id" in value:
                        self._only_id(node, element, here)
                else:
                    self._bad_object(value, f"{path}.{key}")
            elif mode == _PRIMITIVE:
                if element.check(value) is not None:
                    self._primitive(element, value, f"{path}.{key}")
            elif mode == _BOUND_CODE:
                if type(value) is str and value in element.codes:  # type: ignore[operator]
                    continue
                self._primitive(element, value, f"{path}.{key}")
            elif mode == _REFERENCE:
                # A Reference of a reference and a display, plain strings, as the walk of its type would find it
                # (a Reference has no required element and no rule of its own): only its hook to run.
                if type(value) is dict and value:
                    here = f"{path}.{key}"
                    size = len(value)
                    reference = value.get("reference")
                    if (
                        type(reference) is str
                        and reference
                        and reference.isascii()
                        and (
                            size == 1
                            or (
                                size == 2
                                and type(display := value.get("display")) is str
                                and display
                                and (display.isascii() or surrogate(display) is None)
                            )
                        )
                    ):
                        element.hook(self, value, here, element)
                        continue
                    self.walk(value, element.spec, here)  # type: ignore[arg-type]
                    element.hook(self, value, here, element)
                    if len(value) == 1 and "id" in value:
                        self._only_id(node, element, here)
                else:
                    self._bad_object(value, f"{path}.{key}")
            elif mode == _MOMENT:
                # A date, dateTime or instant: its day and its time of day each seen valid before is valid.
                if type(value) is str and len(value) >= 10 and value[4] == "-":
                    memo = element.memo
                    if value[:4] in memo.years and value[5:10] in memo.days:
                        if len(value) == 10:
                            if memo.day_alone:
                                continue
                        elif value[10:] in memo.times:
                            continue
                if element.check(value) is not None:
                    self._primitive(element, value, f"{path}.{key}")
                else:
                    element.memo.learn(value)
            elif mode == _ARRAY:
                if type(value) is list and value:
                    if element.plain and (element.max < 0 or len(value) <= element.max):
                        # An array of plain strings (given names, address lines), as ``_array`` would find it.
                        for item in value:
                            if not (
                                type(item) is str
                                and item
                                and (item.isascii() or surrogate(item) is None)
                                and len(item) <= _MAX_STRING
                            ):
                                break
                        else:
                            continue
                    self._array(node, element, value, f"{path}.{key}")
                else:
                    self._bad_array(value, f"{path}.{key}")
            elif type(value) is list:
                self.error("structure", f"{path}.{key}", "This element must not be an array")
            else:
                self.resource(value, f"{path}.{key}")
        pairs = spec.pairs
        if pairs is not None:
            for first, second in pairs:
                if first not in node and second not in node:
                    self.required(node, spec, path)
                    break
        after = spec.after
        if after is not None:
            for check in after:
                check(self, node, path)

    def _bad_array(self, value: object, path: str) -> None:
        if type(value) is list:
            self.error("structure", path, "An array must not be empty")
        else:
            self.error("structure", path, "This element must be an array")

    def _bad_item(self, element: Element, item: object, path: str) -> None:
        if item is None and element.name[0] == "_":
            return  # nulls keep a primitive array and its _x siblings aligned
        if type(item) is dict:
            self.error("structure", path, "An element must have a value or children")
        else:
            self.error("structure", path, "An array item must be a JSON object")

    def required(self, node: dict[str, Any], spec: TypeDef, path: str) -> None:
        """Report the required properties a JSON object lacks."""
        for group in spec.required:
            for name in group:
                if name in node:
                    break
            else:
                self._missing(spec.elements[group[0]], path)

    def _primitive(self, element: Element, value: object, path: str) -> None:
        """Report what is wrong with a single primitive value that failed its fast check."""
        if type(value) is list:
            self.error("structure", path, "This element must not be an array")
        elif value is None:
            self.error("structure", path, "An element must not be null")
        else:
            problem = element.check(value)
            if problem is not None:
                self.error("value", path, problem)
            elif element.codes is not None and value not in element.codes:
                self.error("code-invalid", path, _not_in(element.codes))

    def _only_id(self, node: dict[str, Any], element: Element, path: str) -> None:
        """ele-1 for an element that has nothing but an id (a primitive's ``_x`` may, when ``x`` has a value)."""
        if element.name[0] == "_" and element.name[1:] in node:
            return
        self.error("invariant", path, "ele-1: all FHIR elements must have a value or children (not only an id)")

    def _bad_object(self, value: object, path: str) -> None:
        if type(value) is list:
            self.error("structure", path, "This element must not be an array")
        elif value is None:
            self.error("structure", path, "An element must not be null")
        elif type(value) is dict:
            self.error("structure", path, "An element must have a value or children")
        else:
            self.error("structure", path, "This element must be a JSON object")

    def _array(self, node: dict[str, Any], element: Element, value: list[Any], path: str) -> None:
        """Check an array of primitives or of resources (arrays of objects are walked in ``walk``)."""
        if 0 < element.max < len(value):
            self.error("structure", path, f"At most {element.max} items are allowed")
        if element.kind == PRIMITIVE:
            check = element.check
            codes = element.codes
            sibling = ("_" + element.name) in node
            for index, item in enumerate(value):
                if item is None:
                    if not sibling:
                        self.error("structure", f"{path}[{index}]", "An array item must not be null")
                    continue
                problem = check(item)
                if problem is not None:
                    self.error("value", f"{path}[{index}]", problem)
                elif codes is not None and item not in codes:
                    self.error("code-invalid", f"{path}[{index}]", _not_in(codes))
                elif element.local and item[0] == "#" and self.scope is not None:
                    self.scope.add_local(item)
            return
        contained = element.name == "contained"
        for index, item in enumerate(value):
            here = f"{path}[{index}]"
            if contained:
                scope = self.scope
                if scope is not None and type(item) is dict:
                    if scope.contained is None:
                        scope.contained = []
                    scope.contained.append((here, item))
                self.resource(item, here, owner=False)
            else:
                self.resource(item, here, owner=True)

    def _missing(self, element: Element, path: str) -> None:
        if element.choice is not None:
            self.error("required", path, f"One {element.choice}[x] element is required")
        else:
            self.error("required", f"{path}.{element.name}", "A required element is missing")

    def choices(self, node: dict[str, Any], spec: TypeDef, path: str) -> None:
        """Report a second type of a choice element (value[x] given twice)."""
        self._choices(node, spec, path)

    def _choices(self, node: dict[str, Any], spec: TypeDef, path: str) -> None:
        seen: set[str] = set()
        elements = spec.elements
        for key in node:
            element = elements.get(key)
            if element is None or element.choice is None or key[0] == "_":
                continue
            if element.choice in seen:
                self.error("structure", f"{path}.{key}", f"Only one {element.choice}[x] element may be present")
            seen.add(element.choice)

    def unknown(self, path: str, key: str) -> None:
        """Report a property the type does not have."""
        if NAME.fullmatch(key):
            self.error("structure", f"{path}.{key}", "Unknown element")
        else:
            self.error("structure", path, "Unknown element (its name is not shown)")


def _not_in(codes: frozenset[str]) -> str:
    if len(codes) <= _SHOWN_CODES:
        return f"The code is not in the required value set ({' | '.join(sorted(codes))})"
    return f"The code is not in the required value set ({len(codes)} codes)"


def _required_check(spec: TypeDef) -> Callable[[Run, dict[str, Any], str], None]:
    groups = spec.required
    if all(len(group) <= 2 for group in groups) and len(groups) == 1:
        first, *rest = groups[0]
        second = rest[0] if rest else first

        def single(run: Run, node: dict[str, Any], path: str) -> None:
            if first not in node and second not in node:
                run.required(node, spec, path)

        return single

    def check(run: Run, node: dict[str, Any], path: str) -> None:
        run.required(node, spec, path)

    return check


def _choice_check(spec: TypeDef) -> Callable[[Run, dict[str, Any], str], None]:
    def check(run: Run, node: dict[str, Any], path: str) -> None:
        run._choices(node, spec, path)

    return check


_MOMENTS = {"date": True, "dateTime": True, "instant": False}  # the types of Moments, and whether a day alone is one


def prepare(types: dict[str, TypeDef], hooks: dict[str, Hook]) -> None:
    """Set each property's walk mode, checker and hook (by its type), and each type's after-walk checks."""
    checks = checkers()
    for spec in types.values():
        for element in spec.elements.values():
            if element.max != 1:
                element.mode = _COMPLEX_ARRAY if element.kind == COMPLEX else _ARRAY
            elif element.type in _PLAIN_STRINGS:
                element.mode = _STRING
            elif element.codes is not None:
                element.mode = _BOUND_CODE
            elif element.type in _TOKENS:
                element.mode = _TOKEN
            elif element.kind == PRIMITIVE:
                element.mode = _PRIMITIVE
            elif element.kind == COMPLEX:
                element.mode = _COMPLEX
            else:
                element.mode = _RESOURCE
            element.check = checks.get(element.type)
            element.hook = hooks.get(element.type)
            element.local = element.type in _URI_TYPES
        after: list[Any] = []
        if spec.required and all(len(group) <= 2 for group in spec.required):
            # Checked in the walk itself: (name, name or its _name) pairs.
            spec.pairs = tuple((group[0], group[-1]) for group in spec.required)
        elif spec.required:
            after.append(_required_check(spec))
        if spec.choices:
            after.append(_choice_check(spec))
        after.extend(spec.invariants)
        spec.after = tuple(after) if after else None


def finish(types: dict[str, TypeDef], check_reference: Hook) -> None:
    """Set the walk's fast paths that depend on each property's final checker and hook (after every rule is
    installed); ``check_reference`` is the hook of Reference elements."""

    checks = checkers()
    tokens = {checks["code"]: False, checks["uri"]: True, lenient_uri: False}
    moments = {name: Moments(day_alone) for name, day_alone in _MOMENTS.items()}
    reference = types["Reference"]
    fields = reference.elements
    reference_only = (
        reference.after is None
        and reference.pairs is None
        and fields["reference"].mode == _STRING
        and fields["display"].mode == _STRING
    )
    for spec in types.values():
        for element in spec.elements.values():
            if element.mode == _TOKEN:
                if element.check not in tokens:
                    raise ValueError(f"{spec.name}.{element.name}: no fast path for its checker")
                element.urns = tokens[element.check]
            elif (
                element.mode == _COMPLEX
                and element.type == "Reference"
                and element.hook is check_reference
                and element.spec is types["Reference"]
                and reference_only
            ):
                element.mode = _REFERENCE
            elif element.mode == _ARRAY and element.kind == PRIMITIVE:
                # A repeating string or markdown, unbound: every item checked by ``_string`` alone.
                element.plain = element.check is checks["string"] and element.codes is None and not element.local
            elif element.mode == _PRIMITIVE and element.type in moments and element.check is checks[element.type]:
                element.mode = _MOMENT
                element.memo = moments[element.type]
