"""A write's decisions before they are committed: what each operation resolves to, and the order in which a set's
creates take their ids (an entry's references are rewritten to the ids of the entries it points at)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from gateway.store.operation import Current, Operation
from gateway.store.references import Found


@dataclass
class Decision:
    op: Operation
    rid: str
    current: Current | None = None
    match: str | None = None  # an existing id this create resolves to
    watched: bool = False  # an unmapped resource some record's mapping read: a change must re-map that record
    targets: frozenset[str] | None = None  # the references the resource holds, once computed
    _found: Found | None = None
    # A create's content as ``Store._resolve`` rewrote and digested it, with the ids its references were given
    # then: ``versions.decide_one`` reuses it while those ids still hold, instead of rewriting and hashing it again.
    prepared: tuple[dict[str, Any], str | None, str | None, str, dict[str, str | None]] | None = None

    def references(self) -> frozenset[str]:
        """Return (once) the references the operation's resource holds."""
        if self.targets is None:
            found = self.found()
            self.targets = frozenset(found.targets()) if found is not None else frozenset()
        return self.targets

    def found(self) -> Found | None:
        """Return (once) the references of the operation's resource, found for reading and rewriting."""
        resource = getattr(self.op, "resource", None)
        if self._found is None and resource is not None:
            self._found = Found(resource)
        return self._found

    def rewritten(self, mapping: Mapping[str, str]) -> dict[str, Any]:
        """Return the operation's resource with its references to ``mapping``'s keys rewritten."""
        found = self.found()
        assert found is not None
        resource: dict[str, Any] = found.rewritten(mapping) if mapping else found.node
        return resource


def still_resolved(d: Decision, mapping: Mapping[str, str]) -> bool:
    """Tell whether every reference of a prepared create still has the id it was prepared with."""
    return d.prepared is not None and all(mapping.get(r) == i for r, i in d.prepared[4].items())


def dependency_order(creates: list[Decision]) -> Iterator[list[Decision]]:
    """Yield the creates in turns: each one's entries point at no entry of a later turn (a cycle: all at once)."""
    pending = {id(d): d for d in creates}
    urls_pending = {getattr(d.op, "full_url", None) for d in creates} - {None}
    while pending:
        # An entry points at no pending entry but (perhaps) itself; the smaller set is intersected first.
        ready = [
            d for d in pending.values() if (d.references() & urls_pending) <= {getattr(d.op, "full_url", None)}
        ] or list(pending.values())
        for d in ready:
            del pending[id(d)]
            urls_pending.discard(getattr(d.op, "full_url", None))
        yield ready
