"""The lane the store's Lua scripts run on (``gateway.store.connection.LaneRedis`` and ``Script``): a reply always
reaches the call that asked for it, a broken or stale connection is never used again, and a flushed or restarted
server gets the script again."""

from __future__ import annotations

import asyncio
import os
import signal
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.store.connection import LaneRedis, Script, connect
from tests.support import RedisProcess

ECHO = "return ARGV[1]"
FAIL = "return redis.error_reply('refused by the test')"


@pytest.fixture
async def client(redis_url: str) -> AsyncIterator[LaneRedis]:
    made = connect(redis_url)
    assert isinstance(made, LaneRedis)
    yield made
    await made.aclose()


async def _lane_id(client: LaneRedis) -> int:
    """Return the id Redis gives the connection the lane's next script would run on."""
    return int(await client.lane("CLIENT", "ID"))


async def _client_ids(redis_url: str) -> set[int]:
    observer = Redis.from_url(redis_url)
    try:
        return {int(c["id"]) for c in await observer.client_list()}
    finally:
        await observer.aclose()


async def test_scripts_take_turns_on_one_kept_connection(client: LaneRedis) -> None:
    echo = Script(client, ECHO)
    first = await _lane_id(client)
    assert [await echo(args=[f"call-{i}"]) for i in range(20)] == [f"call-{i}".encode() for i in range(20)]
    assert await _lane_id(client) == first


async def test_scripts_at_once_each_get_their_own_reply(client: LaneRedis) -> None:
    echo = Script(client, ECHO)
    replies = await asyncio.gather(*(echo(keys=[f"lane-test:{i}"], args=[str(i)]) for i in range(50)))
    assert replies == [str(i).encode() for i in range(50)]


async def test_an_error_reply_is_raised_and_the_connection_kept(client: LaneRedis) -> None:
    before = await _lane_id(client)
    with pytest.raises(ResponseError, match="refused by the test"):
        await Script(client, FAIL)()
    assert await _lane_id(client) == before
    assert await Script(client, ECHO)(args=["after"]) == b"after"


async def test_a_connection_the_server_closed_is_replaced_without_failing_the_script(
    client: LaneRedis, redis_url: str
) -> None:
    stale = await _lane_id(client)
    killer = Redis.from_url(redis_url)
    try:
        assert await killer.client_kill_filter(_id=stale) == 1
    finally:
        await killer.aclose()
    assert await Script(client, ECHO)(args=["still answered"]) == b"still answered"
    assert await _lane_id(client) != stale


async def test_closing_the_client_closes_the_lane(client: LaneRedis, redis_url: str) -> None:
    lane = await _lane_id(client)
    assert lane in await _client_ids(redis_url)
    await client.aclose()
    assert lane not in await _client_ids(redis_url)


async def test_a_flushed_script_is_loaded_again(own_redis: RedisProcess) -> None:
    client = connect(own_redis.url)
    try:
        echo = Script(client, ECHO)
        assert await echo(args=["loaded"]) == b"loaded"
        await client.script_flush()
        assert await echo(args=["loaded again"]) == b"loaded again"
    finally:
        await client.aclose()


@pytest.mark.parametrize("how", ["timeout", "cancelled"])
async def test_a_script_abandoned_while_redis_is_frozen_never_answers_a_later_one(
    own_redis: RedisProcess, how: str
) -> None:
    # The abandoned script is answered once Redis runs again, on its connection: that must not be the reply a
    # later script reads.
    client = connect(own_redis.url, timeout=0.5)
    echo = Script(client, ECHO)
    try:
        assert await echo(args=["before"]) == b"before"
        os.kill(own_redis.process.pid, signal.SIGSTOP)
        if how == "timeout":
            with pytest.raises(RedisTimeoutError):
                await echo(args=["abandoned"])
        else:
            task = asyncio.ensure_future(echo(args=["abandoned"]))
            await asyncio.sleep(0.2)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        os.kill(own_redis.process.pid, signal.SIGCONT)
        assert [await echo(args=[f"later-{i}"]) for i in range(3)] == [b"later-0", b"later-1", b"later-2"]
    finally:
        os.kill(own_redis.process.pid, signal.SIGCONT)
        await client.aclose()


async def test_a_client_made_elsewhere_runs_scripts_through_redis_py(redis_url: str) -> None:
    plain = Redis.from_url(redis_url)
    try:
        assert await Script(plain, ECHO)(args=["through redis-py"]) == b"through redis-py"
    finally:
        await plain.aclose()
