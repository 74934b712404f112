"""What Patient, Practitioner and PractitionerRole records share: names, contact points, typed identifiers.

Also the plumbing every people record uses: the created/updated/deleted events and the list of element paths a
mapper left unmapped.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Mapping, Sequence
from typing import Any, Final, Literal, TypeVar

from pydantic import Field

from mappers.elements import MAPPING, concept, items, ref, text
from mappers.family import visibly_changed
from mappers.model import CodeableText, Part, Record, Ref
from mappers.vendors import VendorProfile

R = TypeVar("R", bound=Record)
Gender = Literal["male", "female", "other", "unknown"]

NPI_SYSTEM: Final = "http://hl7.org/fhir/sid/us-npi"
# The v2 identifier type table, under its R4 and its older (DSTU2) canonical URL.
_V2_0203: Final = frozenset({"http://terminology.hl7.org/CodeSystem/v2-0203", "http://hl7.org/fhir/v2/0203"})
# Words EHRs put in identifier.type.text (Epic among them) when they name the MRN without a code.
_MRN_WORDS: Final = frozenset({"mr", "mrn", "medical record number"})
_V2_CODE: Final[Mapping[str, str]] = {"mrn": "MR", "npi": "NPI"}
_GENDER: Final[Mapping[str, Gender]] = {"male": "male", "female": "female", "other": "other", "unknown": "unknown"}
_DATE: Final = re.compile(r"\d{4}(?:-(?:0[1-9]|1[0-2])(?:-(?:0[1-9]|[12]\d|3[01]))?)?", re.ASCII)
# Which identifier the platform shows first when there are several of one kind.
_USE_RANK: Final[Mapping[str | None, int]] = {"official": 0, "usual": 1, None: 2, "secondary": 3, "temp": 4}
_OLD_RANK: Final = 5
# Elements that are not data to map: the resource's own framing, and the narrative (a rendering of the data).
_FRAME: Final = frozenset({"resourceType", "id", "meta", "text"})
_NAME_USE_RANK: Final[Mapping[str | None, int]] = {"official": 0, "usual": 1, None: 2, "temp": 3, "nickname": 4}


class PersonName(Part):
    """The name to address a person by: display text and its parts."""

    text: str
    family: str | None = None
    given: list[str] = Field(default_factory=list)
    prefix: list[str] = Field(default_factory=list)
    suffix: list[str] = Field(default_factory=list)
    use: str | None = None


class ContactPoint(Part):
    """A phone number, email address or other way to reach a person."""

    system: str | None = None
    value: str
    use: str | None = None
    rank: int | None = None


class PersonIdentifier(Part):
    """A business identifier with its kind: "mrn", "npi", a vendor profile's role ("csn", "patient"...), or None."""

    kind: str | None = None
    system: str | None = None
    value: str | None = None
    use: str | None = None
    type: CodeableText | None = None


def is_active(value: object) -> bool:
    """Read an ``active`` flag: only an explicit false makes a record inactive."""
    # R4: a record is generally assumed active when the flag is absent.
    return value is not False


def person_name(value: object) -> PersonName | None:
    """Return the official name, else the usual one, else the first other name that says something."""
    # An old or maiden name is shown only when it is all there is; never address someone by a past name.
    candidates = [n for n in items(value) if isinstance(n, MAPPING)]
    ranked = sorted(
        enumerate(candidates),
        key=lambda pair: (_NAME_USE_RANK.get(_code(pair[1].get("use")), _OLD_RANK), pair[0]),
    )
    for _, name in ranked:
        found = _name(name)
        if found is not None:
            return found
    return None


def _name(name: Mapping[str, Any]) -> PersonName | None:
    family = _words(name.get("family"))
    given, prefix, suffix = (_word_list(name.get(part)) for part in ("given", "prefix", "suffix"))
    display = _words(name.get("text")) or " ".join([*prefix, *given, *([family] if family else []), *suffix])
    if not display:
        return None
    return PersonName(
        text=display, family=family, given=given, prefix=prefix, suffix=suffix, use=_code(name.get("use"))
    )


def fhir_date(value: object) -> str | None:
    """Return a FHIR date (YYYY, YYYY-MM or YYYY-MM-DD) as given, or None when it is not one."""
    found = _words(value)
    return found if found is not None and _DATE.fullmatch(found) else None


def gender(value: object) -> Gender | None:
    """Return an administrative gender code, or None for anything else."""
    found = _code(value)
    return _GENDER.get(found) if found else None


def contact_points(value: object) -> list[ContactPoint]:
    """Return every ContactPoint that has a value to reach someone at."""
    found: list[ContactPoint] = []
    for point in items(value):
        if not isinstance(point, MAPPING):
            continue
        reach = _words(point.get("value"))
        if reach is None:
            continue  # a use or system alone reaches no one
        rank = point.get("rank")
        found.append(
            ContactPoint(
                system=_code(point.get("system")),
                value=reach,
                use=_code(point.get("use")),
                rank=rank if isinstance(rank, int) and not isinstance(rank, bool) and rank > 0 else None,
            )
        )
    return found


def person_identifiers(value: object, vendor: VendorProfile, *, ignore: Collection[str] = ()) -> list[PersonIdentifier]:
    """Return the Identifiers that have a system or a value, each with its kind (``ignore`` drops kinds)."""
    found: list[PersonIdentifier] = []
    for identifier in items(value):
        if not isinstance(identifier, MAPPING):
            continue
        system, given = _words(identifier.get("system")), _words(identifier.get("value"))
        if system is None and given is None:
            continue
        kind_type = concept(identifier.get("type"))
        kind = _kind(system, kind_type, vendor)
        found.append(
            PersonIdentifier(
                kind=None if kind in ignore else kind,
                system=system,
                value=given,
                use=_code(identifier.get("use")),
                type=kind_type,
            )
        )
    return found


def primary(identifiers: Sequence[PersonIdentifier], kind: str) -> str | None:
    """Return the value of the identifier of that kind the platform should show first."""
    candidates = [(i, each) for i, each in enumerate(identifiers) if each.kind == kind and each.value]
    if not candidates:
        return None
    # An identifier whose type says what it is beats one recognised only by its system (Epic's MRN pattern
    # matches every patient identifier type of a customer: EPI, MRN, MyChart login...); then current beats old.
    _, best = min(
        candidates,
        key=lambda pair: (not _says(pair[1].type, kind), _USE_RANK.get(pair[1].use, _OLD_RANK), pair[0]),
    )
    return best.value


def _kind(system: str | None, kind_type: CodeableText | None, vendor: VendorProfile) -> str | None:
    if system == NPI_SYSTEM:
        return "npi"
    typed = {c.code.upper() for c in kind_type.codings if c.system in _V2_0203 and c.code} if kind_type else set()
    for kind, code in _V2_CODE.items():
        if code in typed:
            return kind
    role = vendor.identifier_role(system)
    # A v2 type code says what the identifier is; a vendor's system pattern only guesses, so the code wins.
    return None if role == "mrn" and typed else role


def _says(kind_type: CodeableText | None, kind: str) -> bool:
    if kind_type is None:
        return False
    code = _V2_CODE.get(kind)
    if any(c.system in _V2_0203 and (c.code or "").upper() == code for c in kind_type.codings):
        return True
    return kind == "mrn" and (kind_type.text or "").strip().lower() in _MRN_WORDS


def unmapped(resource: Mapping[str, Any], mapped: Collection[str], read: Collection[str] = ()) -> list[str]:
    """Return the element paths present in the resource that the mapper did not read, sorted.

    ``mapped`` names the top-level elements read; extensions are listed one by one as ``extension('<url>')``,
    except the ``read`` ones.
    """
    # The record links to the stored version (source.fhir_url); this says where to look for the rest.
    paths: set[str] = set()
    for key, value in resource.items():
        if key in _FRAME or key in mapped:
            continue
        if key in ("extension", "modifierExtension"):
            urls = {text(e.get("url")) or "" for e in items(value) if isinstance(e, MAPPING)}
            # A modifier extension changes what the resource means, so it is listed even when read.
            paths |= {f"{key}('{url}')" for url in urls if key == "modifierExtension" or url not in read}
        else:
            paths.add(key)
    return sorted(paths)


def extension_ref(resource: Mapping[str, Any], url: str | None) -> Ref | None:
    """Return the Reference of the resource's first extension with that URL, or None."""
    if url is None:
        return None
    found = next((e for e in items(resource.get("extension")) if isinstance(e, MAPPING) and e.get("url") == url), None)
    return ref(found.get("valueReference")) if found is not None else None


def lifecycle(prefix: str, previous: Record | None, current: Record) -> str | None:
    """Name the created, deleted or updated event from previous to current, or None when nothing shows."""
    if current.deleted:
        # A delete of something the platform never saw, or saw deleted, tells it nothing.
        return f"{prefix}.deleted" if previous is not None and not previous.deleted else None
    if previous is None or previous.deleted:
        return f"{prefix}.created"
    return f"{prefix}.updated" if visibly_changed(previous, current) else None


def _words(value: object) -> str | None:
    found = text(value)
    return found.strip() if found is not None else None


def _word_list(value: object) -> list[str]:
    return [w for w in map(_words, value if isinstance(value, list) else [value]) if w is not None]


def _code(value: object) -> str | None:
    found = _words(value)
    return found.lower() if found is not None else None
