"""Requests are served on the event loop, without a hand-off to a thread.

FastAPI runs a route's plain (``def``) dependency or handler in a worker thread, for every request: a queue put,
a thread wake-up and the GIL passed back and forth, which cost the API a few percent of its CPU on every Bundle
(py-spy on ``bench/gateway_bench.py``) while the function itself only returned an attribute.
"""

from __future__ import annotations

from typing import Any

import anyio.to_thread
import pytest

from tests.conftest import PLATFORM_A, Gateway
from tests.gateway.fixtures import appointment, post_entry, transaction


async def test_fhir_and_platform_requests_never_wait_for_a_thread(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    handed_off: list[str] = []
    run_sync = anyio.to_thread.run_sync

    async def counting(func: Any, *args: Any, **kwargs: Any) -> Any:
        handed_off.append(getattr(func, "__qualname__", repr(func)))
        return await run_sync(func, *args, **kwargs)

    monkeypatch.setattr(anyio.to_thread, "run_sync", counting)
    answers = [
        await gateway.ehr("POST", "", json=transaction(post_entry(appointment()))),
        await gateway.ehr("PUT", "/Appointment/appt-9", json=appointment(id="appt-9")),
        await gateway.ehr("GET", "/Appointment/appt-9"),
        await gateway.ehr("GET", "/Appointment?_id=appt-9"),
        await gateway.platform("/changes"),
        await gateway.http.get("/platform/v1/writebacks/nope", headers=gateway.headers(PLATFORM_A)),
    ]
    assert [a.status_code for a in answers] == [200, 201, 200, 200, 200, 404]
    assert handed_off == []
