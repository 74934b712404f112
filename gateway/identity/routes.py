"""``POST /oauth2/token`` (SMART Backend Services: client_credentials with a signed JWT client assertion) and
``/.well-known/smart-configuration``."""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from gateway.auth import Grant
from gateway.deps import ServicesDep
from gateway.identity.assertion import ASSERTION_TYPE, OAuthError, verify
from gateway.identity.scopes import grant, registered, valid_scope
from gateway.identity.smart import TOKEN_PATH, smart_configuration, token_url

__all__ = ["oauth_error_response", "router"]

router = APIRouter(tags=["SMART Backend Services"])
_MAX_FORM = 64 * 1024
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_ERRORS: dict[int | str, dict[str, Any]] = {
    400: {"description": "invalid_request, invalid_grant, invalid_scope or unsupported_grant_type (RFC 6749 5.2)"},
    401: {"description": "invalid_client: the assertion does not authenticate a registered client"},
}


def oauth_error_response(error: OAuthError) -> Response:
    """Return the RFC 6749 error answer."""
    body = {"error": error.error, "error_description": error.description}
    return JSONResponse(body, status_code=error.status, headers=_NO_STORE)


async def _form(request: Request) -> dict[str, str]:
    if request.headers.get("content-type", "").split(";")[0].strip().lower() != "application/x-www-form-urlencoded":
        raise OAuthError("invalid_request", "the body must be application/x-www-form-urlencoded")
    raw = b""
    async for chunk in request.stream():
        raw += chunk
        if len(raw) > _MAX_FORM:
            raise OAuthError("invalid_request", "the request body is too large")
    try:
        pairs = parse_qsl(raw.decode("utf-8"), keep_blank_values=True, strict_parsing=bool(raw))
    except (UnicodeDecodeError, ValueError):
        raise OAuthError("invalid_request", "the body is not a valid form") from None
    names = [name for name, _ in pairs]
    if len(names) != len(set(names)):
        raise OAuthError("invalid_request", "a parameter is given twice")
    return dict(pairs)


@router.post(TOKEN_PATH, summary="Get an access token (SMART Backend Services)", responses=_ERRORS)
async def token(request: Request, services: ServicesDep) -> Response:
    """Exchange a signed client assertion for an access token of at most five minutes, with the scopes asked
    for, as far as the client is registered for them."""
    form = await _form(request)
    grant_type = form.get("grant_type")
    if not grant_type:
        raise OAuthError("invalid_request", "grant_type is required")
    if grant_type != "client_credentials":
        raise OAuthError("unsupported_grant_type", "only client_credentials is supported")
    if form.get("client_assertion_type") != ASSERTION_TYPE:
        raise OAuthError("invalid_request", f"client_assertion_type must be {ASSERTION_TYPE}")
    assertion = form.get("client_assertion")
    if not assertion:
        raise OAuthError("invalid_request", "client_assertion is required")
    requested = form.get("scope", "").split()
    if not requested:
        raise OAuthError("invalid_scope", "scope is required")
    settings = services.settings
    client = await verify(
        assertion, token_url=token_url(settings.public_base_url, str(request.base_url)),
        client_of=services.auth.smart_client, keysets=services.keysets, first_use=services.tokens.first_use,
        clock=services.clock,
    )  # fmt: skip
    # Scopes the gateway does not know (fhirclient adds launch/patient, for one) are left out, not refused: the
    # answer's scope says what was granted (RFC 6749 section 3.3).
    granted = grant([s for s in requested if valid_scope(s)], registered(client.role, client.scopes))
    if not granted:
        raise OAuthError("invalid_scope", "the client is registered for none of the scopes asked for")
    assert client.name is not None
    lifetime = settings.grant_lifetime_seconds
    access = await services.tokens.issue(Grant(client.name, frozenset(granted)), lifetime)
    body: dict[str, Any] = {
        "access_token": access, "token_type": "bearer", "expires_in": lifetime, "scope": " ".join(granted),
    }  # fmt: skip
    return JSONResponse(body, headers=_NO_STORE)


@router.get("/.well-known/smart-configuration", summary="SMART configuration (discovery)")
@router.get("/fhir/R4/.well-known/smart-configuration", include_in_schema=False)
async def configuration(request: Request, services: ServicesDep) -> Response:
    """Describe the token endpoint, its grant type, signing algorithms and scopes."""
    url = token_url(services.settings.public_base_url, str(request.base_url))
    return JSONResponse(smart_configuration(url), headers={"Cache-Control": "public, max-age=300"})
