"""What the compiled R4 invariants (``r4_invariants``) call: FHIRPath's collections, three-valued logic,
equality, ordering and the few functions R4's invariants use, over parsed JSON (the string and arithmetic
functions are in ``fhirpath_strings``).

A collection is a list. An item is a JSON value: a dict for a complex element or resource, a str, int, float,
Decimal or bool for a primitive, and ``NO_VALUE`` for a primitive that has only an id or extensions (``_x``), so
that it exists without a value. A boolean result is ``[True]``, ``[False]`` or ``[]`` (empty, unknown). Nothing
here raises on JSON of the wrong shape: what cannot be evaluated is empty, and a collection where FHIRPath wants
one item raises ``Plural``, which the caller treats as "not evaluated" (the walk reports the shape).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from decimal import Decimal, InvalidOperation
from typing import Any

from conformance.definitions import INTEGER_TYPES, STRING_TYPES
from conformance.primitive import compare as compare_moments
from conformance.primitive import moment
from conformance.ucum import convert

Items = list[Any]
Predicate = Callable[[Items], Items]
UCUM = "http://unitsofmeasure.org"
TRUE: Items = [True]
FALSE: Items = [False]


class _NoValue:
    """A primitive element without a value (only an id or extensions)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_VALUE"


NO_VALUE = _NoValue()


class Plural(Exception):
    """A collection of several items where FHIRPath needs one."""


# -- navigation ----------------------------------------------------------------------------------------------


def nav(items: Items, keys: tuple[str, ...]) -> Items:
    """Return the children named by ``keys`` (JSON names, one per type of a choice) of every item."""
    out: Items = []
    for item in items:
        if type(item) is not dict:
            continue
        for key in keys:
            value = item.get(key)
            if value is None:
                if ("_" + key) in item:
                    extra = item["_" + key]
                    if type(extra) is list:
                        out.extend(NO_VALUE for part in extra if part is not None)
                    else:
                        out.append(NO_VALUE)
            elif type(value) is list:
                out.extend(NO_VALUE if part is None else part for part in value)
            else:
                out.append(value)
    return out


def children(items: Items) -> Items:
    """Return the direct children of every item."""
    out: Items = []
    for item in items:
        if type(item) is dict:
            for key, value in item.items():
                if key == "resourceType" or key[0] == "_":
                    continue
                if type(value) is list:
                    out.extend(part for part in value if part is not None)
                else:
                    out.append(value)
    return out


def descendants(items: Items) -> Items:
    """Return every descendant of every item."""
    out: Items = []
    level = children(items)
    while level:
        out.extend(level)
        level = children(level)
    return out


# -- logic ---------------------------------------------------------------------------------------------------


def single(items: Items) -> Any:
    """Return the one item of a collection, None when it is empty; raise Plural when it has more."""
    if not items:
        return None
    if len(items) > 1:
        raise Plural
    return items[0]


def truth(items: Items) -> bool | None:
    """Evaluate a collection as a boolean: None when empty, a boolean item as itself, any other item as true."""
    item = single(items)
    if item is None:
        return None
    if type(item) is bool:
        return item
    return True


def and_(left: Items, right: Items) -> Items:
    """FHIRPath ``and``."""
    a, b = truth(left), truth(right)
    if a is False or b is False:
        return FALSE
    return TRUE if a and b else []


def or_(left: Items, right: Items) -> Items:
    """FHIRPath ``or``."""
    a, b = truth(left), truth(right)
    if a or b:
        return TRUE
    return FALSE if a is False and b is False else []


def xor(left: Items, right: Items) -> Items:
    """FHIRPath ``xor``."""
    a, b = truth(left), truth(right)
    return [] if a is None or b is None else [a != b]


def implies(left: Items, right: Items) -> Items:
    """FHIRPath ``implies``."""
    a, b = truth(left), truth(right)
    if a is False or b is True:
        return TRUE
    if a is True and b is False:
        return FALSE
    return []


def not_(items: Items) -> Items:
    """FHIRPath ``not()``."""
    value = truth(items)
    return [] if value is None else [not value]


def iif(condition: Items, then: Items, otherwise: Items) -> Items:
    """FHIRPath ``iif()`` (both branches are evaluated; neither has effects)."""
    return then if truth(condition) is True else otherwise


# -- equality and order ---------------------------------------------------------------------------------------


def number(value: object) -> Decimal | None:
    if type(value) is bool:
        return None
    if isinstance(value, int | float | Decimal):
        try:
            return Decimal(str(value))
        except InvalidOperation:
            return None
    return None


def _same(left: object, right: object) -> bool:
    if left is NO_VALUE or right is NO_VALUE:
        return False
    a, b = number(left), number(right)
    if a is not None and b is not None:
        return a == b
    return type(left) is type(right) and left == right


def eq(left: Items, right: Items) -> Items:
    """FHIRPath ``=``: empty when either side is empty."""
    if not left or not right or NO_VALUE in left or NO_VALUE in right:
        return []
    if len(left) != len(right):
        return FALSE
    return [all(_same(a, b) for a, b in zip(left, right, strict=True))]


def ne(left: Items, right: Items) -> Items:
    """FHIRPath ``!=``."""
    return not_(eq(left, right))


def _order(left: object, right: object) -> int | None:
    a, b = number(left), number(right)
    if a is not None and b is not None:
        return (a > b) - (a < b)
    if type(left) is str and type(right) is str:
        first, second = moment(left), moment(right)
        if first is not None and second is not None:
            return compare_moments(first, second)
        return (left > right) - (left < right)
    if type(left) is dict and type(right) is dict:
        return _quantity_order(left, right)
    return None


def _quantity_order(left: dict[str, Any], right: dict[str, Any]) -> int | None:
    a, b = number(left.get("value")), number(right.get("value"))
    if a is None or b is None:
        return None
    unit_a, unit_b = left.get("code", left.get("unit")), right.get("code", right.get("unit"))
    if unit_a != unit_b:
        if left.get("system") != UCUM or right.get("system") != UCUM or type(unit_a) is not str:
            return None
        if type(unit_b) is not str:
            return None
        converted = convert(a, unit_a, unit_b)
        if converted is None:
            return None
        a = converted
    return (a > b) - (a < b)


def compare(left: Items, right: Items, operator: str) -> Items:
    """FHIRPath ``<``, ``<=``, ``>``, ``>=``: empty when either side is empty or the two cannot be ordered."""
    a, b = single(left), single(right)
    if a is None or b is None or a is NO_VALUE or b is NO_VALUE:
        return []
    order = _order(a, b)
    if order is None:
        return []
    if operator == "<":
        return [order < 0]
    if operator == "<=":
        return [order <= 0]
    if operator == ">":
        return [order > 0]
    return [order >= 0]


def member(left: Items, right: Items) -> Items:
    """FHIRPath ``in`` (and ``contains`` with the sides swapped)."""
    item = single(left)
    if item is None:
        return []
    return [any(_same(item, other) for other in right)]


def distinct(items: Items) -> Items:
    """Return the items without repeats, in order."""
    out: Items = []
    for item in items:
        if not any(_same(item, seen) or (item is seen) for seen in out):
            out.append(item)
    return out


def union(left: Items, right: Items) -> Items:
    """FHIRPath ``|``."""
    return distinct(left + right)


def intersect(left: Items, right: Items) -> Items:
    """FHIRPath ``intersect()``."""
    return distinct([item for item in left if any(_same(item, other) for other in right)])


def is_distinct(items: Items) -> Items:
    """FHIRPath ``isDistinct()``."""
    return [len(distinct(items)) == len(items)]


def has_value(items: Items) -> Items:
    """FHIRPath ``hasValue()``: one primitive item with a value."""
    return [len(items) == 1 and items[0] is not NO_VALUE and type(items[0]) is not dict]


# -- functions with a criterion --------------------------------------------------------------------------------


def where(items: Items, criterion: Predicate) -> Items:
    """FHIRPath ``where()``."""
    return [item for item in items if truth(criterion([item])) is True]


def select(items: Items, projection: Predicate) -> Items:
    """FHIRPath ``select()``."""
    out: Items = []
    for item in items:
        out.extend(projection([item]))
    return out


def all_(items: Items, criterion: Predicate) -> Items:
    """FHIRPath ``all()``."""
    return [all(truth(criterion([item])) is True for item in items)]


def exists(items: Items, criterion: Predicate | None = None) -> Items:
    """FHIRPath ``exists()``."""
    if criterion is not None:
        items = where(items, criterion)
    return [bool(items)]


# -- types -----------------------------------------------------------------------------------------------------


def is_type(items: Items, name: str) -> Items:
    """FHIRPath ``is``: the one item is of the named type (a resource type, or a primitive by its JSON kind)."""
    item = single(items)
    if item is None:
        return []
    return [_is(item, name)]


def of_type(items: Items, name: str) -> Items:
    """FHIRPath ``ofType()`` (and ``as``, which keeps the item when it is of the type)."""
    return [item for item in items if _is(item, name)]


def _is(item: object, name: str) -> bool:
    if type(item) is dict:
        return item.get("resourceType") == name
    lowered = name[:1].lower() + name[1:]
    if type(item) is bool:
        return lowered == "boolean"
    if type(item) is int:
        return lowered in INTEGER_TYPES or lowered == "decimal"
    if type(item) is float or type(item) is Decimal:
        return lowered == "decimal"
    if type(item) is str:
        return lowered in STRING_TYPES
    return False


def flatten(groups: Iterable[Items]) -> Items:
    """Join collections."""
    out: Items = []
    for group in groups:
        out.extend(group)
    return out
