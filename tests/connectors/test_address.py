"""The outbound address guard: which hosts webhooks and EHR connectors may reach, checked at registration and at
every connection (against what the name resolves to then: DNS rebinding)."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from connectors import EHRConfig, UnsafeURL
from connectors.address import GuardedTransport, OutboundPolicy
from connectors.pool import Connectors, Target
from tests.connectors.conftest import MakeClient
from tests.support import fake_dns

REFUSED_HOSTS = [
    "169.254.169.254", "10.0.0.1", "172.16.5.4", "192.168.1.1", "localhost", "LOCALHOST.", "::1", "[::1]",
    "[::ffff:169.254.169.254]", "::ffff:127.0.0.1", "0.0.0.0", "::", "2130706433", "0x7f000001", "0177.0.0.1",
    "127.1", "100.100.100.200", "100.64.0.1", "fd00::1", "[fd00::1]", "fe80::1", "224.0.0.1", "ff02::1",
    "240.0.0.1", "255.255.255.255", "metadata.google.internal", "metadata", "metadata.goog", "64:ff9b::a9fe:a9fe",
    "2002:a9fe:a9fe::1", "192.0.2.10",
]  # fmt: skip


@pytest.mark.parametrize("host", REFUSED_HOSTS)
def test_inward_addresses_in_any_spelling_and_metadata_names_are_refused(host: str) -> None:
    assert OutboundPolicy().refusal(host) is not None
    assert OutboundPolicy(loopback=True).refusal(host) is not None or _loopback(host)


def _loopback(host: str) -> bool:
    return host.lower().rstrip(".") in ("localhost", "::1", "[::1]", "::ffff:127.0.0.1", "2130706433", "0x7f000001",
                                        "0177.0.0.1", "127.1")  # fmt: skip


@pytest.mark.parametrize("host", ["8.8.8.8", "hooks.example.org", "2001:4860:4860::8888", "[::ffff:8.8.8.8]"])
def test_public_addresses_and_names_pass(host: str) -> None:
    assert OutboundPolicy().refusal(host) is None


def test_development_allows_loopback_and_nothing_else_inward() -> None:
    dev = OutboundPolicy.from_settings("", development=True)
    assert [dev.refusal(h) for h in ("127.0.0.1", "localhost", "::1")] == [None, None, None]
    assert all(dev.refusal(h) for h in ("10.0.0.1", "169.254.169.254", "metadata.google.internal", "fd00::1"))


def test_the_operators_allow_list_admits_its_networks_and_names_only() -> None:
    policy = OutboundPolicy.from_settings("10.20.0.0/16, ehr.internal.example ,fd12::/16")
    assert policy.refusal("10.20.3.4") is None and policy.refusal("fd12::5") is None
    assert policy.refusal("ehr.internal.example") is None
    assert policy.refusal("10.21.0.1") and policy.refusal("127.0.0.1") and policy.refusal("169.254.169.254")
    with pytest.raises(ValueError):
        OutboundPolicy.from_settings("10.0.0.0/33")
    with pytest.raises(ValueError):
        OutboundPolicy.from_settings("not a host/")


# ---- at connection time: the name is resolved by the guard and every address checked ----------------------------


class _Server:
    """A loopback HTTP server that records the Host of each request it gets."""

    def __init__(self) -> None:
        self.hosts: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hosts.append(self.headers.get("Host", ""))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self.server.server_address[1])
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()


@pytest.fixture
def server() -> Iterator[_Server]:
    running = _Server()
    yield running
    running.server.shutdown()
    running.server.server_close()


Resolver = Callable[[dict[str, str]], None]


@pytest.fixture
def resolve(monkeypatch: pytest.MonkeyPatch) -> Resolver:
    return fake_dns(monkeypatch).update


async def test_a_name_resolving_inward_is_refused_at_connect_and_nothing_reaches_it(
    server: _Server, resolve: Resolver
) -> None:
    resolve({"rebind.example": "127.0.0.1"})
    async with httpx.AsyncClient(transport=GuardedTransport(OutboundPolicy())) as http:
        for url in (f"http://rebind.example:{server.port}/", f"http://127.0.0.1:{server.port}/",
                    f"http://2130706433:{server.port}/"):  # fmt: skip
            with pytest.raises(httpx.ConnectError) as refused:
                await http.get(url)
            assert str(refused.value).startswith("refused address"), url
    assert server.hosts == []


async def test_an_allowed_address_is_connected_to_with_the_host_name_kept(server: _Server, resolve: Resolver) -> None:
    resolve({"receiver.internal.example": "127.0.0.1"})
    policy = OutboundPolicy.from_settings("127.0.0.0/8")
    async with httpx.AsyncClient(transport=GuardedTransport(policy)) as http:
        answer = await http.get(f"http://receiver.internal.example:{server.port}/")
    assert answer.status_code == 200
    assert server.hosts == [f"receiver.internal.example:{server.port}"]


def _self_signed(folder: Path, host: str) -> tuple[Path, Path]:
    """Write a self-signed certificate for ``host`` (an IP address) and its key; return their paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "loopback test receiver")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(host))]), critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


async def test_tls_is_verified_by_every_client_although_they_share_one_context(server: _Server, tmp_path: Path) -> None:
    """Clients share the process's TLS context (building one reads the CA bundle): each still refuses a certificate
    that no trusted CA signed, and trusts one its own ``verify`` context names."""
    cert, key = _self_signed(tmp_path, "127.0.0.1")
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server.server.socket = tls.wrap_socket(server.server.socket, server_side=True)
    policy = OutboundPolicy.from_settings("127.0.0.0/8")
    url = f"https://127.0.0.1:{server.port}/"
    for _ in range(2):  # the second client gets the context the first one built
        async with httpx.AsyncClient(transport=GuardedTransport(policy)) as http:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await http.get(url)
    trusting = ssl.create_default_context(cafile=str(cert))
    async with httpx.AsyncClient(transport=GuardedTransport(policy, verify=trusting)) as http:
        assert (await http.get(url)).status_code == 200
    async with httpx.AsyncClient(transport=GuardedTransport(policy)) as http:  # the trusting one was not shared
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            await http.get(url)
    assert server.hosts == [f"127.0.0.1:{server.port}"]


# ---- EHR connectors: at configuration and at connection ---------------------------------------------------------


def _ehr(base_url: str, **auth: Any) -> EHRConfig:
    return EHRConfig.model_validate(
        {"base_url": base_url, "auth": auth or {"type": "bearer", "token": "static-ehr-token-0123456789"}}
    )


def test_an_ehr_on_an_inward_address_is_refused_when_the_configuration_is_read(
    rsa_pem: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEST_EHR_KEY", rsa_pem.decode())
    smart = {"type": "smart-backend", "token_url": "https://10.0.0.9/oauth2/token", "client_id": "c",
             "private_key_env": "TEST_EHR_KEY", "kid": "k", "scopes": "system/Appointment.rs"}  # fmt: skip
    targets = {
        "meta": Target("meta", "generic", _ehr("https://169.254.169.254/fhir")),
        "dotted": Target("dotted", "generic", _ehr("https://0x7f000001/fhir")),
        "named": Target("named", "generic", _ehr("https://metadata.google.internal/fhir")),
        "token": Target("token", "generic", _ehr("https://ehr.example.org/fhir", **smart)),
        "fine": Target("fine", "generic", _ehr("https://ehr.example.org/fhir")),
    }
    connectors = Connectors(targets)
    assert sorted(connectors.clients) == ["fine"]
    assert set(connectors.broken) == {"meta", "dotted", "named", "token"}
    assert all("may not be called" in why for why in connectors.broken.values()), connectors.broken
    allowed = Connectors({"meta": targets["meta"]}, outbound=OutboundPolicy.from_settings("169.254.169.254"))
    assert sorted(allowed.clients) == ["meta"]


async def test_an_ehr_name_that_resolves_inward_is_refused_at_connect_and_not_retried(
    make_client: MakeClient, server: _Server, resolve: Resolver
) -> None:
    resolve({"ehr.rebind.example": "127.0.0.1"})
    config = EHRConfig.model_validate({
        "base_url": f"https://ehr.rebind.example:{server.port}/fhir", "max_attempts": 3,
        "auth": {"type": "bearer", "token": "static-ehr-token-0123456789"},
    })  # fmt: skip
    async with make_client(config) as client:
        with pytest.raises(UnsafeURL):
            await client.search("Appointment", [])
    assert server.hosts == []
