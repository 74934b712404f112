"""The store's round trips: many reads in one reply, and a plan's shared-key writes in one command each."""

from __future__ import annotations

from gateway.store import Committer, Plan, connect
from gateway.store.snapshot import Snapshot


async def test_a_snapshot_answers_each_read_as_its_command_would(redis_url: str, key_prefix: str) -> None:
    redis = connect(redis_url, cluster=False, timeout=2.0)
    try:
        h, s, missing = (f"{key_prefix}:{{t}}:{name}" for name in ("h", "s", "missing"))
        await redis.hset(h, mapping={"vid": "3", "hash": "ab"})
        await redis.set(s, b"\x00value")
        reads = [("hgetall", h), ("exists", h), ("get", s), ("hgetall", missing), ("exists", missing), ("get", missing)]
        expected = [await redis.hgetall(h), True, await redis.get(s), {}, False, None]
        assert await Snapshot(redis).read(reads) == expected == [
            {b"vid": b"3", b"hash": b"ab"}, True, b"\x00value", {}, False, None]  # fmt: skip
        assert await Snapshot(redis).read([]) == []
    finally:
        await redis.delete(h, s)
        await redis.aclose()


async def test_a_plans_added_members_are_all_written_however_many(redis_url: str, key_prefix: str) -> None:
    """Members added to one key by many resources of a set go in one command per key, in chunks Lua can unpack."""
    redis = connect(redis_url, cluster=False, timeout=5.0)
    zset, members, other = (f"{key_prefix}:{{t}}:{name}" for name in ("z", "s", "other"))
    try:
        first, second = Plan(), Plan()
        for i in range(5_000):
            first.add("ZADD", zset, i, f"m{i}")
            first.add("SADD", members, f"m{i}")
        second.add("SADD", members, "from-absorbed")
        second.write("SET", other, "x")
        first.absorb(second)
        await Committer(redis).commit(first)
        assert await redis.zcard(zset) == 5_000 and await redis.zscore(zset, "m4999") == 4999
        assert await redis.scard(members) == 5_001 and await redis.get(other) == b"x"
    finally:
        await redis.delete(zset, members, other)
        await redis.aclose()
