"""The clients file: what it accepts and what it refuses."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.cli import main
from gateway.settings import ClientsConfig


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


@pytest.mark.parametrize(
    "clients",
    [
        [{"token": "short", "tenant": "clinic-a", "role": "ehr"}],
        [{"token": "abcdefghijklmnopqrst", "tenant": "Clinic A", "role": "ehr"}],
        [{"token": "abcdefghijklmnopqrst", "tenant": "clinic-a", "role": "admin"}],
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
