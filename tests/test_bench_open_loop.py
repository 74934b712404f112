"""The benchmark's open loop (``bench/gateway_bench.py --open-loop``) keeps its send schedule and counts latency
from the scheduled send time, on a virtual clock: no processes, no network, no waiting."""

from __future__ import annotations

import asyncio
import socketserver
import threading
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

import pytest

from tests.support import bench_script


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return bench_script("gateway_bench")


class VirtualClock:
    """A clock that moves only when the code under test sleeps, or when a fake request says it is busy."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        # Like asyncio: tasks already ready run first (at the current time); a loop that was busy past the
        # deadline wakes late, never early.
        deadline = self.now + delay
        await asyncio.sleep(0)
        self.now = max(self.now, deadline)


async def test_sends_keep_the_schedule_while_no_answer_has_come(bench: ModuleType) -> None:
    clock = VirtualClock()
    every_send_started = asyncio.Event()
    count = 5

    async def send(index: int, mark_started: Callable[[], None]) -> tuple[bool, int, int, str]:
        mark_started()
        if index == count - 1:
            every_send_started.set()
        await every_send_started.wait()  # no answer comes until the last Bundle has been sent
        return True, 20, 19, ""

    # A closed loop would wait forever here; the timeout only turns that into a failure.
    schedule = bench.run_schedule(send, 10.0, count, clock=clock, sleep=clock.sleep, lead=0.0)
    sends = await asyncio.wait_for(schedule, timeout=30)

    assert [round(s.started, 6) for s in sends] == [0.0, 0.1, 0.2, 0.3, 0.4]  # none waited for an answer
    result = bench.OpenLoopResult(size=20)
    bench.summarize_open_loop(result, sends, warmup=0)
    # Every answer came at 0.4 s: the first Bundle, due at 0, waited 400 ms.
    assert result.max_ms == pytest.approx(400)
    assert result.p50_ms == pytest.approx(200)
    assert (result.late_sends, result.lateness_max_ms) == (0, 0)
    assert result.max_outstanding == count - 1  # the last one was answered the moment it was due


async def test_a_late_sender_shows_as_lateness_and_in_the_latency(bench: ModuleType) -> None:
    clock = VirtualClock()

    async def send(index: int, mark_started: Callable[[], None]) -> tuple[bool, int, int, str]:
        mark_started()
        if index == 1:
            clock.now += 0.25  # the client is busy for 250 ms (e.g. starved of CPU): sends 2 and 3 fall behind
        return True, 20, 19, ""

    sends = await bench.run_schedule(send, 10.0, 5, clock=clock, sleep=clock.sleep, lead=0.0)
    result = bench.OpenLoopResult(size=20)
    bench.summarize_open_loop(result, sends, warmup=0)

    assert len(sends) == 5  # a late send is sent, not skipped
    # Send 2 was due at 0.2 s, left at 0.35 s and was answered at once: 150 ms, not 0.
    assert sends[2].finished - sends[2].scheduled == pytest.approx(0.15)
    assert result.late_sends == 2  # sends 2 and 3
    assert result.lateness_max_ms == pytest.approx(150)
    # Latencies from the schedule: 0, 250, 150, 50, 0 ms. Timed from the actual send they would be 0, 250, 0, 0, 0.
    assert result.p50_ms == pytest.approx(50)
    assert result.service_p50_ms == pytest.approx(0)


async def test_the_warm_up_is_sent_and_drained_but_not_measured(bench: ModuleType) -> None:
    clock = VirtualClock()
    window_opened_at: list[float] = []
    last_sent = asyncio.Event()

    async def send(index: int, mark_started: Callable[[], None]) -> tuple[bool, int, int, str]:
        mark_started()
        if index == 0:
            await last_sent.wait()  # the warm-up's first answer comes last, 500 ms after it was due
        if index == 5:
            last_sent.set()
        if index == 4:
            return False, 0, 0, "HTTP 500"
        return True, 20, 19, ""

    async def window_start() -> None:
        window_opened_at.append(clock())

    schedule = bench.run_schedule(
        send, 10.0, 6, warmup=2, at_window_start=window_start, clock=clock, sleep=clock.sleep, lead=0.0
    )
    sends = await asyncio.wait_for(schedule, timeout=30)
    result = bench.OpenLoopResult(size=20)
    bench.summarize_open_loop(result, sends, warmup=2)

    assert window_opened_at == [pytest.approx(0.2)]  # when send 2, the first measured one, was due
    assert (result.warmup_sends, result.scheduled, result.bundles, result.failed) == (2, 4, 3, 1)
    assert result.errors == ["HTTP 500"]
    assert sends[0].finished - sends[0].scheduled == pytest.approx(0.5)
    assert result.max_ms == pytest.approx(0)  # the warm-up's slow answer is not in the figures
    assert (result.appointments, result.patients) == (5 * 19, 5)  # but every accepted Bundle is drained


@pytest.mark.parametrize(
    ("text", "parsed"), [("half", ("fraction", 0.5)), ("0.8x", ("fraction", 0.8)), ("150", ("fixed", 150.0))]
)
def test_open_loop_rate_argument(bench: ModuleType, text: str, parsed: tuple[str, float]) -> None:
    args = bench.parse_args(["--open-loop", text])
    assert args.open_loop == parsed
    closed = bench.AcceptanceResult(size=20, concurrency=8, bundles_per_s=130.0)
    rate, _ = bench.open_loop_rate(args.open_loop, closed)
    assert rate == pytest.approx(65.0 if text == "half" else 104.0 if text == "0.8x" else 150.0)


async def _serve(answers: list[bytes], seen: list[bytes], *, close_after: int | None = None) -> asyncio.Server:
    """A server on a free loopback port that reads each request whole and writes the next canned answer, in two
    writes as uvicorn does (headers, then body)."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        served = 0
        while answers:
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(
                next(line.split(b":")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length"))
            )
            seen.append(head + await reader.readexactly(length))
            answer = answers.pop(0)
            split = answer.index(b"\r\n\r\n") + 4
            writer.write(answer[:split])
            await writer.drain()
            writer.write(answer[split:])
            await writer.drain()
            served += 1
            if close_after is not None and served == close_after:
                break
        writer.close()

    return await asyncio.start_server(handle, "127.0.0.1", 0)


def _answer(status: int, body: bytes, *extra: bytes) -> bytes:
    head = [f"HTTP/1.1 {status} X".encode(), b"content-type: application/fhir+json", *extra]
    return b"\r\n".join([*head, f"content-length: {len(body)}".encode(), b"", body])


async def test_the_raw_client_sends_the_bytes_and_reads_each_answer_whole(bench: ModuleType) -> None:
    ok = b'{"entry":[{"response":{"status":"201 Created"}},{"response":{"status":"200 OK"}}]}'
    answers, seen = [_answer(200, ok), _answer(200, ok), _answer(503, b'{"resourceType":"OperationOutcome"}')], []
    server = await _serve(answers, seen)
    port = server.sockets[0].getsockname()[1]
    client = bench.RawClient(f"http://127.0.0.1:{port}", {"Authorization": "Bearer t"}, 4, timeout=10)
    started: list[int] = []
    try:
        replies = [
            await client.send(client.request("/fhir/R4", b'{"n":%d}' % i), lambda: started.append(1)) for i in range(3)
        ]
    finally:
        client.close()
        server.close()
    assert [status for status, _ in replies] == [200, 200, 503]
    assert bench.check_answer(*replies[0], 2) == (True, 2, "")
    assert bench.check_answer(*replies[0], 3)[0] is False  # an entry missing from the answer
    assert bench.check_answer(*replies[2], 2)[:2] == (False, 0)
    assert len(started) == 3
    assert len(client._all) == 1  # one keep-alive connection served the three in turn
    assert seen[1].startswith(b"POST /fhir/R4 HTTP/1.1\r\n") and seen[1].endswith(b'\r\n\r\n{"n":1}')
    assert b"Authorization: Bearer t\r\n" in seen[1] and b"Content-Length: 7\r\n" in seen[1]


async def test_the_raw_client_reconnects_after_the_server_closes_a_connection(bench: ModuleType) -> None:
    ok = b'{"entry":[]}'
    answers, seen = [_answer(200, ok, b"connection: close"), _answer(200, ok)], []
    server = await _serve(answers, seen, close_after=1)
    port = server.sockets[0].getsockname()[1]
    client = bench.RawClient(f"http://127.0.0.1:{port}", {}, 4, timeout=10)
    try:
        first = await client.send(client.request("/", b"{}"), lambda: None)
        second = await client.send(client.request("/", b"{}"), lambda: None)
    finally:
        client.close()
        server.close()
    assert (first, second) == ((200, ok), (200, ok))
    assert len(client._all) == 2


async def test_the_closed_loop_counts_what_the_raw_client_got_answered(bench: ModuleType) -> None:
    """The closed loop's default sender reads every answer: refused Bundles and a dropped server count as failed."""
    ok = b'{"entry":[{"response":{"status":"201 Created"}},{"response":{"status":"200 OK"}}]}'
    answers, seen = [_answer(200, ok), _answer(422, b'{"resourceType":"OperationOutcome"}')], []
    server = await _serve(answers, seen)
    port = server.sockets[0].getsockname()[1]
    client = bench.RawClient(f"http://127.0.0.1:{port}", {}, 1, timeout=10)
    post = bench.raw_poster(client)
    try:
        accepted = await post(b'{"a":1}', 2)
        refused = await post(b'{"a":2}', 2)
        server.close()
        await server.wait_closed()
        unreachable = await post(b'{"a":3}', 2)  # the server closed the kept-alive connection and stopped listening
    finally:
        client.close()
    assert accepted == (True, 2, "")
    assert refused[:2] == (False, 0) and refused[2].startswith("HTTP 422")
    assert unreachable[:2] == (False, 0) and unreachable[2]
    assert [request.rpartition(b"\r\n\r\n")[2] for request in seen] == [b'{"a":1}', b'{"a":2}']


def _sends(bench: ModuleType, latencies_ms: list[float], rate: float = 100.0) -> list[Any]:
    """Sends due every 1/rate s, each answered ``latencies_ms[i]`` after it was due."""
    return [
        bench.Send(index=i, scheduled=i / rate, task_started=i / rate, started=i / rate,
                   finished=i / rate + ms / 1000, ok=True, resources=20, appointments=19)
        for i, ms in enumerate(latencies_ms)
    ]  # fmt: skip


def test_one_stall_reads_as_one_spell_and_a_slow_answer_now_and_then_as_many(bench: ModuleType) -> None:
    # 10 s at 100 Bundles/s, answered in 5 ms, but for a 1 s stall at 4 s (each answer then waits for its end)
    # and one slow answer at 1 s and one at 8 s.
    latencies = [5.0] * 1000
    for i in range(400, 500):
        latencies[i] = 3 + (500 - i) * 10  # due at 4.00 s: answered at 5.003 s
    latencies[100] = latencies[800] = 40.0
    result = bench.OpenLoopResult(size=20)

    bench.summarize_open_loop(result, _sends(bench, latencies), warmup=0)

    assert (result.slow_sends, result.spells) == (98 + 2, 3)  # the stall's last two answers took 13 and 23 ms
    stall = max(result.slow_spells, key=lambda sp: sp["requests"])
    assert stall["at_s"] == pytest.approx(4.0)
    assert stall["seconds"] == pytest.approx(0.97)
    assert stall["requests"] == 98
    assert stall["worst_ms"] == pytest.approx(1003)
    assert [sp["at_s"] for sp in result.slow_spells] == pytest.approx([1.0, 4.0, 8.0])  # in time order
    note = bench.spell_note(result)
    assert "100 answers over 25 ms, in 3 spell(s)" in note
    assert note.index("at 4.0 s, 1.0 s long, 98 answers, worst 1,003 ms") < note.index("at 1.0 s")


def test_a_quiet_open_loop_has_no_spells_and_no_note(bench: ModuleType) -> None:
    result = bench.OpenLoopResult(size=20)
    bench.summarize_open_loop(result, _sends(bench, [5.0] * 200), warmup=0)

    assert (result.slow_sends, result.spells, result.slow_spells) == (0, 0, [])
    assert bench.spell_note(result) is None


def _closing_server(answer: bytes, idle_close_s: float) -> tuple[socketserver.ThreadingTCPServer, int]:
    """A server in its own threads that answers each request on a connection and closes the connection once it
    has been idle ``idle_close_s`` (uvicorn's keep-alive timeout, shortened)."""

    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            sock = self.request
            sock.settimeout(idle_close_s)
            buffer = b""
            while True:
                try:
                    data = sock.recv(65536)
                except TimeoutError:
                    return  # idle too long: closed (the handler's socket is closed on return)
                if not data:
                    return
                buffer += data
                head, sep, rest = buffer.partition(b"\r\n\r\n")
                if not sep:
                    continue
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length")))  # fmt: skip
                if len(rest) >= length:
                    buffer = rest[length:]
                    sock.sendall(answer)

    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, server.server_address[1]


async def test_the_raw_client_does_not_reuse_a_connection_the_api_closed_while_its_loop_was_held(
    bench: ModuleType,
) -> None:
    """Between windows the benchmark waits for Redis's AOF rewrite, holding its event loop for seconds. The API
    closes a keep-alive connection idle for 5 s, and a close the client had not read yet made the next window's
    first request on that connection fail ("the API closed the connection")."""
    ok = b'{"entry":[]}'
    server, port = _closing_server(_answer(200, ok), idle_close_s=0.2)
    client = bench.RawClient(f"http://127.0.0.1:{port}", {}, 1, timeout=10, keepalive_expiry=0.1)
    try:
        first = await client.send(client.request("/", b"{}"), lambda: None)
        time.sleep(0.5)  # noqa: ASYNC251 (the loop held, as by the rewrite's wait, while the server closes)
        second = await client.send(client.request("/", b"{}"), lambda: None)
    finally:
        client.close()
        server.shutdown()
        server.server_close()
    assert (first, second) == ((200, ok), (200, ok))
    assert len(client._all) == 2  # the second request went on a new connection
