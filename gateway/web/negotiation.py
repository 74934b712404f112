"""Content negotiation for the FHIR routes: what the client may ask to receive, and what it is told it got.

The gateway produces JSON only. A request under the FHIR base whose ``_format`` or ``Accept`` admits no JSON
media type is answered 406 with an OperationOutcome, on every route (415 stays for a request body the gateway
cannot read). A client that asks for ``application/json`` (by ``Accept`` or ``_format``) is answered with that
media type; every other answer is ``application/fhir+json; charset=utf-8``.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conformance.outcome import Issue
from gateway.web.responses import FHIR_JSON, outcome_response

JSON = "application/json"
_FHIR_TYPES = (FHIR_JSON, "application/json+fhir")
_FORMATS = {"json": FHIR_JSON, FHIR_JSON: FHIR_JSON, "application/json+fhir": FHIR_JSON, JSON: JSON}


def chosen_media_type(accept: str | None, fmt: str | None) -> str | None:
    """Return the media type to answer with, or None when the client accepts nothing the gateway produces."""
    if fmt:
        return _FORMATS.get(fmt.strip().lower().split(";", 1)[0].strip().replace(" ", "+"))
    if not accept or not accept.strip():
        return FHIR_JSON
    best: tuple[float, str] | None = None
    for order, item in enumerate(accept.split(",")):
        media, *params = (part.strip().lower() for part in item.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if quality <= 0:
            continue
        if media in _FHIR_TYPES or media in ("*/*", "application/*"):
            offer = FHIR_JSON
        elif media == JSON:
            offer = JSON
        else:
            continue
        ranked = quality - order * 1e-6  # at equal quality, the first listed wins
        if best is None or ranked > best[0]:
            best = (ranked, offer)
    return best[1] if best else None


class Negotiation:
    """ASGI middleware: 406 for a FHIR request that accepts no JSON; the answer's media type as negotiated."""

    def __init__(self, app: ASGIApp, prefix: str = "/fhir/") -> None:
        self.app, self.prefix = app, prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not str(scope.get("path", "")).startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope.get("headers", [])}
        formats = [v for k, v in parse_qsl(scope.get("query_string", b"").decode("latin-1")) if k == "_format"]
        media = chosen_media_type(headers.get("accept"), formats[0] if formats else None)
        if media is None:
            asked = "_format" if formats else "Accept"
            issue = Issue("error", "not-supported", asked, f"{asked} asks for a format the gateway does not produce; "
                          "it answers application/fhir+json or application/json")  # fmt: skip
            await outcome_response(406, [issue])(scope, receive, send)
            return
        if media == FHIR_JSON:
            await self.app(scope, receive, send)
            return

        async def relabel(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    (k, f"{JSON}; charset=utf-8".encode() if k.lower() == b"content-type" and v.startswith(
                        FHIR_JSON.encode()) else v)
                    for k, v in message.get("headers", [])
                ]  # fmt: skip
            await send(message)

        await self.app(scope, receive, relabel)
