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


async def test_a_plans_put_writes_leave_what_the_writes_they_stand_for_leave(redis_url: str, key_prefix: str) -> None:
    """``Plan.put`` sends a form's constant arguments once; the script makes the same commands, in the same order."""
    redis = connect(redis_url, cluster=False, timeout=5.0)
    job = ("XADD", ("*", "type", None, "id", None, "attempt", 0))
    state = ("HSET", ("vid", None, "lu", None, "deleted", None))

    def build(prefix: str, *, put: bool) -> Plan:
        plan, names = Plan(), [f"{prefix}:{{t}}:{name}" for name in ("stream", "h1", "h2", "s", "body")]
        stream, h1, h2, s, body = names
        writes: list[tuple[tuple[str, tuple[object, ...]], str, tuple[object, ...]]] = [
            (job, stream, ("Patient", "p1")),
            (state, h1, (1, "2026-01-01T00:00:00Z", "0")),
            (("HSET", (None, None)), body, ("1", b"\x00{\xc3\xa9}")),
            (job, stream, ("Appointment", "a1")),
            (("XADD", ("*", "type", None)), stream, ("Binary",)),  # another form on the same stream, in between
            (state, h2, (7, "", "1")),
            (("SET", (None, "EX", 60)), s, ("p1",)),
            (job, stream, ("Appointment", "a2")),
        ]
        for at, (form, key, values) in enumerate(writes):
            if put:
                plan.put(form, key, *values)
            else:
                args = iter(values)
                plan.write(form[0], key, *(next(args) if a is None else a for a in form[1]))
            if at == 3:
                plan.write("HSET", h1, "rev", 2)  # a plain write between puts, on a key a put wrote
        return plan

    async def state_of(prefix: str) -> list[object]:
        stream, h1, h2, s, body = (f"{prefix}:{{t}}:{name}" for name in ("stream", "h1", "h2", "s", "body"))
        entries = [fields for _, fields in await redis.xrange(stream)]
        return [entries, await redis.hgetall(h1), await redis.hgetall(h2), await redis.get(s),
                await redis.ttl(s) > 0, await redis.hgetall(body)]  # fmt: skip

    try:
        put, plain = build(f"{key_prefix}:put", put=True), build(f"{key_prefix}:plain", put=False)
        assert list(put.commands()) == list(plain.commands())
        assert len(put.writes) < len(plain.writes)
        put_ids, plain_ids = await Committer(redis).commit(put), await Committer(redis).commit(plain)
        assert len(put_ids) == len(plain_ids) == 4
        assert await state_of(f"{key_prefix}:put") == await state_of(f"{key_prefix}:plain")
        entries = await redis.xrange(f"{key_prefix}:put:{{t}}:stream")
        assert [fields[b"type"] for _, fields in entries] == [b"Patient", b"Appointment", b"Binary", b"Appointment"]
    finally:
        for prefix in (f"{key_prefix}:put", f"{key_prefix}:plain"):
            await redis.delete(*(f"{prefix}:{{t}}:{name}" for name in ("stream", "h1", "h2", "s", "body")))
        await redis.aclose()
