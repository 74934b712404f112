"""The audit trail at the HTTP boundary: each FHIR and platform request opens an audit, and its answer is recorded.

Pure ASGI (no task per request, no body buffering). A write the store committed was audited by its own commit
(``gateway.store.audit``); every other request (a read, a search, a refusal) is recorded after the answer, through
the trail's buffer. The "who" is the credential the route's dependency accepted (``gateway.deps``); a refused
request with no accepted credential is recorded against the tenant its token names, else on the anonymous stream.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conformance.definitions import R4_RESOURCE_TYPES
from gateway.store import audit

_FHIR, _PLATFORM = "/fhir/R4", "/platform/v1"
_FHIR_INTERACTIONS = {
    ("POST", ""): "transaction", ("GET", "/_history"): "history-system", ("GET", "/{rtype}/_history"): "history-type",
    ("GET", "/{rtype}/{rid}/_history"): "history-instance", ("GET", "/{rtype}/{rid}/_history/{vid}"): "vread",
    ("GET", "/{rtype}/{rid}"): "read", ("GET", "/{rtype}"): "search-type", ("POST", "/{rtype}/_search"): "search-type",
    ("POST", "/{rtype}"): "create", ("PUT", "/{rtype}/{rid}"): "update", ("PUT", "/{rtype}"): "update",
    ("DELETE", "/{rtype}/{rid}"): "delete", ("DELETE", "/{rtype}"): "delete", ("PATCH", "/{rtype}/{rid}"): "patch",
    ("POST", "/{rtype}/$validate"): "operation",
}  # fmt: skip
_UNAUDITED = frozenset({f"{_FHIR}/metadata"})  # public: no client, no data


def interaction(method: str, path: str, template: str | None, module: str = "") -> str:
    """Return the interaction a request is, from its method, route template (``path`` when unrouted) and the
    module of its handler."""
    if path.startswith(_FHIR):
        if template is None:
            return "operation"
        return _FHIR_INTERACTIONS.get((method, template[len(_FHIR) :]), "operation")
    rest = (template or path)[len(_PLATFORM) :]
    if rest.startswith("/changes"):
        return "feed-read"
    if rest.startswith("/audit"):
        return "audit-read"
    if module == "gateway.writebacks.routes" and method in ("POST", "PATCH"):
        return "writeback"
    if method in ("GET", "HEAD"):
        return "platform-read" if rest.endswith("}") else "platform-search"
    return "platform-write"


def _what(path_params: dict[str, Any], path: str) -> tuple[str, str, str]:
    """Return (type, id, patient) from the route's path parameters."""
    if path.startswith(_FHIR):
        rtype, rid = str(path_params.get("rtype", "")), str(path_params.get("rid", ""))[:64]
        if rtype not in R4_RESOURCE_TYPES:  # a path segment that is no type could be anything a client typed
            return "", "", ""
        return rtype, rid, f"Patient/{rid}" if rtype == "Patient" and rid else ""
    route = str(path_params.get("route", ""))
    route = route if route.replace("-", "").isalpha() and len(route) <= 40 else ""
    rid = str(next((v for k, v in path_params.items() if k in ("rid", "flag_id", "sid", "wid")), ""))[:64]
    return route, rid, f"Patient/{rid}" if route == "patients" and rid else ""


class AuditRecorder:
    """ASGI middleware: audit every request to ``/fhir/R4`` and ``/platform/v1``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if not (path.startswith(_FHIR) or path.startswith(_PLATFORM)) or path in _UNAUDITED:
            await self.app(scope, receive, send)
            return
        services = scope["app"].state.services
        client = scope.get("client")
        query = scope.get("query_string", b"").decode("latin-1")
        # Parameter names only: a value may be a patient's name or birth date.
        names = sorted({p.split("=", 1)[0] for p in query.split("&") if p}) if query else []
        trail = services.audit.open(client[0] if client else "", "", ",".join(names)[:512])
        token = audit.current.set(trail)
        answer: dict[str, Any] = {"status": 500, "etag": ""}

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer["status"] = message["status"]
                for name, value in message.get("headers", ()):
                    if name == b"etag":
                        answer["etag"] = value.decode("latin-1")
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            audit.current.reset(token)
            self._record(services, scope, trail, answer["status"], answer["etag"])

    @staticmethod
    def _record(services: Any, scope: Scope, trail: audit.RequestAudit, status: int, etag: str) -> None:
        if trail.written and status < 400:
            return  # the commit that wrote recorded it
        path = scope.get("path", "")
        route = scope.get("route")
        module = getattr(getattr(route, "endpoint", None), "__module__", "")
        trail.interaction = interaction(scope.get("method", ""), path, getattr(route, "path", None), module)
        tenant, client = trail.tenant, trail.client
        if not tenant:
            tenant, client = _credential(services, scope)
        rtype, rid, patient = _what(scope.get("path_params") or {}, path)
        vid = str((scope.get("path_params") or {}).get("vid", "")) or etag.removeprefix("W/").strip('"')
        fields = audit.entry(
            trail, tenant=tenant or audit.ANONYMOUS, client=client or "unknown", rtype=rtype, rid=rid, vid=vid,
            outcome=status, patient=trail.patient or patient,
        )  # fmt: skip
        services.audit.record(tenant or audit.ANONYMOUS, fields)


def _credential(services: Any, scope: Scope) -> tuple[str, str]:
    """Return (tenant, client) of a refused request's token when it is a known one, else ("", "")."""
    header = next((v for k, v in scope.get("headers", ()) if k == b"authorization"), None)
    if header is None:
        return "", ""
    try:
        principal = services.auth.authenticate(header.decode("latin-1"))
    except Exception:  # an unknown or malformed credential: the refusal is anonymous
        return "", ""
    return principal.tenant, principal.client
