"""Shared fixtures: a real Redis (REDIS_URL when set, and always the embedded server), a private key prefix per
test, and the app driven through httpx."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import hypothesis
import pytest
from redis import Redis as SyncRedis

from gateway.app import create_app
from gateway.clock import Clock
from gateway.embedded import EmbeddedRedis
from gateway.services import Services
from gateway.settings import ClientsConfig, Settings
from gateway.work.inbound import known_tenants
from tests.support import ShiftedClock, until

# Property tests: "dev" by default; CI (.ci/run) sets HYPOTHESIS_PROFILE=ci: no per-example deadline on a loaded
# machine, and a failing example printed so that it can be reproduced.
hypothesis.settings.register_profile("dev", max_examples=50)
hypothesis.settings.register_profile(
    "ci", max_examples=100, deadline=None, print_blob=True, suppress_health_check=[hypothesis.HealthCheck.too_slow]
)
hypothesis.settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

EHR_A = "ehr-token-tenant-a-0123456789"
PLATFORM_A = "platform-token-tenant-a-0123456789"
EHR_B = "ehr-token-tenant-b-0123456789"
PLATFORM_B = "platform-token-tenant-b-0123456789"
PLATFORM_A_BASIC = "platform-basic-token-tenant-a-0123456789"  # no "sensitive" scope
CORPUS = Path(os.environ.get("GATEWAY_CORPUS_DIR", Path(__file__).resolve().parents[1] / ".." / "shared" / "corpus"))


def corpus_dir() -> Path:
    """Return the corpus folder, skipping the test with a reason when it is absent."""
    if not CORPUS.is_dir():
        pytest.skip(f"the FHIR corpus is not at {CORPUS} (set GATEWAY_CORPUS_DIR)")
    return CORPUS


def _backends() -> list[str]:
    return ["embedded", "external"] if os.environ.get("REDIS_URL") else ["embedded"]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Run a test marked ``embedded_only`` once, on the embedded server: the Redis it is given makes no difference
    to what it checks (it brings its own server, or never reaches Redis with what it sends).

    Tests marked ``long`` go first: one of them keeps a worker for minutes, and started last (where its file's name
    puts it) it left the other worker idle for as long at the end of the run."""
    once = [i for i in items if i.get_closest_marker("embedded_only") and _backend_of(i) == "external"]
    if once:
        config.hook.pytest_deselected(items=once)
        dropped = {id(i) for i in once}
        items[:] = [i for i in items if id(i) not in dropped]
    items.sort(key=lambda item: item.get_closest_marker("long") is None)


def _backend_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get("redis_url") if callspec is not None else None


@pytest.fixture(scope="session")
def embedded_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with EmbeddedRedis(tmp_path_factory.mktemp("redis")) as server:
        yield server.url


@pytest.fixture(scope="session", params=_backends())
def redis_url(request: pytest.FixtureRequest) -> str:
    """Yield a Redis URL: the embedded server, and also REDIS_URL's server when it is set."""
    if request.param == "external":
        return os.environ["REDIS_URL"]
    url: str = request.getfixturevalue("embedded_redis")
    return url


@pytest.fixture
def key_prefix(redis_url: str) -> Iterator[str]:
    """Yield a key prefix no other test uses, and delete its keys afterwards."""
    prefix = f"gwtest-{uuid.uuid4().hex[:10]}"
    yield prefix
    client = SyncRedis.from_url(redis_url)
    batch: list[bytes] = []
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        batch.append(key)
        if len(batch) >= 1000:
            client.unlink(*batch)
            batch.clear()
    if batch:
        client.unlink(*batch)
    client.close()


CLIENTS = {
    "clients": [
        {"token": EHR_A, "tenant": "clinic-a", "role": "ehr"},
        {"token": PLATFORM_A, "tenant": "clinic-a", "role": "platform", "scopes": ["sensitive"]},
        {"token": PLATFORM_A_BASIC, "tenant": "clinic-a", "role": "platform"},
        {"token": EHR_B, "tenant": "clinic-b", "role": "ehr"},
        {"token": PLATFORM_B, "tenant": "clinic-b", "role": "platform"},
    ],
    "tenants": {"clinic-a": {"vendor": "generic", "timezone": "America/New_York"}},
}


@pytest.fixture
def settings(redis_url: str, key_prefix: str) -> Settings:
    return Settings(
        redis_url=redis_url,
        key_prefix=key_prefix,
        claim_idle_seconds=1.0,
        retry_base_seconds=0.05,
        retry_max_seconds=0.2,
        worker_block_ms=50,
    )


@pytest.fixture
def clients() -> ClientsConfig:
    return ClientsConfig.model_validate(CLIENTS)


class Gateway:
    """The app under test, with a client per role and tenant."""

    def __init__(self, client: httpx.AsyncClient, app: Any) -> None:
        self.http = client
        self.app = app

    def headers(self, token: str, **extra: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json", **extra}

    async def ehr(self, method: str, path: str, token: str = EHR_A, **kwargs: Any) -> httpx.Response:
        headers = self.headers(token, **kwargs.pop("headers", {}))
        return await self.http.request(method, f"/fhir/R4{path}", headers=headers, **kwargs)

    async def platform(self, path: str, token: str = PLATFORM_A, **kwargs: Any) -> httpx.Response:
        return await self.http.get(f"/platform/v1{path}", headers=self.headers(token), **kwargs)

    @property
    def services(self) -> Services:
        services: Services = self.app.state.services
        return services

    async def backlog(self) -> int:
        """Return the inbound jobs not yet done, over every tenant."""
        services = self.services
        tenants = await known_tenants(services.redis, services.keys)
        return sum([await lane.backlog(t) for lane in (services.inbound, services.risk_inbound) for t in tenants])

    async def drain(self) -> None:
        """Let the in-process worker finish everything queued."""
        await until(lambda: self._drained(), "the worker to drain the queue")

    async def _drained(self) -> bool:
        return await self.backlog() == 0


@asynccontextmanager
async def running(
    settings: Settings, clients: ClientsConfig, *, with_worker: bool, clock: Clock | None = None
) -> AsyncIterator[Gateway]:
    """Run the app's lifespan and drive it over httpx's ASGI transport."""
    services = Services.build(settings, clients, clock=clock) if clock is not None else None
    app = create_app(settings, clients, with_worker=with_worker, services=services)
    transport = httpx.ASGITransport(app=app)
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(transport=transport, base_url="http://gateway.test") as client,
    ):
        yield Gateway(client, app)
    if services is not None:
        await services.aclose()


@pytest.fixture
def clock() -> ShiftedClock:
    """Yield the clock the ``gateway`` fixture's services read; a test moves it on instead of sleeping."""
    return ShiftedClock()


@pytest.fixture
async def gateway(settings: Settings, clients: ClientsConfig, clock: ShiftedClock) -> AsyncIterator[Gateway]:
    """Yield the app with an in-process worker."""
    async with running(settings, clients, with_worker=True, clock=clock) as gw:
        yield gw
