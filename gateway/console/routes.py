"""The console's routes under ``/console``: sign-in, the six pages, and the operator's actions (plain forms).

Every page and action needs an ``admin`` client (``gateway.console.session``); an action's form carries the CSRF
token, is recorded in the tenant's audit stream, and answers with a redirect back to its page (a one-time notice
in a cookie says what happened). The routes stay out of the OpenAPI document: they serve HTML to a browser.
"""

from __future__ import annotations

from importlib import resources
from typing import Annotated
from urllib.parse import quote, unquote

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup

from gateway.auth import Principal
from gateway.clock import instant
from gateway.console import audit, dead_letters, ehrs, hooks, markdown, session
from gateway.console.overview import tenant_overview
from gateway.console.session import LOGIN_COOKIE, SESSION_COOKIE, Operator
from gateway.console.sources import tenants
from gateway.deps import ServicesDep
from gateway.errors import BadRequest, Forbidden, NotFound, Unauthorized
from gateway.services import Services
from gateway.store import rejections
from gateway.webhooks.subscriptions import stream_id

router = APIRouter(prefix="/console", include_in_schema=False)
FLASH_COOKIE = "gw_console_notice"
_STATIC = {
    name: (media, resources.files("gateway.console").joinpath(f"static/{name}").read_bytes())
    for name, media in (("console.css", "text/css"), ("favicon.svg", "image/svg+xml"))
}
_templates = Environment(
    loader=PackageLoader("gateway.console", "templates"), autoescape=select_autoescape(("html",)), auto_reload=False
)


def _when(epoch: float | None) -> Markup:
    """Return a UTC time to the second (the footer says UTC), the date kept on one line."""
    if not epoch:
        return Markup("—")
    day, _, clock = instant(epoch)[:19].partition("T")
    return Markup('<span class="day">{}</span> {}').format(day, clock)


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = max(seconds, 0.0)
    for size, unit in ((86_400, "d"), (3600, "h"), (60, "min")):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.0f} s"


_templates.filters["when"] = _when
_templates.filters["age"] = _age


async def _operator(request: Request, services: ServicesDep) -> Operator | None:
    return session.operator(request, services.auth, await tenants(services))


OperatorDep = Annotated[Operator | None, Depends(_operator)]


def _page(
    request: Request, services: Services, name: str, operator: Operator | None, *, status: int = 200, **context: object
) -> Response:
    notice = unquote(request.cookies.get(FLASH_COOKIE, ""))
    kind, _, text = notice.partition("|")
    html = _templates.get_template(name).render(
        operator=operator, notice=text, notice_kind=kind, now=services.clock(), page=name.removesuffix(".html"),
        **context,
    )  # fmt: skip
    response = HTMLResponse(html, status_code=status)
    if notice:
        session.clear_cookie(response, FLASH_COOKIE, development=services.settings.development)
    return session.secure(response)


def _redirect(services: Services, to: str, notice: str = "", *, error: bool = False) -> Response:
    response = RedirectResponse(to, status_code=303)
    if notice:
        value = quote(f"{'error' if error else 'ok'}|{notice[:300]}")
        session.set_cookie(response, FLASH_COOKIE, value, 60, development=services.settings.development)
    return session.secure(response)


def _to_login(services: Services) -> Response:
    return _redirect(services, "/console/login")


def _chosen(operator: Operator, tenant: str | None) -> list[str]:
    if tenant is None:
        return operator.tenants
    if tenant not in operator.tenants:
        raise NotFound("no such tenant for this operator", expression="tenant")
    return [tenant]


async def _action(request: Request, operator: Operator) -> tuple[dict[str, str], str]:
    """Read an action's form, check its CSRF token and tenant; return the fields and the tenant."""
    fields = await session.form(request)
    session.check_csrf(fields, operator.csrf)
    tenant = fields.get("tenant", "")
    if tenant not in operator.tenants:
        raise Forbidden("this operator may not act on that tenant")
    return fields, tenant


# ---- sign-in --------------------------------------------------------------------------------------------


@router.get("/static/{name}")
async def static(name: str) -> Response:
    """Serve the console's stylesheet and icon (public: the login page needs them)."""
    if name not in _STATIC:
        raise NotFound("no such file")
    return Response(
        _STATIC[name][1],
        media_type=_STATIC[name][0],
        headers={"Cache-Control": "public, max-age=3600", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/login")
async def login_page(request: Request, services: ServicesDep) -> Response:
    """Show the sign-in form (a fresh double-submit value for its CSRF check)."""
    nonce = session.login_nonce()
    response = _page(request, services, "login.html", None, csrf=nonce)
    session.set_cookie(response, LOGIN_COOKIE, nonce, session.LOGIN_SECONDS, development=services.settings.development)
    return response


@router.post("/login")
async def login(request: Request, services: ServicesDep) -> Response:
    """Take an admin token and keep it in the session cookie."""
    fields = await session.form(request)
    nonce = request.cookies.get(LOGIN_COOKIE, "")
    try:
        if not nonce:
            raise Forbidden("no sign-in form was shown")
        session.check_csrf(fields, nonce)
    except Forbidden:
        return _login_refused(request, services, 403, "The sign-in form expired. Try again.")
    token = fields.get("token", "").strip()
    try:
        principal: Principal = services.auth.authenticate(f"Bearer {token}")
    except Unauthorized:
        return _login_refused(request, services, 401, "That token is not known.")
    if principal.role != "admin":
        return _login_refused(request, services, 403, f"A {principal.role} token may not use the console.")
    response = _redirect(services, "/console")
    development = services.settings.development
    session.set_cookie(response, SESSION_COOKIE, token, session.SESSION_SECONDS, development=development)
    session.clear_cookie(response, LOGIN_COOKIE, development=development)
    return response


def _login_refused(request: Request, services: Services, status: int, why: str) -> Response:
    nonce = session.login_nonce()
    response = _page(request, services, "login.html", None, csrf=nonce, refused=why, status=status)
    session.set_cookie(response, LOGIN_COOKIE, nonce, session.LOGIN_SECONDS, development=services.settings.development)
    return response


@router.post("/logout")
async def logout(request: Request, services: ServicesDep, operator: OperatorDep) -> Response:
    """End the session."""
    if operator is None:
        return _to_login(services)
    session.check_csrf(await session.form(request), operator.csrf)
    response = _to_login(services)
    session.clear_cookie(response, SESSION_COOKIE, development=services.settings.development)
    return response


# ---- pages ----------------------------------------------------------------------------------------------


@router.get("")
async def overview(
    request: Request, services: ServicesDep, operator: OperatorDep, tenant: str | None = None
) -> Response:
    """Show each tenant's intake, backlog, workers, dead letters, feed and risk flags, with the last hour."""
    if operator is None:
        return _to_login(services)
    chosen = _chosen(operator, tenant)
    figures = [await tenant_overview(services, t) for t in chosen]
    actions = {t: await audit.recent(services.redis, services.keys, t, count=10) for t in chosen}
    return _page(request, services, "overview.html", operator, tenants=figures, actions=actions)


@router.get("/dead-letters")
async def dead_letter_page(
    request: Request, services: ServicesDep, operator: OperatorDep, tenant: str | None = None
) -> Response:
    """Show each tenant's dead-lettered jobs with replay and discard."""
    if operator is None:
        return _to_login(services)
    sections = []
    for t in _chosen(operator, tenant):
        rows, total = await dead_letters.rows(services, t)
        sections.append((t, rows, total))
    return _page(request, services, "dead_letters.html", operator, sections=sections, page_size=dead_letters.PAGE)


@router.post("/dead-letters/replay")
async def replay_dead_letters(request: Request, services: ServicesDep, operator: OperatorDep) -> Response:
    """Replay one dead letter (``id``) or all of a tenant's (``all``)."""
    if operator is None:
        return _to_login(services)
    fields, tenant = await _action(request, operator)
    ids = None if fields.get("all") == "1" else [stream_id(fields.get("id", ""), "id")]
    moved = await dead_letters.replay(services, tenant, operator.name, ids)
    if ids is not None and not moved:
        return _redirect(services, "/console/dead-letters", "that dead letter is no longer there", error=True)
    return _redirect(services, "/console/dead-letters", f"replayed {len(moved)} dead letter(s) of {tenant}")


@router.post("/dead-letters/discard")
async def discard_dead_letter(request: Request, services: ServicesDep, operator: OperatorDep) -> Response:
    """Discard one dead letter, with a reason."""
    if operator is None:
        return _to_login(services)
    fields, tenant = await _action(request, operator)
    entry_id = stream_id(fields.get("id", ""), "id")
    reason = " ".join(fields.get("reason", "").split())
    if not reason:
        raise BadRequest("say why the dead letter is discarded", expression="reason")
    if not await dead_letters.discard(services, tenant, operator.name, entry_id, reason):
        return _redirect(services, "/console/dead-letters", "that dead letter is no longer there", error=True)
    return _redirect(services, "/console/dead-letters", f"discarded dead letter {entry_id} of {tenant}")


@router.get("/connectors")
async def connector_page(
    request: Request, services: ServicesDep, operator: OperatorDep, tenant: str | None = None
) -> Response:
    """Show each tenant's EHR connector: breaker, polls, cursors, errors, token."""
    if operator is None:
        return _to_login(services)
    found = await ehrs.connectors(services, _chosen(operator, tenant))
    return _page(request, services, "connectors.html", operator, connectors=found)


@router.post("/connectors/poll")
async def poll_now(request: Request, services: ServicesDep, operator: OperatorDep) -> Response:
    """Poll a tenant's EHR now (or ask the poller holding it to)."""
    if operator is None:
        return _to_login(services)
    _, tenant = await _action(request, operator)
    said = await ehrs.poll_now(services, tenant, operator.name)
    return _redirect(services, "/console/connectors", said)


@router.get("/webhooks")
async def webhook_page(
    request: Request, services: ServicesDep, operator: OperatorDep, tenant: str | None = None
) -> Response:
    """Show each subscription's delivery, with pause, resume, replay and replay-from-a-cursor."""
    if operator is None:
        return _to_login(services)
    found = await hooks.hooks(services, _chosen(operator, tenant))
    return _page(request, services, "webhooks.html", operator, hooks=found)


@router.post("/webhooks/{action}")
async def webhook_action(action: str, request: Request, services: ServicesDep, operator: OperatorDep) -> Response:
    """Pause, resume, replay the dead letters of, or rewind a subscription."""
    if operator is None:
        return _to_login(services)
    fields, tenant = await _action(request, operator)
    sid = fields.get("id", "")
    back = "/console/webhooks"
    if action in ("pause", "resume"):
        if not await hooks.pause(services, tenant, sid, operator.name, action == "pause"):
            return _redirect(services, back, "no such subscription", error=True)
        return _redirect(services, back, f"{action}d {sid}")
    if action == "replay":
        moved = await hooks.replay(services, tenant, sid, operator.name)
        return _redirect(services, back, f"queued {len(moved)} dead letter(s) of {sid} for delivery")
    if action == "rewind":
        position = hooks.feed_position(fields.get("cursor", ""))
        if not await hooks.rewind(services, tenant, sid, operator.name, position):
            why = "pause it first, and wait until no worker holds it (its status says paused)"
            return _redirect(services, back, f"{sid} was not moved: {why}", error=True)
        return _redirect(services, back, f"{sid} will deliver the feed after {position} when resumed")
    raise NotFound("no such action")


@router.get("/validation")
async def validation_page(
    request: Request, services: ServicesDep, operator: OperatorDep, tenant: str | None = None
) -> Response:
    """Show each tenant's refused resources by type and element path over the last days (never the data)."""
    if operator is None:
        return _to_login(services)
    now = services.clock()
    summaries = [
        (t, await rejections.summary(services.redis, services.keys, t, now)) for t in _chosen(operator, tenant)
    ]
    return _page(request, services, "validation.html", operator, summaries=summaries)


@router.get("/conformance")
async def conformance_page(request: Request, services: ServicesDep, operator: OperatorDep) -> Response:
    """Show the latest conformance report."""
    if operator is None:
        return _to_login(services)
    return _page(request, services, "conformance.html", operator, report=markdown.report())
