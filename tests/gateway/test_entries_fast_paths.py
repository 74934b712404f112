"""A Bundle entry's request is parsed as before the validate phase was made faster (issue #13).

``_parse_request_before`` is ``gateway.fhir.entries._parse_request`` as it was at 84f3f51, kept here as the
reference; ``parse_entries`` with it and with the current one must give the same entries (method, type, id,
conditions, issues in order) for hypothesis-made Bundles of requests, valid and not.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import parse_qsl

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conformance.definitions import R4_RESOURCE_TYPES
from conformance.outcome import Issue
from gateway.errors import InvalidResource
from gateway.fhir import entries
from gateway.fhir.entries import _ID, METHOD_ORDER, Entry, etag_version, split_url
from gateway.store import parse_condition


def _parse_request_before(entry: Entry, raw: dict[str, Any]) -> None:
    request = raw.get("request")
    if not isinstance(request, dict):
        entry.issues.append(Issue("error", "required", f"{entry.path}.request", "a request is required"))
        return
    method, url = request.get("method"), request.get("url")
    if method not in METHOD_ORDER or method in ("PATCH", "HEAD"):
        entry.issues.append(
            Issue(
                "error",
                "not-supported",
                f"{entry.path}.request.method",
                "method must be GET, POST, PUT or DELETE",
            )
        )
        return
    entry.method = method
    if not isinstance(url, str) or not url:
        entry.issues.append(Issue("error", "required", f"{entry.path}.request.url", "a request url is required"))
        return
    scheme, path, query = split_url(url)
    segments = [s for s in path.split("/") if s]
    if any(s.startswith("$") for s in segments):
        entry.issues.append(
            Issue("error", "not-supported", f"{entry.path}.request.url", "operations are not supported in Bundles")
        )
        return
    if scheme or not segments or segments[0] not in R4_RESOURCE_TYPES:
        entry.issues.append(
            Issue(
                "error",
                "invalid",
                f"{entry.path}.request.url",
                "url must be relative: Type, Type/id or Type?query",
            )
        )
        return
    if len(segments) == 2 and _ID.match(segments[1]):
        entry.rid = segments[1]
    elif len(segments) != 1:
        entry.issues.append(Issue("error", "invalid", f"{entry.path}.request.url", "url is not Type or Type/id"))
        return
    entry.rtype = segments[0]
    if method in ("PUT", "DELETE"):
        if entry.rid is None and query:
            entry.criteria = query
        elif entry.rid is None or query:
            entry.issues.append(
                Issue("error", "invalid", f"{entry.path}.request.url", f"{method} takes Type/id or Type?identifier=")
            )
    if method == "POST" and entry.rid is not None:
        entry.issues.append(Issue("error", "invalid", f"{entry.path}.request.url", "POST takes Type, not Type/id"))
    if method == "GET" and entry.rid is None:
        entry.query = parse_qsl(query, keep_blank_values=True)
    entry.if_none_exist = request.get("ifNoneExist") if method == "POST" else None
    entry.if_match = etag_version(request.get("ifMatch")) if method == "PUT" else None
    for condition, where in ((entry.criteria, "url"), (entry.if_none_exist, "ifNoneExist")):
        if condition is not None:
            try:
                parse_condition(condition)
            except ValueError as exc:
                entry.issues.append(Issue("error", "not-supported", f"{entry.path}.request.{where}", str(exc)))


_METHODS = st.sampled_from(["POST", "PUT", "PUT", "DELETE", "DELETE", "GET", "PATCH", "HEAD", "post", "", None, 3])
_URLS = st.one_of(
    st.sampled_from(
        [
            "Appointment",
            "Appointment/a-1",
            "Appointment/a_1",
            "Appointment/",
            "/Appointment/a-1",
            "Appointment//a-1",
            "Appointment/a-1/_history/2",
            "Appointment?identifier=urn:x|1",
            "Appointment?identifier=a&b=c",
            "Appointment?name=x",
            "Appointment?identifier=",
            "Patient?identifier=a&b",
            "Patient?identifier=x|1",
            "Appointment/a-1?x=1",
            "Appointment/$validate",
            "$everything",
            "Unknown/1",
            "http://x.org/fhir/Appointment/1",
            "Patient",
            "",
            "a" * 70,
            "Patient/" + "a" * 65,
        ]
    ),
    st.sampled_from(["Appointment?identifier=a&b", "Patient?x=1", "Appointment?identifier=", "Patient?identifier=1"]),
    st.text(alphabet="AaPp/$?=&|_-.:1 ", max_size=20),
    st.sampled_from([None, 5, ["Patient"]]),
)
_CONDITIONS = st.sampled_from([None, "identifier=urn:x|1", "Patient?identifier=1", "name=x", "identifier=", ""])
_IF_MATCH = st.sampled_from([None, 'W/"2"', "3", ' W/"4" '])


@st.composite
def _entry(draw: st.DrawFn) -> object:
    request: dict[str, Any] = {"method": draw(_METHODS), "url": draw(_URLS)}
    condition = draw(_CONDITIONS)
    if condition is not None:
        request["ifNoneExist"] = condition
    match = draw(_IF_MATCH)
    if match is not None:
        request["ifMatch"] = match
    resource = {"resourceType": draw(st.sampled_from(["Appointment", "Patient", "Nope"])), "id": "a-1"}
    entry: dict[str, Any] = {"resource": resource, "request": request}
    shape = draw(st.sampled_from(["entry", "entry", "entry", "no request", "request list", "not a dict"]))
    if shape == "no request":
        del entry["request"]
    elif shape == "request list":
        entry["request"] = [request]
    elif shape == "not a dict":
        return [entry]
    return entry


def _parsed(bundle: dict[str, Any]) -> object:
    try:
        return [dataclasses.asdict(e) for e in entries.parse_entries(bundle, 1000, with_requests=True)]
    except InvalidResource as exc:
        return ("invalid", str(exc), exc.issues)
    except Exception as exc:  # the same failure either way
        return ("raised", type(exc).__name__)


@settings(max_examples=400, deadline=None)
@given(st.lists(_entry(), min_size=1, max_size=6))
def test_requests_parse_as_before(items: list[object]) -> None:
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": items}
    found = _parsed(bundle)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(entries, "_parse_request", _parse_request_before)
        expected = _parsed(bundle)
    assert found == expected
