"""The registry lists every family by hand: one forgotten there would never be mapped."""

from __future__ import annotations

import importlib
import pkgutil

import mappers
from mappers.family import Family
from mappers.registry import FAMILIES, MAPPED, record_routes


def test_every_family_a_mapper_module_defines_is_listed() -> None:
    defined = set()
    for module_info in pkgutil.iter_modules(mappers.__path__):
        module = importlib.import_module(f"mappers.{module_info.name}")
        defined |= {id(value) for value in vars(module).values() if isinstance(value, Family)}
    assert defined == {id(family) for family in FAMILIES}


def test_each_fhir_type_route_and_record_type_belongs_to_one_family() -> None:
    assert len(MAPPED) == len(FAMILIES)
    assert len({f.record_type for f in FAMILIES}) == len(FAMILIES)
    assert len(record_routes()) == len(FAMILIES) + sum(f.aggregate is not None for f in FAMILIES)


def test_each_record_class_lives_in_its_mapper_module() -> None:
    for family in FAMILIES:
        assert family.model.__module__ == family.to_platform.__module__, family.record_type
        if family.aggregate is not None:
            assert family.aggregate.model.__module__ == family.to_platform.__module__
