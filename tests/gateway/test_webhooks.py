"""Webhooks: subscriptions, signed deliveries to a real local HTTP server, retries, dead letters and replay."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from connectors.retry import parse_retry_after
from gateway import cli
from gateway.logs import JsonFormatter
from gateway.platform.feed import decode_cursor
from gateway.settings import ClientsConfig, Settings
from gateway.store import Keyspace
from gateway.store.connection import connect
from gateway.webhooks.dispatch import Dispatcher
from gateway.webhooks.subscriptions import Subscriptions
from tests.conftest import CLIENTS, EHR_A, PLATFORM_A, PLATFORM_A_BASIC, PLATFORM_B, Gateway, running
from tests.gateway.fixtures import appointment
from tests.support import WAIT_LIMIT, fake_dns, until

SECRET = "whsec-test-0123456789abcdef"
PSY = {"security": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}]}


# ---- the receiver: a real HTTP server on a loopback port ------------------------------------------------------


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes
    answered: bool = False

    @property
    def event(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data


class Receiver:
    """Record every POST; answer each path with a script of statuses, then its default; or hold it."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.scripts: dict[str, list[tuple[int, dict[str, str]]]] = {}
        self.defaults: dict[str, int] = {}
        self.held: set[str] = set()
        self.release = threading.Event()
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                got = Received(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
                with receiver._lock:
                    receiver.received.append(got)
                    script = receiver.scripts.get(self.path)
                    status, headers = script.pop(0) if script else (receiver.defaults.get(self.path, 200), {})
                if self.path in receiver.held:
                    receiver.release.wait(60)
                try:
                    self.send_response(status)
                    for name, value in headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                except OSError:
                    pass  # the gateway gave up waiting
                got.answered = True

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}{path}"

    def at(self, path: str) -> list[Received]:
        with self._lock:
            return [r for r in self.received if r.path == path]

    def event_ids(self, path: str) -> list[str]:
        return [r.event["id"] for r in self.at(path)]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.thread.start()
    yield server
    server.release.set()
    server.server.shutdown()
    server.server.server_close()


# ---- the gateway, in development mode, with small retry figures ------------------------------------------------


@pytest.fixture
def dev_settings(settings: Settings) -> Settings:
    return settings.model_copy(
        update={
            "development": True,
            "webhook_max_attempts": 3,
            "webhook_retry_base_seconds": 0.01,
            "webhook_retry_max_seconds": 0.05,
            "webhook_timeout_seconds": 2.0,
            "webhook_lease_seconds": 3.0,
        }
    )


@pytest.fixture
async def hooks(dev_settings: Settings, clients: ClientsConfig) -> AsyncIterator[Gateway]:
    async with running(dev_settings, clients, with_worker=True) as gw:
        yield gw


def auth(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def subscribe(
    gw: Gateway, url: str, events: list[str] | None = None, token: str = PLATFORM_A, secret: str = SECRET
) -> dict[str, Any]:
    body = {"url": url, "events": events or ["appointment.*"], "secret": secret}
    answer = await gw.http.post("/platform/v1/subscriptions", json=body, headers=auth(token))
    assert answer.status_code == 201, answer.text
    created: dict[str, Any] = answer.json()
    return created


async def put(gw: Gateway, rid: str, **changes: Any) -> None:
    answer = await gw.ehr("PUT", f"/Appointment/{rid}", json=appointment(id=rid, **changes))
    assert answer.status_code in (200, 201), answer.text
    await gw.drain()


async def feed_events(gw: Gateway) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = (await gw.platform("/changes?limit=1000")).json()["events"]
    return events


async def subscription(gw: Gateway, sid: str) -> dict[str, Any]:
    answer = await gw.http.get(f"/platform/v1/subscriptions/{sid}", headers=auth(PLATFORM_A))
    assert answer.status_code == 200, answer.text
    data: dict[str, Any] = answer.json()
    return data


def signature_ok(received: Received, secret: str = SECRET) -> bool:
    """Verify the signature as a receiver would: recompute the HMAC over "<t>.<raw body>"."""
    parts = dict(item.split("=", 1) for item in received.headers["gateway-signature"].split(","))
    expected = hmac.new(secret.encode(), parts["t"].encode() + b"." + received.body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


# ---- deliveries ------------------------------------------------------------------------------------------------


async def test_a_delivery_is_the_feed_event_signed_with_the_secret(
    hooks: Gateway, receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    answer = await hooks.http.post(
        "/platform/v1/subscriptions",
        json={"url": receiver.url("/hook"), "events": ["appointment.*"], "secret": SECRET},
        headers=auth(PLATFORM_A),
    )
    assert answer.status_code == 201
    created = answer.json()
    assert SECRET not in answer.text and "secret" not in created
    assert created["status"] == "active" and created["events"] == ["appointment.*"]
    assert answer.headers["location"] == f"/platform/v1/subscriptions/{created['id']}"

    await put(hooks, "sig1", description="Bring the intake forms")
    await until(lambda: len(receiver.at("/hook")) == 1, "the delivery")
    got = receiver.at("/hook")[0]
    assert signature_ok(got)
    assert not signature_ok(got, secret="another-secret-0123456789")
    assert got.headers["content-type"] == "application/json"
    assert got.headers["gateway-event-id"] == got.event["id"]
    assert got.headers["gateway-subscription-id"] == created["id"]
    [on_feed] = await feed_events(hooks)
    assert got.event == on_feed  # the same shape as on the feed, with its id and cursor

    listed = await hooks.http.get("/platform/v1/subscriptions", headers=auth(PLATFORM_A))
    assert [s["id"] for s in listed.json()["subscriptions"]] == [created["id"]]
    assert SECRET not in listed.text
    lines = [JsonFormatter().format(r) for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    assert not [line for line in lines if SECRET in line or "intake forms" in line or receiver.url("") in line]


async def test_only_matching_event_types_are_delivered(hooks: Gateway, receiver: Receiver) -> None:
    await subscribe(hooks, receiver.url("/cancelled"), ["appointment.cancelled"])
    await subscribe(hooks, receiver.url("/all"), ["appointment.*"])
    await subscribe(hooks, receiver.url("/messages"), ["message.*"])
    await put(hooks, "m1")
    await put(hooks, "m1", status="cancelled")
    await until(lambda: len(receiver.at("/all")) == 2, "both events at /all")
    assert [r.event["type"] for r in receiver.at("/all")] == ["appointment.created", "appointment.cancelled"]
    await until(lambda: len(receiver.at("/cancelled")) == 1, "the cancellation")
    assert receiver.at("/cancelled")[0].event["type"] == "appointment.cancelled"
    assert receiver.at("/messages") == []


async def test_a_failing_receiver_is_retried_until_it_answers(hooks: Gateway, receiver: Receiver) -> None:
    receiver.scripts["/flaky"] = [(503, {"Retry-After": "1"}), (503, {}), (200, {})]
    created = await subscribe(hooks, receiver.url("/flaky"))
    await put(hooks, "r1")
    await until(lambda: len(receiver.at("/flaky")) == 3, "three attempts")
    attempts = receiver.at("/flaky")
    assert len(set(receiver.event_ids("/flaky"))) == 1  # the same event each time
    assert [r.headers["gateway-delivery-attempt"] for r in attempts] == ["1", "2", "3"]
    assert all(signature_ok(r) for r in attempts)

    async def settled() -> bool:
        sub = await subscription(hooks, created["id"])
        return bool(sub["status"] == "active" and sub["dead_letters"] == 0 and sub["failed_attempts"] == 0)

    await until(settled, "the delivery to be recorded")
    await put(hooks, "r2")  # the cursor moved on: the next event is the next delivery
    await until(lambda: len(receiver.at("/flaky")) == 4, "the next event")
    assert receiver.event_ids("/flaky")[3] != receiver.event_ids("/flaky")[0]


async def test_a_dead_receiver_is_dead_lettered_while_a_healthy_one_gets_every_event_in_order(
    hooks: Gateway, receiver: Receiver, dev_settings: Settings, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    receiver.defaults["/dead"] = 500
    dead = await subscribe(hooks, receiver.url("/dead"))
    await subscribe(hooks, receiver.url("/healthy"))
    for i in range(4):
        await put(hooks, f"d{i}")
    feed_ids = [e["id"] for e in await feed_events(hooks)]
    assert len(feed_ids) == 4
    await until(lambda: len(receiver.at("/healthy")) == 4, "every event at the healthy receiver")
    assert receiver.event_ids("/healthy") == feed_ids

    async def all_dead() -> bool:
        return bool((await subscription(hooks, dead["id"]))["dead_letters"] == 4)

    await until(all_dead, "four dead letters")
    assert [receiver.event_ids("/dead").count(i) for i in feed_ids] == [3, 3, 3, 3]  # max attempts each
    page = await hooks.http.get(f"/platform/v1/subscriptions/{dead['id']}/dead-letters", headers=auth(PLATFORM_A))
    letters = page.json()["dead_letters"]
    assert [d["event_id"] for d in letters] == feed_ids
    assert {(d["attempts"], d["last_status"], d["last_error"]) for d in letters} == {
        (3, 500, "delivery failed: HTTP 500")
    }
    assert letters[0]["event"]["record_id"] == "d0"
    two = await hooks.http.get(
        f"/platform/v1/subscriptions/{dead['id']}/dead-letters?limit=2", headers=auth(PLATFORM_A)
    )
    rest = await hooks.http.get(
        f"/platform/v1/subscriptions/{dead['id']}/dead-letters?cursor={two.json()['next_cursor']}",
        headers=auth(PLATFORM_A),
    )
    assert [d["id"] for d in two.json()["dead_letters"] + rest.json()["dead_letters"]] == [d["id"] for d in letters]

    # The operator's view: `fhir-gateway dlq --webhooks list` (no record content), then a replay from the API
    # of one dead letter and from the command line of the rest, once the receiver is back.
    monkeypatch.setenv("REDIS_URL", dev_settings.redis_url or "")
    monkeypatch.setenv("GATEWAY_KEY_PREFIX", dev_settings.key_prefix)
    capsys.readouterr()
    assert await asyncio.to_thread(cli.main, ["dlq", "--webhooks", "list"]) == 0
    listed = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["event_id"] for row in listed] == feed_ids
    assert {row["subscription"] for row in listed} == {dead["id"]} and "record" not in listed[0]

    receiver.defaults["/dead"] = 200
    before = len(receiver.at("/dead"))
    replay = await hooks.http.post(
        f"/platform/v1/subscriptions/{dead['id']}/dead-letters/replay",
        json={"ids": [letters[0]["id"], "1-1"]},
        headers=auth(PLATFORM_A),
    )
    assert replay.status_code == 202
    assert replay.json() == {"replayed": [letters[0]["id"]], "not_found": ["1-1"]}
    await until(lambda: len(receiver.at("/dead")) == before + 1, "the replayed delivery")
    assert receiver.event_ids("/dead")[-1] == feed_ids[0]
    assert await asyncio.to_thread(cli.main, ["dlq", "--webhooks", "replay", "--all"]) == 0
    await until(lambda: len(receiver.at("/dead")) == before + 4, "the other replays")
    assert receiver.event_ids("/dead")[-3:] == feed_ids[1:]

    async def no_dead_letters() -> bool:
        return bool((await subscription(hooks, dead["id"]))["dead_letters"] == 0)

    await until(no_dead_letters, "the dead letters to be gone")


async def test_a_receiver_that_hangs_does_not_hold_up_another(
    dev_settings: Settings, clients: ClientsConfig, receiver: Receiver
) -> None:
    # The request timeout is far beyond WAIT_LIMIT: the healthy receiver can only get its events in time if
    # nothing waits for the hanging one.
    settings = dev_settings.model_copy(update={"webhook_timeout_seconds": 10 * WAIT_LIMIT})
    receiver.held.add("/hang")
    async with running(settings, clients, with_worker=True) as gw:
        try:
            await subscribe(gw, receiver.url("/hang"))
            await subscribe(gw, receiver.url("/healthy"))
            for i in range(3):
                await put(gw, f"h{i}")
            await until(lambda: len(receiver.at("/healthy")) == 3, "every event at the healthy receiver")
            assert len(receiver.at("/hang")) == 1 and not receiver.at("/hang")[0].answered
            assert receiver.event_ids("/healthy") == [e["id"] for e in await feed_events(gw)]
        finally:
            receiver.release.set()  # before the worker stops, or it would wait for the request in flight
        await until(lambda: len(receiver.at("/hang")) == 3, "the hanging receiver to catch up")
        assert receiver.event_ids("/hang") == receiver.event_ids("/healthy")


async def test_a_request_past_the_timeout_is_retried_and_dead_lettered(
    dev_settings: Settings, clients: ClientsConfig, receiver: Receiver
) -> None:
    receiver.held.add("/slow")
    settings = dev_settings.model_copy(update={"webhook_timeout_seconds": 0.2})
    try:
        async with running(settings, clients, with_worker=True) as gw:
            created = await subscribe(gw, receiver.url("/slow"))
            await put(gw, "t1")

            async def dead_lettered() -> bool:
                return bool((await subscription(gw, created["id"]))["dead_letters"] == 1)

            await until(dead_lettered, "the dead letter")
            # The receiver's threads may record the last request after the worker gave up on it (CI's loaded
            # machine did): every attempt arrives, none is answered.
            await until(lambda: len(receiver.at("/slow")) == 3, "the receiver to record the third attempt")
            assert not any(r.answered for r in receiver.at("/slow"))
            page = await gw.http.get(
                f"/platform/v1/subscriptions/{created['id']}/dead-letters", headers=auth(PLATFORM_A)
            )
            [letter] = page.json()["dead_letters"]
            assert (letter["last_status"], letter["last_error"]) == (None, "delivery failed: timeout")
    finally:
        receiver.release.set()


async def test_deleting_a_subscription_stops_its_deliveries(hooks: Gateway, receiver: Receiver) -> None:
    created = await subscribe(hooks, receiver.url("/gone"))
    await put(hooks, "g1")
    await until(lambda: len(receiver.at("/gone")) == 1, "the first delivery")
    answer = await hooks.http.delete(f"/platform/v1/subscriptions/{created['id']}", headers=auth(PLATFORM_A))
    assert answer.status_code == 204
    assert (
        await hooks.http.get(f"/platform/v1/subscriptions/{created['id']}", headers=auth(PLATFORM_A))
    ).status_code == 404
    await subscribe(hooks, receiver.url("/witness"))
    await put(hooks, "g2")
    await until(lambda: len(receiver.at("/witness")) == 1, "the witness's delivery")
    assert len(receiver.at("/gone")) == 1
    again = await hooks.http.delete(f"/platform/v1/subscriptions/{created['id']}", headers=auth(PLATFORM_A))
    assert again.status_code == 404


async def test_a_sensitive_event_is_never_delivered_to_a_subscription_without_the_scope(
    hooks: Gateway, receiver: Receiver
) -> None:
    basic = await subscribe(hooks, receiver.url("/basic"), token=PLATFORM_A_BASIC)
    await subscribe(hooks, receiver.url("/full"), token=PLATFORM_A)
    await put(hooks, "psy1", description="Psychotherapy session", meta=PSY)
    await put(hooks, "psy1", description="Psychotherapy session", meta=PSY, status="cancelled")
    await put(hooks, "plain1")
    await until(lambda: len(receiver.at("/basic")) == 1 and len(receiver.at("/full")) == 3, "the deliveries")
    # The labelled events were passed over: what arrived is what would have, had they never happened.
    [only] = receiver.at("/basic")
    assert (only.event["type"], only.event["record_id"]) == ("appointment.created", "plain1") and signature_ok(only)
    full = [(r.event["type"], r.event["record_id"]) for r in receiver.at("/full")]
    assert full == [
        ("appointment.created", "psy1"),
        ("appointment.cancelled", "psy1"),
        ("appointment.created", "plain1"),
    ]
    assert receiver.at("/full")[0].event["record"]["description"] == "Psychotherapy session"
    # The cursor moved past them; the status shows nothing pending, no dead letter and no error.
    view = await subscription(hooks, basic["id"])
    assert (view["status"], view["dead_letters"], view["last_error"]) == ("active", 0, None)
    await put(hooks, "psy2", meta=PSY)
    await put(hooks, "plain2")
    await until(lambda: len(receiver.at("/basic")) == 2, "the next plain delivery")
    assert [r.event["record_id"] for r in receiver.at("/basic")] == ["plain1", "plain2"]
    assert all(b"psy" not in r.body for r in receiver.at("/basic"))


async def test_a_scope_taken_away_in_a_reloaded_file_stops_sensitive_deliveries_at_once(
    hooks: Gateway, receiver: Receiver
) -> None:
    await subscribe(hooks, receiver.url("/full"), token=PLATFORM_A)
    await put(hooks, "psy1", meta=PSY)
    await until(lambda: len(receiver.at("/full")) == 1, "the sensitive delivery while the owner has the scope")
    # The owner loses the sensitive scope (the clients file reloaded, as the API and the worker do).
    narrowed = [{**c, "scopes": []} if c["token"] == PLATFORM_A else c for c in CLIENTS["clients"]]
    hooks.services.apply_clients(ClientsConfig.model_validate({**CLIENTS, "clients": narrowed}))
    await put(hooks, "psy2", meta=PSY)
    await put(hooks, "plain2")
    await until(lambda: len(receiver.at("/full")) == 2, "the next plain delivery")
    assert [r.event["record_id"] for r in receiver.at("/full")] == ["psy1", "plain2"]


async def test_events_an_older_gateway_wrote_are_delivered_and_passed_over_alike(
    hooks: Gateway, receiver: Receiver
) -> None:
    await subscribe(hooks, receiver.url("/basic"), token=PLATFORM_A_BASIC)
    await subscribe(hooks, receiver.url("/full"), token=PLATFORM_A)
    await subscribe(hooks, receiver.url("/cancelled"), ["appointment.cancelled"])
    await put(hooks, "new1")
    await until(lambda: len(receiver.at("/full")) == 1, "the first delivery")
    template = {k: v for k, v in receiver.at("/full")[0].event.items() if k != "cursor"}
    labelled = {**template["record"], "security": [{**PSY["security"][0], "display": None}]}
    # Before the type and labels were kept beside it, an entry held only the event, written by json.dumps.
    for eid, record in (("evt_old_psy", labelled), ("evt_old_plain", template["record"])):
        event = {**template, "id": eid, "type": "appointment.cancelled", "record": record}
        await hooks.services.redis.xadd(hooks.services.keys.feed("clinic-a"), {"e": json.dumps(event)})
    await put(hooks, "new2")
    await until(lambda: len(receiver.at("/full")) == 4 and len(receiver.at("/basic")) == 3, "the deliveries")
    await until(lambda: len(receiver.at("/cancelled")) == 2, "the cancellations")
    assert receiver.event_ids("/full")[1:3] == ["evt_old_psy", "evt_old_plain"]
    assert receiver.event_ids("/basic")[1] == "evt_old_plain" and "evt_old_psy" not in receiver.event_ids("/basic")
    assert receiver.event_ids("/cancelled") == ["evt_old_psy", "evt_old_plain"]
    old = receiver.at("/full")[2]
    assert signature_ok(old) and old.event == {**template, "id": "evt_old_plain", "type": "appointment.cancelled",
                                               "cursor": old.event["cursor"]}  # fmt: skip


async def test_dead_letters_of_sensitive_events_are_listed_only_with_the_scope(
    hooks: Gateway, receiver: Receiver
) -> None:
    receiver.defaults["/down"] = 500
    created = await subscribe(hooks, receiver.url("/down"), token=PLATFORM_A)
    await put(hooks, "psy1", meta=PSY)
    await put(hooks, "plain1")
    path = f"/platform/v1/subscriptions/{created['id']}/dead-letters"

    async def letters(token: str, query: str = "") -> list[str]:
        page = (await hooks.http.get(path + query, headers=auth(token))).json()
        return [d["event"]["record_id"] for d in page["dead_letters"]]

    await until(lambda: _two(letters(PLATFORM_A)), "both dead letters")
    assert await letters(PLATFORM_A) == ["psy1", "plain1"]
    # Without the scope the sensitive one is not there: the first page of one holds the plain one.
    assert await letters(PLATFORM_A_BASIC, "?limit=1") == ["plain1"]
    assert await letters(PLATFORM_A_BASIC) == ["plain1"]


async def _two(pending: Any) -> bool:
    return len(await pending) == 2


async def test_two_workers_never_deliver_one_subscription_at_once(
    hooks: Gateway, receiver: Receiver, dev_settings: Settings, clients: ClientsConfig
) -> None:
    redis = connect(dev_settings.redis_url or "")
    subscriptions = Subscriptions(redis, Keyspace(dev_settings.key_prefix))
    other = Dispatcher(subscriptions, dev_settings, clients, name="second-worker")
    stop = asyncio.Event()
    running_other = asyncio.create_task(other.run(stop))
    try:
        created = await subscribe(hooks, receiver.url("/once"))
        for i in range(5):
            await put(hooks, f"o{i}")
        await until(lambda: len(receiver.at("/once")) == 5, "five deliveries")
        assert receiver.event_ids("/once") == [e["id"] for e in await feed_events(hooks)]  # once each, in order
        [mine] = [c for c in hooks.app.state.worker.companions if isinstance(c, Dispatcher)]
        holders = mine.delivering + other.delivering
        assert holders == [created["id"]]
    finally:
        stop.set()
        await running_other
        await redis.aclose()


# ---- the API's rules -------------------------------------------------------------------------------------------


async def test_receiver_urls_and_fields_are_checked(hooks: Gateway) -> None:
    def body(**changes: Any) -> dict[str, Any]:
        return {"url": "https://hooks.example.org/in", "events": ["appointment.*"], "secret": SECRET, **changes}

    refused = {
        "http://hooks.example.org/in": ("url", "loopback"),
        "ftp://hooks.example.org/in": ("url", "https"),
        "https://user:pw@hooks.example.org/in": ("url", "credentials"),
        "https://hooks.example.org/in#part": ("url", "fragment"),
        "https:///in": ("url", "host"),
        "https://hooks.example.org:99999/in": ("url", "valid"),
        "https://h\u00f6oks.example.org/in": ("url", "ASCII"),
    }
    for url, (expression, word) in refused.items():
        answer = await hooks.http.post("/platform/v1/subscriptions", json=body(url=url), headers=auth(PLATFORM_A))
        assert answer.status_code == 422, url
        issue = answer.json()["issue"][0]
        assert answer.json()["resourceType"] == "OperationOutcome"
        assert issue["expression"] == [expression] and word in issue["diagnostics"], url
    for changes, expression in [
        ({"secret": "tiny-secret"}, "secret"),
        ({"secret": "long-enough-but-not-\u00e9-ascii"}, "secret"),
        ({"events": []}, "events"),
        ({"events": ["appointment created"]}, "events[0]"),
    ]:
        answer = await hooks.http.post("/platform/v1/subscriptions", json=body(**changes), headers=auth(PLATFORM_A))
        assert answer.status_code == 422 and answer.json()["issue"][0]["expression"] == [expression]
        assert "tiny-secret" not in answer.text
    raw = json.dumps(body(url="https://hooks.example.org/\udcff"))  # a lone surrogate, escaped in the JSON
    headers = {**auth(PLATFORM_A), "Content-Type": "application/json"}
    surrogate = await hooks.http.post("/platform/v1/subscriptions", content=raw.encode(), headers=headers)
    assert surrogate.status_code == 422
    missing = await hooks.http.post(
        "/platform/v1/subscriptions", json={"url": "https://x.org"}, headers=auth(PLATFORM_A)
    )
    assert missing.status_code == 422 and missing.json()["issue"][0]["expression"] == ["events"]
    for url in ("https://hooks.example.org/in?k=1", "http://localhost:8000/in", "http://[::1]:8000/in"):
        answer = await hooks.http.post("/platform/v1/subscriptions", json=body(url=url), headers=auth(PLATFORM_A))
        assert answer.status_code == 201, url
    assert (await hooks.http.post("/platform/v1/subscriptions", json=body(), headers=auth(EHR_A))).status_code == 403
    assert (await hooks.http.post("/platform/v1/subscriptions", json=body())).status_code == 401


async def test_plain_http_is_refused_outside_development(gateway: Gateway) -> None:
    body = {"url": "http://127.0.0.1:9/in", "events": ["appointment.*"], "secret": SECRET}
    answer = await gateway.http.post("/platform/v1/subscriptions", json=body, headers=auth(PLATFORM_A))
    assert answer.status_code == 422
    assert "development" in answer.json()["issue"][0]["diagnostics"]
    body["url"] = "https://hooks.example.org/in"
    assert (
        await gateway.http.post("/platform/v1/subscriptions", json=body, headers=auth(PLATFORM_A))
    ).status_code == 201


INWARD_URLS = [
    "https://169.254.169.254/latest/meta-data/", "https://10.0.0.1/in", "https://localhost/in", "https://[::1]/in",
    "https://[::ffff:169.254.169.254]/in", "https://0.0.0.0/in", "https://2130706433/in", "https://0x7f000001/in",
    "https://0177.0.0.1/in", "https://100.100.100.200/in", "https://[fd00::1]/in", "https://metadata.google.internal/in",
    "https://metadata/computeMetadata/v1/", "https://192.168.0.10:8443/in", "https://[fe80::1]/in",
]  # fmt: skip


async def test_receivers_on_inward_addresses_are_refused_at_registration(
    gateway: Gateway, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_dns(monkeypatch).update({"inside.example": "10.9.8.7", "outside.example": "93.184.216.34"})
    body = {"events": ["appointment.*"], "secret": SECRET}
    for url in [*INWARD_URLS, "https://inside.example/in"]:
        answer = await gateway.http.post("/platform/v1/subscriptions", json={**body, "url": url},
                                         headers=auth(PLATFORM_A))  # fmt: skip
        assert answer.status_code == 422, url
        assert answer.json()["issue"][0]["expression"] == ["url"], url
        assert "10.9.8.7" not in answer.text  # what the name resolved to is not echoed
    ok = await gateway.http.post("/platform/v1/subscriptions", json={**body, "url": "https://outside.example/in"},
                                 headers=auth(PLATFORM_A))  # fmt: skip
    assert ok.status_code == 201


async def test_development_mode_allows_loopback_receivers_only(hooks: Gateway) -> None:
    body = {"events": ["appointment.*"], "secret": SECRET}
    for url in ("http://127.0.0.1:8000/in", "https://localhost/in", "http://[::1]:8000/in"):
        answer = await hooks.http.post(
            "/platform/v1/subscriptions", json={**body, "url": url}, headers=auth(PLATFORM_A)
        )
        assert answer.status_code == 201, url
    for url in ("https://169.254.169.254/in", "https://10.0.0.1/in", "https://metadata.google.internal/in"):
        answer = await hooks.http.post(
            "/platform/v1/subscriptions", json={**body, "url": url}, headers=auth(PLATFORM_A)
        )
        assert answer.status_code == 422, url


async def test_the_operators_allow_list_admits_an_internal_receiver(settings: Settings, clients: ClientsConfig) -> None:
    allowed = settings.model_copy(update={"outbound_allow": "10.20.0.0/16,hooks.internal.example"})
    async with running(allowed, clients, with_worker=False) as gw:
        body = {"events": ["appointment.*"], "secret": SECRET}
        for url, status in [("https://10.20.1.2/in", 201), ("https://hooks.internal.example/in", 201),
                            ("https://10.21.0.1/in", 422), ("https://169.254.169.254/in", 422)]:  # fmt: skip
            answer = await gw.http.post("/platform/v1/subscriptions", json={**body, "url": url},
                                        headers=auth(PLATFORM_A))  # fmt: skip
            assert answer.status_code == status, url


async def test_a_receiver_name_that_later_resolves_inward_is_refused_at_delivery(
    dev_settings: Settings, clients: ClientsConfig, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    dns = fake_dns(monkeypatch)
    dns["rebind.example"] = "93.184.216.34"  # public when it is registered...
    production = dev_settings.model_copy(update={"development": False})
    port = receiver.server.server_address[1]
    async with running(production, clients, with_worker=True) as gw:
        created = await subscribe(gw, f"https://rebind.example:{port}/in")
        dns["rebind.example"] = "127.0.0.1"  # ...then the attacker's DNS points it at the gateway's own host
        await put(gw, "rebound1")

        async def failed() -> str | None:
            error: str | None = (await subscription(gw, created["id"]))["last_error"]
            if error:
                return error
            page = await gw.http.get(f"/platform/v1/subscriptions/{created['id']}/dead-letters",
                                     headers=auth(PLATFORM_A))  # fmt: skip
            letters = page.json()["dead_letters"]
            return str(letters[0]["last_error"]) if letters else None

        assert await until(failed, "the delivery refused") == "delivery failed: refused address"
    assert receiver.received == []


async def test_last_error_names_a_class_never_a_socket_detail(hooks: Gateway) -> None:
    with socket.socket() as closed:  # a loopback port nothing listens on
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    created = await subscribe(hooks, f"http://127.0.0.1:{port}/in")
    await put(hooks, "refused1")

    async def failed() -> str | None:
        error: str | None = (await subscription(hooks, created["id"]))["last_error"]
        return error

    error = await until(failed, "a failed delivery")
    assert error == "delivery failed: connection refused"
    assert str(port) not in error and "127.0.0.1" not in error


async def test_a_tenant_sees_and_removes_only_its_own_subscriptions(hooks: Gateway, receiver: Receiver) -> None:
    mine = await subscribe(hooks, receiver.url("/a"))
    theirs = await subscribe(hooks, receiver.url("/b"), token=PLATFORM_B)
    listed = (await hooks.http.get("/platform/v1/subscriptions", headers=auth(PLATFORM_B))).json()["subscriptions"]
    assert [s["id"] for s in listed] == [theirs["id"]]
    base = f"/platform/v1/subscriptions/{mine['id']}"
    assert (await hooks.http.get(base, headers=auth(PLATFORM_B))).status_code == 404
    assert (await hooks.http.get(f"{base}/dead-letters", headers=auth(PLATFORM_B))).status_code == 404
    replay = await hooks.http.post(f"{base}/dead-letters/replay", json={"all": True}, headers=auth(PLATFORM_B))
    assert replay.status_code == 404
    assert (await hooks.http.delete(base, headers=auth(PLATFORM_B))).status_code == 404
    assert (await hooks.http.get(base, headers=auth(PLATFORM_A))).status_code == 200
    await put(hooks, "iso1")
    await until(lambda: len(receiver.at("/a")) == 1, "tenant A's delivery")
    assert receiver.at("/b") == []  # tenant B's subscription never sees tenant A's events


async def test_bad_ids_are_answered_not_failed(hooks: Gateway) -> None:
    created = await subscribe(hooks, "https://hooks.example.org/in")
    base = f"/platform/v1/subscriptions/{created['id']}"
    for path in ("/platform/v1/subscriptions/nope", "/platform/v1/subscriptions/sub_{x}"):
        assert (await hooks.http.get(path, headers=auth(PLATFORM_A))).status_code == 404
    bad_cursor = await hooks.http.get(f"{base}/dead-letters?cursor=99999999999999999999-0", headers=auth(PLATFORM_A))
    assert bad_cursor.status_code == 400
    last = "18446744073709551615-18446744073709551615"  # the largest stream id: nothing comes after it
    past_the_end = await hooks.http.get(f"{base}/dead-letters?cursor={last}", headers=auth(PLATFORM_A))
    assert past_the_end.status_code == 200 and past_the_end.json() == {"dead_letters": [], "next_cursor": None}
    bad_id = await hooks.http.post(f"{base}/dead-letters/replay", json={"ids": ["x"]}, headers=auth(PLATFORM_A))
    assert bad_id.status_code == 400
    nothing = await hooks.http.post(f"{base}/dead-letters/replay", json={}, headers=auth(PLATFORM_A))
    assert nothing.status_code == 400
    paths = (await hooks.http.get("/openapi.json")).json()["paths"]
    assert {"/platform/v1/subscriptions", "/platform/v1/subscriptions/{sid}/dead-letters/replay"} <= set(paths)


def test_retry_after_is_read_in_seconds_or_as_a_date() -> None:
    assert parse_retry_after("7", now=0.0) == 7.0
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:30 GMT", now=10.0) == 20.0
    assert parse_retry_after("soon", now=0.0) is None and parse_retry_after(None, now=0.0) is None


# ---- pause, resume and rewind (the operator console's controls) -----------------------------------------------


async def test_a_paused_subscription_receives_nothing_until_resumed_then_gets_what_waited(
    hooks: Gateway, receiver: Receiver
) -> None:
    sid = (await subscribe(hooks, receiver.url("/paused")))["id"]
    subs = hooks.services.subscriptions
    await put(hooks, "p1")
    await until(lambda: len(receiver.at("/paused")) == 1, "the first delivery")
    assert (await subscription(hooks, sid))["status"] == "active"
    # The receiver has the event before the dispatcher records the delivery: wait for the record, not the receipt.
    await until(lambda: _delivered(subs, sid), "the delivery to be recorded")

    assert await subs.pause("clinic-a", sid, True)
    assert (await subscription(hooks, sid))["status"] == "paused"
    lease = hooks.services.keys.webhook_lease("clinic-a", sid)
    await until(lambda: _released(hooks, lease), "the worker to let the paused subscription go")
    await put(hooks, "p2")
    await put(hooks, "p3")
    await asyncio.sleep(1.5)  # a worker scans every 0.25 s: it had several chances to deliver, and must not
    assert receiver.event_ids("/paused") == [e["id"] for e in (await feed_events(hooks))[:1]]

    assert await subs.pause("clinic-a", sid, False)
    await until(lambda: len(receiver.at("/paused")) == 3, "the events that waited")
    assert receiver.event_ids("/paused") == [e["id"] for e in await feed_events(hooks)]
    assert not await subs.pause("clinic-a", "sub_" + "0" * 32, True)


async def test_rewinding_a_paused_subscription_delivers_the_feed_again_from_that_point(
    hooks: Gateway, receiver: Receiver
) -> None:
    sid = (await subscribe(hooks, receiver.url("/again")))["id"]
    subs = hooks.services.subscriptions
    for rid in ("r1", "r2", "r3"):
        await put(hooks, rid)
    await until(lambda: len(receiver.at("/again")) == 3, "three deliveries")
    events = await feed_events(hooks)
    first = decode_cursor(events[0]["cursor"])  # the feed entry of the first event: delivery goes on after it

    assert not await subs.rewind("clinic-a", sid, first)  # not paused: refused
    await subs.pause("clinic-a", sid, True)
    await until(lambda: _released(hooks, hooks.services.keys.webhook_lease("clinic-a", sid)), "the lease to go")
    assert await subs.rewind("clinic-a", sid, first)
    await subs.pause("clinic-a", sid, False)
    await until(lambda: len(receiver.at("/again")) == 5, "the events after the cursor, again")
    assert receiver.event_ids("/again")[3:] == [events[1]["id"], events[2]["id"]]


async def _released(gw: Gateway, lease: str) -> bool:
    return not await gw.services.redis.exists(lease)


async def _delivered(subs: Any, sid: str) -> bool:
    return (await subs.get("clinic-a", sid)).delivered_at > 0
