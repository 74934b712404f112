"""The operator console in a real browser: headless Chromium (Debian's ``chromium``) driven by Playwright.

The gateway runs under uvicorn on a loopback port, with its worker, against a fake EHR process that fails. Each
test saves a screenshot of the pages it visits under its tmp dir; with ``GATEWAY_CONSOLE_SCREENSHOTS=<dir>`` they
are also written there (``docs/img`` holds the ones the operations manual shows). Skipped where Chromium or
Playwright is missing; Playwright's own browser download is never used.
"""

from __future__ import annotations

import os
import re
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from gateway.app import create_app
from gateway.settings import ClientsConfig, Settings
from tests.conftest import EHR_A, PLATFORM_A
from tests.connectors.conftest import FakeEHR, running_fake_ehr
from tests.gateway.console_setup import ADMIN, CANARY, console_clients, poison
from tests.gateway.fixtures import appointment
from tests.support import free_port, wait_until

pytestmark = [pytest.mark.browser, pytest.mark.embedded_only]  # the Redis given makes no difference

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]  # fmt: skip
PAGES = {
    "overview": "/console",
    "dead-letters": "/console/dead-letters",
    "connectors": "/console/connectors",
    "webhooks": "/console/webhooks",
    "validation": "/console/validation",
    "conformance": "/console/conformance",
}


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture(scope="module")
def fake_ehr() -> Iterator[FakeEHR]:
    with running_fake_ehr() as server:
        yield server


class LiveGateway:
    """The app under uvicorn in a thread of this process (so a test can break a mapper), on a loopback port."""

    def __init__(self, settings: Settings, clients: ClientsConfig) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(settings, clients, with_worker=True), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="console-gateway", daemon=True)

    def __enter__(self) -> LiveGateway:
        self.thread.start()
        wait_until(lambda: self.server.started, "the gateway to listen")
        return self

    def __exit__(self, *_: object) -> None:
        self.server.should_exit = True
        self.thread.join(30)

    def ehr(self, method: str, path: str, body: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {EHR_A}", "Content-Type": "application/fhir+json"}
        return httpx.request(method, f"{self.base}/fhir/R4{path}", json=body, headers=headers, timeout=30)

    def platform(self, method: str, path: str, body: Any = None) -> httpx.Response:
        headers = {"Authorization": f"Bearer {PLATFORM_A}"}
        return httpx.request(method, f"{self.base}/platform/v1{path}", json=body, headers=headers, timeout=30)


@pytest.fixture
def live(settings: Settings, fake_ehr: FakeEHR) -> Iterator[LiveGateway]:
    ehr = {
        "base_url": fake_ehr.base, "auth": {"type": "none"},
        "poll": {"types": ["Appointment"], "interval_seconds": 300, "since": "2026-01-01T00:00:00Z"},
        "max_attempts": 2, "breaker_failures": 2, "breaker_reset_seconds": 600, "backoff_base_seconds": 0.05,
        "backoff_max_seconds": 0.1, "timeout_seconds": 5,
    }  # fmt: skip
    clients = ClientsConfig.model_validate(console_clients(**{"clinic-a": {"vendor": "generic", "ehr": ehr}}))
    # The fake EHR listens on loopback: allowed explicitly, as an operator allows an internal EHR.
    allowed = settings.model_copy(update={"outbound_allow": "127.0.0.0/8"})
    with LiveGateway(allowed, clients) as gateway:
        yield gateway


@pytest.fixture
def page(browser: Any, live: LiveGateway) -> Iterator[Any]:
    """A signed-in page; fails the test on any console error (a Content-Security-Policy violation, say)."""
    context = browser.new_context(viewport={"width": 1000, "height": 900}, device_scale_factor=1)
    tab = context.new_page()
    problems: list[str] = []
    tab.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    tab.goto(f"{live.base}/console")
    assert tab.url.endswith("/console/login")  # no session yet
    tab.fill("#token", ADMIN)
    tab.click("button[type=submit]")
    tab.wait_for_url(f"{live.base}/console")
    assert [c["name"] for c in context.cookies() if c["httpOnly"] and c["sameSite"] == "Strict"] == ["gw_console"]
    yield tab
    context.close()
    assert problems == []


def snap(page: Any, tmp_path: Path, name: str) -> Path:
    """Save a screenshot of the page under the test's tmp dir (and GATEWAY_CONSOLE_SCREENSHOTS when set)."""
    path = tmp_path / f"console-{name}.png"
    page.screenshot(path=str(path))  # the viewport: 1000 x 900
    if folder := os.environ.get("GATEWAY_CONSOLE_SCREENSHOTS"):
        shutil.copyfile(path, Path(folder) / path.name)
    return path


def reload_until(page: Any, url: str, check: Any, what: str) -> None:
    def look() -> Any:
        page.goto(url)
        return check()

    wait_until(look, what, limit=30, every=0.3)


def test_a_dead_letter_appears_after_a_poison_job_and_leaves_when_replayed(
    page: Any, live: LiveGateway, tmp_path: Path
) -> None:
    letters = f"{live.base}/console/dead-letters?tenant=clinic-a"
    with poison():
        assert live.ehr("PUT", "/Appointment/poison-1", appointment(id="poison-1")).status_code == 201
        row = page.locator("table.dead-letters tr", has_text="poison-1")
        reload_until(page, letters, lambda: row.count() == 1, "the dead letter on the page")
    assert "ValueError" in row.inner_text() and "Appointment" in row.inner_text()
    snap(page, tmp_path, "dead-letters")

    row.locator("button.replay").click()
    page.wait_for_url(f"{live.base}/console/dead-letters")
    assert "replayed 1 dead letter(s) of clinic-a" in page.locator(".notice").inner_text()
    assert page.locator("table.dead-letters tr", has_text="poison-1").count() == 0
    wait_until(lambda: live.platform("GET", "/appointments/poison-1").status_code == 200, "the replayed record")
    page.goto(f"{live.base}/console?tenant=clinic-a")
    assert page.locator(".dead-letters").inner_text() == "0"
    assert "replay" in page.locator("table.audit").inner_text()


def test_a_connector_breaker_opens_against_a_failing_ehr(
    page: Any, live: LiveGateway, fake_ehr: FakeEHR, tmp_path: Path
) -> None:
    fake_ehr.fault("GET", "/fhir/Appointment", *["503"] * 4)
    page.goto(f"{live.base}/console/connectors")
    section = page.locator("section.connector", has_text="clinic-a")
    assert "breaker closed" in section.locator(".circuit").inner_text()
    section.locator("button.poll-now").click()
    page.wait_for_url(f"{live.base}/console/connectors")
    assert "failed: Appointment" in page.locator(".notice").inner_text()
    section = page.locator("section.connector", has_text="clinic-a")
    assert section.locator(".circuit").inner_text() == "breaker open"
    assert re.search(r"Last error\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \(transient\)", section.inner_text())
    snap(page, tmp_path, "connectors")


def test_a_webhook_is_paused_and_resumed(page: Any, live: LiveGateway, tmp_path: Path) -> None:
    hook = {"url": "https://hooks.example.org/in", "events": ["appointment.*"], "secret": "whsec-test-0123456789abcdef"}
    sid = live.platform("POST", "/subscriptions", hook).json()["id"]
    hooks = f"{live.base}/console/webhooks"
    page.goto(hooks)
    section = page.locator(f"#hook-{sid}")
    assert section.locator(".status").inner_text() == "active"
    section.locator("button.pause").click()
    page.wait_for_url(hooks)
    assert f"paused {sid}" in page.locator(".notice").inner_text()
    reload_until(page, hooks, lambda: section.locator(".status").inner_text() == "paused", "the pause to take hold")
    assert live.platform("GET", f"/subscriptions/{sid}").json()["status"] == "paused"
    snap(page, tmp_path, "webhooks")

    section.locator("button.resume").click()
    page.wait_for_url(hooks)
    assert f"resumed {sid}" in page.locator(".notice").inner_text()
    assert section.locator(".status").inner_text() == "active"
    assert live.platform("GET", f"/subscriptions/{sid}").json()["status"] == "active"


def test_every_page_shows_ids_and_paths_and_never_a_name(
    page: Any, live: LiveGateway, fake_ehr: FakeEHR, tmp_path: Path
) -> None:
    named = {"resourceType": "Patient", "id": "pat-1", "name": [{"family": "Quixwhistle", "given": ["Zebulon"]}]}
    assert live.ehr("PUT", "/Patient/pat-1", named).status_code == 201
    for i in range(4):
        assert live.ehr("PUT", f"/Appointment/a{i}", appointment(id=f"a{i}")).status_code == 201
    unnamed = {key: value for key, value in named.items() if key != "id"}
    assert live.ehr("POST", "/Patient", {**unnamed, "gender": CANARY}).status_code == 400
    assert live.ehr("POST", "/Appointment", appointment(status=CANARY)).status_code == 400
    hook = {"url": "https://hooks.example.org/in", "events": ["*"], "secret": "whsec-test-0123456789abcdef"}
    assert live.platform("POST", "/subscriptions", hook).status_code == 201
    paused = live.platform("POST", "/subscriptions", {**hook, "url": "https://crm.example.org/hook"}).json()["id"]
    page.goto(f"{live.base}/console/webhooks")
    page.locator(f"#hook-{paused} button.pause").click()
    page.wait_for_url(f"{live.base}/console/webhooks")
    with poison("Appointment", message=f"no visit type for {CANARY}"):
        assert live.ehr("PUT", "/Appointment/stuck-1", appointment(id="stuck-1", description=CANARY)).status_code == 201
        wait_until(lambda: "stuck-1" in httpx.get(
            f"{live.base}/console/dead-letters", headers={"Cookie": f"gw_console={ADMIN}"}, timeout=10).text,
            "the dead letter")  # fmt: skip
    fake_ehr.fault("GET", "/fhir/Appointment", *["503"] * 4)
    page.goto(f"{live.base}/console/connectors")
    page.locator("button.poll-now").click()
    page.wait_for_url(f"{live.base}/console/connectors")

    for name, path in PAGES.items():
        page.goto(f"{live.base}{path}")
        assert page.locator("h1").count() == 1
        text = page.locator("body").inner_text()
        assert "Zebulon" not in text and "Quixwhistle" not in text, name
        assert "Zebulon" not in page.content(), name
        snap(page, tmp_path, name)
    page.goto(f"{live.base}/console/validation?tenant=clinic-a")
    assert "Patient.gender" in page.locator("table.refused-paths").inner_text()
    assert len(list(tmp_path.glob("console-*.png"))) == len(PAGES)
