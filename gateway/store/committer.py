"""The runner of plans: each ``Plan`` sent to Redis and applied there by the commit script, in one round trip.

Kept apart from ``plan`` (which builds plans and is compiled in the compiled build, setup.py) so that it stays a
plain class, which the tests record commits through.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import msgpack
from redis.asyncio import Redis
from redis.exceptions import DataError

from gateway.store.connection import Script
from gateway.store.plan import Plan, PlanConflict, PlanOverloaded, refused

_SCRIPT = resources.files("gateway.store").joinpath("commit.lua").read_text(encoding="utf-8")
# The script's line that unpacks its arguments, which arrive as one msgpack array (see ``Committer``). Without it,
# the script reads them as flat ARGV, as it did before (the tests compare the two).
UNPACK = "local ARGV = cmsgpack.unpack(ARGV[1])\n"


class Committer:
    """Run plans on one Redis connection pool.

    A plan's arguments (a thousand or more for a 20-entry Bundle, ten thousand for a worker's batch) travel as one
    msgpack array, which the script unpacks in C (Redis's ``cmsgpack``): packing them costs a sixth of what
    packing as many command arguments does (35 against 200 us for a 20-entry Bundle), and Redis reads one argument
    instead of a thousand. Strings and bytes go as msgpack's raw strings (``use_bin_type=False``: the form every
    Redis's ``cmsgpack`` reads), byte for byte what redis-py would send. A value redis-py refused is refused before
    anything is sent (``plan.refused``). The plan lays its arguments out itself (``Plan.arguments``), in compiled
    code in the compiled build.
    """

    def __init__(self, redis: Redis) -> None:
        self._run = Script(redis, _SCRIPT)

    async def _script(self, keys: list[str], args: list[Any]) -> Any:
        """Run the script with ``args``, packed (the tests record commits here, as the script reads them)."""
        odd = refused(args)
        if odd:
            raise DataError(f"a plan sends str, bytes, int and float values, not {', '.join(odd)}")
        return await self._run(keys=keys, args=[msgpack.packb(args, use_bin_type=False)])

    async def commit(self, plan: Plan) -> list[str]:
        """Apply ``plan`` or raise PlanConflict / PlanOverloaded; return the ids of added stream entries."""
        if not plan.writes and not plan.checks and not plan.adds:
            return []
        args = plan.arguments()  # declares the backlog keys among plan.keys
        reply = await self._script(keys=plan.keys, args=args)
        status = _text(reply[0])
        if status == "conflict":
            raise PlanConflict(_text(reply[1]))
        if status == "overloaded":
            raise PlanOverloaded(int(_text(reply[1])))
        return [_text(r) for r in reply[1:]]


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
