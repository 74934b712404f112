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
from dataclasses import dataclass
from typing import Any

import orjson
from redis.exceptions import RedisError

from conformance.outcome import Issue, has_errors, operation_outcome
from connectors import Refusal
from gateway import encoding
from gateway.errors import BadRequest, GatewayError, InvalidResource, Overloaded, Unprocessable
from gateway.fhir.edge import Edge
from gateway.fhir.entries import ENTRY_PATH, METHOD_ORDER, Entry, parse_entries
from gateway.fhir.searchset import searchset
from gateway.store import Result, compact
from gateway.web.responses import status_line

log = logging.getLogger("gateway.fhir.bundle")

IMPORT_TYPES = ("collection", "searchset", "history")
# Errors that say "not now" rather than "not this entry": an import that meets one stops whole, so the caller (a
# client, or the poller whose cursor then stays) tries again later. Every other error is the entry's own.
TRANSIENT: tuple[type[BaseException], ...] = (Overloaded, RedisError, OSError)


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
    writes = sorted((e for e in entries if e.method != "GET"), key=lambda e: (METHOD_ORDER[e.method], e.index))
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
    return ENTRY_PATH.sub("", str(path)).removeprefix(".resource.").removeprefix(".") or "the resource"
