"""Per-client rate limits: a token bucket per client in Redis, 429 with Retry-After, refilled as time passes."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.metrics import RATE_LIMITED
from gateway.settings import ClientsConfig, Settings
from tests.conftest import EHR_A, EHR_B, PLATFORM_A, Gateway, running
from tests.support import ShiftedClock

EHR_A2 = "second-ehr-token-tenant-a-0123456789"
FAST = "fast-ehr-token-tenant-a-0123456789"


@pytest.fixture
def clients() -> ClientsConfig:
    return ClientsConfig.model_validate(
        {
            "clients": [
                {"token": EHR_A, "tenant": "clinic-a", "role": "ehr", "name": "epic", "rate": 0.5, "burst": 3},
                {"token": EHR_A2, "tenant": "clinic-a", "role": "ehr", "name": "lab", "rate": 0.5, "burst": 3},
                {"token": FAST, "tenant": "clinic-a", "role": "ehr", "name": "bulk", "rate": 1000, "burst": 1000},
                {"token": PLATFORM_A, "tenant": "clinic-a", "role": "platform", "name": "app"},
                {"token": EHR_B, "tenant": "clinic-b", "role": "ehr", "name": "other"},
            ],
            "tenants": {"clinic-a": {"rate": 1, "burst": 2}},
        }
    )


@pytest.fixture
async def gw(settings: Settings, clients: ClientsConfig, clock: ShiftedClock) -> AsyncIterator[Gateway]:
    async with running(settings, clients, with_worker=False, clock=clock) as gateway:
        yield gateway


async def statuses(gw: Gateway, n: int, token: str = EHR_A) -> list[int]:
    return [(await gw.ehr("GET", "/Patient/none", token=token)).status_code for _ in range(n)]


async def test_a_burst_then_429_with_retry_after_and_an_outcome(gw: Gateway) -> None:
    before = RATE_LIMITED.labels("clinic-a", "epic")._value.get()
    assert await statuses(gw, 3) == [404, 404, 404]  # the burst
    refused = await gw.ehr("GET", "/Patient/none")
    assert refused.status_code == 429
    # 0.5 tokens a second: the next one is 2 s away (less the few ms the requests took, rounded up).
    assert refused.headers["retry-after"] == "2"
    outcome = refused.json()
    assert outcome["resourceType"] == "OperationOutcome" and outcome["issue"][0]["code"] == "throttled"
    assert RATE_LIMITED.labels("clinic-a", "epic")._value.get() == before + 1
    # The refusal is audited.
    await gw.services.audit.flush()
    entries = (await gw.services.audit.entries("clinic-a", client="epic")).entries
    assert [e["outcome"] for e in entries] == [404, 404, 404, 429]


async def test_the_bucket_refills_as_time_passes(gw: Gateway, clock: ShiftedClock) -> None:
    assert await statuses(gw, 4) == [404, 404, 404, 429]
    clock.advance(2.0)  # one token at 0.5/s
    assert await statuses(gw, 2) == [404, 429]
    clock.advance(60.0)  # never more than the burst
    assert await statuses(gw, 4) == [404, 404, 404, 429]


async def test_clients_have_their_own_buckets(gw: Gateway) -> None:
    assert await statuses(gw, 4) == [404, 404, 404, 429]
    assert await statuses(gw, 3, EHR_A2) == [404, 404, 404]
    assert await statuses(gw, 20, FAST) == [404] * 20
    assert (await gw.ehr("GET", "/Patient/none", token=EHR_B)).status_code == 404  # no limit for clinic-b


async def test_a_client_without_a_rate_takes_its_tenants(gw: Gateway) -> None:
    answers = [(await gw.platform("/changes")).status_code for _ in range(3)]
    assert answers == [200, 200, 429]
    assert gw.services.limiter.limit("clinic-b", "other") is None


async def test_the_global_default_applies_when_neither_client_nor_tenant_sets_one(
    settings: Settings, clients: ClientsConfig, clock: ShiftedClock
) -> None:
    limited = settings.model_copy(update={"rate_limit_rate": 5.0})
    async with running(limited, clients, with_worker=False, clock=clock) as gateway:
        assert gateway.services.limiter.limit("clinic-b", "other") == (5.0, 5)
        assert await statuses(gateway, 6, EHR_B) == [404] * 5 + [429]
