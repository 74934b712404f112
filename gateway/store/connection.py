"""The Redis connection: one way to open it, and one way to read its replies as text."""

from __future__ import annotations

from typing import Any, cast

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

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
    client = Redis.from_url(url, health_check_interval=30, socket_timeout=timeout, socket_connect_timeout=timeout)
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
