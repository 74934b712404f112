"""The FHIR routes' handler: each FHIR operation called with its path segments and headers as Starlette parsed
them, without FastAPI's general request handling.

Every FHIR operation declares only text: the type, id and version in its path, and the ``If-Match`` or
``If-None-Exist`` header. It reads everything else from the request itself (the body, through the gateway's own
strict parser, and its search parameters, which FHIR defines, not FastAPI). FastAPI's handler would still, on every
request, check for a body to read, solve the declared parameters (a pydantic validation of each, a text checked to
be text), record telemetry and wrap the answer. ``FhirRoute`` calls the operation with the same values directly;
the declarations still make the OpenAPI document, unchanged. A route that declares anything else (a dependency, a
query, cookie or body parameter, a parameter that is not text) is handled by FastAPI as before; so is every route
when FastAPI does not say which parameters a route has where it is included (see ``_declared``).

``FhirRoute`` also bounds the FHIR writes a process works on at once (``gateway.fhir.admission``): the app's
``state.fhir_writes``, when its lifespan set one, is asked before the route's handler runs, so that a write past the
limit is refused before its body is read, and answered, logged and audited as the route's.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Coroutine
from typing import Any

import fastapi.routing
from fastapi import params
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


class FhirRoute(APIRoute):
    """An ``APIRoute`` whose operation gets its text parameters straight from the request (see the module)."""

    def get_route_handler(self) -> Handler:
        dependant = _declared(self)
        lean = _lean_handler(self, dependant) if dependant is not None else None
        return lean if lean is not None else super().get_route_handler()

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        writes = getattr(scope["app"].state, "fhir_writes", None)
        if writes is None or not writes.counts(scope):
            await super().handle(scope, receive, send)
            return
        writes.enter()  # past the limit: Overloaded, a 503 the app's error handler writes
        try:
            await super().handle(scope, receive, send)
        finally:
            writes.leave()


def _declared(route: APIRoute) -> Dependant | None:
    """Return what FastAPI would solve for ``route`` in the handler being built: the route's own declarations, or
    those of the inclusion being built (a router included with ``dependencies`` adds them there). None when this
    FastAPI does not tell (it builds the handler of an included route with that inclusion in a context variable of
    its own): the route is then left to FastAPI's handler, which sees them."""
    current = getattr(fastapi.routing, "_effective_route_context_var", None)
    if current is None:
        return None
    context = current.get()
    if context is not None and getattr(context, "original_route", None) is route:
        declared = getattr(context, "dependant", None)
        return declared if isinstance(declared, Dependant) else None
    return route.dependant


def _lean_handler(route: APIRoute, dependant: Dependant) -> Handler | None:
    """Return a handler calling ``route``'s operation with its path and header values, or None when the operation
    declares anything that needs FastAPI's own handling."""
    call = dependant.call
    if (
        call is None
        or not inspect.iscoroutinefunction(call)
        or dependant.dependencies
        or dependant.query_params
        or dependant.cookie_params
        or dependant.body_params
        or dependant.background_tasks_param_name
        or dependant.response_param_name
        or dependant.security_scopes_param_name
        or dependant.websocket_param_name
        or dependant.http_connection_param_name
    ):
        return None
    fields = [*dependant.path_params, *dependant.header_params]
    if any(f.field_info.annotation not in (str, str | None) for f in fields):
        return None
    path = tuple(f.name for f in dependant.path_params)
    headers = tuple((f.name, _header_name(f)) for f in dependant.header_params)
    request_name = dependant.request_param_name

    async def handler(request: Request) -> Response:
        found = request.path_params
        arguments: dict[str, Any] = {name: found[name] for name in path}
        if headers:
            sent = request.headers
            for name, header in headers:
                arguments[name] = sent.get(header)
        if request_name:
            arguments[request_name] = request
        answer = await call(**arguments)
        if not isinstance(answer, Response):  # every FHIR operation answers a Response of its own making
            raise TypeError(f"{route.name} answered {type(answer).__name__}, not a Response")
        return answer

    return handler


def _header_name(field: Any) -> str:
    """Return the header a parameter reads, as FastAPI names it: its alias, underscores as hyphens unless told."""
    info = field.field_info
    alias: str = field.alias
    if isinstance(info, params.Header) and info.convert_underscores and alias == field.name:
        return alias.replace("_", "-")
    return alias
