"""What the OpenAPI document at ``/openapi.json`` says beyond the routes' signatures: the OperationOutcome every
error is, the error answers of each route, the FHIR routes' bodies and search parameters, and examples.

Documentation only: nothing here changes what a route accepts or answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal

from fastapi import Header, Path
from fastapi.security.base import SecurityBase
from pydantic import BaseModel, ConfigDict, Field

from conformance.definitions import R4_RESOURCE_TYPES

FHIR_JSON: Final = "application/fhir+json"
Responses = dict[int | str, dict[str, Any]]


class OutcomeIssue(BaseModel):
    """One issue of an OperationOutcome."""

    severity: str
    code: str
    diagnostics: str | None = None
    expression: list[str] | None = Field(default=None, description="the request field or FHIR element concerned")


class OperationOutcome(BaseModel):
    """The body of every error: an R4 OperationOutcome (served as application/fhir+json)."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "resourceType": "OperationOutcome",
                    "issue": [{"severity": "error", "code": "login", "diagnostics": "the bearer token is not known"}],
                }
            ]
        }
    )

    resourceType: Literal["OperationOutcome"]
    issue: list[OutcomeIssue]


# status: (issue code, what it means)
_ERRORS: Final[Mapping[int, tuple[str, str]]] = {
    400: ("invalid", "the request is malformed: bad JSON, a bad parameter or an invalid resource"),
    401: ("login", "no bearer token, or one the gateway does not know"),
    403: ("forbidden", "the token's client has another role (ehr clients use /fhir/R4, platform clients /platform/v1)"),
    404: ("not-found", "no such resource or record for this tenant"),
    409: ("conflict", "the request conflicts with the current state"),
    410: ("deleted", "the resource was deleted"),
    412: ("conflict", "If-Match names an older version, or the condition matches several resources"),
    413: ("too-costly", "the body is larger than the gateway's limit"),
    415: ("not-supported", "the body is not FHIR JSON (application/fhir+json or application/json)"),
    422: ("processing", "the request is well-formed but cannot be processed"),
    503: ("transient", "the tenant's queue is full; retry after Retry-After seconds"),
}


def errors(*statuses: int, why: Mapping[int, str] | None = None) -> Responses:
    """Return ``responses=`` documenting each status as an OperationOutcome, ``why`` replacing descriptions."""
    documented: Responses = {}
    for status in statuses:
        code, meaning = _ERRORS[status]
        description = (why or {}).get(status, meaning)
        example = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": code,
                                                                  "diagnostics": description}]}  # fmt: skip
        documented[status] = {  # no "model": FastAPI would build a validator per route and status for it
            "description": description,
            "content": {FHIR_JSON: {"schema": {"$ref": "#/components/schemas/OperationOutcome"}, "example": example}},
        }
    return documented


def with_outcome_schemas(document: dict[str, Any]) -> dict[str, Any]:
    """Add the OperationOutcome schemas that the error answers refer to to an OpenAPI document (in place)."""
    schema = OperationOutcome.model_json_schema(ref_template="#/components/schemas/{model}")
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    schemas.update(schema.pop("$defs", {}))
    schemas[OperationOutcome.__name__] = schema
    return document


_HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})


def with_bearer(document: dict[str, Any], prefix: str, scheme: SecurityBase) -> dict[str, Any]:
    """Declare ``scheme`` on every operation under ``prefix`` (in place), as a route depending on it would be.

    Routes whose handlers check the token themselves declare no security dependency, which FastAPI would solve on
    every request; an operation that states its own ``security`` (a token that is optional) gets ``scheme`` first.
    """
    name = scheme.scheme_name
    schemes = document.setdefault("components", {}).setdefault("securitySchemes", {})
    schemes[name] = scheme.model.model_dump(mode="json", by_alias=True, exclude_none=True)
    for path, operations in document.get("paths", {}).items():
        if path == prefix or path.startswith(f"{prefix}/"):
            for method, operation in operations.items():
                if method in _HTTP_METHODS:
                    operation["security"] = [{name: []}, *operation.get("security", [])]
    return document


AUTH_ERRORS: Final = errors(401, 403)
# Any other 4xx (405 for a method the path lacks, ...); documenting it also keeps FastAPI from describing
# request-validation errors as its own 422 body: this gateway answers them as OperationOutcomes.
OTHER_ERRORS: Final[Responses] = {"4XX": {**errors(400)[400], "description": "another client error"}}

# -- the FHIR R4 routes ---------------------------------------------------------------------------------------

APPOINTMENT: Final[dict[str, Any]] = {
    "resourceType": "Appointment",
    "id": "appt-1",
    "identifier": [{"system": "urn:oid:1.2.3.4", "value": "appt-1"}],
    "status": "booked",
    "description": "Follow-up visit",
    "start": "2026-12-10T09:00:00-05:00",
    "end": "2026-12-10T09:50:00-05:00",
    "participant": [
        {"actor": {"reference": "Patient/pat-1"}, "status": "accepted"},
        {"actor": {"reference": "Practitioner/prac-1"}, "status": "accepted"},
    ],
}
PATIENT: Final[dict[str, Any]] = {
    "resourceType": "Patient",
    "id": "pat-1",
    "identifier": [{"system": "urn:oid:1.2.3.4.5", "value": "MRN-1001"}],
    "name": [{"family": "Rivera", "given": ["Alex"]}],
    "birthDate": "1990-04-02",
}
_RESOURCE_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["resourceType"],
    "properties": {"resourceType": {"type": "string", "description": "must be the type in the URL"}},
    "additionalProperties": True,
    "description": "a FHIR R4 resource in JSON",
}
_BUNDLE_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "required": ["resourceType", "type"],
    "properties": {
        "resourceType": {"type": "string", "enum": ["Bundle"]},
        "type": {"type": "string", "enum": ["transaction", "batch", "collection", "searchset", "history"]},
        "entry": {"type": "array", "items": {"type": "object"}},
    },
    "additionalProperties": True,
}


def _with_id(resource: Mapping[str, Any], present: bool) -> dict[str, Any]:
    return {k: v for k, v in resource.items() if present or k != "id"}


def _body(schema: dict[str, Any], examples: dict[str, Any], description: str) -> dict[str, Any]:
    content = {"schema": schema, "examples": {name: {"value": value} for name, value in examples.items()}}
    return {"required": True, "description": description, "content": {FHIR_JSON: content, "application/json": content}}


def _fhir_ok(status: int, description: str, example: Mapping[str, Any] | None, **headers: str) -> Responses:
    answer: dict[str, Any] = {"description": description}
    if example is not None:
        answer["content"] = {FHIR_JSON: {"schema": {"type": "object"}, "example": dict(example)}}
    if headers:
        answer["headers"] = {
            name: {"description": text, "schema": {"type": "string"}} for name, text in headers.items()
        }
    return {status: answer}


_STORED: Final = {
    **APPOINTMENT,
    "meta": {"versionId": "1", "lastUpdated": "2026-12-01T10:00:00.000Z"},
}
_OUTCOME_OK: Final = {
    "resourceType": "OperationOutcome",
    "issue": [{"severity": "information", "code": "informational", "diagnostics": "no issues"}],
}
_SEARCHSET: Final = {
    "resourceType": "Bundle",
    "type": "searchset",
    "total": 1,
    "link": [{"relation": "self", "url": "https://gateway.example.org/fhir/R4/Appointment?patient=Patient%2Fpat-1"}],
    "entry": [{"fullUrl": "https://gateway.example.org/fhir/R4/Appointment/appt-1", "resource": _STORED,
               "search": {"mode": "match"}}],
}  # fmt: skip
_TRANSACTION: Final = {
    "resourceType": "Bundle",
    "type": "transaction",
    "entry": [
        {"fullUrl": "urn:uuid:0c3f7a52-5d1e-4b8e-9a63-2f0e6c1d9b47", "resource": _with_id(PATIENT, False),
         "request": {"method": "POST", "url": "Patient", "ifNoneExist": "identifier=urn:oid:1.2.3.4.5|MRN-1001"}},
        {"resource": APPOINTMENT, "request": {"method": "PUT", "url": "Appointment/appt-1"}},
    ],
}  # fmt: skip
_TRANSACTION_RESPONSE: Final = {
    "resourceType": "Bundle",
    "type": "transaction-response",
    "entry": [
        {"response": {"status": "201 Created", "location": "Patient/pat-1/_history/1", "etag": 'W/"1"'}},
        {"response": {"status": "200 OK", "location": "Appointment/appt-1/_history/2", "etag": 'W/"2"'}},
    ],
}

_WRITTEN: Final = {"ETag": 'W/"<version>"', "Location": "<base>/<type>/<id>/_history/<version>"}

ResourceType = Annotated[
    str,
    Path(
        description="an R4 resource type; any other name is 404",
        openapi_examples={"Appointment": {"value": "Appointment"}, "Patient": {"value": "Patient"}},
        # A callable, so the R4 tables are read when the OpenAPI document is built, not when this module is imported.
        json_schema_extra=lambda schema: schema.update(enum=sorted(R4_RESOURCE_TYPES)),
    ),
]
ResourceId = Annotated[
    str,
    Path(
        description="the logical id: 1 to 64 of A-Z a-z 0-9 - .",
        openapi_examples={"appointment": {"value": "appt-1"}},
        json_schema_extra={"pattern": r"^[A-Za-z0-9\-.]{1,64}$"},
    ),
]
VersionId = Annotated[
    str,
    Path(
        description="a version number (meta.versionId)",
        openapi_examples={"first": {"value": "1"}},
        json_schema_extra={"pattern": r"^[0-9]{1,10}$"},
    ),
]
IfNoneExist = Annotated[
    str | None,
    Header(
        description="conditional create: a search; when one resource matches it is returned and nothing is created",
        openapi_examples={"identifier": {"value": "identifier=urn:oid:1.2.3.4|appt-1"}},
    ),
]
IfMatch = Annotated[
    str | None,
    Header(
        description="optimistic locking: the ETag of the version this update replaces, else 412",
        openapi_examples={"version 1": {"value": 'W/"1"'}},
    ),
]


def _query(name: str, description: str, example: str, **schema: Any) -> dict[str, Any]:
    return {"name": name, "in": "query", "required": False, "description": description,
            "schema": {"type": "string", **schema}, "examples": {"example": {"value": example}}}  # fmt: skip


_SEARCH_PARAMETERS: Final = [
    _query("_id", "logical id(s), comma-separated", "appt-1"),
    _query("identifier", "[system|]value", "urn:oid:1.2.3.4|appt-1"),
    _query("patient", "the patient the resource is about (Patient/<id> or <id>)", "Patient/pat-1"),
    _query("_lastUpdated", "a FHIR date with an optional prefix (eq gt lt ge le)", "ge2026-01-01"),
    _query("_count", "page size (capped by the gateway)", "20", pattern="^[0-9]{1,4}$"),
    _query("_cursor", "the page after this one: taken from the Bundle's next link", "MTc2NzI2MTYwMDAwMC0w"),
    _query("_format", "only JSON is served", "json", enum=["json", "application/fhir+json", "application/json"]),
]
_CONDITION: Final = [
    {**_query("identifier", "the condition: the resource with this [system|]value (a search is required)",
              "urn:oid:1.2.3.4|appt-1"), "required": True},
]  # fmt: skip

FHIR_ERRORS: Final = {**errors(400, 401, 403, 404), **OTHER_ERRORS}
_CAPABILITIES: Final = {"resourceType": "CapabilityStatement", "status": "active", "kind": "instance",
                        "fhirVersion": "4.0.1", "format": ["json"]}  # fmt: skip
METADATA: Final[dict[str, Any]] = {
    "responses": _fhir_ok(200, "the CapabilityStatement", _CAPABILITIES),
    "openapi_extra": {"security": [{}]},  # added to the router's: the token is optional here
}
BUNDLE: Final[dict[str, Any]] = {
    "responses": {**_fhir_ok(200, "the response Bundle", _TRANSACTION_RESPONSE), **errors(413, 415, 422, 503)},
    "openapi_extra": {"requestBody": _body(_BUNDLE_SCHEMA, {"transaction": _TRANSACTION}, "a Bundle")},
}
VALIDATE: Final[dict[str, Any]] = {
    "responses": {
        **_fhir_ok(200, "an OperationOutcome: the resource is valid", _OUTCOME_OK),
        **errors(400, 413, 415, why={400: "the resource is not valid: an OperationOutcome with every issue"}),
    },
    "openapi_extra": {
        "requestBody": _body(
            _RESOURCE_SCHEMA,
            {
                "Appointment": _with_id(APPOINTMENT, False),
                "Parameters": {
                    "resourceType": "Parameters",
                    "parameter": [{"name": "resource", "resource": _with_id(APPOINTMENT, False)}],
                },
            },
            "the resource, or Parameters with a 'resource' parameter",
        )
    },
}
CREATE: Final[dict[str, Any]] = {
    "responses": {
        **_fhir_ok(201, "created: the resource as stored (Prefer: return=minimal for no body)", _STORED, **_WRITTEN),
        **_fhir_ok(200, "If-None-Exist matched one resource, or an identical create was retried", _STORED),
        **errors(412, 413, 415, 422, 503),
    },
    "openapi_extra": {"requestBody": _body(_RESOURCE_SCHEMA, {"Appointment": _with_id(APPOINTMENT, False)},
                                           "the resource; its resourceType must be the type in the URL")},
}  # fmt: skip
SEARCH: Final[dict[str, Any]] = {
    "responses": _fhir_ok(200, "a searchset Bundle, with a next link when there is more", _SEARCHSET),
    "openapi_extra": {"parameters": _SEARCH_PARAMETERS},
}
SEARCH_POST: Final[dict[str, Any]] = {
    "responses": {**_fhir_ok(200, "a searchset Bundle, as GET [type] answers", _SEARCHSET), **errors(415)},
    "openapi_extra": {
        "requestBody": {
            "required": True,
            "description": "the search parameters, form-encoded (they add to those in the URL)",
            "content": {"application/x-www-form-urlencoded": {
                "schema": {"type": "object", "additionalProperties": True},
                "example": {"patient": "Patient/pat-1", "_sort": "-date"}}},
        }
    },
}  # fmt: skip
_HISTORY: Final = {
    "resourceType": "Bundle",
    "type": "history",
    "total": 1,
    "link": [{"relation": "self", "url": "https://gateway.example.org/fhir/R4/Appointment/appt-1/_history?_count=50"}],
    "entry": [{"fullUrl": "https://gateway.example.org/fhir/R4/Appointment/appt-1", "resource": _STORED,
               "request": {"method": "POST", "url": "Appointment"},
               "response": {"status": "201 Created", "etag": 'W/"1"', "lastModified": "2026-12-01T10:00:00.000Z"}}],
}  # fmt: skip
HISTORY: Final[dict[str, Any]] = {
    "responses": _fhir_ok(200, "a history Bundle, newest version first, with a next link when there is more", _HISTORY),
    "openapi_extra": {
        "parameters": [
            _query("_count", "page size (capped by the gateway)", "20", pattern="^[0-9]{1,4}$"),
            _query("_since", "only versions written at or after this instant", "2026-12-01T00:00:00Z"),
            _query("_cursor", "the page after this one: taken from the Bundle's next link", "MTc2NzI2MTYwMDAwMC0w"),
        ]
    },
}
_PATCH_BODY: Final = [{"op": "replace", "path": "/status", "value": "cancelled"}]
PATCH: Final[dict[str, Any]] = {
    "responses": {
        **_fhir_ok(200, "patched: the resource as stored", _STORED, **_WRITTEN),
        **errors(404, 410, 412, 413, 415, 422, 503),
    },
    "openapi_extra": {
        "requestBody": {
            "required": True,
            "description": "a JSON Patch (RFC 6902), or a JSON Merge Patch (RFC 7386)",
            "content": {
                "application/json-patch+json": {"schema": {"type": "array", "items": {"type": "object"}},
                                                "example": _PATCH_BODY},
                "application/merge-patch+json": {"schema": {"type": "object"}, "example": {"status": "cancelled"}},
            },
        }
    },
}  # fmt: skip
READ: Final[dict[str, Any]] = {
    "responses": {**_fhir_ok(200, "the current version", _STORED, ETag="the version"), **errors(410)}
}
VREAD: Final[dict[str, Any]] = {
    "responses": {**_fhir_ok(200, "that version", _STORED, ETag="the version"), **errors(410)}
}
UPDATE: Final[dict[str, Any]] = {
    "responses": {
        **_fhir_ok(200, "updated (or unchanged): the resource as stored", _STORED, **_WRITTEN),
        **_fhir_ok(201, "created at that id", _STORED, **_WRITTEN),
        **errors(409, 412, 413, 415, 422, 503),
    },
    "openapi_extra": {"requestBody": _body(_RESOURCE_SCHEMA, {"Appointment": APPOINTMENT},
                                           "the resource; its id, if any, must be the id in the URL")},
}  # fmt: skip
DELETE: Final[dict[str, Any]] = {
    "responses": {**_fhir_ok(204, "deleted (or already absent)", None), **errors(409, 503)}
}
CONDITIONAL_UPDATE: Final[dict[str, Any]] = {
    "responses": {**UPDATE["responses"]},
    "openapi_extra": {"parameters": _CONDITION, "requestBody": UPDATE["openapi_extra"]["requestBody"]},
}
CONDITIONAL_DELETE: Final[dict[str, Any]] = {
    "responses": {**_fhir_ok(204, "deleted (or nothing matched)", None), **errors(412, 503)},
    "openapi_extra": {"parameters": _CONDITION},
}
