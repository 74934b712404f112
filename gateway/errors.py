"""The gateway's exceptions, translated to an OperationOutcome once, at the HTTP edge.

GatewayError
 ├── BadRequest              400 (malformed JSON, a bad search parameter, an invalid Bundle)
 │    └── InvalidResource    400 or 422 with the validator's issues (422 for content FHIR rejects)
 ├── Unauthorized            401
 ├── Forbidden               403
 ├── NotFound                404
 │    └── Gone               410 (a deleted resource)
 ├── MethodNotAllowed        405
 ├── RequestTimeout          408 (a body that did not arrive in time)
 ├── Conflict                409
 ├── PreconditionFailed      412 (stale If-Match, several If-None-Exist matches)
 ├── PayloadTooLarge         413
 ├── UnsupportedMediaType    415
 ├── Unprocessable           422
 ├── TooManyRequests         429 (a client over its rate limit), with Retry-After
 ├── Overloaded              503 (backpressure), with Retry-After
 └── Unavailable             503 (Redis unreachable, frozen or loading), with Retry-After
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from conformance.outcome import Issue


class GatewayError(Exception):
    """Base of every error the edge turns into an OperationOutcome."""

    status = 500
    code = "exception"

    def __init__(
        self,
        message: str,
        *,
        issues: Sequence[Issue] = (),
        expression: str | None = None,
        headers: dict[str, str] | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.headers: dict[str, str] = dict(headers or {})
        self.issues = list(issues) or [Issue("error", self.code, expression, message)]


class BadRequest(GatewayError):
    status = 400
    code = "invalid"


class InvalidResource(BadRequest):
    """A resource or Bundle failed validation; ``issues`` lists every problem."""

    def __init__(self, message: str, *, issues: Sequence[Issue], status: int = 400):
        super().__init__(message, issues=issues)
        self.status = status


class Unauthorized(GatewayError):
    status = 401
    code = "login"

    def __init__(self, message: str = "a valid bearer token is required"):
        super().__init__(message)
        self.headers["WWW-Authenticate"] = 'Bearer realm="fhir-gateway"'


class Forbidden(GatewayError):
    status = 403
    code = "forbidden"


class NotFound(GatewayError):
    status = 404
    code = "not-found"


class Gone(NotFound):
    status = 410
    code = "deleted"


class MethodNotAllowed(GatewayError):
    status = 405
    code = "not-supported"


class RequestTimeout(GatewayError):
    status = 408
    code = "timeout"


class Conflict(GatewayError):
    status = 409
    code = "conflict"


class PreconditionFailed(GatewayError):
    status = 412
    code = "conflict"


class PayloadTooLarge(GatewayError):
    status = 413
    code = "too-costly"


class UnsupportedMediaType(GatewayError):
    status = 415
    code = "not-supported"


class Unprocessable(GatewayError):
    status = 422
    code = "processing"


class TooManyRequests(GatewayError):
    status = 429
    code = "throttled"

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.headers["Retry-After"] = str(retry_after)


class Overloaded(GatewayError):
    status = 503
    code = "transient"

    def __init__(self, message: str, *, retry_after: int):
        super().__init__(message)
        self.headers["Retry-After"] = str(retry_after)


class Unavailable(GatewayError):
    """The store (Redis) did not answer in time or refused to serve: nothing can be said, so retry later.

    A write that met this may or may not have been applied; a retry is safe (writes are idempotent or conditional).
    """

    status = 503
    code = "transient"

    def __init__(self, message: str = "the gateway's store is unavailable; retry later", *, retry_after: int = 5):
        super().__init__(message)
        self.headers["Retry-After"] = str(retry_after)


def request_invalid(errors: Sequence[Mapping[str, Any]]) -> GatewayError:
    """Translate FastAPI's request-validation errors into ours: the one policy for every route.

    A body that is not JSON is 400; a JSON body whose fields are wrong or missing is 422, each issue naming the
    field (``answers[0].value``); a bad query parameter, path segment or header is 400, naming it (headers as
    HTTP spells them: ``Idempotency-Key``).
    """
    if any(e.get("type") == "json_invalid" for e in errors):
        return BadRequest("the request body is not valid JSON")
    issues = [
        Issue(
            "error",
            "required" if e.get("type") == "missing" else "invalid",
            _field_path(tuple(e.get("loc", ()))),
            str(e.get("msg", "invalid")),
        )
        for e in errors
    ]
    if any(tuple(e.get("loc", ()))[:1] == ("body",) for e in errors):
        return Unprocessable("the request is not valid", issues=issues)
    return BadRequest("the request is not valid", issues=issues)


def _field_path(loc: tuple[Any, ...]) -> str | None:
    """Return ``answers[0].value`` for pydantic's ``("body", "answers", 0, "value")``."""
    if len(loc) == 2 and loc[0] == "header":
        return "-".join(word.capitalize() for word in str(loc[1]).split("-"))
    path = ""
    for i, part in enumerate(loc):
        if i == 0 and part in ("body", "path", "query", "header"):
            continue
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or None
