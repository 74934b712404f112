"""A form's ``Splice`` argument: the commit script joins a head, a value an earlier write sent, and a tail, so that a
record's bytes that its change event carries are sent once. Redis receives the same commands as from the joined
value sent whole."""

from __future__ import annotations

from typing import Any

from gateway.store import Committer, Plan, connect
from gateway.store.plan import Form, Splice

_RECORD: Form = ("HSET", ("vid", None, "rev", None, "json", None))
_EVENT: Form = ("XADD", ("*", "e", Splice(b"}"), "type", None, "n", "1"))
_EVENT_WHOLE: Form = ("XADD", ("*", "e", None, "type", None, "n", "1"))
_TWO: Form = ("HSET", ("a", Splice(b"]"), "b", None, "c", Splice(b"")))


def _spliced(keys: list[str]) -> Plan:
    """A plan whose writes use splices (the record's bytes joined into its event, two in one write) among others."""
    record, feed, other = keys
    plan = Plan()
    plan.expect_field(record, "rev", None)
    plan.write("SET", other, "before")
    at = plan.put(_RECORD, record, 3, 1, b'{"id":"a1","note":"\xc3\xa9"}') + 2
    plan.put(_EVENT, feed, b'{"id":"evt_1","record":', at, "appointment.created")
    plan.write("HSET", other + ":h", "x", "1")
    head = plan.put(_EVENT_WHOLE, feed, b'{"id":"evt_2"}', "whole")
    plan.put(_EVENT, feed, b'{"id":"evt_3","record":', at, "appointment.rescheduled")
    plan.put(_TWO, other + ":two", b"[", head, "plain", b"", at)
    plan.add("SADD", other + ":s", "a1")
    return plan


def _whole(keys: list[str]) -> Plan:
    """The same writes with every value sent whole."""
    record, feed, other = keys
    body = b'{"id":"a1","note":"\xc3\xa9"}'
    plan = Plan()
    plan.expect_field(record, "rev", None)
    plan.write("SET", other, "before")
    plan.put(_RECORD, record, 3, 1, body)
    plan.write(
        "XADD", feed, "*", "e", b'{"id":"evt_1","record":' + body + b"}", "type", "appointment.created", "n", "1"
    )
    plan.write("HSET", other + ":h", "x", "1")
    plan.put(_EVENT_WHOLE, feed, b'{"id":"evt_2"}', "whole")
    plan.write("XADD", feed, "*", "e", b'{"id":"evt_3","record":' + body + b"}", "type", "appointment.rescheduled",
               "n", "1")  # fmt: skip
    plan.write("HSET", other + ":two", "a", b'[{"id":"evt_2"}]', "b", "plain", "c", body)
    plan.add("SADD", other + ":s", "a1")
    return plan


def _sent(plan: Plan) -> list[tuple[Any, ...]]:
    def as_bytes(value: Any) -> bytes:
        return value if isinstance(value, bytes) else str(value).encode()

    return [(command, plan.keys[key - 1], *map(as_bytes, args)) for command, key, args in plan.commands()]


def test_a_splice_is_the_joined_value_in_the_plans_commands() -> None:
    keys = ["gw:{t}:rec:a1", "gw:{t}:feed", "gw:{t}:other"]
    assert _sent(_spliced(keys)) == _sent(_whole(keys))


def test_an_absorbed_plans_splices_still_name_their_values() -> None:
    keys = ["gw:{t}:rec:a1", "gw:{t}:feed", "gw:{t}:other"]
    plan = Plan()
    plan.write("SET", "gw:{t}:first", "x")
    plan.put(_RECORD, "gw:{t}:rec:a0", 1, 1, b"{}")
    plan.absorb(_spliced(keys))
    expected = Plan()
    expected.write("SET", "gw:{t}:first", "x")
    expected.put(_RECORD, "gw:{t}:rec:a0", 1, 1, b"{}")
    expected.absorb(_whole(keys))
    assert _sent(plan) == _sent(expected)


async def _state(redis: Any, keys: list[str]) -> list[Any]:
    record, feed, other = keys
    entries = [fields for _, fields in await redis.xrange(feed)]
    return [await redis.hgetall(record), entries, await redis.get(other), await redis.hgetall(other + ":h"),
            await redis.hgetall(other + ":two"), await redis.smembers(other + ":s")]  # fmt: skip


async def test_the_commit_script_joins_splices_as_the_values_sent_whole(redis_url: str, key_prefix: str) -> None:
    redis = connect(redis_url, cluster=False, timeout=5.0)
    committer = Committer(redis)
    joined = [f"{key_prefix}:{{t}}:j:{name}" for name in ("rec", "feed", "other")]
    whole = [f"{key_prefix}:{{t}}:w:{name}" for name in ("rec", "feed", "other")]
    try:
        ids = await committer.commit(_spliced(joined))
        assert len(ids) == 3
        await committer.commit(_whole(whole))
        state = await _state(redis, joined)
        assert state == await _state(redis, whole)
        assert state[1][0][b"e"] == '{"id":"evt_1","record":{"id":"a1","note":"é"}}'.encode()
        assert state[4][b"a"] == b'[{"id":"evt_2"}]'
    finally:
        await redis.delete(*joined, *whole, *(k + s for k in (joined[2], whole[2]) for s in (":h", ":two", ":s")))
        await redis.aclose()
