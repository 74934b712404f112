"""R4 primitive values: their JSON kind, their lexical forms, the date and time comparisons FHIRPath makes, and the
memo of date parts already found valid that lets the walk skip a checker (``Moments``).

Each checker takes a JSON value and returns None when it is valid, else a short text that never repeats the
value (it may be PHI). The lexical forms are the specification's regexes (from the generated tables), plus what
a regex cannot say: calendar dates, integer ranges, base64 and the forms of ``urn:uuid:`` and ``urn:oid:`` URIs.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import cache

from conformance.definitions import tables

Checker = Callable[[object], str | None]

_INT32 = 2**31
MAX_STRING = 1024 * 1024
_DAYS = (0, 31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_UUID = re.compile(r"urn:uuid:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_SPACE = re.compile(r"\s").search
# Finds a lone surrogate (a valid pair is one astral character in a Python str, so never matches).
SURROGATE = re.compile("[\ud800-\udfff]").search
SURROGATE_TEXT = "The string holds a lone UTF-16 surrogate, which is not a valid Unicode character"


def _match(name: str) -> Callable[[str], object]:
    return tables().primitive_patterns[name].fullmatch


def bad_unicode(value: str) -> bool:
    """Tell whether a string holds a lone surrogate (JSON ``"\\ud800"``), which no Unicode text may hold."""
    return not value.isascii() and SURROGATE(value) is not None


def _calendar(value: str) -> bool:
    """Tell whether the day of a matched date exists in its month (29 February only in leap years)."""
    if len(value) < 10 or value[8:10] <= "28":
        return True
    year, month, day = int(value[0:4]), int(value[5:7]), int(value[8:10])
    if month == 2 and day == 29:
        return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
    return day <= _DAYS[month]


def _string(value: object) -> str | None:
    if type(value) is not str:
        return "The value must be a JSON string"
    if not value:
        return "A value must not be an empty string"
    if len(value) > MAX_STRING:
        return "The string is longer than 1 MB"
    if bad_unicode(value):
        return SURROGATE_TEXT
    return None


def _code_checker(match: Callable[[str], object]) -> Checker:
    def check(value: object) -> str | None:
        if type(value) is not str:
            return "A code must be a JSON string"
        if not match(value):
            return "A code must be non-empty, without leading, trailing or double whitespace"
        if bad_unicode(value):
            return SURROGATE_TEXT
        return None

    return check


def _id_checker(match: Callable[[str], object]) -> Checker:
    def check(value: object) -> str | None:
        if type(value) is not str:
            return "An id must be a JSON string"
        if len(value) > 64:
            return "An id must be at most 64 characters"
        if not match(value):
            return "An id may hold only letters, digits, '-' and '.'"
        return None

    return check


def _uri(value: object) -> str | None:
    if type(value) is not str:
        return "A URI must be a JSON string"
    if not value:
        return "A value must not be an empty string"
    if value[0] == "u" and value.startswith("urn:"):
        problem = uuid_problem(value)
        if problem is not None:
            return problem
    if _SPACE(value) is not None:
        return "A URI must not contain whitespace"
    if bad_unicode(value):
        return SURROGATE_TEXT
    return None


def lenient_uri(value: object) -> str | None:
    """Check a URI without the urn:uuid and urn:oid forms (for Bundle.entry.fullUrl, checked apart)."""
    if type(value) is not str:
        return "A URI must be a JSON string"
    if not value:
        return "A value must not be an empty string"
    if _SPACE(value) is not None:
        return "A URI must not contain whitespace"
    if bad_unicode(value):
        return SURROGATE_TEXT
    return None


def uuid_problem(value: str) -> str | None:
    """Say what is wrong with a urn:uuid: or urn:oid: URI, if anything."""
    if value.startswith("urn:uuid:") and not _UUID.fullmatch(value):
        return "UUIDs must be valid and lower case"
    if value.startswith("urn:oid:") and not _match("oid")(value):
        return "An OID must be urn:oid: and a valid OID"
    return None


def _date_like(match: Callable[[str], object], name: str) -> Checker:
    def check(value: object) -> str | None:
        if type(value) is not str:
            return f"A {name} must be a JSON string"
        if not match(value) or not _calendar(value):
            return f"Not a valid {name}"
        return None

    return check


def _time_checker(match: Callable[[str], object]) -> Checker:
    def check(value: object) -> str | None:
        if type(value) is not str:
            return "A time must be a JSON string"
        if not match(value):
            return "Not a valid time"
        return None

    return check


def _boolean(value: object) -> str | None:
    return None if type(value) is bool else "A boolean must be JSON true or false"


def _integer(low: int, name: str) -> Checker:
    def check(value: object) -> str | None:
        if type(value) is not int:
            return f"The value of this {name} must be a JSON integer"
        if not low <= value < _INT32:
            return f"The value is out of range for a {name}"
        return None

    return check


def _decimal(value: object) -> str | None:
    if isinstance(value, float):
        return None if value == value and abs(value) != float("inf") else "Not a valid decimal"
    kind = type(value)
    if kind is int or kind is Decimal:
        return None
    return "A decimal must be a JSON number"


def _base64_checker(match: Callable[[str], object]) -> Checker:
    def check(value: object) -> str | None:
        if type(value) is not str:
            return "base64Binary must be a JSON string"
        if not value:
            return "A value must not be an empty string"
        compact = "".join(value.split())
        if len(compact) % 4 or not match(compact):
            return "Not valid base64 content"
        try:
            base64.b64decode(compact, validate=True)
        except (binascii.Error, ValueError):
            return "Not valid base64 content"
        return None

    return check


def _uuid(value: object) -> str | None:
    if type(value) is not str or not _UUID.fullmatch(value):
        return "A uuid must be urn:uuid: and a lower-case UUID"
    return None


def _oid_checker(match: Callable[[str], object]) -> Checker:
    def check(value: object) -> str | None:
        if type(value) is not str or not match(value):
            return "An oid must be urn:oid: and a valid OID"
        return None

    return check


@cache
def checkers() -> dict[str, Checker]:
    """Return the checker of each primitive type (built once, from the tables' regexes)."""
    return {
        "string": _string,
        "markdown": _string,
        "xhtml": _string,
        "code": _code_checker(_match("code")),
        "id": _id_checker(_match("id")),
        "uri": _uri,
        "url": _uri,
        "canonical": _uri,
        "oid": _oid_checker(_match("oid")),
        "uuid": _uuid,
        "date": _date_like(_match("date"), "date"),
        "dateTime": _date_like(_match("dateTime"), "dateTime"),
        "instant": _date_like(_match("instant"), "instant"),
        "time": _time_checker(_match("time")),
        "boolean": _boolean,
        "integer": _integer(-_INT32, "integer"),
        "positiveInt": _integer(1, "positiveInt"),
        "unsignedInt": _integer(0, "unsignedInt"),
        "decimal": _decimal,
        "base64Binary": _base64_checker(_match("base64Binary")),
    }


class Moment:
    """A date, dateTime or instant value with its precision, comparable as FHIRPath compares them."""

    __slots__ = ("parts", "precision", "utc")

    def __init__(self, parts: tuple[int, ...], precision: int, utc: datetime | None) -> None:
        self.parts = parts
        self.precision = precision  # 1 year, 2 month, 3 day, 4 seconds (with a time and zone)
        self.utc = utc


_MOMENT = re.compile(r"(\d{4})(?:-(\d{2})(?:-(\d{2})(?:T(\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})?)?)?)?")


def moment(value: object) -> Moment | None:
    """Parse a date, dateTime or instant string, or return None."""
    if type(value) is not str:
        return None
    found = _MOMENT.fullmatch(value)
    if found is None:
        return None
    year, month, day, hour, minute, second, fraction, zone = found.groups()
    if hour is None:
        parts = tuple(int(p) for p in (year, month, day) if p is not None)
        return Moment(parts, len(parts), None)
    if zone is None:
        return None
    offset = timedelta(0) if zone == "Z" else timedelta(hours=int(zone[1:3]), minutes=int(zone[4:6]))
    if zone[0] == "-":
        offset = -offset
    micro = int((fraction or "0")[:6].ljust(6, "0"))
    try:
        local = datetime(int(year), int(month), int(day), int(hour), int(minute), min(int(second), 59), micro)
    except ValueError:
        return None
    utc = (local - offset).replace(tzinfo=UTC)
    return Moment((int(year), int(month), int(day)), 4, utc)


def compare(left: Moment, right: Moment) -> int | None:
    """Compare two moments as FHIRPath does: -1, 0 or 1, or None when precision leaves it undecided."""
    if left.utc is not None and right.utc is not None:
        return (left.utc > right.utc) - (left.utc < right.utc)
    common = min(len(left.parts), len(right.parts))
    a, b = left.parts[:common], right.parts[:common]
    if a != b:
        return (a > b) - (a < b)
    if left.precision == right.precision:
        return 0
    return None


_MAX_TIMES = 20_000  # times of day a Moments keeps at most


class Moments:
    """The parts of the valid values of one date, dateTime or instant element type met so far, to accept the next
    value whose parts were all seen valid without its regex: its year, month and day (``MM-DD``, never 29 February,
    which depends on the year), and its time of day with its zone (``T09:00:00Z``). Within its year's
    ``YYYY-MM-DD`` a value's parts are independent of each other (the lexical forms are fixed-width and only 29
    February depends on another part), so any combination of parts seen valid is valid. No value of a resource is
    held whole; the times are bounded."""

    __slots__ = ("day_alone", "days", "times", "years")

    def __init__(self, day_alone: bool) -> None:
        self.day_alone = day_alone  # a date alone is a valid value of the type (not an instant)
        self.years: set[str] = set()
        self.days: set[str] = set()
        self.times: set[str] = set()

    def learn(self, value: str) -> None:
        """Note the parts of a value its checker found valid."""
        if len(value) < 10 or value[4] != "-" or (len(value) == 10 and not self.day_alone):
            return
        day = value[5:10]
        if day == "02-29":
            return
        self.years.add(value[:4])
        self.days.add(day)
        if len(value) > 10 and len(self.times) < _MAX_TIMES:
            self.times.add(value[10:])
