"""Compile the FHIRPath of R4's invariants to Python expressions over parsed JSON (for ``generate_r4_tables``).

A small parser (FHIRPath's grammar and precedence, the parts R4's invariants use) and a code generator that knows
the R4 element tables, so that a name resolves to its JSON names (``value`` on Observation to ``valueQuantity``,
``valueString`` ...) and ``is``/``as``/``ofType`` on a choice element to the one JSON name of that type. Every
expression compiles to Python that evaluates to a collection (a list), calling ``conformance.fhirpath`` as
``fp`` and ``conformance.fhirpath_strings`` as ``fs``. The focus is the list ``[n]``; ``%resource`` is ``r``.
What cannot be compiled raises ``Unsupported`` with the reason, which the generator lists beside the invariant.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

# [json name, type, min, max, value set, targets, choice] per property, by type key (as in r4_tables.json).
Rows = dict[str, list[list[Any]]]

PRIMITIVES = frozenset(
    {
        "base64Binary", "boolean", "canonical", "code", "date", "dateTime", "decimal", "id", "instant", "integer",
        "markdown", "oid", "positiveInt", "string", "time", "unsignedInt", "uri", "url", "uuid", "xhtml",
    }
)  # fmt: skip
_TOKEN = re.compile(
    r"\s*(?:(?P<string>'(?:[^'\\]|\\.)*')|(?P<number>\d+(?:\.\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)"
    r"|(?P<quoted>`[^`]*`)|(?P<special>[$%][A-Za-z_][A-Za-z0-9_]*)|(?P<op><=|>=|!=|!~|[-+*/&|=~<>().,\[\]]))"
)
_KEYWORDS = {"and", "or", "xor", "implies", "in", "contains", "is", "as", "div", "mod", "true", "false"}
_BINARY = [
    ("implies",),
    ("or", "xor"),
    ("and",),
    ("in", "contains"),
    ("=", "!=", "~", "!~"),
    ("<", "<=", ">", ">="),
    ("|",),
    ("is", "as"),
    ("+", "-", "&"),
    ("*", "/", "div", "mod"),
]
_VARIABLES = {"%ucum": "[fp.UCUM]", "%resource": "[r]", "%context": "[n]"}
_ESCAPES = {"'": "'", '"': '"', "`": "`", "\\": "\\", "/": "/", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


class Unsupported(Exception):
    """An expression this compiler does not handle (the message says why)."""


# -- parsing ---------------------------------------------------------------------------------------------------


@dataclass
class Node:
    """A node of the expression tree."""

    kind: str  # literal, this, variable, name, call, binary, type, negate, index
    value: Any = None
    args: list[Node] = field(default_factory=list)
    target: Node | None = None  # the focus of a name or call (None: the current focus)


def tokenize(text: str) -> list[tuple[str, str]]:
    """Split an expression into (kind, text) tokens."""
    tokens: list[tuple[str, str]] = []
    at = 0
    while at < len(text):
        if text[at:].strip() == "":
            break
        found = _TOKEN.match(text, at)
        if found is None:
            raise Unsupported(f"cannot read the expression at {text[at : at + 10]!r}")
        kind = found.lastgroup
        assert kind is not None
        token = found.group(kind)
        if kind == "name" and token in _KEYWORDS:
            kind = "op"
        tokens.append((kind, token))
        at = found.end()
    return tokens


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = tokenize(text)
        self.at = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, expected: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (expected is not None and token[1] != expected):
            raise Unsupported(f"expected {expected or 'more'} in the expression")
        self.at += 1
        return token

    def parse(self) -> Node:
        node = self.binary(0)
        if self.peek() is not None:
            raise Unsupported(f"unexpected {self.peek()} in the expression")
        return node

    def binary(self, level: int) -> Node:
        if level == len(_BINARY):
            return self.unary()
        left = self.binary(level + 1)
        while (token := self.peek()) is not None and token[0] == "op" and token[1] in _BINARY[level]:
            operator = self.take()[1]
            if operator in ("is", "as"):
                left = Node("type", operator, [left], None)
                left.value = (operator, self.type_name())
                continue
            right = self.binary(level + 1)
            left = Node("binary", operator, [left, right])
        return left

    def type_name(self) -> str:
        kind, text = self.take()
        if kind not in ("name", "quoted"):
            raise Unsupported("expected a type name")
        name = text.strip("`")
        while (token := self.peek()) is not None and token[1] == ".":
            self.take()
            name = self.take()[1]  # FHIR.string -> string
        return name

    def unary(self) -> Node:
        token = self.peek()
        if token is not None and token[1] in ("-", "+"):
            self.take()
            operand = self.unary()
            return operand if token[1] == "+" else Node("negate", None, [operand])
        return self.postfix()

    def postfix(self) -> Node:
        node = self.term()
        while (token := self.peek()) is not None and token[1] in (".", "["):
            self.take()
            if token[1] == "[":
                index = self.binary(0)
                self.take("]")
                node = Node("index", None, [index], node)
                continue
            node = self.invocation(node)
        return node

    def term(self) -> Node:
        kind, text = self.take()
        if kind == "string":
            return Node("literal", _unescape(text[1:-1]))
        if kind == "number":
            return Node("literal", float(text) if "." in text else int(text))
        if kind == "op" and text in ("true", "false"):
            return Node("literal", text == "true")
        if kind == "op" and text == "(":
            node = self.binary(0)
            self.take(")")
            return node
        if kind == "special":
            return Node("this") if text == "$this" else Node("variable", text)
        if kind in ("name", "quoted") or (kind == "op" and text in ("contains", "in", "is", "as")):
            self.at -= 1
            return self.invocation(None)
        raise Unsupported(f"unexpected {text!r} in the expression")

    def invocation(self, target: Node | None) -> Node:
        _kind, text = self.take()
        name = text.strip("`")
        token = self.peek()
        if token is not None and token[1] == "(":
            self.take()
            args: list[Node] = []
            while (token := self.peek()) is not None and token[1] != ")":
                if name in ("is", "as", "ofType"):
                    args.append(Node("literal", self.type_name()))
                else:
                    args.append(self.binary(0))
                if (token := self.peek()) is not None and token[1] == ",":
                    self.take()
            self.take(")")
            return Node("call", name, args, target)
        return Node("name", name, [], target)


def _unescape(text: str) -> str:
    out, at = [], 0
    while at < len(text):
        char = text[at]
        if char == "\\" and at + 1 < len(text):
            out.append(_ESCAPES.get(text[at + 1], text[at + 1]))
            at += 2
        else:
            out.append(char)
            at += 1
    return "".join(out)


def parse(text: str) -> Node:
    """Parse a FHIRPath expression."""
    return _Parser(text).parse()


# -- code generation ---------------------------------------------------------------------------------------------

# The static type of a collection: the type keys its items may have (None: unknown).
Types = frozenset[str] | None


class Compiler:
    """Compile expressions whose focus has the types ``context``; ``resource`` is the type of %resource."""

    def __init__(self, rows: Rows, context: frozenset[str], resource: str | None) -> None:
        self.rows = rows
        self.context = context
        self.resource = resource
        self.lambdas = 0

    def compile(self, text: str) -> str:
        """Return Python evaluating to the expression's collection, with the focus object ``n``."""
        code, _types = self.expression(parse(text), "[n]", self.context, True)
        return code

    # Each step returns (python, static types of the items).
    def expression(self, node: Node, focus: str, types: Types, first: bool = False) -> tuple[str, Types]:
        kind = node.kind
        if kind == "literal":
            return f"[{node.value!r}]", None
        if kind == "this":
            return focus, types
        if kind == "variable":
            if node.value not in _VARIABLES:
                raise Unsupported(f"the variable {node.value} is not known here")
            if node.value == "%resource" and self.resource is None:
                raise Unsupported("%resource outside a resource")
            code = _VARIABLES[node.value]
            known = {"%ucum": None, "%resource": frozenset({self.resource or ""}), "%context": self.context}
            return code, known[node.value]
        if kind == "name":
            return self.name(node, focus, types, first)
        if kind == "call":
            return self.call(node, focus, types)
        if kind == "binary":
            return self.binary(node, focus, types)
        if kind == "type":
            operator, type_name = node.value
            return self.typed(node.args[0], operator, type_name, focus, types)
        if kind == "negate":
            inner, _ = self.expression(node.args[0], focus, types)
            return f"fs.add([0], [-x for x in {inner}])", None
        if kind == "index":
            assert node.target is not None
            base, base_types = self.expression(node.target, focus, types)
            index, _ = self.expression(node.args[0], focus, types)
            return f"{base}[fp.single({index}) : fp.single({index}) + 1]", base_types
        raise Unsupported(f"{kind} nodes")

    def target(self, node: Node, focus: str, types: Types) -> tuple[str, Types]:
        if node.target is None:
            return focus, types
        return self.expression(node.target, focus, types, first=True)

    def name(self, node: Node, focus: str, types: Types, first: bool) -> tuple[str, Types]:
        base, base_types = self.target(node, focus, types)
        name = node.value
        if node.target is None and first and base_types and name in base_types:
            return base, base_types  # Appointment.status: the type name first filters the focus
        keys, child_types = self.resolve(base_types, name)
        return f"fp.nav({base}, {tuple(keys)!r})", child_types

    def resolve(self, types: Types, name: str) -> tuple[list[str], Types]:
        """Return the JSON names and types of a property of items of these types."""
        if not types:
            return [name], None
        keys: list[str] = []
        found: set[str] = set()
        for type_key in sorted(types):
            for row in self.rows.get(type_key, []):
                row_name, row_type, choice = row[0], row[1], (row[6] if len(row) > 6 else None)
                if row_name == name or choice == name:
                    if row_name not in keys:
                        keys.append(row_name)
                    found.add(row_type)
        if not keys:
            raise Unsupported(f"{name} is not an element of {', '.join(sorted(types))}")
        resolved = frozenset(t for t in found if t not in PRIMITIVES and t != "Resource") | frozenset(
            t for t in found if t in PRIMITIVES
        )
        return keys, (None if "Resource" in found else resolved)

    def typed(self, operand: Node, operator: str, type_name: str, focus: str, types: Types) -> tuple[str, Types]:
        """``is``/``as``/``ofType``: on a choice element, keep the one JSON name of the type."""
        if operand.kind == "name":
            base, base_types = self.target(operand, focus, types)
            if base_types:
                keys, _ = self.resolve(base_types, operand.value)
                suffix = type_name[:1].upper() + type_name[1:]
                if len(keys) > 1 or keys[0] != operand.value:
                    chosen = [k for k in keys if k == operand.value + suffix]
                    collection = f"fp.nav({base}, {tuple(chosen)!r})"
                    chosen_types = frozenset({type_name}) if chosen else frozenset()
                    if operator == "is":
                        return f"fp.exists({collection}) if fp.nav({base}, {tuple(keys)!r}) else []", None
                    return collection, chosen_types
        code, _ = self.expression(operand, focus, types)
        if operator == "is":
            return f"fp.is_type({code}, {type_name!r})", None
        return f"fp.of_type({code}, {type_name!r})", frozenset({type_name})

    def binary(self, node: Node, focus: str, types: Types) -> tuple[str, Types]:
        operator = node.value
        left, left_types = self.expression(node.args[0], focus, types)
        right, right_types = self.expression(node.args[1], focus, types)
        simple = {
            "and": "fp.and_",
            "or": "fp.or_",
            "xor": "fp.xor",
            "implies": "fp.implies",
            "=": "fp.eq",
            "!=": "fp.ne",
            "in": "fp.member",
            "|": "fp.union",
            "&": "fs.concat",
            "+": "fs.add",
        }
        if operator in simple:
            joined = left_types | right_types if left_types is not None and right_types is not None else None
            return f"{simple[operator]}({left}, {right})", joined if operator == "|" else None
        if operator == "contains":
            return f"fp.member({right}, {left})", None
        if operator in ("<", "<=", ">", ">="):
            return f"fp.compare({left}, {right}, {operator!r})", None
        raise Unsupported(f"the operator {operator}")

    def lambda_of(self, node: Node, types: Types) -> tuple[str, Types]:
        self.lambdas += 1
        name = f"t{self.lambdas}"
        body, body_types = self.expression(node, name, types)
        return f"lambda {name}: {body}", body_types

    def call(self, node: Node, focus: str, types: Types) -> tuple[str, Types]:
        name, args = node.value, node.args
        base, base_types = self.target(node, focus, types)
        plain = {
            "not": "fp.not_({})",
            "hasValue": "fp.has_value({})",
            "isDistinct": "fp.is_distinct({})",
            "toInteger": "fs.to_integer({})",
            "toString": "fs.to_string({})",
            "children": "fp.children({})",
            "descendants": "fp.descendants({})",
            "empty": "[not {}]",
            "count": "[len({})]",
        }
        if name in plain and not args:
            return plain[name].format(base), None
        if name in ("first", "tail") and not args:
            return (f"{base}[:1]" if name == "first" else f"{base}[1:]"), base_types
        if name == "trace":
            return base, base_types
        if name == "exists":
            if not args:
                return f"[bool({base})]", None
            criterion, _ = self.lambda_of(args[0], base_types)
            return f"fp.exists({base}, {criterion})", None
        if name in ("where", "all", "select"):
            if len(args) != 1:
                raise Unsupported(f"{name}() with {len(args)} arguments")
            function, body_types = self.lambda_of(args[0], base_types)
            helper = {"where": "fp.where", "all": "fp.all_", "select": "fp.select"}[name]
            return f"{helper}({base}, {function})", (base_types if name == "where" else body_types)
        if name in ("startsWith", "contains", "matches", "combine", "intersect", "substring", "replaceMatches"):
            values = [self.expression(arg, "[n]" if focus == "[n]" else focus, types)[0] for arg in args]
            helper = {
                "startsWith": "fs.starts_with",
                "contains": "fs.contains_text",
                "matches": "fs.matches",
                "intersect": "fp.intersect",
                "substring": "fs.substring",
                "replaceMatches": "fs.replace_matches",
            }
            if name == "combine":
                return f"fp.flatten(({base}, {values[0]}))", None
            return f"{helper[name]}({base}, {', '.join(values)})", None
        if name == "iif":
            condition = self.expression(args[0], base, base_types)[0]
            then = self.expression(args[1], base, base_types)[0]
            otherwise = self.expression(args[2], base, base_types)[0] if len(args) > 2 else "[]"
            return f"fp.iif({condition}, {then}, {otherwise})", None
        if name in ("is", "as", "ofType"):
            type_name = args[0].value
            operand = node.target if node.target is not None else Node("this")
            return self.typed(operand, "is" if name == "is" else "as", type_name, focus, types)
        raise Unsupported(f"the function {name}()")
