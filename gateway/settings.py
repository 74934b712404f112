"""Settings from the environment (prefix ``GATEWAY_``, plus ``REDIS_URL``) and the clients file."""

from __future__ import annotations

import json
import math
import re
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from connectors.address import OutboundPolicy, parse_allow
from connectors.config import EHRConfig
from connectors.pool import Target
from connectors.search import check_rules
from gateway.identity import scopes
from mappers.codes import LocalCodes
from mappers.vendors import VENDORS, profile

Role = Literal["ehr", "platform", "admin"]  # admin: the operator console (/console)
MIN_TOKEN_BITS = 128
# Words of documentation placeholders; in a token each counts as no randomness at all.
_PLACEHOLDER = re.compile(
    "change-?me|change_me|replace|placeholder|example|secret|passw(?:or)?d|token|your|here|xxx|todo|fixme|dummy|"
    "sample|default|insert|test|demo|admin",
    re.IGNORECASE,
)


def token_bits(token: str) -> float:
    """Estimate a token's entropy in bits: the character classes it draws on, times its length, discounted.

    A character seen before in the token counts half, one equal or next to the one before it (``aaaa``, ``1234``)
    a tenth, and a placeholder word (``your-token-here``, ``REPLACE_ME``) nothing. Random tokens of 32 bytes
    (``secrets.token_urlsafe(32)``, ``openssl rand -hex 32``) come out far above 128; typed ones far below.
    """
    text = _PLACEHOLDER.sub("", token)
    pool = sum(
        size
        for size, present in (
            (26, any("a" <= c <= "z" for c in text)),
            (26, any("A" <= c <= "Z" for c in text)),
            (10, any(c.isdigit() for c in text)),
            (33, any(c.isascii() and not c.isalnum() for c in text)),
            (128, not text.isascii()),
        )
        if present
    )
    if pool == 0:
        return 0.0
    weight, seen, previous = 0.0, set(), None
    for char in text:
        if previous is not None and abs(ord(char) - ord(previous)) <= 1:
            weight += 0.1
        elif char in seen:
            weight += 0.5
        else:
            weight += 1.0
        seen.add(char)
        previous = char
    return weight * math.log2(pool)


class Client(BaseModel):
    """One API client, bound to one tenant and one role: a static bearer token, or a SMART Backend Services client
    (``name`` is its client id; its public keys inline as ``jwks`` or at ``jwks_url``) that gets short-lived
    access tokens at ``/oauth2/token`` (docs/identity.md). ``scopes`` narrow the role (gateway.identity.scopes)."""

    model_config = ConfigDict(extra="forbid")

    token: SecretStr | None = None
    tenant: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,62}$")
    role: Role
    scopes: list[str] = Field(default_factory=list)
    name: str | None = Field(default=None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
    jwks_url: str | None = Field(default=None, pattern=r"^https://[^\s]+$")
    jwks: dict[str, Any] | None = None
    # Rate limit (docs/configuration.md, "Rate limits"): requests per second and the bucket's size; unset: the
    # tenant's, else GATEWAY_RATE_LIMIT_RATE / _BURST, else none.
    rate: float | None = Field(default=None, gt=0)
    burst: int | None = Field(default=None, ge=1)

    @field_validator("token")
    @classmethod
    def _long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("a client token must have at least 16 characters")
        return value

    @field_validator("jwks")
    @classmethod
    def _public_keys(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        keys = value.get("keys")
        if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
            raise ValueError("jwks must be a JWK Set: {'keys': [...]}")
        if any(set(k) & {"d", "p", "q", "dp", "dq", "qi", "k"} for k in keys):
            raise ValueError("jwks must hold public keys only (a private or symmetric key was given)")
        return value

    @field_validator("scopes")
    @classmethod
    def _known_scopes(cls, value: list[str]) -> list[str]:
        unknown = [s for s in value if s.startswith(("system/", "platform/")) and not scopes.valid_scope(s)]
        if unknown:
            raise ValueError(f"unknown scopes: {', '.join(unknown)}")
        return value

    @model_validator(mode="after")
    def _one_credential(self) -> Client:
        smart = self.jwks_url is not None or self.jwks is not None
        if self.jwks_url is not None and self.jwks is not None:
            raise ValueError("a client has jwks_url or jwks, not both")
        if self.token is None and not smart:
            raise ValueError("a client needs a token, or jwks_url / jwks for SMART Backend Services")
        if smart and self.name is None:
            raise ValueError("a SMART client needs a name: its client id (the assertion's iss and sub)")
        return self

    @property
    def smart(self) -> bool:
        """Tell whether the client signs in with a key (SMART Backend Services)."""
        return self.jwks_url is not None or self.jwks is not None


class Tenant(BaseModel):
    """Per-tenant settings, with the tenant's EHR connector block (``connectors.config.EHRConfig``)."""

    model_config = ConfigDict(extra="allow")

    vendor: str = "generic"
    timezone: str | None = None
    ehr: EHRConfig | None = None
    # strict: refuse a resource with any error; lenient: accept one whose errors no mapping reads (gateway/policy.py)
    validation: Literal["strict", "lenient"] = "strict"
    # The tenant's own codes read as LOINC (flowsheet rows, local answer codes) and forms' item maps; over its
    # vendor profile's (mappers.codes.LocalCodes).
    local_codes: LocalCodes = Field(default_factory=LocalCodes)
    # true: a plain POST identical to one within GATEWAY_DEDUPE_WINDOW_SECONDS answers with the first resource
    # (a retried create makes no duplicate); false: every POST creates (docs/fhir.md, "The dedupe window")
    dedupe_posts: bool = True
    # The rate limit of the tenant's clients that set none (requests per second, bucket size); unset: the global one
    rate: float | None = Field(default=None, gt=0)
    burst: int | None = Field(default=None, ge=1)

    @field_validator("vendor")
    @classmethod
    def _known_vendor(cls, value: str) -> str:
        if value not in VENDORS:
            raise ValueError(f"vendor must be one of {', '.join(VENDORS)}")
        return value

    @model_validator(mode="after")
    def _vendor_search_rules(self) -> Tenant:
        # Refuse, when the file is read, a poll the vendor's EHR would refuse at every search.
        if self.ehr is not None:
            check_rules(profile(self.vendor), self.ehr)
        return self


class ClientsConfig(BaseModel):
    """The clients file: who may call, for which tenant, and per-tenant settings."""

    model_config = ConfigDict(extra="forbid")

    clients: list[Client] = Field(default_factory=list)
    tenants: dict[str, Tenant] = Field(default_factory=dict)

    @field_validator("clients")
    @classmethod
    def _unique_tokens(cls, clients: list[Client]) -> list[Client]:
        tokens = [c.token.get_secret_value() for c in clients if c.token is not None]
        if len(tokens) != len(set(tokens)):
            raise ValueError("two clients share a token")
        names = [c.name for c in clients if c.name is not None]
        if len(names) != len(set(names)):
            raise ValueError("two clients share a name")
        return clients

    def weak_clients(self) -> list[str]:
        """Return the clients whose token has less than ``MIN_TOKEN_BITS`` of estimated entropy (``token_bits``):
        typed, repeated or a placeholder copied from documentation. Named, never by their token."""
        return [
            c.name or f"{c.tenant}/{c.role}"
            for c in self.clients
            if c.token is not None and token_bits(c.token.get_secret_value()) < MIN_TOKEN_BITS
        ]

    def tenant(self, name: str) -> Tenant:
        """Return the tenant's settings, defaults where it has no block."""
        return self.tenants.get(name) or self._default_tenant

    @cached_property
    def _default_tenant(self) -> Tenant:
        # Built once per loaded file, not per call: the edge asks for every entry it takes. (A pydantic private
        # attribute would cost as much as building it: its reads go through ``BaseModel.__getattr__``.)
        return Tenant()

    def connector_targets(self) -> dict[str, Target]:
        """Return the tenants that have an EHR block, as the connectors take them."""
        return {name: Target(name, t.vendor, t.ehr) for name, t in self.tenants.items() if t.ehr is not None}

    @classmethod
    def load(cls, path: Path) -> ClientsConfig:
        """Read a JSON or YAML clients file."""
        text = path.read_text(encoding="utf-8")
        data = yaml.safe_load(text) if path.suffix in (".yaml", ".yml") else json.loads(text)
        return cls.model_validate(data or {})


class Settings(BaseSettings):
    """Process settings. Every field is an environment variable ``GATEWAY_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", populate_by_name=True)

    redis_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("REDIS_URL", "GATEWAY_REDIS_URL"),
        description="the Redis to use (`redis://`, `rediss://`, `unix://`); `run` starts an embedded one when unset",
    )
    redis_cluster: bool = Field(
        default=False,
        description="the Redis is a Redis Cluster: `REDIS_URL` names any one node and the others are discovered",
    )
    clients_file: Path | None = Field(
        default=None, description="JSON or YAML file of API clients and tenants (docs/configuration.md)"
    )
    data_dir: Path = Field(
        default=Path(".gateway-data"), description="where `run` keeps the embedded Redis and demo tokens"
    )
    key_prefix: str = Field(
        default="gw",
        pattern=r"^[A-Za-z0-9_.-]{1,64}$",
        description="prefix of every Redis key (several gateways can share one Redis)",
    )
    redis_timeout_seconds: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="longest wait for Redis to connect or answer a command; past it the request is 503 with "
        "Retry-After (more than `GATEWAY_WORKER_BLOCK_MS` and `GATEWAY_WAIT_TIMEOUT_MS`)",
    )
    development: bool = Field(
        default=False,
        description="development behaviour (plain-http loopback webhooks); only `fhir-gateway run` (which sets it) "
        "takes it: `api`, `worker` and `poll` refuse to start with it",
    )

    public_base_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$",
        description="the gateway's public URL (`https://fhir.example.org`); client assertions must name its "
        "`/oauth2/token` as `aud` (unset: the URL each request came to, for development)",
    )
    grant_lifetime_seconds: int = Field(
        default=300, ge=30, le=300, description="lifetime of an access token from `/oauth2/token` (SMART: at most 300)"
    )
    jwks_cache_seconds: float = Field(
        default=300.0, ge=0, description="how long a client's key set fetched from its `jwks_url` is reused"
    )
    clients_reload_seconds: float = Field(
        default=1.0,
        ge=0,
        description=(
            "how often the API, worker and poller look for a changed clients file and reload it (0: only on SIGHUP)"
        ),
    )

    max_body_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, description="largest request body (413 beyond)")
    max_bundle_entries: int = Field(default=10_000, ge=1, description="most entries in a Bundle (413 beyond)")
    max_json_depth: int = Field(default=64, ge=8, description="deepest JSON nesting (400 beyond)")
    max_string_length: int = Field(default=8 * 1024 * 1024, ge=1024, description="longest JSON string (400 beyond)")
    body_read_timeout_seconds: float = Field(
        default=30.0, gt=0, description="longest a request body may take to arrive (408 beyond: a body cut short)"
    )

    max_backlog: int = Field(
        default=100_000, ge=1, description="waiting jobs per tenant before the edge answers 503 with Retry-After"
    )
    max_writes_in_flight: int = Field(
        default=256,
        ge=0,
        description="FHIR writes (POST, PUT, PATCH, DELETE) an API process works on at once; past it, 503 with "
        "Retry-After before the body is read (0: no limit)",
    )
    max_attempts: int = Field(default=5, ge=1, description="attempts at an inbound job before it is dead-lettered")
    retry_base_seconds: float = Field(
        default=1.0,
        gt=0,
        description="first wait before a failed job is tried again (doubling per attempt, with jitter)",
    )
    retry_max_seconds: float = Field(
        default=300.0, gt=0, description="longest wait between attempts of a job or a write-back"
    )
    claim_idle_seconds: float = Field(
        default=30.0, gt=0, description="how long a job may sit with a silent worker before another takes it"
    )
    worker_concurrency: int = Field(
        default=128, ge=1, description="jobs a worker reads and applies as one batch (one atomic commit), per lane"
    )
    worker_block_ms: int = Field(
        default=250,
        ge=10,
        description="how long a worker's read waits for new jobs before it looks for retries and new tenants",
    )
    worker_metrics_port: int = Field(
        default=9091,
        ge=0,
        le=65535,
        description="where `fhir-gateway worker` serves `/metrics` (0: off); the API serves its own on its port",
    )
    conditional_retries: int = Field(
        default=20,
        ge=1,
        description="times a write is decided again when a concurrent write changed what it read, before 503",
    )
    dedupe_window_seconds: int = Field(
        default=86_400, ge=0, description="how long an identical plain POST is recognized as a retry (0: never)"
    )
    wait_replicas: int = Field(
        default=0,
        ge=0,
        description="with a replicated Redis: replicas that must confirm a write (`WAIT`) before the 2xx (0: none)",
    )
    wait_timeout_ms: int = Field(
        default=1000,
        ge=1,
        description="how long to wait for those replicas; past it the answer is 503 (a retry finds the write)",
    )

    search_default_count: int = Field(default=50, ge=1, description="FHIR search page size when `_count` is not given")
    search_max_count: int = Field(default=1000, ge=1, description="largest FHIR search page")
    feed_max_wait_seconds: float = Field(default=30.0, ge=0, description="longest long-poll on `/changes`")
    risk_escalate_seconds: float = Field(
        default=900.0,
        gt=0,
        description="how long a risk flag may stay unacknowledged before the worker publishes `risk.escalated`",
    )
    feed_retention_days: float = Field(
        default=30.0, gt=0, description="how long change events are kept; an older cursor is answered 410"
    )

    webhook_max_attempts: int = Field(
        default=8, ge=1, description="attempts at one webhook delivery before it is dead-lettered"
    )
    webhook_timeout_seconds: float = Field(
        default=10.0, gt=0, description="longest one webhook request may take, all told (connect, send, answer)"
    )
    webhook_retry_base_seconds: float = Field(
        default=1.0,
        gt=0,
        description="first wait before a failed webhook delivery is tried again (doubling, with jitter)",
    )
    webhook_retry_max_seconds: float = Field(
        default=300.0,
        gt=0,
        description="longest wait between webhook attempts; it also bounds a receiver's `Retry-After`",
    )
    webhook_lease_seconds: float = Field(
        default=30.0,
        ge=1,
        description="how long a worker's claim on a subscription lasts unless renewed (every third of it)",
    )
    webhook_concurrency: int = Field(
        default=256, ge=1, description="subscriptions one worker delivers at once (also its connection pool size)"
    )

    writeback_idempotency_days: float = Field(
        default=30.0,
        gt=0,
        description="how long a write-back's `Idempotency-Key` is remembered (the write-back itself is kept)",
    )
    writeback_max_attempts: int = Field(
        default=8, ge=1, description="delivery attempts of one write-back before it is dead-lettered"
    )
    audit_retention_days: float = Field(
        default=2190.0, gt=0, description="how long audit entries are kept (2190 days: six years, as HIPAA asks)"
    )
    rate_limit_rate: float = Field(
        default=0.0,
        ge=0,
        description="requests per second a client may make when neither it nor its tenant sets `rate` (0: no limit)",
    )
    rate_limit_burst: int = Field(
        default=0,
        ge=0,
        description="requests a client may make at once (its bucket's size) at that default rate (0: the rate)",
    )
    poll_lease_seconds: float = Field(
        default=30.0, ge=1, description="how long a poller's lease on a tenant lasts unless renewed"
    )
    outbound_allow: str = Field(
        default="",
        description="CIDRs and host names that webhooks and EHR connectors may reach although private or "
        "loopback (comma-separated, e.g. `10.20.0.0/16,ehr.internal.example`); empty: public addresses only",
    )

    @field_validator("outbound_allow")
    @classmethod
    def _allow_list(cls, value: str) -> str:
        parse_allow(value)  # a bad entry stops the process at start, not at the first call
        return value

    def outbound(self) -> OutboundPolicy:
        """Return where webhooks and EHR connectors may connect: public addresses, the allow-list, and loopback in
        development mode."""
        return OutboundPolicy.from_settings(self.outbound_allow, development=self.development)

    @model_validator(mode="after")
    def _redis_timeout_past_blocking_reads(self) -> Settings:
        # A blocking read or WAIT that outlasts the socket timeout would fail every time it finds nothing.
        longest = max(self.worker_block_ms, self.wait_timeout_ms) / 1000
        if self.redis_timeout_seconds <= longest:
            raise ValueError(
                f"GATEWAY_REDIS_TIMEOUT_SECONDS ({self.redis_timeout_seconds:g}) must be more than the longest "
                f"blocking Redis command ({longest:g} s: GATEWAY_WORKER_BLOCK_MS, GATEWAY_WAIT_TIMEOUT_MS)"
            )
        return self

    def load_clients(self) -> ClientsConfig:
        """Read the clients file, or return an empty configuration when none is set."""
        if self.clients_file is None:
            return ClientsConfig()
        return ClientsConfig.load(self.clients_file)
