"""Fixtures for the connector tests: keys, an EHR configuration, a clock and a sleep that never wait."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from connectors import CountingObserver, EHRClient, EHRConfig
from connectors.address import OutboundPolicy
from tests.support import free_port

BASE = "https://ehr.test/fhir/R4"
TOKEN_URL = "https://auth.ehr.test/oauth2/token"
CLIENT_ID = "gateway-client-1"
# The fake EHR process listens on loopback: tests that call it allow that explicitly, as an operator would.
LOOPBACK_ALLOWED = OutboundPolicy.from_settings("127.0.0.0/8")


class FakeTime:
    """A wall clock and a monotonic clock that move only when something sleeps (which returns at once)."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0
        self.mono = 1_000.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def monotonic(self) -> float:
        return self.mono

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.mono += seconds

    async def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.advance(seconds)


def _pem(key: Any) -> bytes:
    return bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )


def new_rsa_pem() -> bytes:
    """Return a new 2048-bit RSA private key, PEM."""
    return _pem(rsa.generate_private_key(public_exponent=65537, key_size=2048))


@pytest.fixture(scope="session")
def rsa_pem() -> bytes:
    return new_rsa_pem()


@pytest.fixture(scope="session")
def ec_pem() -> bytes:
    return _pem(ec.generate_private_key(ec.SECP384R1()))


@pytest.fixture
def key_file(tmp_path: Path, rsa_pem: bytes) -> Path:
    path = tmp_path / "ehr-key.pem"
    path.write_bytes(rsa_pem)
    return path


def smart_auth(key_file: Path, **overrides: Any) -> dict[str, Any]:
    return {
        "type": "smart-backend", "token_url": TOKEN_URL, "client_id": CLIENT_ID, "private_key_file": str(key_file),
        "alg": "RS384", "kid": "gw-2026-01", "scopes": "system/Appointment.rs system/Communication.cs",
        **overrides,
    }  # fmt: skip


def ehr_config(key_file: Path | None = None, **overrides: Any) -> EHRConfig:
    data: dict[str, Any] = {
        "base_url": BASE,
        "auth": smart_auth(key_file) if key_file else {"type": "bearer", "token": "static-ehr-token-0123456789"},
        "rate_limit_per_second": 1000,
        "max_attempts": 4,
        "backoff_base_seconds": 0.5,
        "backoff_max_seconds": 20,
        "breaker_failures": 3,
        "breaker_reset_seconds": 30,
        **overrides,
    }
    return EHRConfig.model_validate(data)


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


@pytest.fixture
def observer() -> CountingObserver:
    return CountingObserver()


MakeClient = Callable[..., EHRClient]


@pytest.fixture
def make_client(fake_time: FakeTime, observer: CountingObserver) -> MakeClient:
    """Build an EHRClient on the fake clocks; respx intercepts its requests."""

    def make(
        config: EHRConfig, vendor: str = "generic", tenant: str = "clinic-a", outbound: OutboundPolicy | None = None
    ) -> EHRClient:
        return EHRClient(
            tenant, vendor, config, observer=observer, sleep=fake_time.sleep, clock=fake_time.clock,
            monotonic=fake_time.monotonic, outbound=outbound,
        )  # fmt: skip

    return make


def token_answer(value: str = "access-1", expires_in: int = 300) -> dict[str, Any]:
    return {"access_token": value, "token_type": "bearer", "expires_in": expires_in, "scope": "system/Appointment.rs"}


def searchset(
    resources: list[dict[str, Any]], *, next_url: str | None = None, self_url: str | None = None
) -> dict[str, Any]:
    links = [{"relation": "self", "url": self_url or f"{BASE}/Appointment"}]
    if next_url:
        links.append({"relation": "next", "url": next_url})
    return {
        "resourceType": "Bundle", "type": "searchset", "link": links,
        "entry": [{"fullUrl": f"{BASE}/{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
                  for r in resources],
    }  # fmt: skip


def outcome(code: str = "invalid", text: str = "Appointment.status is required") -> dict[str, Any]:
    return {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code, "diagnostics": text}]}


class FakeEHR:
    """The fake EHR process (``tests/connectors/fake_ehr.py``) and its control endpoints."""

    def __init__(self, port: int, process: subprocess.Popen[bytes]) -> None:
        self.port = port
        self.process = process
        self.origin = f"http://127.0.0.1:{port}"
        self.base = f"{self.origin}/fhir"
        self.token_url = f"{self.origin}/oauth2/token"

    def control(self, path: str, body: dict[str, Any]) -> None:
        response = httpx.post(f"{self.origin}/_control/{path}", json=body, timeout=5)
        assert response.status_code == 204, response.text

    def fault(self, method: str, path: str, *faults: str) -> None:
        self.control("faults", {"method": method, "path": path, "faults": list(faults)})

    def seed(self, *resources: dict[str, Any]) -> None:
        self.control("seed", {"resources": list(resources)})

    def state(self) -> dict[str, Any]:
        state: dict[str, Any] = httpx.get(f"{self.origin}/_control/state", timeout=5).json()
        return state

    def requests(self, method: str, path: str) -> list[dict[str, Any]]:
        return [r for r in self.state()["requests"] if r["method"] == method and r["path"] == path]


@pytest.fixture
def fake_ehr() -> Iterator[FakeEHR]:
    """Start the fake EHR as a real process on a free loopback port; stop it afterwards."""
    with running_fake_ehr() as server:
        yield server


@contextmanager
def running_fake_ehr() -> Iterator[FakeEHR]:
    """Run the fake EHR process for the duration of the block."""
    port = free_port()
    root = Path(__file__).resolve().parents[2]
    process = subprocess.Popen(
        [sys.executable, "-m", "tests.connectors.fake_ehr", "--port", str(port)],
        cwd=root, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        assert process.stdout is not None and process.stdout.readline().strip() == b"ready"
        yield FakeEHR(port, process)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
