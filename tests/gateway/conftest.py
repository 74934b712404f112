"""Fixtures shared by the gateway's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gateway.settings import ClientsConfig, Settings
from tests.conftest import Gateway, running


@pytest.fixture
async def edge(settings: Settings, clients: ClientsConfig) -> AsyncIterator[Gateway]:
    """The app without a worker: jobs stay queued until a test runs one."""
    async with running(settings, clients, with_worker=False) as gw:
        yield gw
