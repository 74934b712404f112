"""Static bearer tokens, each bound to one tenant and one role; the tenant comes from the token only.

Roles: ``ehr`` (the FHIR edge), ``platform`` (the platform API and webhooks) and ``admin`` (the operator console;
with the scope ``all-tenants`` it sees every tenant, else its own).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from gateway.errors import Forbidden, Unauthorized
from gateway.settings import ClientsConfig, Role


@dataclass(frozen=True)
class Principal:
    """Who is calling: their tenant, role and scopes."""

    tenant: str
    role: Role
    scopes: frozenset[str]
    client: str


ALL_TENANTS = "all-tenants"  # an admin scope: operate every tenant, not only the client's own


def _fingerprint(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class Authenticator:
    """Map a bearer token to its Principal."""

    def __init__(self, config: ClientsConfig) -> None:
        # Keyed by a digest, so the lookup time does not depend on how much of a guessed token is right.
        self._by_digest = {
            _fingerprint(c.token.get_secret_value()): Principal(
                tenant=c.tenant,
                role=c.role,
                scopes=frozenset(c.scopes),
                client=c.name or f"{c.tenant}-{c.role}-{i}",
            )
            for i, c in enumerate(config.clients)
        }

    def authenticate(self, authorization: str | None) -> Principal:
        """Return the caller for an ``Authorization`` header, or raise Unauthorized."""
        if not authorization:
            raise Unauthorized()
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthorized("the Authorization header must be 'Bearer <token>'")
        principal = self._by_digest.get(_fingerprint(token.strip()))
        if principal is None:
            raise Unauthorized("the bearer token is not known")
        return principal

    def admin_tenants(self, principal: Principal, known: list[str]) -> list[str]:
        """Return the tenants an admin may operate: every one in ``known`` with ``all-tenants``, else its own."""
        if principal.role != "admin":
            raise Forbidden(f"a {principal.role} client may not use the console")
        return sorted(set(known) | {principal.tenant}) if ALL_TENANTS in principal.scopes else [principal.tenant]

    def require(self, authorization: str | None, role: Role) -> Principal:
        """Return the caller if it has ``role``, else raise Unauthorized or Forbidden."""
        principal = self.authenticate(authorization)
        if principal.role != role:
            raise Forbidden(f"a {principal.role} client may not use this API")
        return principal
