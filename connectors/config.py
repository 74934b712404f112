"""The per-tenant EHR connector block of the clients file, as pydantic models.

```json
"clinic-a": {"vendor": "epic", "ehr": {
    "base_url": "https://ehr.example.org/fhir/R4",
    "auth": {"type": "smart-backend", "token_url": "https://ehr.example.org/oauth2/token", "client_id": "...",
             "private_key_file": "/run/secrets/ehr-key.pem", "alg": "RS384", "kid": "2026-01",
             "scopes": "system/Appointment.rs system/Communication.cs"},
    "poll": {"types": ["Appointment"], "interval_seconds": 60, "since": "2026-01-01T00:00:00Z"},
    "rate_limit_per_second": 10, "timeout_seconds": 30}}
```

Secrets never sit in the file as plain text fields that get logged: a bearer token is a ``SecretStr``, and a private
key is read from a mounted file or an environment variable when the connector opens. Plain ``http`` and the
``none`` auth are for loopback test servers only.
"""

from __future__ import annotations

import ipaddress
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from connectors.errors import ConfigError


def is_loopback(url: str) -> bool:
    """Tell whether ``url`` names this machine (localhost, 127.0.0.0/8, ::1)."""
    host = urlsplit(url).hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _absolute_url(value: str, what: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{what} must be an absolute https URL")
    if parts.scheme == "http" and not is_loopback(value):
        raise ValueError(f"{what} must use https (plain http only for a loopback test server)")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise ValueError(f"{what} must not carry a query, a fragment or credentials")
    return value.rstrip("/")


class SmartBackendAuth(BaseModel):
    """SMART Backend Services: a signed JWT client assertion exchanged for an access token."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["smart-backend"]
    token_url: str
    client_id: str = Field(min_length=1)
    private_key_file: Path | None = None
    private_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    alg: Literal["RS384", "ES384"] = "RS384"
    kid: str = Field(min_length=1, max_length=200)
    scopes: str = Field(min_length=1, description="space-separated, as SMART sends them")

    @field_validator("token_url")
    @classmethod
    def _token_url(cls, value: str) -> str:
        return _absolute_url(value, "token_url")

    @model_validator(mode="after")
    def _one_key_source(self) -> SmartBackendAuth:
        if (self.private_key_file is None) == (self.private_key_env is None):
            raise ValueError("give exactly one of private_key_file and private_key_env")
        return self

    def private_key_pem(self) -> bytes:
        """Read the PEM private key from its file or environment variable."""
        if self.private_key_file is not None:
            try:
                return self.private_key_file.read_bytes()
            except OSError as exc:
                raise ConfigError(f"cannot read the private key file: {exc.strerror}") from None
        value = os.environ.get(self.private_key_env or "")
        if not value:
            raise ConfigError(f"the environment variable {self.private_key_env} holds no private key")
        return value.encode()


class BearerAuth(BaseModel):
    """A static bearer token the EHR issued."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["bearer"]
    token: SecretStr

    @field_validator("token")
    @classmethod
    def _present(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("the bearer token is empty")
        return value


class NoAuth(BaseModel):
    """No credentials: for a local test server only (refused for any non-loopback URL)."""

    model_config = ConfigDict(extra="forbid")

    type: Literal["none"]


Auth = Annotated[SmartBackendAuth | BearerAuth | NoAuth, Field(discriminator="type")]


class PollConfig(BaseModel):
    """Incremental pull: which types, how often, from when."""

    model_config = ConfigDict(extra="forbid")

    types: list[str] = Field(min_length=1)
    interval_seconds: float = Field(default=60.0, ge=1)
    since: datetime | None = Field(default=None, description="where the first poll starts; default 30 days back")
    page_size: int = Field(default=100, ge=1, le=1000, description="_count")
    overlap_seconds: float = Field(default=60.0, ge=0, description="searched again behind the cursor (clock skew)")
    sort: bool = Field(default=True, description="ask for _sort=_lastUpdated, so the cursor moves page by page")
    params: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="extra search parameters by type (a location the vendor requires)"
    )
    date_past_days: int = Field(default=1, ge=0, description="for vendors whose search needs a date: how far back")
    date_future_days: int = Field(default=90, ge=0, description="and how far ahead")

    @field_validator("types")
    @classmethod
    def _types(cls, value: list[str]) -> list[str]:
        from conformance.definitions import R4_RESOURCE_TYPES

        unknown = [t for t in value if t not in R4_RESOURCE_TYPES]
        if unknown:
            raise ValueError(f"not R4 resource types: {', '.join(unknown)}")
        if len(set(value)) != len(value):
            raise ValueError("a type is listed twice")
        return value

    @field_validator("since")
    @classmethod
    def _aware(cls, value: datetime | None) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("since needs a time zone (e.g. 2026-01-01T00:00:00Z)")
        return value.astimezone(UTC) if value is not None else None


class EHRConfig(BaseModel):
    """One tenant's EHR: where it is, how to sign in, what to pull, and how hard to push it."""

    model_config = ConfigDict(extra="forbid")

    base_url: str
    auth: Auth
    poll: PollConfig | None = None
    practice_id: str | None = Field(default=None, pattern=r"^[0-9]{1,12}$", description="athenahealth practice id")
    rate_limit_per_second: float = Field(default=10.0, gt=0)
    timeout_seconds: float = Field(default=30.0, gt=0, description="cap of one attempt, body included")
    max_attempts: int = Field(default=4, ge=1, description="attempts of one idempotent request")
    max_retry_seconds: float = Field(default=60.0, gt=0, description="cap of all attempts of one request")
    backoff_base_seconds: float = Field(default=0.5, gt=0)
    backoff_max_seconds: float = Field(default=20.0, gt=0, description="longest wait between attempts")
    breaker_failures: int = Field(default=5, ge=1, description="consecutive failures that open the circuit")
    breaker_reset_seconds: float = Field(default=30.0, gt=0, description="open time before a half-open probe")
    max_connections: int = Field(default=10, ge=1)

    @field_validator("base_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        return _absolute_url(value, "base_url")

    @model_validator(mode="after")
    def _loopback_only_without_auth(self) -> EHRConfig:
        if isinstance(self.auth, NoAuth) and not is_loopback(self.base_url):
            raise ValueError('auth type "none" is for a loopback test server only')
        return self

    def allowed_urls(self) -> tuple[str, str | None]:
        """Return the base URL and the token URL: the only URLs the connector may call."""
        token = self.auth.token_url if isinstance(self.auth, SmartBackendAuth) else None
        return self.base_url, token

    def summary(self) -> dict[str, Any]:
        """Describe the connector without any secret."""
        return {
            "base_url": self.base_url,
            "auth": self.auth.type,
            "types": list(self.poll.types) if self.poll else [],
            "interval_seconds": self.poll.interval_seconds if self.poll else None,
        }
