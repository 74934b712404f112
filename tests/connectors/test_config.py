"""The tenant's ehr block in the clients file: what it accepts, what it refuses, and the vendor's search rules."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from connectors.search import search_params
from gateway.settings import ClientsConfig
from mappers.vendors import profile
from tests.connectors.conftest import BASE, ehr_config, smart_auth

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _tenant(vendor: str, ehr: dict[str, Any]) -> ClientsConfig:
    return ClientsConfig.model_validate({"tenants": {"clinic-a": {"vendor": vendor, "ehr": ehr}}})


def _ehr(**changes: Any) -> dict[str, Any]:
    return {"base_url": BASE, "auth": {"type": "bearer", "token": "static-ehr-token-0123456789"}, **changes}


def test_the_issue_example_loads_with_secrets_hidden(tmp_path: Path) -> None:
    config = _tenant("epic", _ehr(
        auth=smart_auth(tmp_path / "k.pem"),
        poll={"types": ["Appointment", "Communication"], "interval_seconds": 60, "since": "2026-01-01T00:00:00Z"},
        rate_limit_per_second=5, timeout_seconds=10,
    ))  # fmt: skip
    ehr = config.tenant("clinic-a").ehr
    assert ehr is not None and ehr.poll is not None
    assert ehr.poll.since == datetime(2026, 1, 1, tzinfo=UTC)
    assert ehr.auth.type == "smart-backend"
    assert list(config.connector_targets()) == ["clinic-a"]
    bearer = _tenant("generic", _ehr())
    assert "static-ehr-token" not in repr(bearer) and "static-ehr-token" not in str(bearer.model_dump())


@pytest.mark.parametrize(
    "ehr",
    [
        _ehr(auth={"type": "none"}),  # no auth off loopback
        _ehr(base_url="http://ehr.test/fhir"),  # plain http off loopback
        _ehr(base_url="https://ehr.test/fhir?x=1"),
        _ehr(base_url="ftp://ehr.test/fhir"),
        _ehr(poll={"types": ["Appointment"], "interval_seconds": 0.5}),
        _ehr(poll={"types": ["NotAType"]}),
        _ehr(poll={"types": ["Appointment"], "since": "2026-01-01T00:00:00"}),  # no zone
        _ehr(auth={"type": "bearer", "token": " "}),
        _ehr(unknown=1),
    ],
)
def test_bad_ehr_blocks_are_refused(ehr: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        _tenant("generic", ehr)


def test_a_smart_client_needs_exactly_one_key_source(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        _tenant("generic", _ehr(auth={**smart_auth(tmp_path / "k.pem"), "private_key_env": "KEY"}))
    with pytest.raises(ValidationError, match="exactly one"):
        _tenant("generic", _ehr(auth={**smart_auth(tmp_path / "k.pem"), "private_key_file": None}))


def test_no_auth_and_plain_http_are_allowed_for_a_loopback_test_server() -> None:
    config = _tenant("generic", _ehr(base_url="http://127.0.0.1:8999/fhir", auth={"type": "none"}))
    assert config.tenant("clinic-a").ehr is not None


def test_oracle_health_appointment_search_needs_a_patient_practitioner_or_location_and_a_date() -> None:
    with pytest.raises(ValidationError, match="one of patient, practitioner, location"):
        _tenant("oracle-health", _ehr(poll={"types": ["Appointment"]}))
    config = _tenant(
        "oracle-health", _ehr(poll={"types": ["Appointment"], "params": {"Appointment": {"location": "633867"}}})
    )
    ehr = config.tenant("clinic-a").ehr
    assert ehr is not None
    params = search_params(profile("oracle-health"), ehr, "Appointment", datetime(2026, 2, 1, tzinfo=UTC), NOW)
    assert ("location", "633867") in params
    assert ("date", "ge2026-02-28T12:00:00Z") in params and ("date", "le2026-05-30T12:00:00Z") in params
    assert params[0] == ("_lastUpdated", "gt2026-02-01T00:00:00Z")


def test_athenahealth_needs_its_practice_id_on_every_search() -> None:
    with pytest.raises(ValidationError, match="practice_id"):
        _tenant("athenahealth", _ehr(poll={"types": ["Appointment"]}))
    config = _tenant("athenahealth", _ehr(practice_id="195900", poll={"types": ["Appointment", "Patient"]}))
    ehr = config.tenant("clinic-a").ehr
    assert ehr is not None
    for rtype in ("Appointment", "Patient"):
        params = search_params(profile("athenahealth"), ehr, rtype, NOW, NOW)
        assert ("ah-practice", "Organization/a-1.Practice-195900") in params
        assert ("_count", "100") in params and ("_sort", "_lastUpdated") in params
        assert not any(name == "date" for name, _ in params)


def test_a_generic_search_is_lastupdated_count_and_sort_only() -> None:
    ehr = ehr_config(None, poll={"types": ["Appointment"], "page_size": 25, "sort": False})
    assert search_params(profile("generic"), ehr, "Appointment", NOW, NOW) == [
        ("_lastUpdated", "gt2026-03-01T12:00:00Z"), ("_count", "25"),
    ]  # fmt: skip
