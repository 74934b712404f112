"""Bundles posted to the FHIR base: transaction (all or nothing), batch (each entry alone), and imports.

A transaction validates every entry first and stores nothing if any is bad; its writes then run in FHIR's order
(DELETE, POST, PUT, then GET) as one atomic store operation, with ``urn:uuid:`` and fullUrl references rewritten
to the ids given. A batch answers each entry on its own. A collection, searchset or history Bundle is a plain
import: every valid entry is stored (PUT semantics where it has an id), and each bad one is answered with its
OperationOutcome instead of stopping the rest. An import applies its entries in as few atomic steps as it can; when
a step fails for a reason of its own (not backpressure or Redis), its entries are applied one by one, so an entry
that cannot be stored is answered alone (400, or 500 with no detail) and never fails the others.
"""

from __future__ import annotations

import functools
import logging
import re
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
from redis.exceptions import RedisError

from conformance.definitions import R4_RESOURCE_TYPES
from conformance.outcome import Issue, has_errors, operation_outcome
from conformance.validator import validate_resource
from connectors import Refusal
from gateway import encoding
from gateway.errors import BadRequest, GatewayError, InvalidResource, Overloaded, PayloadTooLarge, Unprocessable
from gateway.fhir.edge import Edge
from gateway.fhir.policy import accepts
from gateway.fhir.searchset import searchset
from gateway.metrics import VALIDATION_FAILURES
from gateway.store import Create, Delete, Operation, Result, Update, compact, parse_condition, rejections
from gateway.web.responses import status_line

log = logging.getLogger("gateway.fhir.bundle")

_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
_ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
IMPORT_TYPES = ("collection", "searchset", "history")
# Errors that say "not now" rather than "not this entry": an import that meets one stops whole, so the caller (a
# client, or the poller whose cursor then stays) tries again later. Every other error is the entry's own.
TRANSIENT: tuple[type[BaseException], ...] = (Overloaded, RedisError, OSError)


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
    if method not in _ORDER or method in ("PATCH", "HEAD"):
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


_ENTRY_PATH = re.compile(r"^Bundle\.entry\[(\d+)\]")


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
        match = _ENTRY_PATH.match(issue.expression or "")
        if match:
            by_entry[int(match.group(1))].append(issue)
        elif issue.severity in ("error", "fatal"):
            loose.append(issue)
    parsed: list[Entry] = []
    for index, raw in enumerate(entries):
        entry = Entry(index=index, method="POST", ehr_ordered=ehr_ordered)
        entry.issues = by_entry.get(index, [])
        if (
            policy != "strict"
            and has_errors(entry.issues)
            and accepts(policy, _declared_type(raw), entry.issues, f"{entry.path}.resource")
        ):
            entry.lenient, entry.issues = entry.issues, []
        if has_errors(entry.issues):
            VALIDATION_FAILURES.labels(entry.rtype or _declared_type(raw)).inc()
            rejections.note(entry.rtype or _declared_type(raw), entry.issues)
        if not isinstance(raw, dict):
            entry.issues.append(Issue("error", "structure", entry.path, "an entry must be an object"))
            parsed.append(entry)
            continue
        entry.full_url = raw.get("fullUrl") if isinstance(raw.get("fullUrl"), str) else None
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


@dataclass(frozen=True)
class Prefer:
    """What the client's ``Prefer`` header asks the response entries to hold."""

    representation: bool = False  # return=representation: each entry's resource
    outcome: bool = False  # return=OperationOutcome: each entry's response.outcome, even when nothing went wrong


_DONE = {"created": "created", "updated": "updated", "deleted": "deleted", "unchanged": "unchanged (same content)",
         "matched": "matched an existing resource; nothing created", "absent": "already absent"}  # fmt: skip


def _response_entry(result: Result, base: str, prefer: Prefer) -> dict[str, Any]:
    response: dict[str, Any] = {"status": status_line(result.status)}
    if result.location:
        response["location"] = f"{result.location}"
        response["etag"] = result.etag
        if result.last_updated:
            response["lastModified"] = result.last_updated
    if result.issues:
        response["outcome"] = operation_outcome(result.issues)
    elif prefer.outcome:
        done = _DONE.get(result.outcome, result.outcome)
        note = Issue("information", "informational", None, f"{result.rtype}/{result.rid}: {done}")
        response["outcome"] = operation_outcome([note])
    entry: dict[str, Any] = {"response": response}
    if result.vid and result.status != 204:
        entry["fullUrl"] = f"{base}/{result.rtype}/{result.rid}"
        if prefer.representation and result.resource is not None:  # the stored bytes spliced in when there are
            entry["resource"] = orjson.Fragment(result.raw) if result.raw is not None else result.resource
    return entry


def _error_entry(status: int, issues: list[Issue]) -> dict[str, Any]:
    return {"response": {"status": status_line(status), "outcome": operation_outcome(issues)}}


async def _read_entry(edge: Edge, tenant: str, entry: Entry, base: str) -> dict[str, Any]:
    if entry.rid is not None:  # the stored bytes spliced in as they are, as reads and searchsets answer them
        raw = await edge.store.read_json(tenant, entry.rtype, entry.rid)
        head = compact.head(raw)
        if head is None:  # an older gateway's form: parsed and written again
            resource: Any = encoding.loads(raw)
            version = resource["meta"]["versionId"]
        else:
            resource, version = orjson.Fragment(raw), head.version_id
        return {"fullUrl": f"{base}/{entry.rtype}/{entry.rid}", "resource": resource,
                "response": {"status": "200 OK", "etag": f'W/"{version}"'}}  # fmt: skip
    bundle = await searchset(edge, tenant, entry.rtype, entry.query or [], base)
    return {"resource": bundle, "response": {"status": "200 OK"}}


async def _entries(
    edge: Edge, tenant: str, bundle: dict[str, Any], size: int, *, with_requests: bool, ehr_ordered: bool
) -> list[Entry]:
    """Parse and validate the entries (in a worker thread when the body is large) under the tenant's settings."""
    entries = await edge.offload.run(size, functools.partial(
        parse_entries, bundle, edge.settings.max_bundle_entries, with_requests=with_requests,
        policy=edge.policy(tenant), ehr_ordered=ehr_ordered,
    ))  # fmt: skip
    dedupe = edge.dedupe(tenant)
    for e in entries:
        e.dedupe = dedupe
    return entries


async def transaction(
    edge: Edge,
    tenant: str,
    bundle: dict[str, Any],
    base: str,
    prefer: Prefer,
    *,
    ehr_ordered: bool = False,
    size: int = 0,
) -> dict[str, Any]:
    """Process a transaction Bundle: validate all, then apply every write atomically."""
    entries = await _entries(edge, tenant, bundle, size, with_requests=True, ehr_ordered=ehr_ordered)
    issues = [i for e in entries for i in e.issues]
    if has_errors(issues):
        raise InvalidResource("the transaction has invalid entries; nothing was stored", issues=issues)
    writes = sorted((e for e in entries if e.method != "GET"), key=lambda e: (_ORDER[e.method], e.index))
    results = await edge.store.apply(tenant, [e.operation() for e in writes])
    answers: dict[int, dict[str, Any]] = {
        e.index: _response_entry(r, base, prefer) for e, r in zip(writes, results, strict=True)
    }
    for e in entries:
        if e.method == "GET":
            try:
                answers[e.index] = await _read_entry(edge, tenant, e, base)
            except GatewayError as exc:
                answers[e.index] = _error_entry(exc.status, exc.issues)
    return {
        "resourceType": "Bundle",
        "type": "transaction-response",
        "entry": [answers[e.index] for e in entries],
    }


async def batch(
    edge: Edge,
    tenant: str,
    bundle: dict[str, Any],
    base: str,
    prefer: Prefer,
    *,
    imported: bool = False,
    ehr_ordered: bool = False,
    size: int = 0,
) -> dict[str, Any]:
    """Process a batch Bundle (or import a collection): each entry answered on its own."""
    entries = await _entries(edge, tenant, bundle, size, with_requests=not imported, ehr_ordered=ehr_ordered)
    answers: dict[int, dict[str, Any]] = {}
    good: list[Entry] = []
    for e in entries:
        if imported and isinstance(e.resource, dict) and e.resource.get("resourceType") == "OperationOutcome":
            answers[e.index] = _error_entry(
                200, [Issue("information", "informational", e.path, "a search outcome entry is not stored")]
            )
        elif has_errors(e.issues):
            answers[e.index] = _error_entry(400, e.issues)
        elif e.method == "GET":
            try:
                answers[e.index] = await _read_entry(edge, tenant, e, base)
            except GatewayError as exc:
                answers[e.index] = _error_entry(exc.status, exc.issues)
        elif e.method in ("POST", "PUT", "DELETE") and (e.resource is not None or e.method == "DELETE"):
            good.append(e)
        else:
            answers[e.index] = _error_entry(400, [Issue("error", "required", e.path, "the entry has no resource")])
    if imported and good:
        # An import is applied in as few atomic steps as it can: its entries may reference each other by fullUrl.
        # The same resource listed again (a later version of it, say) goes in a later step, so none is lost.
        for step in _rounds(good):
            try:
                results = await edge.store.apply(tenant, [e.operation() for e in step])
            except TRANSIENT:
                raise
            except Exception:  # one entry's failure must not fail the others: apply them one by one
                for e in step:
                    answers[e.index] = await _apply_alone(edge, tenant, e, base, prefer)
                continue
            answers.update({e.index: _response_entry(r, base, prefer) for e, r in zip(step, results, strict=True)})
    else:
        for e in good:
            try:
                [result] = await edge.store.apply(tenant, [e.operation()])
                answers[e.index] = _response_entry(result, base, prefer)
            except GatewayError as exc:
                answers[e.index] = _error_entry(exc.status, exc.issues)
    return {"resourceType": "Bundle", "type": "batch-response", "entry": [answers[e.index] for e in entries]}


async def _apply_alone(edge: Edge, tenant: str, e: Entry, base: str, prefer: Prefer) -> dict[str, Any]:
    """Store one import entry on its own; answer its error in its response entry (transient errors still raise)."""
    try:
        [result] = await edge.store.apply(tenant, [e.operation()])
    except TRANSIENT:
        raise
    except GatewayError as exc:
        return _error_entry(exc.status, exc.issues)
    except UnicodeError:  # a lone surrogate ("\ud800") got past the parser: the entry is bad, not the gateway
        return _error_entry(400, [Issue("error", "invalid", f"{e.path}.resource", "a string is not valid Unicode")])
    except Exception as exc:
        log.warning("import entry failed", extra={"type": e.rtype, "entry": e.index, "error": type(exc).__name__})
        return _error_entry(500, [Issue("error", "exception", e.path, "the entry could not be stored")])
    return _response_entry(result, base, prefer)


def _rounds(entries: list[Entry]) -> list[list[Entry]]:
    """Split entries so that no step writes one resource twice, keeping their order."""
    rounds: list[list[Entry]] = []
    seen: dict[tuple[str, str], int] = {}
    for e in entries:
        step = 0
        if e.rid is not None:
            step = seen.get((e.rtype, e.rid), -1) + 1
            seen[(e.rtype, e.rid)] = step
        while len(rounds) <= step:
            rounds.append([])
        rounds[step].append(e)
    return rounds


async def process(
    edge: Edge, tenant: str, bundle: Any, base: str, prefer: Prefer, *, ehr_ordered: bool = False, size: int = 0
) -> dict[str, Any]:
    """Route a Bundle posted to the base by its type (``size``: its body's bytes; a large one is validated in a
    worker thread)."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise BadRequest("the FHIR base accepts a Bundle", expression="resourceType")
    kind = bundle.get("type")
    if kind == "transaction":
        return await transaction(edge, tenant, bundle, base, prefer, ehr_ordered=ehr_ordered, size=size)
    if kind == "batch":
        return await batch(edge, tenant, bundle, base, prefer, ehr_ordered=ehr_ordered, size=size)
    if kind in IMPORT_TYPES:
        return await batch(edge, tenant, bundle, base, prefer, imported=True, ehr_ordered=ehr_ordered, size=size)
    if kind in ("document", "message"):
        raise Unprocessable(
            f"a {kind} Bundle is stored by POST /Bundle; it is not processed at the base",
            expression="Bundle.type",
        )
    raise BadRequest(
        "Bundle.type must be transaction, batch, collection, searchset or history", expression="Bundle.type"
    )


async def accept(edge: Edge, tenant: str, resources: list[dict[str, Any]], *, from_ehr: bool) -> list[int | Refusal]:
    """Accept resources pulled from an EHR exactly as a pushed import is: validated, stored idempotently, queued.

    ``from_ehr`` says the caller read them from the EHR itself (the poller), so their ``meta.lastUpdated`` is the
    EHR's version stamp: one older than the version held arrived late and is not applied. Return each resource's
    status, in order: 2xx accepted (stored, unchanged or stale), else a ``Refusal`` (4xx refused as invalid, 5xx
    failed to store) with the class of its error. One bad resource never fails the others; only a transient error
    (backpressure, Redis) fails the page, so the poller keeps its cursor and tries again.
    """
    bundle = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": r} for r in resources]}
    try:
        answer = await batch(edge, tenant, bundle, "", Prefer(), imported=True, ehr_ordered=from_ehr)
    except TRANSIENT:
        raise
    except Exception as exc:  # the page failed whole (in validation, say): find the entry at fault, alone
        if len(resources) == 1:
            status = exc.status if isinstance(exc, GatewayError) else 400 if isinstance(exc, UnicodeError) else 500
            return [Refusal(status, ("invalid: " if status < 500 else "failed: ") + type(exc).__name__)]
        return [s for r in resources for s in await accept(edge, tenant, [r], from_ehr=from_ehr)]
    return [_status(entry["response"]) for entry in answer["entry"]]


def _status(response: dict[str, Any]) -> int | Refusal:
    """Return an import entry's status; a refused one with its error's class (issue codes and paths, no content)."""
    status = int(str(response["status"]).split()[0])
    if 200 <= status < 300:
        return status
    issues = (response.get("outcome") or {}).get("issue") or []
    where = sorted({f"{i.get('code')} at {_local(i.get('expression'))}" for i in issues if i.get("severity") in
                    ("error", "fatal")})  # fmt: skip
    return Refusal(status, ("invalid: " if status < 500 else "failed: ") + ("; ".join(where[:3]) or str(status)))


def _local(expression: Any) -> str:
    path = expression[0] if isinstance(expression, list) and expression else ""
    return _ENTRY_PATH.sub("", str(path)).removeprefix(".resource.").removeprefix(".") or "the resource"
