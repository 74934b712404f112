"""Webhook subscriptions in Redis: registration, the URL policy, the signature, dead letters and replay.

A subscription is a receiver URL, event-type patterns (``appointment.*``, as the feed's ``types=``) and a shared
secret, owned by the platform client that created it. The worker delivers to it (``gateway.webhooks.dispatch`` runs
one ``gateway.webhooks.delivery`` task per subscription): every feed event whose type matches, in feed order, each as
one POST signed with the secret. Delivery is at-least-once, so receivers dedupe on the event id. A delivery that
fails every attempt is dead-lettered on the subscription and can be replayed.

The routes are in ``gateway.webhooks.routes``. The secret is stored in Redis, because signing needs it; it is never
returned by the API and never logged. Events of sensitive records are not delivered to a subscription unless its
owner has the ``sensitive`` scope, both when it was created and now (a scope taken away in the clients file is taken
away from its webhooks too).
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import re
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import httpx
from redis.asyncio import Redis

from gateway.clock import Clock, system_clock
from gateway.errors import BadRequest, NotFound, Unprocessable
from gateway.platform.feed import MAX_TYPE_PATTERNS, TYPE_PATTERN
from gateway.store.committer import Committer
from gateway.store.connection import text
from gateway.store.keys import Keyspace
from gateway.store.plan import Plan, PlanConflict
from gateway.work.streams import DeadLetters

MAX_PER_TENANT = 100
MIN_SECRET, MAX_SECRET = 16, 512
MAX_URL = 2048
MAX_PATTERNS = MAX_TYPE_PATTERNS  # the feed's rule for ``types=``, one rule for both
DEAD_LETTER_MAXLEN = 10_000  # per subscription; the oldest go first (approximately) beyond it
PATTERN = TYPE_PATTERN
_SUBSCRIPTION_ID = re.compile(r"^sub_[0-9a-f]{32}$")
_STREAM_ID = re.compile(r"^(\d{1,20})-(\d{1,20})$")
_LOOPBACK_NAMES = frozenset({"localhost", "localhost."})


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """Return the ``Gateway-Signature`` value: ``t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<body>">``."""
    mac = hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={mac}"


def url_refusal(url: str, *, development: bool) -> tuple[str, str] | None:
    """Return why a receiver URL is refused, as (expression, reason), or None when it may be used."""
    if len(url) > MAX_URL:
        return "url", f"the url may have at most {MAX_URL} characters"
    if not url.isascii() or any(ch.isspace() or not ch.isprintable() for ch in url):
        return "url", "the url must be ASCII without spaces (punycode the host, percent-encode the rest)"
    try:
        parts = urlsplit(url)
        port = parts.port
        httpx.URL(url)
    except (ValueError, httpx.InvalidURL):
        return "url", "the url is not a valid URL"
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        return "url", "the url must use https (plain http only to a loopback host in development mode)"
    if "@" in parts.netloc:
        return "url", "the url must not carry credentials; the receiver checks the Gateway-Signature instead"
    if "#" in url:
        return "url", "the url must not have a fragment"
    host = parts.hostname
    if not host or port == 0:
        return "url", "the url needs a host (and a port other than 0)"
    if scheme == "http":
        if not development:
            return "url", "plain http is allowed only in development mode (fhir-gateway run); use https"
        if not _loopback(host):
            return "url", "plain http is allowed only to a loopback host (localhost, 127.0.0.1, ::1); use https"
    return None


def _loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def iso(epoch: float) -> str:
    """Return an epoch time as an ISO 8601 UTC instant."""
    return datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def stream_id(value: str, name: str) -> str:
    """Return ``value`` if it is a Redis stream id, else raise BadRequest naming ``name``."""
    match = _STREAM_ID.match(value)
    if not match or any(int(part) >= 2**64 for part in match.groups()):
        raise BadRequest(f"{name} is not a dead-letter id this gateway issued", expression=name)
    return value


@dataclass(frozen=True)
class Subscription:
    """A stored subscription and where its delivery stands."""

    tenant: str
    id: str
    url: str
    events: tuple[str, ...]
    secret: str = field(repr=False)
    created_at: float
    owner: str
    scopes: frozenset[str]
    cursor: str  # the feed entry delivered (or passed over) last
    attempt: int = 0  # failed attempts of the delivery in ``pending``
    pending: str = ""  # "feed:<entry id>" or "replay:<entry id>" while a delivery is failing
    next_at: float = 0.0
    last_error: str = ""
    delivered_at: float = 0.0  # the last 2xx (0: none yet)
    paused: bool = False  # an operator paused it: no worker delivers it until resumed

    @classmethod
    def from_hash(cls, tenant: str, raw: dict[Any, Any]) -> Subscription:
        f = {text(k): text(v) for k, v in raw.items()}
        return cls(
            tenant=tenant, id=f["id"], url=f["url"], events=tuple(json.loads(f["events"])), secret=f["secret"],
            created_at=float(f["created_at"]), owner=f.get("owner", ""),
            scopes=frozenset(json.loads(f.get("scopes", "[]"))), cursor=f.get("cursor", "0-0"),
            attempt=int(f.get("attempt") or 0), pending=f.get("pending", ""),
            next_at=float(f.get("next_at") or 0), last_error=f.get("last_error", ""),
            delivered_at=float(f.get("delivered_at") or 0), paused=f.get("paused") == "1",
        )  # fmt: skip


@dataclass(frozen=True)
class DeadLetter:
    """A delivery that failed every attempt."""

    id: str
    feed_id: str
    event: dict[str, Any]
    attempts: int
    last_status: int | None
    last_error: str
    failed_at: float

    @classmethod
    def from_entry(cls, entry_id: Any, raw: dict[Any, Any]) -> DeadLetter:
        f = {text(k): text(v) for k, v in raw.items()}
        return cls(
            id=text(entry_id), feed_id=f.get("feed_id", ""), event=json.loads(f.get("event", "{}")),
            attempts=int(f.get("attempts") or 0), last_status=int(f["status"]) if f.get("status") else None,
            last_error=f.get("error", ""), failed_at=float(f.get("failed_at") or 0),
        )  # fmt: skip


class Subscriptions:
    """The tenant's subscriptions in Redis."""

    def __init__(self, redis: Redis, keys: Keyspace, *, clock: Clock = system_clock) -> None:
        self.redis = self._redis = redis
        self.keys = self._keys = keys
        self._clock = clock
        self._committer = Committer(redis)
        self._letters = DeadLetters(redis)

    async def create(
        self, tenant: str, *, url: str, events: list[str], secret: str, owner: str, scopes: frozenset[str]
    ) -> Subscription:
        """Store a subscription that delivers the feed's events from now on."""
        k = self._keys
        if await self._redis.zcard(k.webhooks(tenant)) >= MAX_PER_TENANT:
            raise Unprocessable(f"a tenant may have at most {MAX_PER_TENANT} subscriptions", expression="url")
        tail: Any = await self._redis.xrevrange(k.feed(tenant), count=1)
        sub = Subscription(
            tenant=tenant, id=f"sub_{uuid.uuid4().hex}", url=url, events=tuple(events), secret=secret,
            created_at=self._clock(), owner=owner, scopes=scopes, cursor=text(tail[0][0]) if tail else "0-0",
        )  # fmt: skip
        # First the global list the workers scan (it never shrinks, so a concurrent delete cannot hide a tenant).
        await self._redis.sadd(k.webhook_tenants, tenant)
        plan = Plan()
        plan.write(
            "HSET", k.webhook(tenant, sub.id), "id", sub.id, "url", url, "events", json.dumps(events),
            "secret", secret, "created_at", repr(sub.created_at), "owner", owner,
            "scopes", json.dumps(sorted(scopes)), "cursor", sub.cursor, "attempt", 0, "pending", "",
            "next_at", 0, "last_error", "",
        )  # fmt: skip
        plan.write("ZADD", k.webhooks(tenant), sub.created_at, sub.id)
        await self._committer.commit(plan)
        return sub

    async def find(self, tenant: str, sid: str) -> Subscription | None:
        """Return the subscription, or None."""
        if not _SUBSCRIPTION_ID.match(sid):
            return None
        raw: Any = await self._redis.hgetall(self._keys.webhook(tenant, sid))
        return Subscription.from_hash(tenant, raw) if raw and b"id" in raw else None

    async def get(self, tenant: str, sid: str) -> Subscription:
        """Return the subscription, or raise NotFound."""
        sub = await self.find(tenant, sid)
        if sub is None:
            raise NotFound("no such subscription", expression="id")
        return sub

    async def ids(self, tenant: str) -> list[str]:
        """Return the tenant's subscription ids, oldest first."""
        return [text(m) for m in await self._redis.zrange(self._keys.webhooks(tenant), 0, -1)]

    async def everyone(self) -> list[tuple[str, str]]:
        """Return (tenant, id) of every subscription of every tenant."""
        tenants = await self.tenants()
        pipe = self._redis.pipeline(transaction=False)
        for tenant in tenants:
            pipe.zrange(self._keys.webhooks(tenant), 0, -1)
        replies = await pipe.execute()
        return [(tenant, text(sid)) for tenant, ids in zip(tenants, replies, strict=True) for sid in ids]

    async def all(self, tenant: str) -> list[Subscription]:
        """Return the tenant's subscriptions, oldest first."""
        ids = await self.ids(tenant)
        pipe = self._redis.pipeline(transaction=False)
        for sid in ids:
            pipe.hgetall(self._keys.webhook(tenant, sid))
        return [Subscription.from_hash(tenant, raw) for raw in await pipe.execute() if raw and b"id" in raw]

    async def delete(self, tenant: str, sid: str) -> bool:
        """Remove the subscription, its dead letters and pending replays; return whether it existed."""
        if not _SUBSCRIPTION_ID.match(sid):
            return False
        k = self._keys
        pipe = self._redis.pipeline(transaction=True)  # one slot: the tenant's hash tag
        pipe.zrem(k.webhooks(tenant), sid)
        pipe.delete(k.webhook(tenant, sid), k.webhook_dead_letters(tenant, sid), k.webhook_replay(tenant, sid))
        removed, deleted = await pipe.execute()
        return bool(removed or deleted)

    async def pause(self, tenant: str, sid: str, paused: bool) -> bool:
        """Pause (or resume) delivery; return whether the subscription exists.

        A worker stops a paused subscription before its next attempt, or when it next renews its lease (a request
        then in flight is cut short and its event delivered again after the resume), and takes no new lease on it.
        Resuming lets any worker take it again within a second.
        """
        plan = Plan()
        key = self._keys.webhook(tenant, sid)
        plan.expect_field_not(key, "id", [None])
        plan.write("HSET", key, "paused", "1" if paused else "")
        try:
            await self._committer.commit(plan)
        except PlanConflict:
            return False
        return True

    async def rewind(self, tenant: str, sid: str, entry_id: str) -> bool:
        """Move a paused subscription's cursor to the feed entry ``entry_id`` (events after it are delivered again).

        Only while it is paused and no worker holds it; False otherwise. The retry state is cleared with it.
        """
        k = self._keys
        plan = Plan()
        plan.expect_field(k.webhook(tenant, sid), "paused", "1")
        plan.expect_value(k.webhook_lease(tenant, sid), None)
        plan.write(
            "HSET", k.webhook(tenant, sid), "cursor", entry_id, "pending", "", "attempt", 0, "next_at", 0,
            "last_error", "",
        )  # fmt: skip
        try:
            await self._committer.commit(plan)
        except PlanConflict:
            return False
        return True

    async def tenants(self) -> list[str]:
        """Return the tenants that have ever had a subscription."""
        return sorted(text(m) for m in await self._redis.smembers(self._keys.webhook_tenants))

    async def dead_letter_count(self, tenant: str, sids: list[str]) -> dict[str, int]:
        """Return how many dead letters each subscription holds."""
        pipe = self._redis.pipeline(transaction=False)
        for sid in sids:
            pipe.xlen(self._keys.webhook_dead_letters(tenant, sid))
        return {sid: int(n) for sid, n in zip(sids, await pipe.execute(), strict=True)}

    async def dead_letters(
        self, tenant: str, sid: str, *, after: str | None = None, limit: int = 1000
    ) -> tuple[list[DeadLetter], str | None]:
        """Return dead letters after ``after``, oldest first, and the id to continue from (None at the end)."""
        key = self._keys.webhook_dead_letters(tenant, sid)
        page, next_id = await self._letters.page(key, after=after, limit=limit)
        return [DeadLetter.from_entry(entry_id, fields) for entry_id, fields in page], next_id

    async def replay(self, tenant: str, sid: str, ids: list[str] | None) -> list[str]:
        """Queue dead letters (all when ``ids`` is None) for delivery again; return the ids moved."""
        k = self._keys
        if ids is None:
            ids = []
            after: str | None = None
            while True:
                page, after = await self.dead_letters(tenant, sid, after=after)
                ids += [d.id for d in page]
                if after is None:
                    break
        if not ids:
            return []
        return await self._letters.replay(k.webhook_dead_letters(tenant, sid), k.webhook_replay(tenant, sid), ids)
