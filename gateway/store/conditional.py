"""Conditional references (``"reference": "Patient?identifier=sys|val"``): each resolved to the one resource its
search matches, as R4 transaction processing asks (http.html, transaction).

A condition is answered by the ``identifier`` index, as conditional interactions are (``indexing.parse_condition``),
and by the resources written in the same set that carry that identifier. None or several matches fail the whole
set, naming the entry whose resource holds the reference. The store adds the index sets read to the plan's checks,
so a concurrent write that changes the answer makes the set be decided again.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from redis.asyncio import Redis

from gateway.errors import BadRequest, PreconditionFailed
from gateway.store.connection import text
from gateway.store.indexing import parse_condition
from gateway.store.keys import Keyspace
from gateway.store.parameters import indexed, reached, tokens
from gateway.store.plan import Plan

_CONDITIONAL = re.compile(r"^([A-Z][A-Za-z]+)\?(.+)$")


class Written(NamedTuple):
    """One resource a set writes: its type, the id it gets, its content, the references it holds, its entry (a
    tuple: built for every resource of a set, which a frozen dataclass costs several times more for)."""

    rtype: str
    rid: str
    resource: Mapping[str, Any] | None
    references: frozenset[str]
    path: str | None


def _identifiers(w: Written) -> set[tuple[str | None, str]]:
    param = indexed(w.rtype).get("identifier")
    if w.resource is None or param is None:
        return set()
    found = tokens(reached(w.resource, param))
    return found | {(None, code) for _, code in found}


async def resolve(redis: Redis, keys: Keyspace, tenant: str, written: Sequence[Written], plan: Plan) -> dict[str, str]:
    """Return ``{conditional reference: "Type/id"}`` for every conditional reference the resources hold."""
    wanted: dict[str, tuple[str, str, tuple[str | None, str], str | None]] = {}
    for w in written:
        # Only a reference holding "?" can be conditional: the others are not sorted and matched one by one.
        for ref in sorted([r for r in w.references if "?" in r]):
            match = _CONDITIONAL.match(ref)
            if match is None or ref in wanted:
                continue
            try:
                condition = parse_condition(match.group(2))
            except ValueError:
                raise BadRequest(
                    "a conditional reference supports one identifier=[system|]value search", expression=w.path
                ) from None
            key = keys.token_index(tenant, match.group(1), "identifier", *condition)
            wanted[ref] = (match.group(1), key, condition, w.path)
    if not wanted:
        return {}
    pipe = redis.pipeline(transaction=False)
    for _, key, _, _ in wanted.values():
        pipe.smembers(key)
    mapping: dict[str, str] = {}
    for (ref, (rtype, key, condition, path)), members in zip(wanted.items(), await pipe.execute(), strict=True):
        stored = sorted(text(m) for m in members)
        plan.expect_members(key, stored)
        found = set(stored) | {w.rid for w in written if w.rtype == rtype and condition in _identifiers(w)}
        if len(found) != 1:
            what = "no" if not found else f"{len(found)}"
            error = BadRequest if not found else PreconditionFailed
            raise error(f"a conditional reference to {rtype} matches {what} resources; it must match one",
                        expression=path)  # fmt: skip
        mapping[ref] = f"{rtype}/{found.pop()}"
    return mapping
