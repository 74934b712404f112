"""What every mapper test shares: the mapping context, and the one walk over the FHIR corpus."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from conformance import fhir_models
from mappers.context import MapContext
from mappers.vendors import outbound, profile
from tests.conftest import CORPUS, corpus_dir


def ctx(version: str = "1", related: Mapping[str, Mapping[str, Any]] | None = None, **overrides: Any) -> MapContext:
    """Return clinic-a's context for stored version ``version`` (1-9), with ``related`` resources held."""
    fields: dict[str, Any] = {
        "tenant": "clinic-a",
        "vendor": "generic",
        "timezone": "America/New_York",
        "version_id": version,
        "last_updated": f"2024-01-0{version}T12:00:00Z",
        "related": related or {},
    }
    return MapContext(**(fields | overrides))


def sent(resource: Mapping[str, Any], vendor: str) -> dict[str, Any]:
    """Return a written resource as a write-back sends it: its R4B model, adjusted for the vendor, exported."""
    model = fhir_models.model_class(str(resource["resourceType"]))
    assert model is not None
    return fhir_models.written(resource, model, lambda typed: outbound.adjust(typed, profile(vendor)))


class Found(NamedTuple):
    """A resource found in a corpus file: where (a path into the JSON), the resource, and its enclosing Bundle."""

    where: str
    resource: dict[str, Any]
    bundle: dict[str, Any] | None


def find(
    node: object, types: tuple[str, ...], where: str = "", bundle: dict[str, Any] | None = None
) -> Iterator[Found]:
    """Yield every resource of ``types`` at the top, in Bundle entries, in nested Bundles and in ``contained``."""
    if isinstance(node, dict):
        if node.get("resourceType") in types:
            yield Found(where, node, bundle)
        if node.get("resourceType") == "Bundle":
            bundle = node
        for key, value in node.items():
            yield from find(value, types, f"{where}/{key}", bundle)
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from find(value, types, f"{where}[{index}]", bundle)


def corpus_found(*types: str) -> Iterator[tuple[Path, Found]]:
    """Yield every resource of ``types`` in the corpus (nothing when it is absent), with the file it is in."""
    if not CORPUS.is_dir():
        return
    needles = tuple(f'"{t}"' for t in types)
    for path in sorted(CORPUS.rglob("*.json")):
        # The validator's manifest lists test cases by resourceType; its entries are not resources.
        if path.name == "index.json":
            continue
        text = path.read_text(encoding="utf-8-sig")
        if any(needle in text for needle in needles):
            for found in find(json.loads(text), types):
                yield path, found


def corpus_params(*types: str, with_id: bool = False, with_bundle: bool = False) -> list[Any]:
    """Return a pytest param per corpus resource of ``types`` (and its Bundle), or one skipped param without a corpus.

    ``with_id`` leaves out resources without an id.
    """
    if not CORPUS.is_dir():
        values = (None, None) if with_bundle else (None,)
        return [pytest.param(*values, id="no-corpus", marks=pytest.mark.skip(reason=f"no FHIR corpus at {CORPUS}"))]
    return [
        pytest.param(*((found.resource, found.bundle) if with_bundle else (found.resource,)), id=f"{name}{found.where}")
        for path, found in corpus_found(*types)
        if not with_id or isinstance(found.resource.get("id"), str)
        for name in [str(path.relative_to(CORPUS))]
    ]


def corpus_file(relative: str) -> dict[str, Any]:
    """Return one corpus file's JSON, skipping the test when the corpus is absent."""
    path = corpus_dir() / relative
    if not path.is_file():
        pytest.skip(f"FHIR corpus not found at {path.parent}; set GATEWAY_CORPUS_DIR")
    loaded: dict[str, Any] = json.loads(path.read_text(encoding="utf-8-sig"))
    return loaded


def hl7_example(name: str) -> dict[str, Any]:
    """Return one of the official R4 examples, skipping the test when the corpus is absent."""
    return corpus_file(f"hl7-r4-spec-examples/{name}")


def bench_shaped(meta: dict[str, str] | None = None) -> list[dict[str, Any]]:
    """The stored versions ``bench/worker_phases.py`` drains (``gateway_bench.make_bundle``, references rewritten),
    with ``meta`` when given."""
    stamp = {"meta": meta} if meta else {}
    patient = {
        "resourceType": "Patient",
        "id": "3f0a7c1e",
        **stamp,
        "identifier": [{"system": "urn:gwbench:mrn", "value": "mrn-w1-100-3"}],
        "name": [{"family": "Bench", "given": ["Synthetic3"]}],
        "birthDate": "1980-01-01",
    }
    appointment = {
        "resourceType": "Appointment",
        "id": "bw1-100-3-4",
        **stamp,
        "identifier": [{"system": "urn:gwbench:appt", "value": "appt-w1-100-3-4"}],
        "status": "booked",
        "description": "Synthetic benchmark visit",
        "start": "2027-01-04T15:00:00Z",
        "end": "2027-01-04T15:30:00Z",
        "participant": [
            {"actor": {"reference": "Patient/3f0a7c1e"}, "status": "accepted"},
            {"actor": {"reference": "Practitioner/bench-prac-1"}, "status": "accepted"},
        ],
    }
    return [patient, appointment]
