"""Who calls, and what they may do: SMART Backend Services for inbound clients.

- ``scopes``: SMART v2 ``system/`` scopes, ``platform/`` scopes, and what each request needs (pure).
- ``assertion``: checking a client's signed JWT assertion (RS384 / ES384, key pinned per key).
- ``keysets``: the clients' public keys, inline or fetched from their JWKS URL and cached.
- ``tokens``: short-lived opaque access tokens in Redis.
- ``routes``: ``POST /oauth2/token`` and ``/.well-known/smart-configuration``.
- ``reload``: the clients file read again on change or SIGHUP, atomically.
"""

from gateway.identity import scopes

__all__ = ["scopes"]
