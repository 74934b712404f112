"""The composition root: every long-lived object, built once, for the app, the worker and each CLI command.

``Services.build(settings)`` opens nothing: the Redis client connects on first use and the EHR clients' pools
open on first request, so building is cheap and the same for every process kind. ``aclose`` closes them.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
from redis.asyncio import Redis

from connectors import Connectors, Delivery, GuardedTransport, Poller, RedisObserver, Refusal
from connectors.retry import backoff
from gateway.access import AuditTrail, RateLimiter
from gateway.auth import Authenticator
from gateway.clock import Clock, system_clock
from gateway.fhir import bundle
from gateway.fhir.edge import Edge
from gateway.identity.keysets import KeySets
from gateway.identity.reload import ClientsReloader
from gateway.identity.tokens import AccessTokens
from gateway.platform.feed import Feed
from gateway.platform.risk import RiskFlags
from gateway.settings import ClientsConfig, Settings
from gateway.store import Keyspace, Store, connect, rejections
from gateway.store.keys import RISK_LANE
from gateway.webhooks.dispatch import Dispatcher
from gateway.webhooks.subscriptions import Subscriptions
from gateway.work.inbound import InboundQueue, inbound_queue
from gateway.work.records import RecordWriter
from gateway.work.worker import Worker, consumer_name
from gateway.writebacks import builders
from gateway.writebacks.queue import OutboundQueue
from gateway.writebacks.store import Writebacks


@dataclass
class Services:
    """Everything the gateway's processes share."""

    settings: Settings
    clients: ClientsConfig
    clock: Clock
    redis: Redis
    keys: Keyspace
    auth: Authenticator
    tokens: AccessTokens
    keysets: KeySets
    store: Store
    edge: Edge
    inbound: InboundQueue
    risk_inbound: InboundQueue
    risks: RiskFlags
    outbound: OutboundQueue
    feed: Feed
    subscriptions: Subscriptions
    writebacks: Writebacks
    connectors: Connectors
    audit: AuditTrail
    limiter: RateLimiter
    # What else holds the clients file's settings (each worker's record writer and webhook dispatcher, the app's
    # published keys): called on each reload (``on_reload``).
    _reloaded: list[Callable[[ClientsConfig], None]] = field(default_factory=list, repr=False)

    @classmethod
    def build(
        cls,
        settings: Settings,
        clients: ClientsConfig | None = None,
        *,
        clock: Clock = system_clock,
        connector_options: dict[str, Any] | None = None,
    ) -> Services:
        """Build every service from the settings (and the clients file they name, unless ``clients`` is given)."""
        if not settings.redis_url:
            raise RuntimeError("REDIS_URL is not set (use 'fhir-gateway run' for an embedded Redis)")
        clients = clients if clients is not None else settings.load_clients()
        redis = connect(settings.redis_url, cluster=settings.redis_cluster, timeout=settings.redis_timeout_seconds)
        keys = Keyspace(settings.key_prefix)
        retry_wait = backoff(settings.retry_base_seconds, settings.retry_max_seconds)
        tokens = AccessTokens(redis, keys)
        store = Store(
            redis,
            keys,
            max_backlog=settings.max_backlog,
            dedupe_seconds=settings.dedupe_window_seconds,
            retries=settings.conditional_retries,
            wait_replicas=settings.wait_replicas,
            wait_timeout_ms=settings.wait_timeout_ms,
            clock=clock,
        )
        return cls(
            settings=settings,
            clients=clients,
            clock=clock,
            redis=redis,
            keys=keys,
            auth=Authenticator(clients, lookup=tokens.lookup),
            tokens=tokens,
            keysets=KeySets(
                cache_seconds=settings.jwks_cache_seconds, clock=clock, transport=GuardedTransport(settings.outbound())
            ),
            store=store,
            edge=Edge(store, settings, clients),
            inbound=inbound_queue(redis, keys, max_attempts=settings.max_attempts, wait=retry_wait, clock=clock),
            risk_inbound=inbound_queue(
                redis, keys, lane=RISK_LANE, max_attempts=settings.max_attempts, wait=retry_wait, clock=clock
            ),
            risks=RiskFlags(redis, keys, clock=clock),
            outbound=OutboundQueue(
                redis, keys, max_attempts=settings.writeback_max_attempts, wait=retry_wait, clock=clock
            ),
            feed=Feed(redis, keys, clock=clock),
            subscriptions=Subscriptions(redis, keys, clock=clock),
            writebacks=Writebacks(
                redis,
                keys,
                idempotency_seconds=int(settings.writeback_idempotency_days * 86_400),
                max_backlog=settings.max_backlog,
                wait_replicas=settings.wait_replicas,
                wait_timeout_ms=settings.wait_timeout_ms,
            ),
            # One EHR client (pool, breaker, rate limit) per tenant, shared by write-back delivery and the poller.
            connectors=Connectors(
                clients.connector_targets(),
                observer=lambda t: RedisObserver(redis, keys.connector_status(t)),
                clock=clock,
                **{"outbound": settings.outbound(), **(connector_options or {})},
            ),
            audit=AuditTrail(redis, keys, retention_days=settings.audit_retention_days, clock=clock),
            limiter=RateLimiter(redis, keys, clients, settings, clock=clock),
        )

    def apply_clients(self, clients: ClientsConfig) -> None:
        """Use a reloaded clients file: its clients at once; its tenants' validation, dedupe and mapping settings
        (vendor, timezone, local codes) and its platform clients' scopes for webhooks from the next request, job or
        event; its EHR blocks from the next write-back or poll (a changed block gets a new connector)."""
        self.clients = clients
        self.edge = dataclasses.replace(self.edge, clients=clients)
        self.auth.replace(clients)
        self.limiter.replace(clients)
        self.connectors.replace(clients.connector_targets())
        for apply in self._reloaded:
            apply(clients)

    def on_reload(self, apply: Callable[[ClientsConfig], None]) -> None:
        """Call ``apply`` with each reloaded clients file, once these services have taken it."""
        self._reloaded.append(apply)

    def clients_reloader(self, select: Callable[[ClientsConfig], ClientsConfig] | None = None) -> ClientsReloader:
        """Return what watches the clients file (on change and SIGHUP) and applies each good new version, through
        ``select`` when given (a poller limited to some tenants). Weak tokens are refused as at start: production
        processes never start with one (the CLI refuses them), so there a reload bringing one is refused too;
        development and embedding apps keep their rule."""
        assert self.settings.clients_file is not None
        return ClientsReloader(
            self.settings.clients_file,
            (lambda c: self.apply_clients(select(c))) if select else self.apply_clients,
            interval=self.settings.clients_reload_seconds,
            placeholders=self.settings.development or bool(self.clients.weak_clients()),
        )

    def worker(self, name: str | None = None, *, webhook_transport: httpx.AsyncBaseTransport | None = None) -> Worker:
        """Return a worker (inbound jobs) with its companions: webhook delivery and write-back delivery."""
        name = name or consumer_name()
        settings = self.settings
        dispatcher = Dispatcher(
            self.subscriptions, settings, self.clients, name=name, clock=self.clock, transport=webhook_transport
        )
        delivery = Delivery(
            self.outbound, self.connectors, consumer=name, check=builders.refusal,
            concurrency=settings.worker_concurrency, block_ms=settings.worker_block_ms,
            claim_idle_seconds=settings.claim_idle_seconds,
        )  # fmt: skip
        records = RecordWriter(self.redis, self.keys, self.store, self.clients, self.risks, clock=self.clock)
        self.on_reload(records.replace_clients)
        self.on_reload(dispatcher.replace_clients)
        configured = sorted(set(self.clients.tenants) | {c.tenant for c in self.clients.clients})
        return Worker(
            [self.inbound, self.risk_inbound], records, self.feed, self.risks, settings, tenants=configured,
            name=name, companions=[dispatcher, delivery],
        )  # fmt: skip

    def poller(self, name: str | None = None) -> Poller:
        """Return a poller whose pulled resources go through the push's accept path (``bundle.accept``)."""

        async def accept(tenant: str, resources: list[dict[str, Any]]) -> list[int | Refusal]:
            with rejections.tally() as refused:  # the console's validation-failures page counts pulled ones too
                statuses = await bundle.accept(self.edge, tenant, resources, from_ehr=True)
            await rejections.flush(self.redis, self.keys, tenant, refused, self.clock())
            return statuses

        return Poller(
            self.redis, self.keys, self.connectors, accept, name=name or socket.gethostname(),
            lease_seconds=self.settings.poll_lease_seconds,
        )  # fmt: skip

    async def aclose(self) -> None:
        """Write the audit entries still buffered, close the EHR clients, the key-set fetcher and the Redis client."""
        await self.audit.close()
        await self.connectors.aclose()
        await self.keysets.aclose()
        await self.redis.aclose()
