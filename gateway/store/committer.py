"""The runner of plans: each ``Plan`` sent to Redis and applied there by the commit script, in one round trip.

Kept apart from ``plan`` (which builds plans and is compiled in the compiled build, setup.py) so that it stays a
plain class, which the tests record commits through.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources
from typing import Any

import msgpack
from redis.asyncio import Redis
from redis.exceptions import DataError

from gateway.store.connection import Script
from gateway.store.plan import Form, Plan, PlanConflict, PlanOverloaded, Splice, Value

_SCRIPT = resources.files("gateway.store").joinpath("commit.lua").read_text(encoding="utf-8")
# The script's line that unpacks its arguments, which arrive as one msgpack array (see ``Committer``). Without it,
# the script reads them as flat ARGV, as it did before (the tests compare the two).
UNPACK = "local ARGV = cmsgpack.unpack(ARGV[1])\n"
# What msgpack would pack but redis-py refused (a bool, a None, a container): the script would stop at the write
# holding it, after applying the ones before it. Anything msgpack cannot pack (a datetime, a set) it refuses itself.
_REFUSED = frozenset({type(None), bool, list, tuple, dict})

_MOST_ARGS = 1000  # arguments per command the script passes on (an even number: ZADD takes pairs)


class Committer:
    """Run plans on one Redis connection pool.

    A plan's arguments (a thousand or more for a 20-entry Bundle, ten thousand for a worker's batch) travel as one
    msgpack array, which the script unpacks in C (Redis's ``cmsgpack``): packing them costs a sixth of what
    packing as many command arguments does (35 against 200 us for a 20-entry Bundle), and Redis reads one argument
    instead of a thousand. Strings and bytes go as msgpack's raw strings (``use_bin_type=False``: the form every
    Redis's ``cmsgpack`` reads), byte for byte what redis-py would send. A value redis-py refused is refused before
    anything is sent (``_REFUSED``: 35-50 us a 20-entry Bundle's plan, to look at every value's type).
    """

    def __init__(self, redis: Redis) -> None:
        self._run = Script(redis, _SCRIPT)

    async def _script(self, keys: list[str], args: list[Any]) -> Any:
        """Run the script with ``args``, packed (the tests record commits here, as the script reads them)."""
        if not _REFUSED.isdisjoint(map(type, args)):
            odd = sorted({type(a).__name__ for a in args} & {t.__name__ for t in _REFUSED})
            raise DataError(f"a plan sends str, bytes, int and float values, not {', '.join(odd)}")
        return await self._run(keys=keys, args=[msgpack.packb(args, use_bin_type=False)])

    async def commit(self, plan: Plan) -> list[str]:
        """Apply ``plan`` or raise PlanConflict / PlanOverloaded; return the ids of added stream entries."""
        if not plan.writes and not plan.checks and not plan.adds:
            return []
        args: list[Any] = [len(plan.checks)]
        for op, key, field_name, expected in plan.checks:
            args += [op, key, field_name or "", expected]
        if plan.backlog is None:
            args.append(0)
        else:
            indexes = [plan.key(k) for k in plan.backlog[0]]
            args += [len(indexes), *indexes, plan.backlog[1]]
        args.append(len(plan.forms))
        for form in plan.forms:
            args += _declared(form)
        args += plan.writes
        for (command, key), members in plan.adds.items():
            for at in range(0, len(members), _MOST_ARGS):  # Lua unpacks a bounded number of values at once
                chunk = members[at : at + _MOST_ARGS]
                args += (command, key, len(chunk), *chunk)
        reply = await self._script(keys=plan.keys, args=args)
        status = _text(reply[0])
        if status == "conflict":
            raise PlanConflict(_text(reply[1]))
        if status == "overloaded":
            raise PlanOverloaded(int(_text(reply[1])))
        return [_text(r) for r in reply[1:]]


@lru_cache(maxsize=1024)
def _declared(form: Form) -> tuple[Value, ...]:
    """Return a form as the script reads it: command, pattern ("c", "v" or "s" per argument), the constant arguments
    and each Splice's tail (worked out once per form: the store's own forms are the same for every plan)."""
    command, args = form
    pattern = "".join("v" if a is None else "s" if isinstance(a, Splice) else "c" for a in args)
    return (command, pattern, *(a.tail if isinstance(a, Splice) else a for a in args if a is not None))


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
