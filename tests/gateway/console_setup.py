"""What the console tests share: admin clients, the console's routes, a canary name, a poison job."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.routing import APIRoute

from gateway.console.routes import router
from mappers import registry
from tests.conftest import CLIENTS

ADMIN = "admin-token-operator-0123456789"  # all tenants
ADMIN_B = "admin-token-tenant-b-0123456789"  # clinic-b only
CANARY = "Zebulon Quixwhistle"  # a name no page may ever show
PUBLIC = {("GET", "/console/login"), ("GET", "/console/static/{name}")}


def console_clients(**tenants: Any) -> dict[str, Any]:
    """Return the test clients file with two admin clients, and ``tenants`` blocks added."""
    return {
        "clients": [
            *CLIENTS["clients"],
            {"token": ADMIN, "tenant": "clinic-a", "role": "admin", "scopes": ["all-tenants"], "name": "ops-1"},
            {"token": ADMIN_B, "tenant": "clinic-b", "role": "admin", "name": "ops-b"},
        ],
        "tenants": {**CLIENTS["tenants"], **tenants},
    }


def console_routes() -> list[tuple[str, str]]:
    """Return (method, path) of every console route, path parameters filled in."""
    found = []
    for route in router.routes:
        if isinstance(route, APIRoute):
            actions = ("pause", "resume", "replay", "rewind") if "{action}" in route.path else ("",)
            paths = [route.path.replace("{action}", action) for action in actions]
            found += [(method, path) for method in sorted(route.methods) for path in paths]
    return found


@contextmanager
def poison(rtype: str = "Appointment", message: str = "mapper bug") -> Iterator[None]:
    """Make every job of ``rtype`` fail in its mapper (with ``message``) until the block ends."""
    family = registry.MAPPED[rtype]

    def broken(resource: Any, ctx: Any) -> Any:
        raise ValueError(message)

    registry.MAPPED[rtype] = dataclasses.replace(family, to_platform=broken)
    try:
        yield
    finally:
        registry.MAPPED[rtype] = family
