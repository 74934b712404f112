"""The Redis connection: one way to open it, and one way to read its replies as text."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from gateway.store.resp import faster


def connect(url: str, *, timeout: float | None = 2.0) -> Redis:
    """Open a client for ``url`` (replies as bytes; the gateway decodes what it reads as text).

    ``timeout`` bounds connecting and every reply, so a frozen Redis fails a request in that time (a 503) rather
    than holding it; blocking reads (``XREAD BLOCK``) must block for less (``Settings`` checks it).
    """
    client = Redis.from_url(url, health_check_interval=30, socket_timeout=timeout, socket_connect_timeout=timeout)
    pool = client.connection_pool
    pool.connection_class = faster(pool.connection_class)  # before any connection is made
    return client


def text(value: Any) -> str:
    """Return a Redis reply item as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
