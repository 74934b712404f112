"""The Redis connection: one way to open it, and one way to read its replies as text."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from gateway.store.resp import faster


def connect(url: str) -> Redis:
    """Open a client for ``url`` (replies as bytes; the gateway decodes what it reads as text)."""
    client = Redis.from_url(url, health_check_interval=30)
    pool = client.connection_pool
    pool.connection_class = faster(pool.connection_class)  # before any connection is made
    return client


def text(value: Any) -> str:
    """Return a Redis reply item as text."""
    return value.decode() if isinstance(value, bytes) else str(value)
