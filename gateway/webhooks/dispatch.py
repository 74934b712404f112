"""The webhook dispatcher, run by the worker process next to its job loop.

- **Isolation.** Every subscription this worker delivers runs in its own asyncio task with its own cursor on the
  tenant's change feed and its own retry state (``gateway.webhooks.delivery``), so a slow or failing receiver only
  ever delays itself. Requests share one pooled ``httpx.AsyncClient`` that follows no redirect, keeps no cookies,
  reads no proxy or ``.netrc`` settings from the environment, and only ever calls a registered URL, connecting only
  to an address the outbound policy allows (``connectors.address``: checked at every connection, not only at
  registration).
- **One deliverer per subscription.** A worker delivers a subscription only while it holds its lease in Redis
  (``SET NX PX`` for ``GATEWAY_WEBHOOK_LEASE_SECONDS``, renewed every third of that): among several worker replicas
  one delivers a subscription at a time; a crashed worker's subscriptions are taken over when its leases expire.
  A worker takes at most ``GATEWAY_WEBHOOK_CONCURRENCY`` subscriptions; the rest wait for another replica.
- **Pause.** An operator can pause a subscription (the console): its lease is then neither renewed nor taken
  again, so its delivery stops before the next attempt, until it is resumed.
- **Wake-ups.** One blocking ``XREAD`` watches the feeds of the tenants this worker delivers for and wakes their
  tasks when a feed grows.
- **Disclosure.** An event of a sensitive record is delivered only when the subscription's owner had the
  ``sensitive`` scope when it subscribed and still has it in the clients file; otherwise it is passed over (the
  subscription's cursor moves on past it), as if it did not exist.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.cookiejar import CookieJar, DefaultCookiePolicy
from typing import Any

import httpx

from connectors.address import GuardedTransport
from gateway.clock import Clock, system_clock
from gateway.settings import ClientsConfig, Settings
from gateway.store.committer import Committer
from gateway.store.connection import text
from gateway.store.keys import tenant_of
from gateway.store.plan import PlanConflict
from gateway.webhooks.delivery import Leases, Shared, SubscriptionDelivery, pause
from gateway.webhooks.subscriptions import Subscription, Subscriptions, url_refusal
from gateway.work.streams import read_streams

log = logging.getLogger("gateway.webhooks")

SCAN_SECONDS = 0.25  # how soon a new subscription, or one another worker let go, is picked up
PAUSED_LOOK_SECONDS = 1.0  # how often a paused subscription is looked at again (how soon a resume is seen)
USER_AGENT = "fhir-gateway-webhooks/0.1"


def owner_scopes(clients: ClientsConfig) -> dict[tuple[str, str], frozenset[str]]:
    """Return each platform client's scopes by (tenant, client name), named as ``gateway.auth`` names them."""
    return {
        (c.tenant, c.name or f"{c.tenant}-{c.role}-{i}"): frozenset(c.scopes)
        for i, c in enumerate(clients.clients)
        if c.role == "platform"
    }


class Dispatcher:
    """Deliver every subscription this worker holds a lease on, each in its own task."""

    def __init__(
        self,
        subscriptions: Subscriptions,
        settings: Settings,
        clients: ClientsConfig,
        *,
        name: str,
        clock: Clock = system_clock,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._redis = subscriptions.redis
        self._settings = settings
        self._keys = subscriptions.keys
        self._subs = subscriptions
        self._leases = Leases(self._redis, self._keys, f"{name}:{uuid.uuid4().hex[:8]}", settings.webhook_lease_seconds)
        self._owners = owner_scopes(clients)
        self._clock = clock
        self._transport = transport
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._deliveries: dict[tuple[str, str], SubscriptionDelivery] = {}
        self._cooldown: dict[tuple[str, str], float] = {}
        self._wake: dict[str, asyncio.Event] = {}
        self._tails: dict[str, str] = {}
        self._stopping = asyncio.Event()
        self._shared: Shared | None = None

    @property
    def delivering(self) -> list[str]:
        """Return the ids of the subscriptions this worker delivers now."""
        return sorted(sid for _, sid in self._tasks)

    @asynccontextmanager
    async def _client(self) -> AsyncIterator[httpx.AsyncClient]:
        n = self._settings.webhook_concurrency
        limits = httpx.Limits(max_connections=n, max_keepalive_connections=min(n, 64))
        async with httpx.AsyncClient(
            follow_redirects=False,
            trust_env=False,  # no proxy or .netrc credentials from the environment on the way to a receiver
            cookies=CookieJar(policy=DefaultCookiePolicy(allowed_domains=[])),  # keep no receiver's cookies
            timeout=self._settings.webhook_timeout_seconds,
            headers={"User-Agent": USER_AGENT},
            # Every connection resolves the host, checks each address against the outbound policy and connects to a
            # checked one, so a receiver's name that later resolves inward (DNS rebinding) is still refused.
            transport=self._transport or GuardedTransport(self._settings.outbound(), limits=limits),
        ) as client:
            yield client

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until ``stop`` is set; then let requests in flight finish (up to the timeout) and let go."""
        async with self._client() as http:
            self._shared = Shared(
                redis=self._redis, keys=self._keys, settings=self._settings, http=http, leases=self._leases,
                committer=Committer(self._redis), stopping=self._stopping, wake=self._wake_event, clock=self._clock,
            )  # fmt: skip
            next_scan = next_renew = 0.0
            while not stop.is_set():
                try:
                    await self._reap()
                    now = time.monotonic()
                    if now >= next_scan:
                        next_scan = now + SCAN_SECONDS
                        await self._scan()
                    if now >= next_renew:
                        next_renew = now + self._settings.webhook_lease_seconds / 3
                        await self._renew()
                    await self._watch(stop)
                except Exception:
                    log.exception("webhook dispatcher error")
                    await pause(stop, 1.0)
            await self._shutdown()

    def replace_clients(self, clients: ClientsConfig) -> None:
        """Take a reloaded clients file's owner scopes: a scope taken from an owner stops the events it disclosed
        from the next event each running delivery looks at (and a scope given back brings them back)."""
        self._owners = owner_scopes(clients)
        for delivery in self._deliveries.values():
            delivery.scopes = self.scopes(delivery.sub)

    def scopes(self, sub: Subscription) -> frozenset[str]:
        """Return the scopes a subscription's events are disclosed under: its owner's, then and now."""
        return sub.scopes & self._owners.get((sub.tenant, sub.owner), frozenset())

    # ---- leases and tasks -------------------------------------------------------------------------------

    async def _scan(self) -> None:
        """Take the leases of free subscriptions (up to the concurrency) and start delivering them."""
        listed = set(await self._subs.everyone())
        for key, task in self._tasks.items():
            if key not in listed:
                task.cancel()  # deleted
        now = time.monotonic()
        free = [k for k in listed if k not in self._tasks and self._cooldown.get(k, 0.0) <= now]
        random.shuffle(free)  # replicas short of room should not all want the same ones
        free = free[: max(self._settings.webhook_concurrency - len(self._tasks), 0)]
        if not free:
            return
        for (tenant, sid), taken in zip(free, await self._leases.take(free), strict=True):
            if taken:
                await self._start(tenant, sid)

    async def _start(self, tenant: str, sid: str) -> None:
        sub = await self._subs.find(tenant, sid)
        if sub is None or sub.paused:
            if sub is not None:
                self._cooldown[(tenant, sid)] = time.monotonic() + PAUSED_LOOK_SECONDS
            await self._leases.release(tenant, sid)
            return
        if refusal := url_refusal(sub.url, development=self._settings.development):
            # Registered under other settings (plain http in development mode): not delivered by this worker.
            log.warning("webhook url refused", extra={"subscription": sid, "reason": refusal[1]})
            self._cooldown[(tenant, sid)] = time.monotonic() + 60.0
            await self._leases.release(tenant, sid)
            return
        assert self._shared is not None
        delivery = self._deliveries[(tenant, sid)] = SubscriptionDelivery(self._shared, sub, self.scopes(sub))
        self._tasks[(tenant, sid)] = asyncio.create_task(self._guard(delivery), name=f"webhook-{sid}")

    async def _guard(self, delivery: SubscriptionDelivery) -> None:
        sub = delivery.sub
        try:
            await delivery.run()
        except PlanConflict:
            pass  # the lease was lost, or the subscription deleted, between two steps
        except Exception:
            log.exception("webhook delivery error", extra={"subscription": sub.id})
            self._cooldown[(sub.tenant, sub.id)] = time.monotonic() + 1.0

    async def _renew(self) -> None:
        """Extend every lease held; stop the tasks whose lease was lost or whose subscription is gone."""
        held = list(self._tasks)
        if held:
            for key, kept in zip(held, await self._leases.renew(held), strict=True):
                if not kept:
                    self._tasks[key].cancel()

    async def _reap(self) -> None:
        for key, task in list(self._tasks.items()):
            if task.done():
                del self._tasks[key]
                self._deliveries.pop(key, None)
                await self._leases.release(*key)

    async def _shutdown(self) -> None:
        self._stopping.set()
        for event in self._wake.values():
            event.set()
        tasks = list(self._tasks.values())
        if tasks:
            _, late = await asyncio.wait(tasks, timeout=self._settings.webhook_timeout_seconds + 1)
            for task in late:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for tenant, sid in list(self._tasks):
            try:
                await self._leases.release(tenant, sid)
            except Exception:
                break  # Redis gone: the leases expire on their own
        self._tasks.clear()
        self._deliveries.clear()

    # ---- wake-ups -------------------------------------------------------------------------------------

    def _wake_event(self, tenant: str) -> asyncio.Event:
        return self._wake.setdefault(tenant, asyncio.Event())

    async def _watch(self, stop: asyncio.Event) -> None:
        """Block on the feeds of the tenants delivered here, and wake their tasks when one grows."""
        tenants = {tenant for tenant, _ in self._tasks}
        for gone in set(self._tails) - tenants:
            del self._tails[gone]
        if not tenants:
            await pause(stop, self._settings.worker_block_ms / 1000)
            return
        for tenant in tenants - set(self._tails):
            tail: Any = await self._redis.xrevrange(self._keys.feed(tenant), count=1)
            self._tails[tenant] = text(tail[0][0]) if tail else "0-0"
        streams: Any = {self._keys.feed(t): self._tails[t] for t in sorted(tenants)}
        reply = await read_streams(self._redis, streams, count=1, block_ms=self._settings.worker_block_ms)
        grown = [tenant_of(text(stream)) for stream, _ in reply]
        if not grown:
            return
        pipe = self._redis.pipeline(transaction=False)
        for tenant in grown:
            pipe.xrevrange(self._keys.feed(tenant), count=1)
        for tenant, tail in zip(grown, await pipe.execute(), strict=True):
            if tail:
                self._tails[tenant] = text(tail[0][0])
            if event := self._wake.pop(tenant, None):
                event.set()
