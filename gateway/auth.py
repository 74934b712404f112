"""Callers: static bearer tokens from the clients file, and the access tokens of SMART Backend Services clients.

Each client is bound to one tenant and one role; the tenant comes from the credential only. A static token holds
its role's scopes, narrowed by the scopes it lists (``gateway.identity.scopes``); an access token holds the scopes
granted at ``/oauth2/token``, narrowed again at every use to what its client is registered for *now*, so a client
removed from the clients file (or a scope taken away) takes effect at the next reload.

Roles: ``ehr`` (the FHIR edge), ``platform`` (the platform API and webhooks) and ``admin`` (the operator console;
with the scope ``all-tenants`` it sees every tenant, else its own).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.errors import Forbidden, Unauthorized
from gateway.identity.scopes import ALL_TENANTS, grant, registered
from gateway.settings import Client, ClientsConfig, Role

__all__ = ["ALL_TENANTS", "Authenticator", "Grant", "Principal"]


@dataclass(frozen=True)
class Principal:
    """Who is calling: their tenant, role and scopes."""

    tenant: str
    role: Role
    scopes: frozenset[str]
    client: str


@dataclass(frozen=True)
class Grant:
    """What an access token was issued for: its client and the scopes granted."""

    client: str
    scopes: frozenset[str]


def _fingerprint(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


@dataclass(frozen=True)
class _Snapshot:
    by_digest: dict[bytes, Principal]
    smart: dict[str, Client]


def _snapshot(config: ClientsConfig) -> _Snapshot:
    # Keyed by a digest, so the lookup time does not depend on how much of a guessed token is right.
    by_digest = {
        _fingerprint(c.token.get_secret_value()): Principal(
            tenant=c.tenant,
            role=c.role,
            scopes=registered(c.role, c.scopes),
            client=c.name or f"{c.tenant}-{c.role}-{i}",
        )
        for i, c in enumerate(config.clients)
        if c.token is not None
    }
    return _Snapshot(by_digest, {c.name: c for c in config.clients if c.smart and c.name})


class Authenticator:
    """Map a bearer token to its Principal; ``replace`` swaps the clients in one step (a reload)."""

    def __init__(self, config: ClientsConfig, lookup: Callable[[str], Awaitable[Grant | None]] | None = None) -> None:
        self._now = _snapshot(config)
        self._lookup = lookup  # finds an access token's grant (gateway.identity.tokens); None: static tokens only

    def replace(self, config: ClientsConfig) -> None:
        """Use ``config``'s clients from now on (one assignment: a request sees the old set or the new)."""
        self._now = _snapshot(config)

    def smart_client(self, client_id: str) -> Client | None:
        """Return the SMART Backend Services client registered as ``client_id`` now, or None."""
        return self._now.smart.get(client_id)

    @staticmethod
    def _bearer(authorization: str | None) -> str:
        if not authorization:
            raise Unauthorized()
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        return token.strip()

    def authenticate(self, authorization: str | None) -> Principal:
        """Return the caller of a static token for an ``Authorization`` header, or raise Unauthorized."""
        principal = self._now.by_digest.get(_fingerprint(self._bearer(authorization)))
        if principal is None:
            raise Unauthorized("the bearer token is not known")
        return principal

    async def resolve(self, authorization: str | None) -> Principal:
        """Return the caller of a static token or of an access token from ``/oauth2/token``."""
        token = self._bearer(authorization)
        principal = self._now.by_digest.get(_fingerprint(token))
        if principal is not None:
            return principal
        issued = await self._lookup(token) if self._lookup is not None else None
        client = self._now.smart.get(issued.client) if issued is not None else None
        if issued is None or client is None:  # unknown, expired, or its client no longer registered
            raise Unauthorized("the bearer token is not known")
        scopes = frozenset(grant(issued.scopes, registered(client.role, client.scopes)))
        return Principal(tenant=client.tenant, role=client.role, scopes=scopes, client=issued.client)

    def admin_tenants(self, principal: Principal, known: list[str]) -> list[str]:
        """Return the tenants an admin may operate: every one in ``known`` with ``all-tenants``, else its own."""
        if principal.role != "admin":
            raise Forbidden(f"a {principal.role} client may not use the console")
        return sorted(set(known) | {principal.tenant}) if ALL_TENANTS in principal.scopes else [principal.tenant]

    def require(self, authorization: str | None, role: Role) -> Principal:
        """Return the caller of a static token if it has ``role``, else raise Unauthorized or Forbidden."""
        principal = self.authenticate(authorization)
        if principal.role != role:
            raise Forbidden(f"a {principal.role} client may not use this API")
        return principal
