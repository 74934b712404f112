"""Fixtures shared by the gateway's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from gateway.settings import ClientsConfig, Settings
from tests.conftest import Gateway, running
from tests.support import RedisProcess, free_port


@pytest.fixture
async def edge(settings: Settings, clients: ClientsConfig) -> AsyncIterator[Gateway]:
    """The app without a worker: jobs stay queued until a test runs one."""
    async with running(settings, clients, with_worker=False) as gw:
        yield gw


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisProcess]:
    """A redis-server of the test's own on a loopback port: to freeze, kill or flush without touching others'."""
    server = RedisProcess(free_port(), tmp_path)
    yield server
    server.stop()
