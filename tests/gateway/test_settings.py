"""The clients file: what it accepts and what it refuses."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
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
