"""One round trip reads hashes, flags and strings as redis-py's own commands would answer them."""

from __future__ import annotations

from gateway.store import connect
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
