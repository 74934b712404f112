"""FHIR JSON responses: media type, ETag, Location, Last-Modified."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from email.utils import format_datetime
from typing import Any

from fastapi import Request
from fastapi.responses import Response

from conformance.outcome import Issue, operation_outcome
from gateway import encoding

FHIR_JSON = "application/fhir+json"


class FhirResponse(Response):
    """A response whose body is FHIR JSON: a value to write, or bytes that are JSON already (a stored version)."""

    media_type = f"{FHIR_JSON}; charset=utf-8"

    def render(self, content: Any) -> bytes:
        if isinstance(content, bytes):
            return content
        return encoding.dumps(content)


class JSONBody(Response):
    """A plain JSON response written by orjson (the platform API's hot routes: a feed page of 1,000 events is
    written in well under a millisecond, where validating it against its response model took several)."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        if isinstance(content, bytes):  # JSON already (a feed page spliced from stored events)
            return content
        return encoding.dumps(content)


def base_url(request: Request) -> str:
    """Return the absolute FHIR base URL the client called.

    Remembered for the first few hundred (scheme, Host, server, root path) seen, which are all that make it: a
    client calls one base, and building it (Starlette parses a whole URL) costs about 10 us a request.
    """
    scope = request.scope
    host = next((value for name, value in scope["headers"] if name == b"host"), None)
    server = scope.get("server")  # a (host, port) pair, or None; as a tuple, whatever sequence the server gave
    key = (scope.get("scheme"), host, server and tuple(server), scope.get("app_root_path", scope.get("root_path", "")))
    found = _BASES.get(key)
    if found is None:
        found = str(request.base_url).rstrip("/") + "/fhir/R4"
        if len(_BASES) < _MOST_BASES:  # the Host header is the client's: a flood of made-up ones is not kept
            _BASES[key] = found
    return found


_BASES: dict[tuple[Any, ...], str] = {}
_MOST_BASES = 256


def http_date(instant: str | None) -> str | None:
    """Return an HTTP date for a FHIR instant."""
    if not instant:
        return None
    try:
        return format_datetime(datetime.fromisoformat(instant.replace("Z", "+00:00")), usegmt=True)
    except ValueError:
        return None


def outcome_response(status: int, issues: Sequence[Issue], headers: dict[str, str] | None = None) -> FhirResponse:
    """Return an OperationOutcome response."""
    return FhirResponse(operation_outcome(issues), status_code=status, headers=headers)


_REASONS = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request", 404: "Not Found", 409: "Conflict",
            410: "Gone", 412: "Precondition Failed", 413: "Payload Too Large", 422: "Unprocessable Entity",
            503: "Service Unavailable"}  # fmt: skip
_LINES = {status: f"{status} {reason}" for status, reason in _REASONS.items()}


def status_line(status: int) -> str:
    """Return the ``response.status`` text of a Bundle entry."""
    return _LINES.get(status) or f"{status} {_REASONS.get(status, '')}".strip()
