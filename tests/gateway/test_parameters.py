"""A search parameter's compiled walkers reach exactly what its path means, on any JSON shape."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.store.parameters import Parameter, indexed, reached, relative_reference

PARAMS = [p for rtype in ("Appointment", "Patient", "Observation", "QuestionnaireResponse") for p in
          indexed(rtype).values()]  # fmt: skip
NAMES = sorted({s for p in PARAMS for path in p.paths for s in path if isinstance(s, str)} | {"system", "reference"})
leaves = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.sampled_from(
        ["Patient/p1", "Practitioner/x", "Location/l-1", "urn:uuid:1", "official", "booked", "http://x/Patient/9"]
    )
)
shapes = st.recursive(
    leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(NAMES), inner, max_size=5)
)


def walked(node: Any, steps: tuple[Any, ...]) -> list[Any]:
    """What a path reaches, read from its meaning: lists are walked through, nothing None is kept."""
    if isinstance(node, list):
        return [found for item in node for found in walked(item, steps)]
    if not steps:
        return [] if node is None else [node]
    step, rest = steps[0], steps[1:]
    if isinstance(step, str):
        return walked(node[step], rest) if isinstance(node, dict) and node.get(step) is not None else []
    if "is" in step:
        ref = node.get("reference") if isinstance(node, Mapping) else None
        target = relative_reference(ref if isinstance(ref, str) else None)
        return walked(node, rest) if target is not None and target.split("/")[0] == step["is"] else []
    element, value = step["where"]
    return walked(node, rest) if isinstance(node, Mapping) and node.get(element) == value else []


@given(st.sampled_from(PARAMS), st.dictionaries(st.sampled_from(NAMES), shapes, max_size=6))
def test_walkers_reach_what_the_paths_name(param: Parameter, resource: dict[str, Any]) -> None:
    expected = [] if param.roots and param.roots.isdisjoint(resource) else [
        found for path in param.paths for found in walked(resource, path)
    ]  # fmt: skip
    assert reached(resource, param) == expected


def test_an_appointments_actor_is_filtered_by_type() -> None:
    actors = [{"actor": {"reference": "Patient/p1"}}, {"actor": {"reference": "Practitioner/d1"}}, {"actor": None}]
    appointment = {"resourceType": "Appointment", "participant": actors}
    params = indexed("Appointment")
    assert reached(appointment, params["patient"]) == [{"reference": "Patient/p1"}]
    assert len(reached(appointment, params["actor"])) == 2
