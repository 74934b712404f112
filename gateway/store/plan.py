"""An atomic write plan: preconditions checked and writes applied in one Lua script, in one round trip.

The store reads what it needs, decides, and records here what it assumed (checks) and what it will write. The
script refuses the whole plan if any assumption no longer holds; the caller then reads again and retries
(optimistic concurrency). This is how a transaction Bundle is all-or-nothing and how concurrent conditional
creates make exactly one resource.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

# What a plan sends. A number reaches the script as a Lua number (a double), which ``redis.call`` writes as text:
# an int as its digits, exact below 2**53 (ids, counts, epoch milliseconds); a float only as a sorted set's score,
# which Redis reads back to the same double (as any other value its text would be ``%.17g``, not Python's repr).
Value = str | bytes | int | float
MOST_ARGS = 1000  # arguments per command the script passes on (an even number: ZADD takes pairs)
# What msgpack would pack but redis-py refused (a bool, a None, a container): the script would stop at the write
# holding it, after applying the ones before it. Anything msgpack cannot pack (a datetime, a set) it refuses itself.
_REFUSED = frozenset({type(None), bool, list, tuple, dict})


@dataclass(frozen=True)
class Splice:
    """A form's argument that the script joins from two of a write's values, a head and the place (in
    ``Plan.writes``, as ``Plan.put`` returns it) of a value an earlier write sent, and then ``tail``: a value the
    plan already sends (a record's JSON, which its change event carries) is sent once, not twice."""

    tail: bytes


# A write's form for ``Plan.put``: its command and arguments, None where each write's own value goes, a Splice where
# a value joined by the script goes (two values: a head and the place of an earlier write's value).
Form = tuple[str, tuple[Value | Splice | None, ...]]


class PlanConflict(Exception):
    """A precondition no longer held; read again and retry."""


class PlanOverloaded(Exception):
    """The backlog is past its limit; nothing was written."""

    def __init__(self, backlog: int) -> None:
        super().__init__(f"backlog {backlog}")
        self.backlog = backlog


@dataclass
class Plan:
    """Checks and writes to run atomically."""

    keys: list[str] = field(default_factory=list)
    checks: list[list[Any]] = field(default_factory=list)
    # The writes as the script reads them, flat: command, key index, argument count, arguments..., for each; or,
    # for a write ``put`` made, its form's number, key index, values...
    writes: list[Any] = field(default_factory=list)
    # The forms of ``put``'s writes, in the order declared: command, arguments (None where a write's value goes).
    forms: list[Form] = field(default_factory=list)
    # Members added to sets and sorted sets (SADD, ZADD), one command per key after the writes: see ``add``.
    adds: dict[tuple[str, int], list[Any]] = field(default_factory=dict)
    backlog: tuple[list[str], int] | None = None
    _index: dict[str, int] = field(default_factory=dict)
    _form_index: dict[Form, int] = field(default_factory=dict)
    # Since the last ``mark``: each ``adds`` list extended, its length before, and whether ``add`` created it.
    _journal: list[tuple[tuple[str, int], list[Any], int, bool]] | None = field(default=None, compare=False, repr=False)
    _slots: list[int] = field(default_factory=list, compare=False, repr=False)  # values per form, by number - 1
    # Each form object ``forms`` holds and its number, by the object's ``id``: a write of a form the plan holds (the
    # store's own are module constants) is found without hashing the form's tuple again. An entry counts only for the
    # very object it holds (``is``), which it keeps alive: compiled (mypyc), a constant tuple reaches ``put`` as a new
    # object each time, whose id a later one may reuse; such a form is then found by value.
    _form_ids: dict[int, tuple[Form, int]] = field(default_factory=dict, compare=False, repr=False)

    def key(self, name: str) -> int:
        """Return the 1-based KEYS index of ``name``, declaring it once."""
        index = self._index.get(name)
        if index is None:
            self.keys.append(name)
            index = self._index[name] = len(self.keys)
        return index

    def expect_field(self, key: str, field_name: str, value: str | None) -> None:
        """Require a hash field to hold ``value`` (None: absent)."""
        self.checks.append(["hget", self.key(key), field_name, value or ""])

    def expect_field_not(self, key: str, field_name: str, values: list[str | None]) -> None:
        """Require a hash field to hold none of ``values`` (None: absent)."""
        self.checks.append(["hget_not", self.key(key), field_name, "\n".join(v or "" for v in values)])

    def expect_value(self, key: str, value: str | None) -> None:
        """Require a string key to hold ``value`` (None: absent)."""
        self.checks.append(["get", self.key(key), None, value or ""])

    def expect_members(self, key: str, members: list[str]) -> None:
        """Require a set to hold exactly ``members``."""
        self.checks.append(["members", self.key(key), None, "\n".join(sorted(members))])

    def checked_keys(self, field_name: str) -> set[str]:
        """Return the keys whose hash field ``field_name`` the plan's checks read."""
        keys = self.keys
        return {keys[check[1] - 1] for check in self.checks if check[2] == field_name}

    def write(self, command: str, key: str, *args: Value) -> None:
        """Append a write command on ``key``."""
        self.writes += (command, self.key(key), len(args), *args)

    def put(self, form: Form, key: str, *values: Value) -> int:
        """Append the write ``command key args...`` of ``form`` = (command, args), each None in args replaced by the
        next of ``values``: the same write as ``write`` makes, in the same place among the plan's writes.

        The form's other arguments (field names, a stream's options, what a request's audit entries share) travel
        once per plan instead of once per write: for the writes every resource of a Bundle makes with the same
        words (its current-state hash, its job, its audit entry). Fewer arguments cost less to send and for Redis
        to read.

        Return the place of the write's first value in ``writes`` (a ``Splice`` of a later write names its values
        by such places).
        """
        known = self._form_ids.get(id(form))
        number = known[1] if known is not None and known[0] is form else self._form_index.get(form)
        if number is None:
            self.forms.append(form)
            self._slots.append(sum(1 if a is None else 2 if isinstance(a, Splice) else 0 for a in form[1]))
            number = self._form_index[form] = len(self.forms)
            self._form_ids[id(form)] = (form, number)
        if len(values) != self._slots[number - 1]:
            raise ValueError(f"{form[0]} takes {self._slots[number - 1]} values, not {len(values)}")
        writes = self.writes
        writes += (number, self._index.get(key) or self.key(key), *values)
        return len(writes) - len(values)

    def commands(self) -> Iterator[tuple[str, int, list[Any]]]:
        """Yield each write as its command, key index and arguments, in order (a ``put`` one with its form's)."""
        for head, key, args in self._entries():
            if isinstance(head, int):
                command, form_args = self.forms[head - 1]
                values = iter(args)
                yield command, key, [self._argument(a, values) for a in form_args]
            else:
                yield head, key, args

    def _argument(self, form_arg: Value | Splice | None, values: Iterator[Any]) -> Any:
        """Return a form's argument as the script makes it, taking the write's values it needs from ``values``."""
        if form_arg is None:
            return next(values)
        if isinstance(form_arg, Splice):
            head, at = next(values), next(values)
            return b"".join((head, self.writes[at], form_arg.tail))
        return form_arg

    def _entries(self) -> Iterator[tuple[str | int, int, list[Any]]]:
        """Yield each write as ``writes`` holds it: command (or form number), key index, arguments (or values)."""
        at, writes = 0, self.writes
        while at < len(writes):
            head = writes[at]
            if isinstance(head, int):
                count = self._slots[head - 1]
                yield head, writes[at + 1], writes[at + 2 : at + 2 + count]
                at += 2 + count
            else:
                count = writes[at + 2]
                yield head, writes[at + 1], writes[at + 3 : at + 3 + count]
                at += 3 + count

    def add(self, command: str, key: str, *args: Value) -> None:
        """Add members to a set (``SADD``, members) or sorted set (``ZADD``, score-member pairs), in one command per
        key for the whole plan, sent after every ``write``.

        For index sets that many resources of a set share (a status, a practitioner, a date zset): one command each
        instead of one per resource. Only for members no other write of the plan removes (a resource written once).
        """
        at = (command, self._index.get(key) or self.key(key))  # most keys are declared already
        members = self.adds.get(at)
        created = members is None
        if members is None:
            members = self.adds[at] = []
        if self._journal is not None:
            self._journal.append((at, members, len(members), created))
        members.extend(args)

    def add_entries(self, rid: str, entries: list[tuple[str, str, str]]) -> None:
        """Add a resource to index entries (kind, key, member): ``SADD key rid`` for a set ("s"), ``ZADD key 0
        member`` for a lexical zset ("l"), ``ZADD key member rid`` for a scored one: the same as one ``add`` each,
        without a call each (a resource has ten or twenty entries)."""
        if self._journal is not None:
            for kind, key, member in entries:
                if kind == "s":
                    self.add("SADD", key, rid)
                elif kind == "l":
                    self.add("ZADD", key, 0, member)
                else:
                    self.add("ZADD", key, member, rid)
            return
        index, adds = self._index, self.adds
        for kind, key, member in entries:
            at = ("SADD" if kind == "s" else "ZADD", index.get(key) or self.key(key))
            members = adds.get(at)
            if members is None:
                members = adds[at] = []
            if kind == "s":
                members.append(rid)
            elif kind == "l":
                members += (0, member)
            else:
                members += (member, rid)

    def mark(self) -> tuple[int, int, int, int]:
        """Return where the plan is now, for ``undo``: what one part of a batch adds can then be taken out again
        (the batch's other parts write straight into the plan, instead of into plans of their own to ``absorb``)."""
        self._journal = []
        return len(self.keys), len(self.checks), len(self.writes), len(self.forms)

    def undo(self, mark: tuple[int, int, int, int]) -> None:
        """Take out everything declared, checked, written and added since ``mark``, the last mark made."""
        keys, checks, writes, forms = mark
        for name in self.keys[keys:]:
            del self._index[name]
        for form in self.forms[forms:]:
            del self._form_index[form]
        if len(self.forms) > forms:
            self._form_ids = {at: known for at, known in self._form_ids.items() if known[1] <= forms}
        del self.keys[keys:], self.checks[checks:], self.writes[writes:], self.forms[forms:], self._slots[forms:]
        for at, members, before, created in reversed(self._journal or []):  # a list's earliest length is set last
            del members[before:]
            if created:
                del self.adds[at]
        self._journal = []

    def absorb(self, other: Plan) -> None:
        """Append ``other``'s checks and writes to this plan (its backlog limit is not taken over)."""
        index = {i + 1: self.key(name) for i, name in enumerate(other.keys)}
        self.checks += [[op, index[key], *rest] for op, key, *rest in other.checks]
        shift = len(self.writes)  # each write takes as many places here as there: a Splice's place moves by this
        for head, key, args in other._entries():
            if isinstance(head, int):
                form = other.forms[head - 1]
                if any(isinstance(a, Splice) for a in form[1]):
                    args = _shifted(form, args, shift)
                self.put(form, other.keys[key - 1], *args)
            else:
                self.writes += (head, index[key], len(args), *args)
        for (command, key), args in other.adds.items():
            self.adds.setdefault((command, index[key]), []).extend(args)

    def limit_backlog(self, keys: list[str], maximum: int) -> None:
        """Refuse the plan when these streams and sets together hold ``maximum`` entries or more."""
        self.backlog = (keys, maximum)

    def arguments(self) -> list[Any]:
        """Return the plan as the commit script reads it (the layout is in commit.lua): its checks, its backlog
        limit, its forms, its writes, then one SADD or ZADD per key and at most ``MOST_ARGS`` members.

        Declares the backlog's keys: send ``keys`` after calling this.
        """
        args: list[Any] = [len(self.checks)]
        for op, key, field_name, expected in self.checks:
            args += (op, key, field_name or "", expected)
        if self.backlog is None:
            args.append(0)
        else:
            indexes = [self.key(k) for k in self.backlog[0]]
            args += (len(indexes), *indexes, self.backlog[1])
        args.append(len(self.forms))
        for form in self.forms:
            args += _declared(form)
        args += self.writes
        for (command, key), members in self.adds.items():
            for at in range(0, len(members), MOST_ARGS):  # Lua unpacks a bounded number of values at once
                chunk = members[at : at + MOST_ARGS]
                args += (command, key, len(chunk), *chunk)
        return args


def refused(args: list[Any]) -> list[str]:
    """Return the names of the types among ``args`` that a plan must not send (none for every plan the gateway
    makes): msgpack packs a None, a bool or a container, which redis-py refused, and the script would apply the
    writes before the one holding it and stop there."""
    odd: set[str] = set()
    for value in args:
        kind = type(value)
        if kind is str or kind is bytes or kind is int or kind is float:
            continue
        if kind in _REFUSED:
            odd.add(kind.__name__)
    return sorted(odd)


@lru_cache(maxsize=1024)
def _declared(form: Form) -> tuple[Value, ...]:
    """Return a form as the script reads it: command, pattern ("c", "v" or "s" per argument), the constant arguments
    and each Splice's tail (worked out once per form: the store's own forms are the same for every plan)."""
    command, args = form
    pattern = "".join("v" if a is None else "s" if isinstance(a, Splice) else "c" for a in args)
    return (command, pattern, *(a.tail if isinstance(a, Splice) else a for a in args if a is not None))


def _shifted(form: Form, values: list[Any], shift: int) -> list[Any]:
    """Return a write's values with each Splice's place moved by ``shift``."""
    moved, at = list(values), 0
    for a in form[1]:
        if isinstance(a, Splice):
            moved[at + 1] += shift
            at += 2
        elif a is None:
            at += 1
    return moved
