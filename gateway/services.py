"""The long-lived objects a request needs, built once in the app's lifespan."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from redis.asyncio import Redis

from gateway.auth import Authenticator
from gateway.platform.feed import Feed
from gateway.settings import ClientsConfig, Settings
from gateway.store.keys import Keyspace
from gateway.store.store import Store
from gateway.work.inbound import WorkQueue


@dataclass
class Services:
    """Everything shared by the routes of one app."""

    settings: Settings
    clients: ClientsConfig
    redis: Redis
    keys: Keyspace
    store: Store
    queue: WorkQueue
    feed: Feed
    auth: Authenticator

    @classmethod
    def build(cls, settings: Settings, clients: ClientsConfig, redis: Redis) -> Services:
        keys = Keyspace(settings.key_prefix)
        return cls(
            settings=settings,
            clients=clients,
            redis=redis,
            keys=keys,
            store=Store(
                redis,
                keys,
                max_backlog=settings.max_backlog,
                dedupe_seconds=settings.dedupe_window_seconds,
                retries=settings.conditional_retries,
                wait_replicas=settings.wait_replicas,
                wait_timeout_ms=settings.wait_timeout_ms,
            ),
            queue=WorkQueue(
                redis,
                keys,
                max_attempts=settings.max_attempts,
                retry_base_seconds=settings.retry_base_seconds,
                retry_max_seconds=settings.retry_max_seconds,
            ),
            feed=Feed(redis, keys),
            auth=Authenticator(clients),
        )


async def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(_services)]
