"""Every setting the application reads has a chart value, and every chart value reaches a setting: checked against
``gateway.settings.Settings`` itself, by building it from the environment the chart gives the pods."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import annotated_types
import pytest
from pydantic import AliasChoices
from redis.connection import parse_url

from gateway.settings import Settings
from tests.helm.rendering import CHART_DIR, default_values, render

# Settings the chart fills from other values than config.*, and from which.
FROM_OTHER_VALUES = {"redis_url": "redis.enabled / redis.url", "clients_file": "secretKeys.clientsFile"}
# The one variable the chart sets that the application does not read: Kubernetes substitutes it into REDIS_URL
# ("$(REDIS_PASSWORD)") from a secretKeyRef, so that no password is ever rendered. KEDA reads it too.
COMPOSITION_ONLY = {"REDIS_PASSWORD"}
# Chart defaults that differ from the application's on purpose, and why.
DIFFERENT_DEFAULTS = {"data_dir": "the image's working directory is read-only; /tmp is the writable emptyDir"}
NON_DEFAULT_CONFIG = {
    "keyPrefix": "gw-east",
    "maxBodyBytes": 33554432,
    "maxStringLength": 16777216,
    "maxBacklog": 250000,
    "maxWritesInFlight": 64,
    "retryBaseSeconds": 0.5,
    "retryMaxSeconds": 120,
    "claimIdleSeconds": 12.5,
    "workerConcurrency": 16,
    "dedupeWindowSeconds": 0,
    "waitReplicas": 1,
    "waitTimeoutMs": 250,
    "feedMaxWaitSeconds": 7.5,
    "auditRetentionDays": 365.25,
    "rateLimitRate": 12.5,
    "rateLimitBurst": 40,
}
FAKE_SECRET = {("gw-fhir-gateway", "redis-password"): "d0e1f2a3b4c5d6e7f8a9"}


def _snake(camel: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", camel).lower()


def _app_env_names() -> set[str]:
    """Every environment variable name the application reads."""
    names: set[str] = set()
    for name, info in Settings.model_fields.items():
        alias = info.validation_alias
        if isinstance(alias, AliasChoices):
            names.update(str(choice) for choice in alias.choices)
        else:
            names.add(f"GATEWAY_{name.upper()}")
    return names


def _container_env(container: dict[str, Any]) -> dict[str, str]:
    """Resolve a container's environment the way the kubelet does: secretKeyRefs, then $(VAR) references."""
    resolved: dict[str, str] = {}
    for env in container["env"]:
        if "valueFrom" in env:
            ref = env["valueFrom"]["secretKeyRef"]
            value = FAKE_SECRET[(ref["name"], ref["key"])]
        else:
            value = re.sub(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", lambda m: resolved.get(m[1], m[0]), env["value"])
        resolved[env["name"]] = value
    return resolved


def _settings_from(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    for name in _app_env_names():
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return Settings()


def test_every_setting_has_a_chart_value_and_every_config_value_is_a_setting() -> None:
    config = default_values()["config"]
    chart_fields = {_snake(key) for key in config} | set(FROM_OTHER_VALUES)
    assert chart_fields == set(Settings.model_fields), (
        f"settings without a chart value: {sorted(set(Settings.model_fields) - chart_fields)}; "
        f"chart values the app does not read: {sorted(chart_fields - set(Settings.model_fields))}"
    )
    assert not set(FROM_OTHER_VALUES) & {_snake(key) for key in config}


@pytest.mark.parametrize(
    "values", [{}, {"poller": {"enabled": True}, "redis": {"enabled": False, "url": "redis://r:6379/1"}}]
)
def test_the_chart_sets_only_variables_the_app_reads(values: dict[str, Any]) -> None:
    # A null config value sets no variable: the application's default (None) applies.
    wanted = {
        f"GATEWAY_{_snake(key).upper()}" for key, value in default_values()["config"].items() if value is not None
    }
    wanted |= {"REDIS_URL", "GATEWAY_CLIENTS_FILE"}
    containers = list(render(values).gateway_containers())
    assert {name for name, _ in containers} >= {"api", "worker"}
    for name, container in containers:
        names = [env["name"] for env in container["env"]]
        assert len(names) == len(set(names)), name
        assert set(names) - COMPOSITION_ONLY == wanted, name
        assert set(names) <= _app_env_names() | COMPOSITION_ONLY, name
        assert not container.get("envFrom"), name
        # $(REDIS_PASSWORD) is only replaced when it is defined before REDIS_URL.
        assert names.index("REDIS_PASSWORD") < names.index("REDIS_URL"), name


@pytest.mark.parametrize("config", [{}, NON_DEFAULT_CONFIG], ids=["defaults", "changed"])
def test_settings_built_from_the_pod_environment_equal_the_chart_values(
    config: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    release = render({"config": config})
    values = {**default_values()["config"], **config}
    for name, container in release.gateway_containers():
        settings = _settings_from(_container_env(container), monkeypatch)
        for key, value in values.items():
            field = _snake(key)
            got = getattr(settings, field)
            want = Path(value) if isinstance(got, Path) else value
            assert got == want, f"{name}: config.{key} = {value!r} reached the app as {got!r}"
        assert settings.clients_file == Path("/etc/fhir-gateway/clients/clients.yaml")
        mounts = {m["mountPath"] for m in container["volumeMounts"]}
        assert str(settings.clients_file.parent) in mounts


def test_redis_url_reaches_redis_py_with_the_secret_password(monkeypatch: pytest.MonkeyPatch) -> None:
    release = render()
    (_, api), *_ = release.gateway_containers()
    settings = _settings_from(_container_env(api), monkeypatch)
    assert settings.redis_url is not None
    parsed = parse_url(settings.redis_url)
    assert parsed["password"] == FAKE_SECRET[("gw-fhir-gateway", "redis-password")]
    assert parsed["host"] == "gw-fhir-gateway-redis.clinic.svc"
    assert parsed["port"] == 6379
    assert parsed["db"] == 0
    redis_service = release.get("Service", "redis")
    assert redis_service["metadata"]["name"] == "gw-fhir-gateway-redis"


def test_external_redis_url_keeps_its_user_tls_and_database(monkeypatch: pytest.MonkeyPatch) -> None:
    release = render({"redis": {"enabled": False, "url": "rediss://gateway@redis.example.org:6380/4"}})
    (_, api), *_ = release.gateway_containers()
    parsed = parse_url(_settings_from(_container_env(api), monkeypatch).redis_url or "")
    assert (parsed["username"], parsed["host"], parsed["port"], parsed["db"]) == (
        "gateway",
        "redis.example.org",
        6380,
        4,
    )
    assert parsed["password"] == FAKE_SECRET[("gw-fhir-gateway", "redis-password")]
    assert parsed["connection_class"].__name__ == "SSLConnection"


def test_external_redis_without_auth_gets_no_password() -> None:
    release = render({"redis": {"enabled": False, "url": "redis://r.example:6379/0", "auth": {"enabled": False}}})
    for _, container in release.gateway_containers():
        env = {e["name"]: e for e in container["env"]}
        assert "REDIS_PASSWORD" not in env
        assert env["REDIS_URL"]["value"] == "redis://r.example:6379/0"


def test_chart_defaults_equal_the_application_defaults() -> None:
    config = default_values()["config"]
    for key, value in config.items():
        field = _snake(key)
        if field in DIFFERENT_DEFAULTS:
            continue
        default = Settings.model_fields[field].default
        assert value == (str(default) if isinstance(default, Path) else default), f"config.{key}"


def test_schema_bounds_match_the_settings_constraints() -> None:
    schema = json.loads((CHART_DIR / "values.schema.json").read_text())["properties"]["config"]["properties"]
    for key, rules in schema.items():
        info = Settings.model_fields[_snake(key)]
        for constraint in info.metadata:
            if isinstance(constraint, annotated_types.Ge):
                assert rules.get("minimum") == constraint.ge, f"config.{key}: minimum"
            elif isinstance(constraint, annotated_types.Le):
                assert rules.get("maximum") == constraint.le, f"config.{key}: maximum"
            elif isinstance(constraint, annotated_types.Gt):
                assert rules.get("exclusiveMinimum") == constraint.gt, f"config.{key}: exclusiveMinimum"
            elif hasattr(constraint, "pattern") and constraint.pattern:
                assert rules.get("pattern") == constraint.pattern, f"config.{key}: pattern"
