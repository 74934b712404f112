"""Just enough UCUM to compare two quantities: metric prefixes on the common base units, and a few customary
units. A code outside this set is not comparable (the caller reports that), never guessed."""

from __future__ import annotations

from decimal import Decimal

_PREFIXES = {
    "": Decimal(1),
    "k": Decimal(1000),
    "h": Decimal(100),
    "da": Decimal(10),
    "d": Decimal("0.1"),
    "c": Decimal("0.01"),
    "m": Decimal("0.001"),
    "u": Decimal("0.000001"),
    "n": Decimal("0.000000001"),
}
# base unit -> dimension
_BASES = {"m": "length", "g": "mass", "s": "time", "L": "volume", "l": "volume", "mol": "amount"}
# customary units -> (dimension, factor to the base unit)
_CUSTOMARY = {
    "[mi_i]": ("length", Decimal("1609.344")),
    "[ft_i]": ("length", Decimal("0.3048")),
    "[in_i]": ("length", Decimal("0.0254")),
    "[yd_i]": ("length", Decimal("0.9144")),
    "[lb_av]": ("mass", Decimal("453.59237")),
    "[oz_av]": ("mass", Decimal("28.349523125")),
    "min": ("time", Decimal(60)),
    "h": ("time", Decimal(3600)),
    "d": ("time", Decimal(86400)),
    "wk": ("time", Decimal(604800)),
}


def canonical(code: str) -> tuple[str, Decimal] | None:
    """Return (dimension, factor to the base unit) of a UCUM code, or None when it is not one known here."""
    if code in _CUSTOMARY:
        return _CUSTOMARY[code]
    for base, dimension in _BASES.items():
        if code.endswith(base):
            prefix = code[: -len(base)]
            if prefix in _PREFIXES:
                return dimension, _PREFIXES[prefix]
    return None


def convert(value: Decimal, code: str, target: str) -> Decimal | None:
    """Convert a value in one UCUM unit into another, or return None when they are not comparable."""
    source, goal = canonical(code), canonical(target)
    if source is None or goal is None or source[0] != goal[0]:
        return None
    return value * source[1] / goal[1]
