"""A batch's record-index writes, merged: one SADD, SREM, ZADD or ZREM per index key per batch, not per record.

A batch writes each record once, so no two of its index writes name the same member of the same key; merged,
they do what they did one by one, in the batch's one atomic commit, with a command per key instead of four per
record (fewer arguments for the worker to encode, fewer commands for the commit script to run).
"""

from __future__ import annotations

from gateway.store import Plan

# Arguments per merged command (an even number, for ZADD's score-member pairs): the commit script unpacks a
# command's arguments onto Lua's stack.
_ARGS_PER_COMMAND = 1000


class IndexWrites:
    """Index writes gathered by (command, key); ``write`` adds them to a plan."""

    def __init__(self) -> None:
        self._args: dict[tuple[str, str], list[str | int | float]] = {}

    def add(self, command: str, key: str, *args: str | int | float) -> None:
        """Gather ``command key args`` (SADD, SREM or ZREM members; ZADD score-member pairs)."""
        found = self._args.get((command, key))
        if found is None:
            self._args[command, key] = list(args)
        else:
            found += args

    def absorb(self, other: IndexWrites) -> None:
        """Gather ``other``'s writes too (a resource's, once all of its versions have mapped)."""
        for (command, key), args in other._args.items():
            self.add(command, key, *args)

    def write(self, plan: Plan) -> None:
        """Add the gathered writes to ``plan``."""
        for (command, key), args in self._args.items():
            for start in range(0, len(args), _ARGS_PER_COMMAND):
                plan.write(command, key, *args[start : start + _ARGS_PER_COMMAND])
