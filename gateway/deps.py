"""FastAPI dependencies: the services of the app, and the caller as an EHR or a platform client."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from gateway.auth import Principal
from gateway.services import Services


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(_services)]


def _ehr(request: Request, services: ServicesDep) -> Principal:
    return services.auth.require(request.headers.get("authorization"), "ehr")


def _platform(request: Request, services: ServicesDep) -> Principal:
    return services.auth.require(request.headers.get("authorization"), "platform")


EhrPrincipal = Annotated[Principal, Depends(_ehr)]
"""The calling EHR client (401 without a known token, 403 for another role)."""
PlatformPrincipal = Annotated[Principal, Depends(_platform)]
"""The calling platform client (401 without a known token, 403 for another role)."""
