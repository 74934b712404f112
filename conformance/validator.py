"""Validate one parsed FHIR R4 resource offline: structure, primitive types and required code bindings.

Two passes over the JSON. The walk here follows the R4 element tables of ``fhir_models`` and owns what the R4B
models get wrong or let through for R4 JSON: unknown elements, JSON value kinds (``"5"`` is no integer), nulls
and empty arrays, id length, required bindings, nested resources of types R4B lacks, and the R4-only elements.
Then the R4B model validates the rest (required elements, cardinality, choice types, date and number formats)
on a copy from which the walk has cut what R4B cannot take; its errors become issues at FHIRPath-like paths.
Diagnostics name the element and the problem, never the offending value, which may be PHI.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from pydantic import BaseModel, ValidationError

from conformance.fhir_models import R4_RESOURCE_TYPES, ElementDef, elements, model_class, named_model, shape
from conformance.outcome import Issue

_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
_URI = re.compile(r"\S*")
_UUID = re.compile(r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# Unknown keys and resource types are echoed in paths only when they look like element names.
_NAME = re.compile(r"_?[A-Za-z][A-Za-z0-9_]{0,63}")
_TYPE_NAME = re.compile(r"[A-Z][A-Za-z]{0,63}")
_XHTML_NS = "http://www.w3.org/1999/xhtml"
_LISTED = re.compile(r"'(\w+)'")
_SHOWN_CODES = 12
# Decimal too: a caller may parse JSON with parse_float=Decimal to keep a decimal's precision.
_NUMBERS = frozenset({int, float, Decimal})
_VALUE_ERRORS = ("string_", "base64", "date", "time", "int_", "float_", "decimal", "bool_", "url", "uuid")

# A nested resource the walk has judged itself stands in as this to R4B: a valid resource with no content.
_PLACEHOLDER: Mapping[str, Any] = {"resourceType": "Parameters"}
_DROP = object()

# pydantic errors the walk owns: it reports unknown elements and checks uuids by the R4 rule (any version).
_WALK_OWNS = frozenset({"extra_forbidden", "uuid_version", "uuid_parsing", "uuid_type"})


def validate_resource(resource: object) -> list[Issue]:
    """Validate parsed JSON as one FHIR R4 resource and return the issues found (never raises)."""
    try:
        return _validate(resource)
    except RecursionError:
        return [Issue("fatal", "exception", None, "The resource is nested too deeply to validate")]
    except Exception as exc:  # an input must never crash the edge; the type name carries no data
        return [Issue("fatal", "exception", None, f"The validator failed on this input ({type(exc).__name__})")]


def _validate(resource: object) -> list[Issue]:
    if not isinstance(resource, dict):
        return [Issue("error", "structure", None, "A resource must be a JSON object")]
    resource_type = resource.get("resourceType")
    if resource_type is None:
        return [Issue("error", "required", None, "The resource has no resourceType")]
    if not isinstance(resource_type, str):
        return [Issue("error", "structure", None, "resourceType must be a string")]
    if resource_type not in R4_RESOURCE_TYPES:
        shown = resource_type if _TYPE_NAME.fullmatch(resource_type) else None
        return [Issue("error", "not-supported", shown, "resourceType is not a FHIR R4 resource type")]
    walk = _Walk()
    model = model_class(resource_type)
    if model is None:
        walk.minimal(resource, resource_type, resource_type)
    else:
        walk.visit(resource, model, resource_type, (), is_resource=True)
        walk.run_model(model, resource, _rewrite(resource, walk.edits), resource_type)
    for part_model, value, edited, path in walk.apart:
        walk.run_model(part_model, value, edited, path)
    return walk.issues + walk.model_issues


class _Walk:
    """Collect issues from one walk over a resource, then from the R4B models."""

    __slots__ = ("apart", "edits", "issues", "model_issues", "relaxed_choices", "reported")

    def __init__(self) -> None:
        self.issues: list[Issue] = []
        self.model_issues: list[Issue] = []
        self.reported: set[str] = set()
        # Cut from the R4B input: (JSON path, replacement or _DROP).
        self.edits: list[tuple[tuple[str | int, ...], object]] = []
        # Validated by an R4B model on their own: (model, value, value as R4B takes it, path).
        self.apart: list[tuple[type[BaseModel], dict[str, Any], dict[str, Any], str]] = []
        self.relaxed_choices: set[str] = set()

    def error(self, code: str, path: str, text: str) -> None:
        self.issues.append(Issue("error", code, path, text))
        self.reported.add(path)

    def visit(
        self,
        node: dict[str, Any],
        model: type[BaseModel],
        path: str,
        raw: tuple[str | int, ...],
        *,
        is_resource: bool,
    ) -> None:
        model_shape = shape(model)
        table = model_shape.elements
        for group in model_shape.required:
            for name in group:
                if name in node:
                    break
            else:
                self._missing(table[group[0]], path)
        for key, value in node.items():
            element = table.get(key)
            if element is None:
                if not (is_resource and key == "resourceType"):
                    self._unknown(path, key)
            elif element.repeats:
                self._array(element, value, path, raw)
            elif type(value) is element.plain and value != "":
                continue  # the common case, kept cheap: this runs for every element of every request
            elif element.r4_only:
                self._r4_only(node, table, element, value, path, raw)
            elif type(value) is list:
                self.error("structure", f"{path}.{key}", "This element must not be an array")
            elif value is None:
                self.error("structure", f"{path}.{key}", "An element must not be null")
            else:
                self._value(element, value, f"{path}.{key}", raw, key)

    def _missing(self, element: ElementDef, path: str) -> None:
        if element.choice is not None:
            self.error("required", path, f"One {element.choice}[x] element is required")
        else:
            self.error("required", f"{path}.{element.name}", "A required element is missing")

    def _array(self, element: ElementDef, value: object, path: str, raw: tuple[str | int, ...]) -> None:
        key = element.name
        if type(value) is not list:
            self.error("structure", f"{path}.{key}", "This element must be an array")
            return
        if not value:
            self.error("structure", f"{path}.{key}", "An array must not be empty")
            return
        # Nulls keep primitive arrays and their _x siblings aligned; elsewhere they are invalid.
        nulls_align = element.kind not in ("complex", "resource") or key.startswith("_")
        plain = element.plain
        for index, item in enumerate(value):
            if type(item) is plain and item != "":
                continue
            if item is None:
                if not nulls_align:
                    self.error("structure", f"{path}.{key}[{index}]", "An array item must not be null")
            else:
                self._value(element, item, f"{path}.{key}[{index}]", raw, key, index)

    def _value(
        self,
        element: ElementDef,
        value: object,
        path: str,
        raw: tuple[str | int, ...],
        key: str,
        index: int | None = None,
    ) -> None:
        kind = element.kind
        if kind == "complex":
            if type(value) is dict:
                here = (*raw, key) if index is None else (*raw, key, index)
                assert element.model is not None
                self.visit(value, element.model, path, here, is_resource=False)
            else:
                self.error("structure", path, "This element must be a JSON object")
        elif kind == "string":
            if type(value) is not str:
                self.error("value", path, f"The value of this {element.type_name} must be a JSON string")
            elif not value:
                self.error("value", path, "A value must not be an empty string")
            else:
                self._string(element, value, path)
        elif kind == "boolean":
            if type(value) is not bool:
                self.error("value", path, "A boolean must be JSON true or false")
        elif kind == "integer":
            if type(value) is not int:
                self.error("value", path, f"The value of this {element.type_name} must be a JSON integer")
        elif kind == "decimal":
            if type(value) not in _NUMBERS:
                self.error("value", path, "A decimal must be a JSON number")
        else:
            here = (*raw, key) if index is None else (*raw, key, index)
            self._nested(value, path, here)

    def _string(self, element: ElementDef, value: str, path: str) -> None:
        codes = element.codes
        if codes is not None:
            if value not in codes:
                self.error("code-invalid", path, _not_in(codes))
            return
        type_name = element.type_name
        if type_name == "id":
            if len(value) > 64:
                self.error("too-long", path, "An id must be at most 64 characters")
            elif not _ID.fullmatch(value):
                self.error("value", path, "An id may hold only letters, digits, '-' and '.'")
        elif type_name in ("uri", "url", "canonical"):
            if not _URI.fullmatch(value):
                self.error("value", path, f"A {type_name} must not contain whitespace")
        elif type_name == "uuid":
            if not _UUID.fullmatch(value):
                self.error("value", path, "A uuid must be urn:uuid: and a lower-case UUID")
        elif type_name == "xhtml" and not _is_xhtml_div(value):
            self.error("value", path, "The narrative must be a <div> in the XHTML namespace")

    def _nested(self, value: object, path: str, raw: tuple[str | int, ...]) -> None:
        if type(value) is not dict:
            self.error("structure", path, "A resource must be a JSON object")
        else:
            resource_type = value.get("resourceType")
            if not isinstance(resource_type, str):
                self.error("required", path, "A contained or bundled resource needs a resourceType")
            elif resource_type not in R4_RESOURCE_TYPES:
                self.error("not-supported", path, "resourceType is not a FHIR R4 resource type")
            else:
                model = model_class(resource_type)
                if model is not None:
                    self.visit(value, model, path, raw, is_resource=True)
                    return
                self.minimal(value, resource_type, path)
        self.edits.append((raw, _PLACEHOLDER))

    def minimal(self, node: dict[str, Any], resource_type: str, path: str) -> None:
        """Check what every resource shares, for an R4 type that R4B cannot validate."""
        self.issues.append(
            Issue("warning", "not-supported", path, f"Detailed validation is not available for {resource_type}")
        )
        resource_id = node.get("id")
        if resource_id is not None and not (isinstance(resource_id, str) and _ID.fullmatch(resource_id)):
            self.error("value", f"{path}.id", "An id must be 1-64 letters, digits, '-' or '.'")
        meta = node.get("meta")
        if meta is not None:
            if type(meta) is dict:
                self._apart(named_model("Meta"), meta, f"{path}.meta")
            else:
                self.error("structure", f"{path}.meta", "This element must be a JSON object")

    def _r4_only(
        self,
        node: dict[str, Any],
        table: Mapping[str, ElementDef],
        element: ElementDef,
        value: object,
        path: str,
        raw: tuple[str | int, ...],
    ) -> None:
        key = element.name
        self.edits.append(((*raw, key), _DROP))
        choice = element.choice
        if choice is not None:
            self.relaxed_choices.add(path)
            others = [k for k in node if k != key and (e := table.get(k)) is not None and e.choice == choice]
            if others:
                self.error("structure", f"{path}.{key}", f"Only one {choice}[x] element may be present")
        if type(value) is not dict:
            self.error("structure", f"{path}.{key}", "This element must be a JSON object")
            return
        assert element.model is not None
        self._apart(element.model, value, f"{path}.{key}")

    def _apart(self, model: type[BaseModel], value: dict[str, Any], path: str) -> None:
        """Walk a node that R4B must validate on its own; its cuts apply to it, not to the resource."""
        outer, self.edits = self.edits, []
        self.visit(value, model, path, (), is_resource=False)
        self.apart.append((model, value, _rewrite(value, self.edits), path))
        self.edits = outer

    def _unknown(self, path: str, key: str) -> None:
        if _NAME.fullmatch(key):
            self.error("structure", f"{path}.{key}", "Unknown element")
        else:
            self.error("structure", path, "Unknown element (its name is not shown)")

    def run_model(self, model: type[BaseModel], value: dict[str, Any], edited: dict[str, Any], path: str) -> None:
        """Validate the edited value with an R4B model; keep the errors the walk has not reported."""
        try:
            model.model_validate(edited)
        except ValidationError as exc:
            seen: set[tuple[str, str]] = set()
            for error in exc.errors(include_url=False, include_input=False):
                if error["type"] in _WALK_OWNS:
                    continue
                where, element, table = _locate(value, model, path, error["loc"])
                if where in self.reported:
                    continue
                code, text = _describe(error, element, table)
                if text.startswith("One ") and where in self.relaxed_choices:
                    continue
                if (where, text) not in seen:
                    seen.add((where, text))
                    self.model_issues.append(Issue("error", code, where, text))


def _locate(
    data: object, model: type[BaseModel], path: str, loc: tuple[str | int, ...]
) -> tuple[str, ElementDef | None, Mapping[str, ElementDef] | None]:
    """Turn a pydantic error location into a FHIRPath-like path, skipping pydantic's own location parts."""
    table: Mapping[str, ElementDef] | None = elements(model)
    element: ElementDef | None = None
    pending: ElementDef | None = None
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
            data = data[part] if type(data) is list and 0 <= part < len(data) else None
        elif table is not None and part in table:
            element = pending = table[part]
            path += f".{part}"
            data = data.get(part) if type(data) is dict else None
        elif part == "resource_type":
            path += ".resourceType"
            continue
        elif type(data) is dict and part in data and _NAME.fullmatch(part):
            path += f".{part}"
            data, table, element, pending = data[part], None, None, None
            continue
        else:
            continue
        if pending is not None and type(data) is dict:
            if pending.kind == "resource":
                resource_type = data.get("resourceType")
                nested = model_class(resource_type) if isinstance(resource_type, str) else None
                table = elements(nested) if nested is not None else None
            else:
                table = elements(pending.model) if pending.model is not None else None
            pending = None
    return path, element, table


def _describe(
    error: Mapping[str, Any], element: ElementDef | None, table: Mapping[str, ElementDef] | None
) -> tuple[str, str]:
    """Give an issue code and a value-free text for one pydantic error."""
    kind = str(error["type"])
    type_name = element.type_name if element is not None else "value"
    if kind in ("missing", "model_field_validation.missing"):
        return "required", "A required element is missing"
    if kind == "list_type":
        return "structure", "This element must be an array"
    if kind in ("model_type", "dict_type", "model_attributes_type", "json_invalid"):
        return "structure", "This element must be a JSON object"
    if kind in ("string_too_long", "too_long"):
        return "too-long", f"The {type_name} is too long"
    if kind == "value_error":
        message = str(error.get("msg", ""))
        choice = _choice_name(message, table)
        if "but got multiple" in message:
            return "structure", f"Only one {choice}[x] element may be present"
        if "Expect any of field value" in message:
            return "required", f"One {choice}[x] element is required"
        return "value", f"The value is not a valid {type_name}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        return "value", f"The value is out of range for a {type_name}"
    if kind.endswith(("_type", "_parsing")) or kind.startswith(_VALUE_ERRORS):
        return "value", f"The value is not a valid {type_name}"
    return "invalid", f"The element is invalid ({kind})"


def _choice_name(message: str, table: Mapping[str, ElementDef] | None) -> str:
    """Name the choice element a one-of-many error is about, from the element names it lists."""
    listed = _LISTED.search(message)
    if listed and table is not None:
        element = table.get(listed.group(1))
        if element is not None and element.choice:
            return element.choice
    return "value"


def _is_xhtml_div(value: str) -> bool:
    """Tell whether a narrative looks like R4's XHTML div (a full XHTML parse is beyond the edge's budget)."""
    text = value.strip()
    opening = text[: text.find(">") + 1]
    return text.startswith("<div") and text.endswith("</div>") and _XHTML_NS in opening


def _not_in(codes: frozenset[str]) -> str:
    if len(codes) <= _SHOWN_CODES:
        return f"The code is not in the required value set ({' | '.join(sorted(codes))})"
    return f"The code is not in the required value set ({len(codes)} codes)"


def _rewrite(document: dict[str, Any], edits: list[tuple[tuple[str | int, ...], object]]) -> dict[str, Any]:
    """Return the document with the edits applied, copying only the containers on their paths."""
    if not edits:
        return document
    root = dict(document)
    copied = {id(root)}
    for path, replacement in edits:
        node: Any = root
        for step in path[:-1]:
            child = node[step]
            if id(child) not in copied:
                child = dict(child) if type(child) is dict else list(child)
                copied.add(id(child))
                node[step] = child
            node = child
        if replacement is _DROP:
            del node[path[-1]]
        else:
            node[path[-1]] = replacement
    return root
