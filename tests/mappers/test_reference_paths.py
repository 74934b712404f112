"""The mappers' fast paths make exactly the records the plain code makes.

Every corpus resource of a mapped type, and the resources ``bench/worker_phases.py`` drains, are mapped as the
worker maps them and again through a reference path: the same mappers with each shortcut taken out (a JSON object
told by the ``Mapping`` ABC alone, as before ``elements.MAPPING``). The two records must serialise to the same bytes
and compare equal.

Likewise ``visibly_changed``, which tells a visible change from the records' fields where they make it certain, must
answer for every later version what the two records' ``visible`` dumps answer; and where ``differs_only_in_version``
says two records' bytes differ only in their version, the platform must see no change and no index must move.
"""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Mapping
from typing import Any

import pytest

import mappers
from mappers.context import MapContext
from mappers.errors import MappingError
from mappers.family import VERSION_FIELDS, differs_only_in_version, visible, visibly_changed
from mappers.model import Record, Source
from mappers.registry import MAPPED
from mappers.vendors import VENDORS
from tests.mappers.conftest import bench_shaped, corpus_params, ctx


def _modules() -> list[Any]:
    return [importlib.import_module(f"mappers.{m.name}") for m in pkgutil.iter_modules(mappers.__path__)]


def _mapped(resource: Mapping[str, Any], context: MapContext) -> tuple[str, Any] | None:
    family = MAPPED[str(resource["resourceType"])]
    try:
        record = family.to_platform(resource, context)
    except MappingError as exc:
        return ("error", repr(exc))
    return (record.model_dump_json(), record)


def _reference(resource: Mapping[str, Any], context: MapContext) -> tuple[str, Any] | None:
    with pytest.MonkeyPatch.context() as patch:
        shortcut = [module for module in _modules() if "MAPPING" in vars(module)]
        assert len(shortcut) > 10  # every mapper module that reads JSON objects
        for module in shortcut:
            patch.setattr(module, "MAPPING", Mapping)
        return _mapped(resource, context)


def _same(resource: Mapping[str, Any], context: MapContext) -> None:
    fast, slow = _mapped(resource, context), _reference(resource, context)
    assert fast is not None and slow is not None
    assert fast[0] == slow[0]
    assert fast[1] == slow[1]


STAMP = {"versionId": "1", "lastUpdated": "2026-12-03T09:00:00.123Z"}


@pytest.mark.parametrize("vendor", VENDORS)
@pytest.mark.parametrize(
    "resource",
    bench_shaped(STAMP),
    ids=lambda r: str(r["resourceType"]),
)
def test_benchmark_resources_map_as_the_reference_maps_them(resource: dict[str, Any], vendor: str) -> None:
    _same(resource, ctx(vendor=vendor))


@pytest.mark.corpus
@pytest.mark.parametrize("resource", corpus_params(*MAPPED, with_id=True))
def test_corpus_resources_map_as_the_reference_maps_them(resource: dict[str, Any]) -> None:
    _same(resource, ctx())


def _versions(resource: dict[str, Any]) -> list[dict[str, Any]]:
    """Return later versions of a resource: sent again as it is, with a regenerated narrative, and with each of its
    top-level elements taken out or changed in turn (a text, or the texts of a list's first object)."""
    later = [dict(resource), {**resource, "text": {"status": "generated", "div": "<div>again</div>"}}]
    for name, value in resource.items():
        if name in ("resourceType", "id", "meta"):
            continue
        later.append({key: v for key, v in resource.items() if key != name})
        if isinstance(value, str):
            later.append({**resource, name: value + "-changed"})
        if isinstance(value, list) and value and isinstance(value[0], dict):
            first = {key: v + "-changed" if isinstance(v, str) else v for key, v in value[0].items()}
            later.append({**resource, name: [first, *value[1:]]})
    return later


def _visibly_changed_as_dumped(resource: dict[str, Any]) -> None:
    family = MAPPED[str(resource["resourceType"])]
    try:
        stored = family.to_platform(resource, ctx()).model_dump_json().encode()
    except MappingError:
        return
    # Read back from its stored bytes, as the worker holds the record a new version is classified against.
    previous = family.model.model_validate_json(stored)
    for later in _versions(resource):
        try:
            current = family.to_platform(later, ctx("2"))
        except MappingError:
            continue
        for before, after in ((previous, current), (current, previous)):
            assert visibly_changed(before, after) == (visible(before) != visible(after))
        if differs_only_in_version(stored, current.model_dump_json().encode()):
            # The worker then neither reads the held record back nor classifies nor re-indexes against it.
            assert visible(previous) == visible(current)
            assert family.classify(previous, current) == []
            assert family.index_fields(previous) == family.index_fields(current)


def test_a_record_names_its_version_where_differs_only_in_version_cuts_its_bytes() -> None:
    """The cut is sound only while the version fields come between fhir_id and identifiers, and fhir_url last."""
    assert list(Record.model_fields)[:5] == ["id", "record_type", "security", "deleted", "source"]
    assert list(Source.model_fields)[3:] == [
        "fhir_id", "version_id", "last_updated", "ehr_version_id", "ehr_last_updated", "identifiers", "fhir_url"
    ]  # fmt: skip
    assert set(Source.model_fields) & VERSION_FIELDS == set(list(Source.model_fields)[4:8]) | {"fhir_url"}


@pytest.mark.parametrize("resource", bench_shaped(STAMP), ids=lambda r: str(r["resourceType"]))
def test_a_visible_change_of_the_benchmark_resources_is_told_as_their_dumps_tell_it(resource: dict[str, Any]) -> None:
    """``visibly_changed`` decides from the fields where it can; the reference is the two ``visible`` dumps."""
    _visibly_changed_as_dumped(resource)


@pytest.mark.corpus
@pytest.mark.parametrize("resource", corpus_params(*MAPPED, with_id=True))
def test_a_visible_change_of_corpus_resources_is_told_as_their_dumps_tell_it(resource: dict[str, Any]) -> None:
    _visibly_changed_as_dumped(resource)
