"""A batch's plan built in place, each part undone when it fails, is the plan built from one plan per part.

The worker writes each resource of a batch straight into the batch's plan (``Plan.mark`` before it, ``Plan.undo``
when its mapping fails); the reference is the way it did before: a plan of its own per resource, ``absorb``-ed
into the batch's plan when the resource mapped, dropped when it failed.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from gateway.store import Plan

_KEYS = st.sampled_from([f"gw:{{t}}:k{i}" for i in range(6)])
_FORMS = [("HSET", ("vid", None, "lu", None)), ("XADD", ("*", "type", None, "id", None)), ("HSET", (None, None))]
_VALUES = st.one_of(st.text(max_size=3), st.integers(-3, 3), st.binary(max_size=2))
_OPS = st.one_of(
    st.tuples(st.just("write"), st.sampled_from(["HSET", "XADD", "SREM"]), _KEYS, st.lists(_VALUES, max_size=3)),
    st.tuples(st.just("add"), st.sampled_from(["SADD", "ZADD"]), _KEYS, st.lists(_VALUES, max_size=3)),
    st.tuples(st.just("check"), st.just("rev"), _KEYS, st.lists(st.sampled_from(["1", "2"]), max_size=1)),
    st.tuples(st.just("put"), st.sampled_from(_FORMS), _KEYS, st.lists(_VALUES, min_size=2, max_size=2)),
)
# Each part of a batch: its operations, and whether it fails after them.
_PARTS = st.lists(st.tuples(st.lists(_OPS, max_size=6), st.booleans()), max_size=8)


def _apply(plan: Plan, ops: list[tuple[str, Any, str, list[Any]]]) -> None:
    for kind, command, key, args in ops:
        if kind == "write":
            plan.write(command, key, *args)
        elif kind == "add":
            plan.add(command, key, *args)
        elif kind == "put":
            plan.put(command, key, *args)
        else:
            plan.expect_field(key, command, args[0] if args else None)


def _state(plan: Plan) -> tuple[Any, ...]:
    keys = {k: plan.key(k) for k in plan.keys}
    return plan.keys, plan.checks, plan.writes, plan.forms, list(plan.adds.items()), keys, list(plan.commands())


@given(_PARTS)
def test_undoing_a_failed_part_leaves_the_plan_the_drafts_would_have_made(parts: list[Any]) -> None:
    in_place, reference = Plan(), Plan()
    for ops, fails in parts:
        mark = in_place.mark()
        _apply(in_place, ops)
        if fails:
            in_place.undo(mark)
        draft = Plan()
        _apply(draft, ops)
        if not fails:
            reference.absorb(draft)
    assert _state(in_place) == _state(reference)


def test_undo_takes_out_keys_checks_writes_and_added_members() -> None:
    plan = Plan()
    plan.add("SADD", "gw:{t}:status:booked", "a1")
    plan.write("HSET", "gw:{t}:rec:a1", "rev", 1)
    mark = plan.mark()
    plan.expect_field("gw:{t}:rec:a2", "rev", None)
    plan.add("SADD", "gw:{t}:status:booked", "a2")
    plan.add("SADD", "gw:{t}:status:cancelled", "a2")
    plan.write("HSET", "gw:{t}:rec:a2", "rev", 1)
    plan.undo(mark)
    assert plan.keys == ["gw:{t}:status:booked", "gw:{t}:rec:a1"]
    assert plan.checks == [] and plan.writes == ["HSET", 2, 2, "rev", 1]
    assert plan.adds == {("SADD", 1): ["a1"]}
    assert plan.key("gw:{t}:rec:a2") == 3  # declared again after the undo, where it now belongs
