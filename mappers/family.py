"""What a mapped family is: the contract between a mapper module, the worker and the platform API."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any, Final, Generic, TypedDict, TypeVar, cast

from pydantic import BaseModel

from mappers.context import MapContext
from mappers.elements import MAPPING
from mappers.errors import MissingId, TenantMismatch, WrongResourceType
from mappers.model import Record

R = TypeVar("R", bound=Record)
A = TypeVar("A", bound=Record)

# What every family's ``to_platform`` reads: the type, the id, and the security labels of the resource (``meta``)
# and of its contained resources, which travel to the record.
FRAME: Final = frozenset({"resourceType", "id", "meta", "contained"})


class IndexFields(TypedDict, total=False):
    """What the platform API filters and sorts a record type by."""

    patient: str | None  # "Patient/<id>"
    sort: float | None  # epoch seconds of the record's main date (start, sent, authored...)
    status: str | None


# Source fields that change with every stored version even when nothing the platform shows has changed.
VERSION_FIELDS: Final = frozenset({"version_id", "last_updated", "fhir_url", "ehr_version_id", "ehr_last_updated"})


def resource_id(resource: Mapping[str, Any], fhir_type: str) -> str:
    """Return the id of a resource of ``fhir_type``, or raise the MappingError that says why there is none."""
    if not isinstance(resource, MAPPING) or resource.get("resourceType") != fhir_type:
        got = resource.get("resourceType") if isinstance(resource, MAPPING) else type(resource).__name__
        raise WrongResourceType(f"expected a resource of type {fhir_type}, got {str(got)[:64]!r}")
    fhir_id = resource.get("id")
    if not isinstance(fhir_id, str) or not fhir_id:
        raise MissingId(f"a {fhir_type} without an id cannot be mapped")
    return fhir_id


def visible(record: Record, *, besides: Collection[str] = ()) -> dict[str, Any]:
    """Return what the platform sees of a record: all but version bookkeeping, the unmapped list and ``besides``.

    Two versions of a record whose visible parts are equal are no change to classify.
    """
    return record.model_dump(exclude={"source": set(VERSION_FIELDS), "unmapped": True, **dict.fromkeys(besides, True)})


# Values a field dumps as themselves: two that differ make two dumps that differ.
_PLAIN: Final = frozenset({str, int, float, bool, type(None)})
_HIDDEN: Final = frozenset({"source", "unmapped"})


def visibly_changed(previous: Record, current: Record, *, besides: Collection[str] = ()) -> bool:
    """Tell whether the platform sees a change from previous to current: ``visible(previous) != visible(current)``.

    Told from the fields themselves where they make it certain, since dumping both records cost an update about
    17 us of an Appointment's; the dumps decide only what the fields leave open.
    """
    if type(previous) is type(current) and not besides:
        record = _fields_differ(previous, current, _HIDDEN)
        if record:
            return True
        source = _fields_differ(previous.source, current.source, VERSION_FIELDS)
        if source is not None and record is not None:
            return source
    return visible(previous, besides=besides) != visible(current, besides=besides)


def _fields_differ(before: BaseModel, after: BaseModel, hidden: Collection[str]) -> bool | None:
    """Tell whether two models of one class dump differently, ``hidden`` fields aside (see ``_differs``)."""
    mine, theirs = before.__dict__, after.__dict__
    if mine.keys() != theirs.keys():
        return None
    unknown = False
    for name, value in mine.items():
        other = theirs[name]
        if name in hidden or value == other:
            continue
        found = _differs(value, other)
        if found:
            return True
        unknown = unknown or found is None
    return None if unknown else False


def _differs(before: object, after: object) -> bool | None:
    """Tell whether two values dump differently: True or False when the values make it certain, None when only
    their dumps can tell. Equal values dump alike, differing plain values differently, and a model or a list of one
    class and length differs where one of its parts does."""
    if before == after:
        return False
    if type(before) in _PLAIN and type(after) in _PLAIN:
        return True
    if type(before) is not type(after):
        return None
    if isinstance(before, BaseModel):
        return _fields_differ(before, cast(BaseModel, after), ())
    if isinstance(before, list) and isinstance(after, list):
        if len(before) != len(after):
            return True
        found = [_differs(value, other) for value, other in zip(before, after, strict=True)]
        return True if any(found) else None if None in found else False
    return None


# Where a record's JSON (``model_dump_json``) names its version: ``Source``'s version fields run from version_id to
# ehr_last_updated, identifiers follow, and fhir_url closes the source object.
_VERSION_FROM, _VERSION_TO, _URL = b',"version_id":', b',"identifiers":', b',"fhir_url":"'


def differs_only_in_version(stored: bytes, encoded: bytes) -> bool:
    """Tell whether two records' JSON (one class's ``model_dump_json``) are the same bytes but for their source's
    ``VERSION_FIELDS``: the platform then sees no change from one to the other, which costs no parse to tell.

    Certain one way only: records whose bytes differ elsewhere too (an unmapped element, or a number written 1 and
    then 1.0) may still look alike to the platform, which ``visibly_changed`` tells.
    """
    before, after = _unversioned(stored), _unversioned(encoded)
    return before is not None and before == after


def _unversioned(encoded: bytes) -> tuple[bytes, bytes, bytes] | None:
    """Return a record's JSON cut around its version fields and its fhir_url's value, or None when it has none."""
    start = encoded.find(_VERSION_FROM)
    end = encoded.find(_VERSION_TO, start)
    url = encoded.find(_URL, end)
    # A JSON string holds no bare quote, so the first '"}' after the URL's opening quote is at or before its end.
    close = encoded.find(b'"}', url + len(_URL))
    if start < 0 or end < 0 or url < 0 or close < 0:
        return None
    return encoded[:start], encoded[end:url], encoded[close:]


def tombstone(previous: R, ctx: MapContext) -> R:
    """Return the previous record as a tombstone of the stored version that deleted it."""
    if previous.source.tenant != ctx.tenant:
        raise TenantMismatch(f"{previous.source.fhir_type}/{previous.id} belongs to another tenant")
    source = ctx.source(previous.source.fhir_type, previous.source.fhir_id, previous.source.identifiers)
    return previous.model_copy(update={"deleted": True, "source": source}, deep=True)


def no_needs(resource: Mapping[str, Any]) -> list[str]:
    """Need nothing besides the resource itself."""
    return []


def canonical_key(rtype: str, url: str) -> str:
    """Return the ``related`` key of a canonical reference (``url`` or ``url|version``)."""
    return f"{rtype}?url={url}"


@dataclass(frozen=True)
class Aggregate(Generic[A]):
    """A record folded from many records of one family (a message thread from its messages)."""

    record_type: str
    route: str
    model: type[A]
    # The aggregate a record belongs to, or None.
    key: Callable[[Any], str | None]
    # The aggregate after this record (the previous aggregate, or None for the first); must be idempotent.
    fold: Callable[[A | None, Any, MapContext], A]


@dataclass(frozen=True)
class Family(Generic[R]):
    """Everything the worker and the platform API need to handle one mapped FHIR type."""

    fhir_type: str
    record_type: str
    # The platform API path segment: /platform/v1/{route}/{id}.
    route: str
    # The record class, to read a stored record back before classifying the next version against it.
    model: type[R]
    to_platform: Callable[[Mapping[str, Any], MapContext], R]
    # Change event types from the previous record to this one, in order ([] when nothing changed).
    classify: Callable[[R | None, R], list[str]]
    deleted_record: Callable[[R, MapContext], R]
    index_fields: Callable[[R], IndexFields]
    # The top-level elements ``to_platform`` reads (``FRAME`` among them); removing any other element of a resource
    # leaves its record as it is. The lenient validation policy tolerates errors only outside these.
    reads: frozenset[str]
    # Keys of other stored resources the mapping reads (put in ``MapContext.related``); when one of them
    # changes, the record is mapped again.
    needs: Callable[[Mapping[str, Any]], list[str]] = no_needs
    aggregate: Aggregate[Any] | None = None
