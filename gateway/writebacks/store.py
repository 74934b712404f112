"""Write-backs in Redis: what the platform asked the tenant's EHR to store, queued on the outbound stream.

A write-back is a FHIR resource the gateway built from a platform request (``gateway.writebacks.routes``) and the
interaction that stores it in the EHR: a conditional create (``If-None-Exist`` on a business identifier) or an
update with ``If-Match`` on the EHR's version, so a retried delivery never duplicates. Creating one is a single
atomic plan: the ``Idempotency-Key`` claimed (when given), the state hash written with status ``queued``, and the
job appended to ``gw:{t}:outbound``. The connectors (not this module) deliver it and move its status on to
``delivering``, ``delivered``, ``failed`` or ``dead_lettered``; the keys and fields are in ``gateway.store.keys``.

An ``Idempotency-Key`` is scoped to the tenant: the same key with the same request (kind and canonical JSON)
returns the write-back it made and queues nothing; with another request it is refused.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Literal

from redis.asyncio import Redis

from gateway.errors import NotFound, Overloaded, Unprocessable
from gateway.store import audit
from gateway.store.committer import Committer
from gateway.store.connection import text
from gateway.store.keys import Keyspace
from gateway.store.plan import Plan, PlanConflict, PlanOverloaded

log = logging.getLogger("gateway.writebacks")

Kind = Literal["message", "survey_response", "appointment", "appointment_cancel", "treatment_plan_activity"]
Status = Literal["queued", "delivering", "delivered", "failed", "dead_lettered"]
Method = Literal["create", "update"]
# The vendor-profile family (``VendorProfile.writebacks``) each kind of write-back belongs to.
FAMILY: Final[Mapping[str, str]] = {
    "message": "message",
    "survey_response": "survey_response",
    "appointment": "appointment",
    "appointment_cancel": "appointment",
    "treatment_plan_activity": "treatment_plan",
}
ID_PATTERN: Final = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
IDEMPOTENCY_KEY_PATTERN: Final = r"^[\x21-\x7e]{1,255}$"  # visible ASCII, as in the IETF Idempotency-Key draft
_ATTEMPTS: Final = 3  # a plan conflicts only when a concurrent request claims the same key


def canonical(request: Mapping[str, Any]) -> str:
    """Return the canonical JSON of a validated request: what an Idempotency-Key is compared on."""
    return json.dumps(request, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class Draft:
    """A write-back ready to queue: the resource for the EHR and how to store it there."""

    kind: Kind
    request: str  # canonical JSON
    method: Method
    resource_type: str
    resource: Mapping[str, Any]
    resource_id: str = ""  # update: the EHR's id of the resource
    if_match: str = ""  # update: the EHR's versionId the change was made on ("" when the gateway does not know it)
    if_none_exist: str = ""  # create: the identifier search that finds a copy already delivered
    sensitive: bool = False  # made from a labelled record: shown only to clients with the sensitive scope


@dataclass(frozen=True)
class Writeback:
    """A write-back as stored, with its delivery state."""

    id: str
    kind: str
    status: str
    created_at: str
    updated_at: str
    request: str
    method: str
    resource_type: str
    resource_id: str
    attempts: int
    ehr_id: str | None = None
    ehr_version: str | None = None
    outcome: dict[str, Any] | None = None
    error: str | None = None
    sensitive: bool = False

    @classmethod
    def from_hash(cls, wid: str, raw: Mapping[Any, Any]) -> Writeback:
        fields = {text(k): text(v) for k, v in raw.items()}
        try:
            outcome = json.loads(fields["outcome"]) if fields.get("outcome") else None
        except ValueError:
            outcome = None
        try:
            attempts = int(fields.get("attempts") or 0)
        except ValueError:
            attempts = 0
        return cls(
            id=wid,
            kind=fields.get("kind", ""),
            status=fields.get("status", ""),
            created_at=fields.get("created_at", ""),
            updated_at=fields.get("updated_at") or fields.get("created_at", ""),
            request=fields.get("request", ""),
            method=fields.get("method", ""),
            resource_type=fields.get("resource_type", ""),
            resource_id=fields.get("resource_id", ""),
            attempts=attempts,
            ehr_id=fields.get("ehr_id") or None,
            ehr_version=fields.get("ehr_version") or None,
            outcome=outcome if isinstance(outcome, dict) else None,
            error=fields.get("error") or None,
            sensitive=fields.get("sensitive") == "1",
        )


class Writebacks:
    """Create write-backs (idempotently) and read their state, per tenant."""

    def __init__(
        self,
        redis: Redis,
        keys: Keyspace,
        *,
        idempotency_seconds: int,
        max_backlog: int,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
    ) -> None:
        self.redis = redis
        self._keys = keys
        self._committer = Committer(redis)
        self._idempotency_seconds = max(1, idempotency_seconds)
        self._max_backlog = max_backlog
        self._wait = (wait_replicas, wait_timeout_ms)

    async def get(self, tenant: str, wid: str) -> Writeback:
        """Return the tenant's write-back ``wid``, or raise NotFound."""
        raw = await self.redis.hgetall(self._keys.writeback(tenant, wid)) if ID_PATTERN.match(wid) else None
        if not raw:
            raise NotFound("no such write-back", expression="id")
        return Writeback.from_hash(wid, raw)

    async def replay(self, tenant: str, key: str, kind: str, request: str) -> Writeback | None:
        """Return the write-back ``key`` made for this same request; None if the key is unused.

        Raise Unprocessable when the key made a write-back for a different request.
        """
        _, found = await self._claimed(tenant, key)
        return _same(found, kind, request) if found is not None else None

    async def create(
        self, tenant: str, wid: str, draft: Draft, now: str, idempotency_key: str | None = None
    ) -> tuple[Writeback, bool]:
        """Store and queue a write-back atomically; return it and whether it is new.

        When a concurrent request with the same Idempotency-Key got there first, return its write-back (or raise
        Unprocessable when its request differs) and queue nothing.
        """
        for _ in range(_ATTEMPTS):
            plan = Plan()
            if idempotency_key is not None:
                held, found = await self._claimed(tenant, idempotency_key)
                if found is not None:
                    return _same(found, draft.kind, draft.request), False
                # A key whose write-back is gone (removed by an operator) may be claimed again.
                key = self._keys.writeback_key(tenant, idempotency_key)
                plan.expect_value(key, held)
                plan.write("SET", key, wid, "EX", self._idempotency_seconds)
            state = {
                "status": "queued", "kind": draft.kind, "created_at": now, "updated_at": now,
                "request": draft.request, "method": draft.method, "resource_type": draft.resource_type,
                "resource_id": draft.resource_id, "if_match": draft.if_match, "if_none_exist": draft.if_none_exist,
                "resource": json.dumps(draft.resource, separators=(",", ":"), ensure_ascii=False), "attempts": 0,
                "sensitive": "1" if draft.sensitive else "",
            }  # fmt: skip
            plan.write("HSET", self._keys.writeback(tenant, wid), *_flat(state))
            outbound = self._keys.outbound(tenant)
            plan.write("XADD", outbound, "*", "writeback_id", wid, "kind", draft.kind, "attempt", 0)
            plan.limit_backlog([outbound, self._keys.outbound_retry(tenant)], self._max_backlog)
            trail = audit.current.get()
            if trail is not None:  # audited in the step that queues it
                fields = audit.entry(
                    trail, tenant=tenant, client=trail.client or "unknown", rtype=draft.resource_type,
                    rid=draft.resource_id, outcome=202, interaction="writeback",
                    patient=audit.patient_of(draft.resource), writeback=wid,
                )  # fmt: skip
                audit.add(plan, self._keys, tenant, fields, trail.minid)
            try:
                await self._committer.commit(plan)
            except PlanConflict:
                continue
            except PlanOverloaded as exc:
                raise Overloaded(
                    f"{exc.backlog} write-backs are waiting for the EHR; retry later", retry_after=5
                ) from None
            if trail is not None:
                trail.written.append((draft.resource_type, wid, "", 202))
            await self._replicated()
            log.info("write-back queued", extra={"writeback": wid, "kind": draft.kind, "type": draft.resource_type})
            return Writeback.from_hash(wid, state), True
        raise Overloaded("concurrent requests with the same Idempotency-Key; retry", retry_after=1)

    async def _claimed(self, tenant: str, key: str) -> tuple[str | None, Writeback | None]:
        """Return the write-back id an Idempotency-Key holds, and that write-back if it still exists."""
        held = await self.redis.get(self._keys.writeback_key(tenant, key))
        if held is None:
            return None, None
        wid = text(held)
        raw = await self.redis.hgetall(self._keys.writeback(tenant, wid))
        return wid, Writeback.from_hash(wid, raw) if raw else None

    async def _replicated(self) -> None:
        """Wait for replicas when configured; else 503, and the client's retry (same key) finds the write-back."""
        replicas, timeout_ms = self._wait
        if replicas and int(await self.redis.wait(replicas, timeout_ms)) < replicas:
            raise Overloaded(f"fewer than {replicas} Redis replicas confirmed the write in time; retry", retry_after=1)


def _same(found: Writeback, kind: str, request: str) -> Writeback:
    """Return the write-back an Idempotency-Key made if it was made from this request, else refuse."""
    if found.kind != kind or found.request != request:
        raise Unprocessable(
            f"this Idempotency-Key already made write-back {found.id} from a different request; "
            "send a new key for a new request, or the same request again to get that write-back",
            expression="Idempotency-Key",
        )
    return found


def _flat(fields: Mapping[str, Any]) -> list[Any]:
    return [item for pair in fields.items() for item in pair]
