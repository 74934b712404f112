"""The audit trail's entries, and the request they belong to.

An entry is AuditEvent-shaped and flat (stream fields): ``at`` (epoch ms), ``tenant``, ``client``, ``interaction``
(a restful-interaction code, or ``platform-read``, ``feed-read``, ``writeback``...), ``type``, ``id``, ``vid``,
``patient`` (a ``Patient/<id>`` reference when the store knows it), ``outcome`` (the HTTP status), ``source`` (the
caller's address), ``params`` (the names of the search parameters, comma-separated; never their values) and
``writeback`` (a write-back's id). Never a resource's content, never a token.

The HTTP boundary opens a ``RequestAudit`` for each request (``current``); the store's write paths add their entries
to the same plan as the write they describe (``add``), so a write and its audit entry are one atomic step, and note
that the request is audited. Everything else (reads, searches, refusals) is recorded after the answer, buffered.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from gateway.store.keys import Keyspace
from gateway.store.operation import Create, Operation, Result, Update
from gateway.store.plan import Plan, Value

ANONYMOUS = "~anonymous"  # the audit stream of refusals whose credential names no tenant (no tenant has a "~")
FIELDS = (
    "at", "tenant", "client", "interaction", "type", "id", "vid", "patient", "outcome", "source", "params", "writeback",
)  # fmt: skip

_OWN = frozenset({"type", "id", "vid", "patient", "outcome", "writeback"})  # the fields entries of a request differ by


@dataclass
class RequestAudit:
    """What the audit trail knows of the request being answered (mutable: the store adds to it)."""

    source: str
    interaction: str
    minid: int  # stream ids below this (epoch ms) are past retention: XADD trims them (MINID ~)
    now_ms: int
    client: str = ""  # set once the credential is known
    tenant: str = ""
    params: str = ""
    patient: str = ""
    written: list[tuple[str, str, str, int]] = field(default_factory=list)  # (type, id, vid, status) committed


current: ContextVar[RequestAudit | None] = ContextVar("audit_request", default=None)


def entry(
    audit: RequestAudit,
    *,
    tenant: str,
    client: str,
    rtype: str = "",
    rid: str = "",
    vid: str = "",
    outcome: int,
    interaction: str | None = None,
    patient: str | None = None,
    writeback: str = "",
) -> list[str]:
    """Return one entry as flat stream fields (name, value, ...)."""
    values = (
        str(audit.now_ms), tenant, client, interaction or audit.interaction, rtype, rid, vid,
        audit.patient if patient is None else patient, str(outcome), audit.source, audit.params, writeback,
    )  # fmt: skip
    flat: list[str] = []
    for name, value in zip(FIELDS, values, strict=True):
        if value:
            flat += [name, value]
    return flat


def add(plan: Plan, keys: Keyspace, tenant: str, fields: list[str], minid: int) -> None:
    """Append an entry to ``plan``: XADDed by the commit script with the writes it describes.

    What a request's entries share (its time, tenant, client, source...) goes in the plan once, as their form
    (``Plan.put``); each entry sends only the fields that name its resource and outcome.
    """
    form: list[Value | None] = ["MINID", "~", minid, "*", *fields]
    values: list[Value] = []
    for at in range(5, len(form), 2):
        if form[at - 1] in _OWN:
            values.append(fields[at - 4])
            form[at] = None
    plan.put(("XADD", tuple(form)), keys.audit(tenant), *values)


# What a write's entry says of its resource: interaction, type, id, version, patient ("" when none), status.
Written = tuple[str, str, str, str, str, int]


def add_written(plan: Plan, keys: Keyspace, audit: RequestAudit, tenant: str, client: str, rows: list[Written]) -> None:
    """Append one entry per write to ``plan``, as ``add(plan, keys, tenant, entry(audit, ...), audit.minid)`` would
    for each (the same forms and values, in the same order), with what the entries share worked out once."""
    forms: dict[tuple[str, bool, bool, bool, bool], tuple[str, tuple[Value | None, ...]]] = {}
    where = keys.audit(tenant)
    for interaction, rtype, rid, vid, patient, outcome in rows:
        # What else an entry holds is the request's, the same for every row: only these decide its form.
        shape = (interaction, bool(rtype), bool(rid), bool(vid), bool(patient))
        form = forms.get(shape)
        if form is None:
            fields = entry(audit, tenant=tenant, client=client, rtype=rtype, rid=rid, vid=vid, outcome=outcome,
                           interaction=interaction, patient=patient)  # fmt: skip
            before = len(plan.writes)
            add(plan, keys, tenant, fields, audit.minid)
            form = forms[shape] = plan.forms[plan.writes[before] - 1]
            continue
        plan.put(form, where, *[v for v in (rtype, rid, vid, patient, str(outcome)) if v])


def add_results(
    plan: Plan, keys: Keyspace, trail: RequestAudit, tenant: str, ops: Sequence[Operation], results: list[Result]
) -> None:
    """Add an audit entry per operation of a write to the plan that writes them (one atomic step)."""
    client = trail.client or "unknown"
    rows: list[Written] = []
    for op, result in zip(ops, results, strict=True):
        if trail.interaction == "patch":
            interaction = "patch"
        else:
            interaction = "create" if isinstance(op, Create) else "update" if isinstance(op, Update) else "delete"
        patient = patient_of(result.resource)
        if not patient and result.rtype == "Patient":
            patient = f"Patient/{result.rid}"
        rows.append((interaction, result.rtype, result.rid, str(result.vid or ""), patient, result.status))
    add_written(plan, keys, trail, tenant, client, rows)


def patient_of(resource: Mapping[str, Any] | None) -> str:
    """Return the ``Patient/<id>`` a resource is about (itself, ``subject`` or ``patient``), or ""."""
    if not resource:
        return ""
    if resource.get("resourceType") == "Patient":
        return f"Patient/{resource.get('id', '')}"
    for name in ("subject", "patient"):
        ref = resource.get(name)
        if isinstance(ref, dict) and isinstance(value := ref.get("reference"), str) and value.startswith("Patient/"):
            return value[: 8 + 64]
    return ""


def note_read(resource: dict[str, Any]) -> None:
    """Remember, for the request's audit entry, which patient the resource read is about."""
    audit = current.get()
    if audit is not None and not audit.patient:
        audit.patient = patient_of(resource)
