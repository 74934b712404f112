"""Bundle entries parsed and checked: each entry's request (method, url, conditions) and resource, with the issues
that validating the whole Bundle found in it. ``gateway.fhir.bundle`` applies what this returns."""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from conformance.definitions import R4_RESOURCE_TYPES
from conformance.outcome import Issue, has_errors
from conformance.validator import validate_resource
from gateway.errors import InvalidResource, PayloadTooLarge
from gateway.fhir.policy import accepts
from gateway.metrics import VALIDATION_FAILURES
from gateway.store import Create, Delete, Operation, Update, parse_condition, rejections

_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
# FHIR's order of a transaction's interactions (http.html#trules): DELETE, POST, PUT (and PATCH), then GET (and HEAD).
METHOD_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}


@dataclass
class Entry:
    """One Bundle entry, parsed."""

    index: int
    method: str
    rtype: str = ""
    rid: str | None = None
    query: list[tuple[str, str]] | None = None
    resource: dict[str, Any] | None = None
    full_url: str | None = None
    if_none_exist: str | None = None
    if_match: str | None = None
    criteria: str | None = None
    issues: list[Issue] = field(default_factory=list)
    lenient: list[Issue] = field(default_factory=list)  # the resource's errors a lenient policy accepted
    ehr_ordered: bool = False  # the resource is the EHR's own copy: see ``gateway.store.Update.ehr_ordered``
    dedupe: bool = True  # see ``gateway.store.Create.dedupe``

    @property
    def path(self) -> str:
        return f"Bundle.entry[{self.index}]"

    def operation(self) -> Operation:
        assert self.rtype
        if self.method == "DELETE":
            return Delete(self.rtype, self.rid or "", criteria=self.criteria, path=self.path)
        assert self.resource is not None
        if self.method == "PUT":
            return Update(
                self.rtype,
                self.rid or "",
                self.resource,
                if_match=self.if_match,
                full_url=self.full_url,
                criteria=self.criteria,
                path=self.path,
                issues=self.lenient,
                ehr_ordered=self.ehr_ordered,
            )
        return Create(
            self.rtype,
            self.resource,
            if_none_exist=self.if_none_exist,
            full_url=self.full_url,
            path=self.path,
            issues=self.lenient,
            dedupe=self.dedupe,
        )


def etag_version(value: str | None) -> str | None:
    if value is None:
        return None
    return value.strip().removeprefix("W/").strip('"')


# A request url that is only a path (a type, a type and an id): what ``urlsplit`` would make of it is plain, and
# telling that costs less than splitting it (urlsplit's own checks cost about 2 us an entry).
_PLAIN_PATH = re.compile(r"[A-Za-z][A-Za-z0-9\-._/]*")


def split_url(url: str) -> tuple[str, str, str]:
    """Return a request url's scheme, path and query, as ``urllib.parse.urlsplit`` gives them."""
    if _PLAIN_PATH.fullmatch(url):
        return "", url, ""
    parts = urlsplit(url)
    return parts.scheme, parts.path, parts.query


def _parse_request(entry: Entry, raw: dict[str, Any]) -> None:
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
    segments = path.split("/")
    if "" in segments:
        segments = [s for s in segments if s]
    if "$" in path and any(s.startswith("$") for s in segments):
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
    if method == "PUT":
        if_match = request.get("ifMatch")
        entry.if_match = etag_version(if_match) if if_match is not None else None
    else:
        entry.if_match = None
    if entry.criteria is not None:
        _check_condition(entry, entry.criteria, "url")
    if entry.if_none_exist is not None:
        _check_condition(entry, entry.if_none_exist, "ifNoneExist")


def _check_condition(entry: Entry, condition: str, where: str) -> None:
    try:
        parse_condition(condition)
    except ValueError as exc:
        entry.issues.append(Issue("error", "not-supported", f"{entry.path}.request.{where}", str(exc)))


ENTRY_PATH = re.compile(r"^Bundle\.entry\[(\d+)\]")


def _declared_type(raw: object) -> str:
    resource = raw.get("resource") if isinstance(raw, dict) else None
    rtype = resource.get("resourceType") if isinstance(resource, dict) else None
    return rtype if isinstance(rtype, str) and rtype in R4_RESOURCE_TYPES else "unknown"


def parse_entries(
    bundle: dict[str, Any], max_entries: int, *, with_requests: bool, policy: str = "strict", ehr_ordered: bool = False
) -> list[Entry]:
    """Check the Bundle and every entry; return the entries with their issues (none stored yet).

    Under a ``lenient`` policy an entry whose resource errors all pass ``gateway.fhir.policy.accepts`` keeps them in
    ``lenient`` instead of ``issues``, and is stored with them.
    """
    entries = bundle.get("entry") or []
    if not isinstance(entries, list):
        raise InvalidResource(
            "Bundle.entry must be a list",
            issues=[Issue("error", "structure", "Bundle.entry", "entry must be a list")],
        )
    if len(entries) > max_entries:
        raise PayloadTooLarge(f"the Bundle has {len(entries)} entries; the limit is {max_entries}")
    # The Bundle is validated whole (its invariants see every entry); each issue then goes to its entry, so a batch
    # or an import can answer one bad entry without refusing the others.
    by_entry: dict[int, list[Issue]] = defaultdict(list)
    loose: list[Issue] = []
    for issue in validate_resource(bundle):
        match = ENTRY_PATH.match(issue.expression or "")
        if match:
            by_entry[int(match.group(1))].append(issue)
        elif issue.severity in ("error", "fatal"):
            loose.append(issue)
    parsed: list[Entry] = []
    for index, raw in enumerate(entries):
        entry = Entry(index=index, method="POST", ehr_ordered=ehr_ordered)
        found = by_entry.get(index)
        if found is not None:
            entry.issues = found
        if (
            policy != "strict"
            and entry.issues
            and has_errors(entry.issues)
            and accepts(policy, _declared_type(raw), entry.issues, f"{entry.path}.resource")
        ):
            entry.lenient, entry.issues = entry.issues, []
        if entry.issues and has_errors(entry.issues):
            VALIDATION_FAILURES.labels(entry.rtype or _declared_type(raw)).inc()
            rejections.note(entry.rtype or _declared_type(raw), entry.issues)
        if not isinstance(raw, dict):
            entry.issues.append(Issue("error", "structure", entry.path, "an entry must be an object"))
            parsed.append(entry)
            continue
        full_url = raw.get("fullUrl")
        entry.full_url = full_url if isinstance(full_url, str) else None
        resource = raw.get("resource")
        if with_requests:
            _parse_request(entry, raw)
        elif isinstance(resource, dict):
            rtype, rid = resource.get("resourceType"), resource.get("id")
            entry.rtype = rtype if isinstance(rtype, str) else ""
            entry.method, entry.rid = ("PUT", rid) if isinstance(rid, str) and _ID.match(rid) else ("POST", None)
        if entry.method in ("POST", "PUT"):
            if not isinstance(resource, dict):
                entry.issues.append(Issue("error", "required", f"{entry.path}.resource", "a resource is required"))
            else:
                entry.resource = resource
                if entry.rtype and resource.get("resourceType") != entry.rtype:
                    entry.issues.append(
                        Issue(
                            "error",
                            "invalid",
                            f"{entry.path}.resource.resourceType",
                            "resourceType does not match request.url",
                        )
                    )
                if with_requests and entry.method == "PUT" and entry.rid and resource.get("id") != entry.rid:
                    entry.issues.append(
                        Issue("error", "invalid", f"{entry.path}.resource.id", "id must be the id in request.url")
                    )
        parsed.append(entry)
    # Bundle-level problems not tied to one entry still count.
    if loose:
        raise InvalidResource("the Bundle is not valid", issues=loose)
    return parsed
