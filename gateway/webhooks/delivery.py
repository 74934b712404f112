"""Deliver one webhook subscription: its events in feed order, each signed, retried, dead-lettered at the end.

- **Order and at-least-once.** Matching events are POSTed one at a time in feed order; the cursor moves past an
  event only after a 2xx (events of other types are passed over). A crash between the 2xx and the cursor move
  delivers that event again, so receivers dedupe on the event id (also in ``Gateway-Event-Id``).
- **Retries.** Anything but a 2xx (a redirect too), a transport error or a timeout of the whole request
  (``GATEWAY_WEBHOOK_TIMEOUT_SECONDS``) is retried after an exponential backoff with jitter; on 429 and 503 a
  ``Retry-After`` (seconds or HTTP-date) is honoured, capped at ``GATEWAY_WEBHOOK_RETRY_MAX_SECONDS``. The attempt
  count lives in Redis, so a worker that takes a subscription over continues it. After
  ``GATEWAY_WEBHOOK_MAX_ATTEMPTS`` the event is dead-lettered with its last status or error and the cursor moves on.
  Replayed dead letters are delivered before the feed goes on.
- **One deliverer.** Before each attempt the lease is renewed, and every write is checked against it and against the
  subscription's existence in the same atomic step: a worker that lost the lease, or whose subscription was deleted,
  stops without sending or moving anything more.

Logs carry subscription ids, event ids and types, statuses and error names: never a URL, a body or a secret.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

import httpx
from redis.asyncio import Redis

from connectors.address import refused
from connectors.retry import backoff, parse_retry_after
from gateway.metrics import WEBHOOK_DELIVERIES
from gateway.platform.disclosure import shown_codes, shown_event
from gateway.platform.feed import Entry, encode_cursor
from gateway.settings import Settings
from gateway.store.committer import Committer
from gateway.store.connection import Script, text
from gateway.store.keys import Keyspace
from gateway.store.plan import Plan
from gateway.webhooks.subscriptions import DEAD_LETTER_MAXLEN, Subscription, sign
from gateway.work.streams import DeadLetters

log = logging.getLogger("gateway.webhooks")

IDLE_POLL_SECONDS = 1.0  # an idle delivery looks again this often (replays queued by the API), woken or not

# Renew the lease if it is still ours and the subscription still exists and is not paused: 1, else 0 (stop).
_CHECKIN = """
if redis.call("GET", KEYS[1]) == ARGV[1] and redis.call("EXISTS", KEYS[2]) == 1
   and redis.call("HGET", KEYS[2], "paused") ~= "1" then
  redis.call("PEXPIRE", KEYS[1], ARGV[2])
  return 1
end
return 0
"""

_RELEASE = """
if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end
return 0
"""


class Leases:
    """Per-subscription leases, held under one worker's token (``SET NX PX``, renewed, released)."""

    def __init__(self, redis: Redis, keys: Keyspace, token: str, ttl_seconds: float) -> None:
        self._redis = redis
        self._keys = keys
        self.token = token
        self._ttl_ms = int(ttl_seconds * 1000)
        self._checkin = Script(redis, _CHECKIN)
        self._release = Script(redis, _RELEASE)

    async def take(self, subs: list[tuple[str, str]]) -> list[bool]:
        """Take each free lease; tell which were taken."""
        pipe = self._redis.pipeline(transaction=False)
        for tenant, sid in subs:
            pipe.set(self._keys.webhook_lease(tenant, sid), self.token, nx=True, px=self._ttl_ms)
        return [bool(taken) for taken in await pipe.execute()]

    async def renew(self, subs: list[tuple[str, str]]) -> list[bool]:
        """Extend each lease; False where it is no longer ours or its subscription is gone.

        The calls run side by side rather than in one pipeline: a Redis Cluster client refuses scripts in a
        pipeline, and the leases one worker holds are few.
        """
        return list(await asyncio.gather(*(self.still_mine(tenant, sid) for tenant, sid in subs)))

    async def still_mine(self, tenant: str, sid: str) -> bool:
        """Extend the lease; tell whether this worker may still deliver the subscription."""
        return bool(int(await self._checkin(keys=self._pair(tenant, sid), args=[self.token, self._ttl_ms])))

    async def release(self, tenant: str, sid: str) -> None:
        """Let go of the lease, if it is still ours."""
        await self._release(keys=[self._keys.webhook_lease(tenant, sid)], args=[self.token])

    def expect(self, plan: Plan, tenant: str, sid: str) -> None:
        """Make ``plan`` hold only while the lease is ours and the subscription exists."""
        plan.expect_value(self._keys.webhook_lease(tenant, sid), self.token)
        plan.expect_field(self._keys.webhook(tenant, sid), "id", sid)

    def _pair(self, tenant: str, sid: str) -> list[str]:
        return [self._keys.webhook_lease(tenant, sid), self._keys.webhook(tenant, sid)]


@dataclass(frozen=True)
class Shared:
    """What every delivery of one worker shares: Redis, the HTTP client, the leases, the wake-ups."""

    redis: Redis
    keys: Keyspace
    settings: Settings
    http: httpx.AsyncClient
    leases: Leases
    committer: Committer
    stopping: asyncio.Event
    wake: Callable[[str], asyncio.Event]  # the event set when the tenant's feed grows next
    clock: Callable[[], float]


@dataclass(frozen=True)
class Item:
    """One event to deliver: from the feed, or a replayed dead letter."""

    source: str  # "feed" or "replay"
    entry_id: str  # in the feed, or in the replay stream
    feed_id: str
    event: dict[str, Any]

    @property
    def key(self) -> str:
        return f"{self.source}:{self.entry_id}"


@dataclass(frozen=True)
class Outcome:
    """What one POST came to."""

    ok: bool
    status: int | None = None
    error: str = ""
    retry_after: float | None = None

    @property
    def reason(self) -> str:
        """Say what went wrong as a class (``last_error``, dead letters): never a socket detail, address or port."""
        return f"delivery failed: {f'HTTP {self.status}' if self.status is not None else self.error}"


def failure_class(exc: BaseException) -> str:
    """Return the class of a transport error: refused address, connection refused, timeout, connection failed..."""
    if refused(exc):
        return "refused address"
    if isinstance(exc, (TimeoutError, httpx.TimeoutException)):
        return "timeout"
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, ConnectionRefusedError) or "connection refused" in str(seen).lower():
            return "connection refused"
        seen = seen.__cause__ or seen.__context__
    if isinstance(exc, httpx.ConnectError):
        return "connection failed"
    if isinstance(exc, (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError)):
        return "connection lost"
    return "transport error"


async def pause(event: asyncio.Event, seconds: float) -> bool:
    """Wait up to ``seconds`` for ``event``; tell whether it was set."""
    try:
        await asyncio.wait_for(event.wait(), timeout=max(seconds, 0.0))
    except TimeoutError:
        return event.is_set()
    return True


class SubscriptionDelivery:
    """Deliver one subscription, event after event, while this worker holds its lease."""

    def __init__(self, shared: Shared, sub: Subscription, scopes: frozenset[str]) -> None:
        self.shared = shared
        self.sub = sub
        self.scopes = scopes  # which events exist for the subscription (see Dispatcher.scopes)
        self.cursor = sub.cursor  # committed: delivered or passed over
        self.read_to = sub.cursor  # read into the buffer
        self.buffer: deque[Entry] = deque()
        self.pending, self.attempt, self.next_at = sub.pending, sub.attempt, sub.next_at

    async def run(self) -> None:
        """Deliver until stopped, the lease is lost or the subscription is deleted."""
        await self._check_retention()
        while not self.shared.stopping.is_set():
            wake = self.shared.wake(self.sub.tenant)  # taken before reading, so no growth goes unnoticed
            item = await self._next()
            if item is None:
                await pause(wake, IDLE_POLL_SECONDS)
            elif not await self._deliver(item):
                return

    async def _check_retention(self) -> None:
        mark = await self.shared.redis.get(self.shared.keys.feed_trimmed(self.sub.tenant))
        if mark is not None and _id_tuple(self.cursor) < _id_tuple(text(mark)):
            log.warning("webhook cursor older than the feed's retention", extra={"subscription": self.sub.id})

    async def _next(self) -> Item | None:
        """Return the next event to deliver: a replayed dead letter first, then the feed's next match."""
        redis, keys, tenant, sid = self.shared.redis, self.shared.keys, self.sub.tenant, self.sub.id
        while not self.pending.startswith("feed:"):  # a feed event in retry goes on first
            replay: Any = await redis.xrange(keys.webhook_replay(tenant, sid), count=1)
            if not replay:
                break
            entry_id, raw = replay[0]
            fields = {text(k): text(v) for k, v in raw.items()}
            item = Item("replay", text(entry_id), fields.get("feed_id", ""), json.loads(fields["event"]))
            if shown_event(item.event, self.scopes):
                return item
            await self._commit(self._done(Plan(), item))  # the owner lost the scope: the event no longer exists
        while True:
            if not self.buffer:
                entries: Any = await redis.xrange(keys.feed(tenant), min=f"({self.read_to}", count=100)
                if not entries:
                    if self.read_to != self.cursor:  # only passed-over events since the last move: keep the place
                        await self._commit(self._move_cursor(Plan(), self.read_to))
                    return None
                self.buffer.extend(Entry.read(entry_id, fields) for entry_id, fields in entries)
            entry = self.buffer.popleft()
            self.read_to = entry.id
            # A sensitive event does not exist for an owner without the scope: passed over like another type. Both
            # are judged by the fields beside the event; only an event to deliver is parsed.
            if shown_codes(entry.codes, self.scopes) and any(
                fnmatchcase(entry.type, pattern) for pattern in self.sub.events
            ):
                return Item("feed", entry.id, entry.id, entry.event())

    async def _deliver(self, item: Item) -> bool:
        """Deliver ``item`` until it succeeds or dead-letters; return False when this task must stop."""
        shared, settings = self.shared, self.shared.settings
        attempts = self.attempt if item.key == self.pending else 0
        if attempts and (delay := self.next_at - shared.clock()) > 0 and await pause(shared.stopping, delay):
            return False
        while True:
            if not await shared.leases.still_mine(self.sub.tenant, self.sub.id):
                return False
            outcome = await self._post(item, attempts + 1)
            attempts += 1
            if outcome.ok:
                plan = Plan()
                plan.write(
                    "HSET", shared.keys.webhook(self.sub.tenant, self.sub.id), "delivered_at", repr(shared.clock())
                )
                await self._commit(self._done(plan, item))
                WEBHOOK_DELIVERIES.labels("delivered").inc()
                return True
            if attempts >= settings.webhook_max_attempts:
                await self._commit(self._dead_letter(item, attempts, outcome))
                WEBHOOK_DELIVERIES.labels("dead").inc()
                log.warning("webhook dead-lettered", extra=self._log_fields(item, attempts, outcome))
                return True
            cap = settings.webhook_retry_max_seconds
            if outcome.retry_after is not None:
                delay = min(outcome.retry_after, cap)
            else:
                delay = backoff(settings.webhook_retry_base_seconds, cap).delay(attempts)
            await self._commit(self._retry(item, attempts, shared.clock() + delay, outcome))
            WEBHOOK_DELIVERIES.labels("retry").inc()
            log.info("webhook delivery failed", extra=self._log_fields(item, attempts, outcome))
            if await pause(shared.stopping, delay):
                return False

    async def _post(self, item: Item, attempt: int) -> Outcome:
        """POST one event to the registered URL, signed; never follow a redirect."""
        event = dict(item.event)
        event["cursor"] = encode_cursor(item.feed_id)
        body = json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()
        timestamp = int(self.shared.clock())
        headers = {
            "Content-Type": "application/json",
            "Gateway-Signature": sign(self.sub.secret, timestamp, body),
            "Gateway-Event-Id": str(event.get("id", "")),
            "Gateway-Subscription-Id": self.sub.id,
            "Gateway-Delivery-Attempt": str(attempt),
        }
        http = self.shared.http
        try:
            async with asyncio.timeout(self.shared.settings.webhook_timeout_seconds):
                request = http.build_request("POST", self.sub.url, content=body, headers=headers)
                response = await http.send(request, stream=True)
                await response.aclose()  # the answer's body is not needed
        except (TimeoutError, httpx.HTTPError, httpx.InvalidURL, OSError) as exc:
            return Outcome(False, error=failure_class(exc))
        if 200 <= response.status_code < 300:
            return Outcome(True, response.status_code)
        wait = None
        if response.status_code in (429, 503):
            wait = parse_retry_after(response.headers.get("retry-after"), self.shared.clock())
        return Outcome(False, response.status_code, retry_after=wait)

    # ---- writes: each one atomic, and only while the lease is ours and the subscription exists ----------------

    def _move_cursor(self, plan: Plan, entry_id: str) -> Plan:
        self.shared.leases.expect(plan, self.sub.tenant, self.sub.id)
        plan.write("HSET", self.shared.keys.webhook(self.sub.tenant, self.sub.id), "cursor", entry_id)
        self.cursor = entry_id
        return plan

    def _done(self, plan: Plan, item: Item) -> Plan:
        """Add to ``plan`` the end of ``item``: the cursor moved past it (or the replay removed), retry cleared."""
        keys, tenant, sid = self.shared.keys, self.sub.tenant, self.sub.id
        if item.source == "feed":
            self._move_cursor(plan, item.entry_id)
        else:
            self.shared.leases.expect(plan, tenant, sid)
            plan.write("XDEL", keys.webhook_replay(tenant, sid), item.entry_id)
        plan.write("HSET", keys.webhook(tenant, sid), "pending", "", "attempt", 0, "next_at", 0, "last_error", "")
        self.pending, self.attempt, self.next_at = "", 0, 0.0
        return plan

    def _retry(self, item: Item, attempts: int, next_at: float, outcome: Outcome) -> Plan:
        plan = Plan()
        self.shared.leases.expect(plan, self.sub.tenant, self.sub.id)
        plan.write(
            "HSET", self.shared.keys.webhook(self.sub.tenant, self.sub.id), "pending", item.key, "attempt", attempts,
            "next_at", repr(next_at), "last_error", outcome.reason,
        )  # fmt: skip
        self.pending, self.attempt, self.next_at = item.key, attempts, next_at
        return plan

    def _dead_letter(self, item: Item, attempts: int, outcome: Outcome) -> Plan:
        plan = Plan()
        fields = {
            "event": json.dumps(item.event), "feed_id": item.feed_id, "attempts": attempts,
            "status": outcome.status or "", "error": outcome.reason, "failed_at": repr(self.shared.clock()),
        }  # fmt: skip
        key = self.shared.keys.webhook_dead_letters(self.sub.tenant, self.sub.id)
        DeadLetters.add(plan, key, fields, maxlen=DEAD_LETTER_MAXLEN)
        return self._done(plan, item)

    async def _commit(self, plan: Plan) -> None:
        await self.shared.committer.commit(plan)

    def _log_fields(self, item: Item, attempts: int, outcome: Outcome) -> dict[str, Any]:
        return {"subscription": self.sub.id, "event": item.event.get("id"), "event_type": item.event.get("type"),
                "attempt": attempts, "status": outcome.status, "error": outcome.error or None}  # fmt: skip


def _id_tuple(entry_id: str) -> tuple[int, int]:
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)
