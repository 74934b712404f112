"""Who is at the console: the admin token in a cookie, the CSRF token of its forms, and the headers of every page.

- **Sign-in.** The login form takes an ``admin`` client's token and keeps it in the ``gw_console`` cookie:
  HttpOnly, SameSite=Strict, Path=/console, and Secure unless the gateway runs in development mode. A page also
  takes the token as ``Authorization: Bearer``. No token, or one no longer known, is sent to the login page; a
  known token of another role gets 403 on every console route.
- **CSRF.** Every form carries ``csrf``: an HMAC of a fixed label keyed by the session's token, so it needs no
  server state (any API replica checks it) and a page on another site, which cannot read the cookie, cannot make
  it. The login form, which has no session yet, is checked against a random value in a short-lived cookie of its
  own (double submit).
- **Headers.** A Content-Security-Policy without any script (the console has none), no framing, no referrer, no
  caching.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from urllib.parse import parse_qs

from fastapi import Request
from fastapi.responses import Response

from gateway.auth import Authenticator, Principal
from gateway.errors import BadRequest, Forbidden, Unauthorized, UnsupportedMediaType
from gateway.web.body import read_limited

SESSION_COOKIE = "gw_console"
LOGIN_COOKIE = "gw_console_login"
COOKIE_PATH = "/console"
SESSION_SECONDS = 8 * 3600
LOGIN_SECONDS = 600
MAX_FORM_BYTES = 16 * 1024
CSP = (
    "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Operator:
    """A signed-in admin client: who it is, the tenants it may operate and its forms' CSRF token."""

    principal: Principal
    tenants: list[str]
    csrf: str

    @property
    def name(self) -> str:
        return self.principal.client


def csrf_token(token: str) -> str:
    """Return the CSRF token of the forms of a session signed in with ``token``."""
    return hmac.new(token.encode(), b"gateway-console-csrf-v1", hashlib.sha256).hexdigest()


def presented_token(request: Request) -> str | None:
    """Return the token the request carries: the session cookie, else an ``Authorization: Bearer`` header."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        return cookie
    scheme, _, token = (request.headers.get("authorization") or "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def operator(request: Request, auth: Authenticator, known: list[str]) -> Operator | None:
    """Return the signed-in admin; None without a known token; raise Forbidden for another role."""
    token = presented_token(request)
    if token is None:
        return None
    try:
        principal = auth.authenticate(f"Bearer {token}")
    except Unauthorized:
        return None
    return Operator(principal, auth.admin_tenants(principal, known), csrf_token(token))


def secure(response: Response) -> Response:
    """Add the console's security headers to ``response``."""
    response.headers.update(HEADERS)
    return response


def set_cookie(response: Response, name: str, value: str, max_age: int, *, development: bool) -> None:
    """Set an HttpOnly, SameSite=Strict cookie on the console's path (Secure outside development)."""
    response.set_cookie(
        name, value, max_age=max_age, path=COOKIE_PATH, httponly=True, samesite="strict", secure=not development
    )


def clear_cookie(response: Response, name: str, *, development: bool) -> None:
    """Remove a console cookie."""
    response.delete_cookie(name, path=COOKIE_PATH, httponly=True, samesite="strict", secure=not development)


def login_nonce() -> str:
    """Return a fresh value for the login form's double-submit cookie."""
    return secrets.token_urlsafe(24)


async def form(request: Request) -> dict[str, str]:
    """Read a small urlencoded form (the first value of each field)."""
    media = (request.headers.get("content-type") or "").split(";", 1)[0].strip().lower()
    if media != "application/x-www-form-urlencoded":
        raise UnsupportedMediaType("the console takes application/x-www-form-urlencoded forms")
    raw = await read_limited(request.stream(), request.headers.get("content-length"), MAX_FORM_BYTES)
    try:
        fields = parse_qs(raw.decode("utf-8", errors="replace"), keep_blank_values=True, max_num_fields=50)
    except ValueError:
        raise BadRequest("the form has too many fields") from None
    return {name: values[0] for name, values in fields.items()}


def check_csrf(fields: dict[str, str], expected: str) -> None:
    """Refuse a form whose CSRF token is missing or not ``expected``."""
    if not hmac.compare_digest(fields.get("csrf", "").encode(), expected.encode()):
        raise Forbidden("the form's CSRF token is missing or wrong; reload the page and try again")
