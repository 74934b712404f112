"""A plan's arguments travel to the commit script as one msgpack array (issue #13), not as a thousand command
arguments: Redis is left byte for byte as the flat arguments left it.

- every kind of value a plan sends (integers up to 2**53, floats as scores, empty strings, bytes that are not
  UTF-8, accents, a 100 kB body, a ``Splice``, more set members than one command takes, a stream entry, a
  constant integer in a form), on the embedded Redis 6.2 and on ``REDIS_URL``'s server;
- the worker's golden runs (``test_worker_equivalence``: the benchmark's Bundles through the edge, updates and
  hand-made histories drained by the worker's code, risk flags), each way on a server of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from unittest import mock

import orjson
import pytest
from redis.asyncio import Redis
from redis.exceptions import DataError

import gateway.store.committer as committer_module
from gateway.embedded import EmbeddedRedis
from gateway.store import Committer, Plan, PlanConflict, connect
from gateway.store.committer import UNPACK
from gateway.store.plan import Form, Splice
from tests.gateway.test_worker_equivalence import _dump, _golden_runs

FLAT = committer_module._SCRIPT.replace(UNPACK, "", 1)

_RECORD: Form = ("HSET", ("vid", None, "n", None, "json", None))
_EVENT: Form = ("XADD", ("*", "e", Splice(b"}"), "type", None))
_DEDUPE: Form = ("SET", (None, "EX", 300))


class FlatCommitter(Committer):
    """The committer as it was: the script without its unpacking line, each argument of a plan sent on its own."""

    def __init__(self, redis: Redis) -> None:
        self._run = redis.register_script(FLAT)

    async def _script(self, keys: list[str], args: list[Any]) -> Any:
        return await self._run(keys=keys, args=args)


def test_the_script_unpacks_its_arguments_and_reads_them_flat_without_that_line() -> None:
    assert committer_module._SCRIPT.count(UNPACK) == 1
    assert "cmsgpack" not in FLAT


def _every_kind(prefix: str) -> Plan:
    """A plan with every kind of value the gateway's plans send, its checks holding on a fresh prefix."""
    k = f"{prefix}:{{t}}"
    body = b'{"id":"a1","note":"Zo\xc3\xab \xe6\xbc\xa2\xe5\xad\x97"}'
    plan = Plan()
    plan.expect_field(f"{k}:rec", "vid", None)
    plan.expect_value(f"{k}:dedupe", None)
    plan.expect_members(f"{k}:members", [])
    plan.expect_field_not(f"{k}:rec", "vid", ["1", "2"])
    plan.write("SET", f"{k}:empty", "")
    plan.write("SET", f"{k}:binary", b"\x00\xff\xfe\x80")
    plan.write("HSET", f"{k}:numbers", "zero", 0, "negative", -7, "big", 2**53 - 1, "ms", 1_800_000_000_250)
    plan.write("HSET", f"{k}:text", "accents", "Zoë Ça 漢字", "newline", "a\nb", "nul", "a\x00b")
    plan.write("SET", f"{k}:large", b"x" * 100_000 + b"\xc3\xa9")
    at = plan.put(_RECORD, f"{k}:rec", 3, 12, body) + 2
    plan.put(_EVENT, f"{k}:feed", b'{"id":"evt_1","record":', at, "appointment.created")
    plan.put(_DEDUPE, f"{k}:dedupe", "a1")
    plan.write("ZADD", f"{k}:scores", 0.1, "tenth", 1_733_300_000.123, "seconds", -2.5e-7, "tiny", 1e300, "huge")
    plan.add("ZADD", f"{k}:scores", 1_800_000_000.375, "added", 7, "int")
    plan.add("SADD", f"{k}:members", *[f"m{n}" for n in range(2_500)])
    plan.add("ZADD", f"{k}:lex", *[x for n in range(1_200) for x in (0, f"v{n:05}\x00r{n}")])
    plan.write("XADD", f"{k}:stream", "*", "fields", b"{}", "n", 1)
    return plan


async def test_every_kind_of_value_is_written_as_flat_arguments_wrote_it(redis_url: str, key_prefix: str) -> None:
    redis = connect(redis_url, cluster=False)
    packed, flat = f"{key_prefix}:packed", f"{key_prefix}:flat"
    try:
        await Committer(redis).commit(_every_kind(packed))
        await FlatCommitter(redis).commit(_every_kind(flat))
        written, before = await _dump(redis_url, packed), await _dump(redis_url, flat)
        assert len(written) == 12 and written[b":{t}:members"][1][2_499] == b"m999"  # all there, chunks too
        assert written[b":{t}:numbers"][1] == [(b"big", b"9007199254740991"), (b"ms", b"1800000000250"),
                                               (b"negative", b"-7"), (b"zero", b"0")]  # fmt: skip
        assert written == before
        # A check that no longer holds refuses the plan, naming the same check, either way.
        for committer, prefix in ((Committer(redis), packed), (FlatCommitter(redis), flat)):
            with pytest.raises(PlanConflict, match=r"^1$"):
                await committer.commit(_every_kind(prefix))
        assert await _dump(redis_url, packed) == written
    finally:
        await redis.aclose()


@pytest.mark.parametrize("odd", [None, True, ["a"], ("a",), {"a": 1}], ids=["None", "bool", "list", "tuple", "dict"])
async def test_a_value_redis_cannot_hold_is_refused_before_anything_is_written(
    redis_url: str, key_prefix: str, odd: Any
) -> None:
    """msgpack packs what redis-py refused (a None, a bool, a list, a tuple, a dict): the script would apply the
    writes before the one holding it and stop there. The plan is refused whole instead, naming the type and not the
    value."""
    redis = connect(redis_url, cluster=False)
    try:
        plan = Plan()
        plan.write("SET", f"{key_prefix}:first", "1")
        plan.write("HSET", f"{key_prefix}:second", "a", "1", "b", odd)
        with pytest.raises(DataError, match=f"not {type(odd).__name__}$"):
            await Committer(redis).commit(plan)
        assert await redis.exists(f"{key_prefix}:first", f"{key_prefix}:second") == 0
    finally:
        await redis.aclose()


@contextlib.contextmanager
def _flat_arguments() -> Iterator[None]:
    """Make every committer a ``FlatCommitter``: the flat script, each argument sent on its own."""
    flat = FlatCommitter._script
    with mock.patch.object(committer_module, "_SCRIPT", FLAT), mock.patch.object(Committer, "_script", flat):
        yield


def _run(folder: Path, *, flat: bool) -> tuple[dict[bytes, Any], list[Any]]:
    with EmbeddedRedis(folder) as server, contextlib.ExitStack() as stack:
        if flat:
            stack.enter_context(_flat_arguments())
        made = orjson.loads(asyncio.run(_golden_runs(server.url, corpus=False)))
        return asyncio.run(_dump(server.url)), [m for m in made if m[0] == "jobs"]


def test_the_edge_and_the_worker_leave_redis_as_with_flat_arguments(tmp_path: Path) -> None:
    """The store's commits (Bundles, updates, deletes, conditional creates) and the worker's batches (records,
    indexes, feeds, threads, risk flags scored by float): every key, value and stream entry, byte for byte."""
    packed_keys, packed_jobs = _run(tmp_path / "packed", flat=False)
    flat_keys, flat_jobs = _run(tmp_path / "flat", flat=True)
    feeds = [k for k, (kind, _) in packed_keys.items() if kind == "stream" and k.endswith(b":feed")]
    assert feeds and sum(len(packed_keys[k][1]) for k in feeds) > 200
    assert any(kind == "zset" and value and value[0][1] % 1 for kind, value in packed_keys.values())  # float scores
    assert packed_keys == flat_keys
    assert packed_jobs == flat_jobs
