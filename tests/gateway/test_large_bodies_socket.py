"""Large and stalled bodies over a real socket (issue #12, item 7): the gateway served by uvicorn on a loopback
port, as in production, so the body read timeout and the event loop are those of a real server."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import uvicorn

from gateway.app import create_app
from gateway.settings import ClientsConfig, Settings
from tests.conftest import EHR_A
from tests.gateway.test_large_bodies import big_patient
from tests.support import free_port

# The Redis given makes no difference here (see tests/conftest.py): run once.
pytestmark = pytest.mark.embedded_only


@contextlib.asynccontextmanager
async def served(settings: Settings, clients: ClientsConfig) -> AsyncIterator[str]:
    """Serve the app with uvicorn on a loopback port, in a thread with its own event loop (as a server process
    has: the test's client never shares the server's loop); yield its base URL."""
    port = free_port()
    app = create_app(settings, clients, with_worker=False)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    async with asyncio.timeout(30):
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped before serving"
            await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.to_thread(thread.join, 30)


def _headers() -> dict[str, str]:
    return {"Authorization": f"Bearer {EHR_A}", "Content-Type": "application/fhir+json"}


@pytest.fixture
def short_read(settings: Settings) -> Settings:
    return settings.model_copy(update={"body_read_timeout_seconds": 0.5})


async def test_a_stalled_body_is_answered_408_and_the_connection_closed(
    short_read: Settings, clients: ClientsConfig
) -> None:
    async with served(short_read, clients) as base:
        port = int(base.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = "".join(f"{k}: {v}\r\n" for k, v in _headers().items())
        writer.write(
            f"POST /fhir/R4/Patient HTTP/1.1\r\nHost: gateway.test\r\n{head}Content-Length: 1000\r\n\r\n".encode()
            + b'{"resourceType": "Patient", '  # and the other 972 bytes never come
        )
        await writer.drain()
        async with asyncio.timeout(20):
            answer = await reader.read(-1)  # to the end: the server closes the connection
        writer.close()
    status_line, _, rest = answer.partition(b"\r\n")
    assert status_line.split()[1] in (b"408", b"400"), answer[:300]
    assert b'"timeout"' in rest or status_line.split()[1] == b"400"


async def test_health_answers_over_a_socket_while_three_15_mb_bodies_are_processed(
    settings: Settings, clients: ClientsConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    import gateway.fhir.requests as requests_module
    import gateway.web.body as body_module

    parsing = threading.Event()
    parse = body_module.parse_json

    def noted(raw: bytes, **limits: Any) -> Any:
        if len(raw) > 1_000_000:
            parsing.set()  # a large body has been read whole and its parse begins (in the server's thread)
        return parse(raw, **limits)

    monkeypatch.setattr(requests_module, "parse_json", noted)
    bodies = [big_patient(f"Large{i}", contacts=40_000) for i in range(3)]
    assert all(14_000_000 < len(b) < settings.max_body_bytes for b in bodies), [len(b) for b in bodies]
    async with served(settings, clients) as base, httpx.AsyncClient(base_url=base, timeout=120) as http:
        big = [asyncio.create_task(http.post("/fhir/R4/Patient", content=body, headers=_headers())) for body in bodies]
        assert await asyncio.to_thread(parsing.wait, 60), "no large body was parsed"
        # Health checks one after another, as a load balancer would, until the first large body is answered.
        answered: list[int] = []
        async with httpx.AsyncClient(base_url=base, timeout=120) as probe:
            while not any(task.done() for task in big) and len(answered) < 20:
                answered.append((await probe.get("/healthz")).status_code)
        statuses = [r.status_code for r in await asyncio.gather(*big)]
    # Twenty health checks in a row were answered while every large body was still being worked on: the event
    # loop never waited for a parse or a validation (inline, at most one answer would slip in between bodies).
    assert answered == [200] * 20, answered
    assert statuses == [201, 201, 201]


async def test_a_body_over_the_limit_is_refused_413_before_it_is_sent(
    settings: Settings, clients: ClientsConfig
) -> None:
    async with served(settings, clients) as base:
        port = int(base.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = "".join(f"{k}: {v}\r\n" for k, v in _headers().items())
        declared = settings.max_body_bytes + 1
        writer.write(
            f"POST /fhir/R4/Patient HTTP/1.1\r\nHost: gateway.test\r\n{head}Content-Length: {declared}\r\n\r\n".encode()
        )  # and not one byte of the body: the answer must come from the headers alone
        await writer.drain()
        async with asyncio.timeout(20):
            status_line = await reader.readline()
        writer.close()
    assert status_line.split()[1] == b"413", status_line
