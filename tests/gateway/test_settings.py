"""The clients file: what it accepts and what it refuses."""

from __future__ import annotations

import importlib.util
import json
import secrets
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.cli import main
from gateway.settings import ClientsConfig, Tenant, token_bits


def test_yaml_and_json_clients_files_load_with_defaults(tmp_path: Path) -> None:
    yaml_file = tmp_path / "clients.yaml"
    yaml_file.write_text(
        "clients:\n  - {token: abcdefghijklmnopqrst, tenant: clinic-a, role: ehr}\n"
        "tenants:\n  clinic-a: {vendor: epic}\n"
    )
    config = ClientsConfig.load(yaml_file)
    assert config.clients[0].scopes == []
    assert config.tenant("clinic-a").vendor == "epic"
    assert config.tenant("clinic-z").vendor == "generic"
    assert "abcdefghijklmnopqrst" not in repr(config)


def test_a_tenant_without_a_block_gets_the_defaults_of_its_own_file(tmp_path: Path) -> None:
    path = tmp_path / "clients.json"
    path.write_text(json.dumps({"tenants": {"clinic-a": {"validation": "lenient"}}}))
    config = ClientsConfig.load(path)
    assert config.tenant("clinic-z") == Tenant()
    assert config.tenant("clinic-z") is config.tenant("clinic-y")  # built once, not for each entry asking
    assert config.tenant("clinic-a").validation == "lenient"
    path.write_text(json.dumps({"tenants": {"clinic-z": {"dedupe_posts": False}}}))
    reloaded = ClientsConfig.load(path)
    assert reloaded.tenant("clinic-z").dedupe_posts is False
    assert reloaded.tenant("clinic-a") == Tenant() and reloaded.tenant("clinic-a") is not config.tenant("clinic-a")


@pytest.mark.parametrize(
    "clients",
    [
        [{"token": "short", "tenant": "clinic-a", "role": "ehr"}],
        [{"token": "abcdefghijklmnopqrst", "tenant": "Clinic A", "role": "ehr"}],
        [{"token": "abcdefghijklmnopqrst", "tenant": "clinic-a", "role": "root"}],
        [{"token": "abcdefghijklmnopqrst", "tenant": "clinic-a", "role": "ehr"}] * 2,
    ],
)
def test_bad_clients_are_refused(clients: list[dict[str, str]]) -> None:
    with pytest.raises(ValidationError):
        ClientsConfig.model_validate({"clients": clients})


def test_api_refuses_placeholder_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "clients.json"
    path.write_text(json.dumps({"clients": [{"token": "changeme-changeme", "tenant": "clinic-a", "role": "ehr"}]}))
    monkeypatch.setenv("GATEWAY_CLIENTS_FILE", str(path))
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1")
    assert main(["api"]) == 2
    assert "placeholder" in capsys.readouterr().err


def test_the_settings_reference_in_the_docs_is_current() -> None:
    tool = Path(__file__).resolve().parents[2] / "tools" / "settings_doc.py"
    spec = importlib.util.spec_from_file_location("settings_doc", tool)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    held = module.documented(module.DOC.read_text(encoding="utf-8"))
    assert held == module.table(), "run `python tools/settings_doc.py --write`"


def test_python_dash_m_gateway_cli_validates_a_file(tmp_path: Path) -> None:
    path = tmp_path / "patient.json"
    path.write_text('{"resourceType": "Patient", "id": "p1", "gender": "female"}', encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "validate", str(path)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "valid" in done.stdout


WEAK_TOKENS = ["aaaaaaaaaaaaaaaa", "0000000000000000", "<your-token-here>", "REPLACE_ME_TOKEN_0001",
               "abcdefghijklmnopqrstuvwxyz", "ehr-token-clinic-a-0123456789", "Password1234567890!"]  # fmt: skip


def _clients_file(tmp_path: Path, token: str) -> Path:
    path = tmp_path / "clients.json"
    clients = [{"token": token, "tenant": "clinic-a", "role": "ehr", "name": "clinic-a-ehr"},
               {"token": secrets.token_urlsafe(32), "tenant": "clinic-a", "role": "platform"}]  # fmt: skip
    path.write_text(json.dumps({"clients": clients}))
    return path


@pytest.fixture
def no_serving(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Stand in for serving (api) and working (worker): record that the command got that far."""
    started: list[str] = []

    def serve(uvicorn: object, app: object, host: str, port: int) -> None:
        started.append("api")

    def run(coroutine: Any) -> None:
        coroutine.close()
        started.append("worker")

    monkeypatch.setattr("gateway.cli._serve", serve)
    monkeypatch.setattr("gateway.cli._run_loop", run)
    monkeypatch.setenv("REDIS_URL", "redis://127.0.0.1:1")
    monkeypatch.setenv("GATEWAY_WORKER_METRICS_PORT", "0")
    return started


@pytest.mark.parametrize("token", WEAK_TOKENS)
@pytest.mark.parametrize("command", ["api", "worker"])
def test_production_refuses_a_weak_token_naming_the_client_not_the_token(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_serving: list[str],
    token: str,
    command: str,
) -> None:
    monkeypatch.setenv("GATEWAY_CLIENTS_FILE", str(_clients_file(tmp_path, token)))
    assert main([command, "--workers", "1"] if command == "api" else [command]) == 2
    assert no_serving == []
    err = capsys.readouterr().err
    assert "clinic-a-ehr" in err and "128 bits" in err
    assert token not in err


@pytest.mark.parametrize("command", ["api", "worker"])
def test_production_starts_with_random_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, no_serving: list[str], command: str
) -> None:
    monkeypatch.setenv("GATEWAY_CLIENTS_FILE", str(_clients_file(tmp_path, "ehr-" + secrets.token_urlsafe(32))))
    assert main([command, "--workers", "1"] if command == "api" else [command]) == 0
    assert no_serving == [command]


@pytest.mark.parametrize("make", [lambda: secrets.token_urlsafe(32), lambda: secrets.token_hex(32),
                                  lambda: "platform-" + uuid.uuid4().hex + uuid.uuid4().hex])  # fmt: skip
def test_random_tokens_are_estimated_past_128_bits(make: Any) -> None:
    for _ in range(200):
        assert token_bits(make()) >= 128


@pytest.mark.parametrize("token", WEAK_TOKENS)
def test_weak_tokens_are_estimated_under_128_bits(token: str) -> None:
    assert token_bits(token) < 128


@pytest.mark.parametrize("command", ["api", "worker"])
def test_gateway_development_does_not_make_api_or_worker_a_development_process(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    no_serving: list[str],
    command: str,
) -> None:
    monkeypatch.setenv("GATEWAY_CLIENTS_FILE", str(_clients_file(tmp_path, secrets.token_urlsafe(32))))
    monkeypatch.setenv("GATEWAY_DEVELOPMENT", "true")
    assert main([command, "--workers", "1"] if command == "api" else [command]) == 2
    assert no_serving == []
    assert "fhir-gateway run" in capsys.readouterr().err
