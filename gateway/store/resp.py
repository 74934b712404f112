"""Redis connections that write commands with hiredis's C encoder.

redis-py's asyncio connections encode every argument of every command in Python, which costs more than a
resource's own work when one atomic commit carries a Bundle's versions, indexes and jobs as thousands of
arguments. hiredis (installed with ``redis[hiredis]``) encodes a whole command in C; these subclasses use it and
fall back to redis-py's encoder for anything it does not take.
"""

from __future__ import annotations

from typing import Any

import hiredis
from redis.asyncio.connection import Connection, SSLConnection, UnixDomainSocketConnection


class _HiredisPacking:
    def pack_command(self, *args: Any) -> list[bytes]:
        first = args[0]
        if isinstance(first, str) and " " in first:  # "CONFIG GET": Redis wants the words apart
            args = (*first.split(), *args[1:])
        try:
            return [hiredis.pack_command(args)]
        except (TypeError, ValueError):
            packed: list[bytes] = super().pack_command(*args)  # type: ignore[misc]
            return packed


class FastConnection(_HiredisPacking, Connection):
    """A TCP connection."""


class FastUnixConnection(_HiredisPacking, UnixDomainSocketConnection):
    """A Unix-socket connection (the embedded Redis)."""


class FastSSLConnection(_HiredisPacking, SSLConnection):
    """A TLS connection (``rediss://``)."""


def faster(connection_class: type[Any]) -> type[Any]:
    """Return the hiredis-packing subclass of a redis-py asyncio connection class (itself when unknown)."""
    for base, fast in ((SSLConnection, FastSSLConnection), (UnixDomainSocketConnection, FastUnixConnection),
                       (Connection, FastConnection)):  # fmt: skip
        if connection_class is base:
            return fast
    return connection_class
