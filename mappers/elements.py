"""Reading FHIR elements the way every mapper needs: forgiving of vendor slips, never raising.

A lone object where R4 wants an array is read as one element; blank strings are absent; instants become aware
UTC datetimes only when they name a point in time (a local time needs the clinic's zone).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from mappers.model import CodeableText, Coding, Identifier, Ref, SecurityLabel

# What ``isinstance`` reads as a JSON object: a parsed object is a dict, answered without the ABC's slower check.
MAPPING: Final = (dict, Mapping)

# Looser than the FHIR instant: EHRs send missing seconds, long fractions and offsets without a colon.
_INSTANT: Final = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})(?::(\d{2})(?:\.\d+)?)?(Z|[+-]\d{2}:?\d{2})?", re.ASCII
)


def items(value: object) -> Sequence[Any]:
    """Return the elements of an array (a lone object counts as one); read them, never change them."""
    if isinstance(value, list):
        return value
    # A lone object where R4 wants an array is a common vendor slip; read it as a one-element array.
    if value is not None and isinstance(value, MAPPING):
        return (value,)
    return ()


def text(value: object) -> str | None:
    """Return a non-blank string, else None."""
    return value if isinstance(value, str) and value.strip() else None


def ref(value: object) -> Ref | None:
    """Return a Reference as given (never resolved), or None."""
    fields = ref_fields(value)
    return Ref.model_validate(fields) if fields is not None else None


def ref_fields(value: object) -> dict[str, str | None] | None:
    """Return what ``ref`` makes a Ref of, as a dict, or None: for a model that builds its Ref as it validates
    (one validation instead of two)."""
    if not isinstance(value, MAPPING):
        return None
    reference, display = text(value.get("reference")), text(value.get("display"))
    if reference is None and display is None:
        return None
    return {"reference": reference, "display": display}


def refs(value: object) -> list[Ref]:
    """Return every usable Reference in an array."""
    return [found for found in map(ref, items(value)) if found is not None]


def concept(value: object) -> CodeableText | None:
    """Return a CodeableConcept in compact form, or None when it says nothing."""
    if value is None or not isinstance(value, MAPPING):  # an absent element, told apart without the ABC's check
        return None
    codings = [
        Coding(system=text(c.get("system")), code=text(c.get("code")), display=text(c.get("display")))
        for c in items(value.get("coding"))
        if isinstance(c, MAPPING)
    ]
    codings = [c for c in codings if c.system or c.code or c.display]
    words = text(value.get("text"))
    if words is None and not codings:
        return None
    return CodeableText(text=words, codings=codings)


def concepts(value: object) -> list[CodeableText]:
    """Return every CodeableConcept in an array that says something."""
    return [found for found in map(concept, items(value)) if found is not None]


def identifiers(value: object) -> list[Identifier]:
    """Return the Identifiers that have a system or a value."""
    return [Identifier.model_validate(fields) for fields in identifier_fields(value)]


def identifier_fields(value: object) -> list[dict[str, str | None]]:
    """Return what ``identifiers`` makes Identifiers of, as dicts: for a model that builds them as it validates
    (a record's ``Source``, inside the record's one validation)."""
    found: list[dict[str, str | None]] = []
    for i in items(value):
        if isinstance(i, MAPPING):
            system, value_ = text(i.get("system")), text(i.get("value"))
            if system or value_:
                found.append({"system": system, "value": value_, "use": text(i.get("use"))})
    return found


def security_labels(resource: Mapping[str, Any]) -> list[SecurityLabel]:
    """Collect every `meta.security` label of a resource and its contained resources (see ``merge_labels``)."""
    meta = resource.get("meta")
    if "contained" not in resource and (not isinstance(meta, MAPPING) or meta.get("security") is None):
        return []  # most resources: nothing to collect (an empty string or object is still a label, below)
    contained = [c for c in items(resource.get("contained")) if isinstance(c, MAPPING)]
    return merge_labels(_own_labels(each) for each in (resource, *contained))


def merge_labels(groups: Iterable[Iterable[SecurityLabel]]) -> list[SecurityLabel]:
    """Return every label of every group once, by (system, code), sorted by system then code.

    The one rule for every record's ``security``: a label is never dropped, the first display seen is kept, and
    the order says nothing about where a label came from, so the same labels in another order (a re-sent
    resource, messages folded into a thread in another order) make the same record.
    """
    labels: dict[tuple[str | None, str], SecurityLabel] = {}
    for group in groups:
        for label in group:
            labels.setdefault((label.system, label.code), label)
    return sorted(labels.values(), key=lambda label: (label.system or "", label.code))


def _own_labels(resource: Mapping[str, Any]) -> Iterator[SecurityLabel]:
    meta = resource.get("meta")
    if not isinstance(meta, MAPPING):
        return
    raw = meta.get("security")
    # A lone string where an array of Codings belongs still asks for restriction: read it as one code.
    for coding in [raw] if isinstance(raw, str) else items(raw):
        if isinstance(coding, str):
            # A bare code where a Coding belongs is malformed, but it still asks for restriction.
            coding = {"code": coding}
        if not isinstance(coding, MAPPING):
            continue
        # A label without a code is still a sign the source meant to restrict: keep it, never drop it.
        yield SecurityLabel(
            system=text(coding.get("system")), code=text(coding.get("code")) or "", display=text(coding.get("display"))
        )


def zone(name: str | None) -> tzinfo | None:
    """Return the IANA zone of that name, or None."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return None


def _offset(text: str) -> tzinfo:
    if text == "Z":
        return UTC
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    return timezone(sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:])))


def _plain_utc(value: str) -> bool:
    # Separators where the expression wants them, and ASCII only (the expression's digits are ASCII digits).
    return (
        value[4] == "-"
        and value[7] == "-"
        and value[10] == "T"
        and value[13] == ":"
        and value[16] == ":"
        and (value.isascii())
    )


def instant(value: object, zone_name: str | None) -> datetime | None:
    """Read a FHIR instant as an aware UTC datetime, or None when it names no point in time."""
    if not isinstance(value, str):
        return None
    if len(value) == 20 and value[19] == "Z" and _plain_utc(value):
        # The form records carry and most EHRs send (2027-01-04T14:00:00Z), read without the expression.
        try:
            return datetime.fromisoformat(value)  # aware, in datetime.UTC
        except ValueError:
            pass  # a leap second, or no date at all: the general reading decides
    match = _INSTANT.fullmatch(value.strip())
    if match is None:
        return None
    year, month, day, hour, minute = (int(g) for g in match.groups()[:5])
    second = min(int(match.group(6) or 0), 59)  # a leap second (":60") is valid FHIR, not valid Python
    # Without an offset the time is local; only the clinic's zone can say when it happens, never a guess.
    try:
        tz = _offset(match.group(7)) if match.group(7) else zone(zone_name)
        if tz is None:
            return None
        return datetime(year, month, day, hour, minute, second, tzinfo=tz).astimezone(UTC)
    except (ValueError, OverflowError):
        return None


def instant_text(value: object, zone_name: str | None) -> str | None:
    """Return ``utc_text(instant(value, zone_name))``: a FHIR instant as ISO 8601 UTC with Z, or None."""
    if type(value) is str and len(value) == 20 and value[19] == "Z" and _plain_utc(value):
        try:
            datetime.fromisoformat(value)
        except ValueError:
            pass  # not a time at all, or a leap second: the general reading decides
        else:
            return value  # already that text (every field zero-padded): reading and writing it gives it back
    return utc_text(instant(value, zone_name))


def instant_and_text(value: object, zone_name: str | None) -> tuple[datetime | None, str | None]:
    """Return ``instant(value, zone_name)`` and ``instant_text(value, zone_name)``, the value read once."""
    if type(value) is str and len(value) == 20 and value[19] == "Z" and _plain_utc(value):
        try:
            return datetime.fromisoformat(value), value  # as both read it: already the text it would be written as
        except ValueError:
            pass  # not a time at all, or a leap second: the general reading decides
    moment = instant(value, zone_name)
    return moment, utc_text(moment)


def utc_text(moment: datetime | None) -> str | None:
    """Return an aware datetime as ISO 8601 UTC with Z, seconds precision."""
    return moment.replace(tzinfo=None).isoformat(timespec="seconds") + "Z" if moment else None
