"""The Redis connection: one way to open it, and one way to read its replies as text."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError

from gateway.store.resp import FastConnection, faster


def connect(url: str, *, cluster: bool = False, timeout: float | None = 2.0) -> Redis:
    """Open a client for ``url`` (replies as bytes; the gateway decodes what it reads as text).

    ``timeout`` bounds connecting and every reply, so a frozen Redis fails a request in that time (a 503) rather
    than holding it; blocking reads (``XREAD BLOCK``) must block for less (``Settings`` checks it).

    With ``cluster``, ``url`` names one node of a Redis Cluster and the client discovers the rest. Every key the
    gateway writes carries its tenant as a hash tag, so each script and multi-key command stays in one slot; the
    cluster client offers the command API the gateway uses, hence the cast.
    """
    if cluster:
        cluster_client = RedisCluster.from_url(
            url, connection_class=FastConnection, socket_timeout=timeout, socket_connect_timeout=timeout
        )
        return cast(Redis, cluster_client)
    client = LaneRedis.from_url(url, health_check_interval=30, socket_timeout=timeout, socket_connect_timeout=timeout)
    pool = client.connection_pool
    pool.connection_class = faster(pool.connection_class)  # before any connection is made
    return client


def socket_timeout(redis: Redis) -> float | None:
    """Return the client's socket timeout in seconds (None: none), for a single server or a cluster."""
    pool = getattr(redis, "connection_pool", None)
    options = pool.connection_kwargs if pool is not None else getattr(redis, "connection_kwargs", {})
    timeout = options.get("socket_timeout")
    return float(timeout) if timeout else None


def text(value: Any) -> str:
    """Return a Redis reply item as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


class LaneRedis(Redis):
    """redis-py's client, with a lane of its own connections for the Lua scripts that every request runs.

    A command through the client goes through its pool (a lock, connection counts and release events for
    observability), its retry wrapper and its response callbacks: 36-40 microseconds of CPU on top of the
    round trip itself, paid by the store's reads and commits, the rate limiter and the worker's reads on every
    request and batch. ``Script`` sends an ``EVALSHA`` on a connection of the same kind (the same server, TLS,
    credentials, database and timeouts: made by the client's pool from its settings) kept here, one script at a
    time on each. Like the client's pool, the lane keeps every connection it made (as many as scripts ran at once
    at the busiest): a burst must not pay for connecting again.

    A connection that fails is dropped: a timeout, a broken socket, or a caller cancelled while waiting (what was
    sent may still be answered, so the connection is never used again). A connection that sat idle and was closed
    by the server (its ``timeout``, a restart) fails on its next use: that script is sent once more on a new
    connection, as redis-py's retry does. A script is sent again only when its connection broke, never after a
    reply: a commit that did run before the break fails its checks (``commit.lua``) the second time, a conflict
    that the store decides again; it never applies twice.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lane: list[AbstractConnection] = []
        self._closed = False

    async def lane(self, *args: Any) -> Any:
        """Send one command on a lane connection and return its reply (an error reply raises, as in redis-py)."""
        for attempt in (1, 2):
            reused = attempt == 1 and bool(self._lane)
            conn = self._lane.pop() if reused else self.connection_pool.make_connection()  # type: ignore[no-untyped-call]
            try:
                await conn.send_packed_command(conn.pack_command(*args), check_health=False)
                reply = await conn.read_response()
            except ResponseError:
                await self._keep(conn)  # an error reply: the connection is in step, and usable
                raise
            except RedisConnectionError:
                await conn.disconnect(nowait=True)
                if reused:
                    continue  # closed while idle: once more, on a new connection
                raise
            except BaseException:  # a timeout or a cancelled caller: a reply may still come, on this connection
                await conn.disconnect(nowait=True)
                raise
            await self._keep(conn)
            return reply
        raise AssertionError("unreachable")  # pragma: no cover

    async def _keep(self, conn: AbstractConnection) -> None:
        if self._closed:  # a script that finished after the client was closed
            await conn.disconnect()
        else:
            self._lane.append(conn)

    async def aclose(self, close_connection_pool: bool | None = None) -> None:
        self._closed = True
        idle, self._lane = self._lane, []
        for conn in idle:
            await conn.disconnect()
        await super().aclose(close_connection_pool)


class Script:
    """A Lua script, run as ``await script(keys=[...], args=[...])`` like redis-py's ``register_script``: on a
    ``LaneRedis`` through its lane, else (a Redis Cluster, a client made elsewhere) through redis-py's own."""

    def __init__(self, redis: Redis, source: str) -> None:
        self._registered = redis.register_script(source)
        self.sha: str = self._registered.sha
        self._source = source
        self._lane = redis if isinstance(redis, LaneRedis) else None

    async def __call__(self, keys: Sequence[Any] = (), args: Sequence[Any] = ()) -> Any:
        lane = self._lane
        if lane is None:
            return await self._registered(keys=keys, args=args)
        try:
            return await lane.lane("EVALSHA", self.sha, len(keys), *keys, *args)
        except NoScriptError:  # a restarted or flushed server: load it, then run it
            await lane.lane("SCRIPT", "LOAD", self._source)
            return await lane.lane("EVALSHA", self.sha, len(keys), *keys, *args)
