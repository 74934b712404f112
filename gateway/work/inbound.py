"""The inbound work queue: one job per stored resource version, on the tenant's ``inbound`` stream.

A job ``{type, id, vid, op, attempt, first_id}`` names a stored resource version (``op`` upsert, delete, or
refresh: map the held version again because something it read changed). The store's commit appends it; the worker
reads it through the stream queue of ``gateway.work.streams`` and acknowledges it in the step that applies it.
QuestionnaireResponse jobs go on a lane of their own (``gw:{t}:inbound:risk``, ``keys.lane``), which the worker
consumes apart, so a risk flag never waits behind a backlog of other work. Tenants that have written are listed
in ``gw:tenants`` (outside any tenant's slot); the worker reads it to know
whose streams to consume.
"""

from __future__ import annotations

import functools

from redis.asyncio import Redis

from connectors.retry import backoff
from gateway.clock import Clock, system_clock
from gateway.store.connection import text
from gateway.store.keys import GROUP, Keyspace
from gateway.work.streams import Entry, QueueKeys, StreamQueue


class Job(Entry):
    """One unit of inbound work: the stored version ``rtype/rid`` number ``vid`` to map."""

    @property
    def rtype(self) -> str:
        return self.fields["type"]

    @property
    def rid(self) -> str:
        return self.fields["id"]

    @property
    def vid(self) -> int:
        value = self.fields.get("vid", "0")
        return int(value) if value.isdigit() else 0

    @property
    def op(self) -> str:
        return self.fields.get("op", "upsert")


InboundQueue = StreamQueue[Job]


def inbound_queue(
    redis: Redis, keys: Keyspace, *, lane: str = "", max_attempts: int, wait: backoff, clock: Clock = system_clock
) -> InboundQueue:
    """Return one lane of the tenants' inbound streams, as the worker consumes it.

    Every lane dead-letters into the one dead-letter stream, and a replay puts a job back on the queue it is
    replayed through (the default lane, for the ``dlq`` command).
    """
    where = QueueKeys(
        stream=functools.partial(keys.inbound, lane=lane),
        retry=functools.partial(keys.retry, lane=lane),
        dead=keys.dead_letters,
    )
    return StreamQueue(redis, where, GROUP, Job, max_attempts=max_attempts, wait=wait, clock=clock)


async def known_tenants(redis: Redis, keys: Keyspace) -> list[str]:
    """Return every tenant that has written."""
    return sorted(text(m) for m in await redis.smembers(keys.tenants))
