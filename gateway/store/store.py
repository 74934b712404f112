"""The FHIR resource store on Redis: versions, tombstones, search indexes and inbound jobs, written atomically
(its reads are in ``reads``, its index rebuild in ``maintenance``, the operations it takes in ``operation``,
what it decides for each in ``decisions``, what each decision writes in ``versions``, its audit entries in ``audit``).

Every write goes through ``Store.apply``: it reads the current state of what the operations touch, decides every
outcome (new id, new version, unchanged, conditional match), and commits one ``Plan`` whose preconditions are
exactly what it read. A concurrent writer makes the plan conflict and the whole set is decided again, so a
transaction Bundle is all-or-nothing and six concurrent conditional creates make one resource.
"""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Sequence
from typing import Any

from redis import exceptions as redis_errors
from redis.asyncio import Redis

from gateway import encoding
from gateway.clock import Clock, system_clock
from gateway.errors import BadRequest, Overloaded, PreconditionFailed
from gateway.metrics import LENIENT_ACCEPTED, RESOURCES
from gateway.store import activity, audit, conditional, versions
from gateway.store.committer import Committer
from gateway.store.connection import text
from gateway.store.decisions import Decision, dependency_order, still_resolved
from gateway.store.format import StoreFormat
from gateway.store.ids import new_ids
from gateway.store.indexing import parse_condition
from gateway.store.keys import Keyspace
from gateway.store.maintenance import Maintenance
from gateway.store.operation import Create, Current, Delete, Operation, Result, Update, condition_of
from gateway.store.plan import Plan, PlanConflict, PlanOverloaded
from gateway.store.reads import Reads
from gateway.store.snapshot import Read, Snapshot


class Store(Reads, Maintenance):
    """Read and write FHIR resources of every type, per tenant."""

    def __init__(
        self,
        redis: Redis,
        keys: Keyspace,
        *,
        max_backlog: int,
        dedupe_seconds: int,
        retries: int,
        wait_replicas: int = 0,
        wait_timeout_ms: int = 1000,
        clock: Clock = system_clock,
    ) -> None:
        self.redis = redis
        self.keys = keys
        self._redis = redis
        self._keys = keys
        self._clock = clock
        self.clock = clock
        self._registered: set[str] = set()
        self._committer = Committer(redis)
        self._snapshot = Snapshot(redis)
        self._max_backlog = max_backlog
        self._dedupe_seconds = dedupe_seconds
        self._retries = retries
        self._wait = (wait_replicas, wait_timeout_ms)
        self.format = StoreFormat(redis, keys.store_format, clock=clock)

    # -- writes ------------------------------------------------------------------------------------------

    async def apply(self, tenant: str, ops: Sequence[Operation]) -> list[Result]:
        """Apply ``ops`` atomically (all or none) and return one Result each, in order."""
        await self._register(tenant)
        await self.format.current()
        # Each operation's id, a new one where none is given (a create): drawn once, as a decision that fails its
        # checks writes nothing.
        given = [op.rid if isinstance(op, Update | Delete) else "" for op in ops]
        fresh = iter(new_ids(given.count("")))
        ids = [rid or next(fresh) for rid in given]
        for attempt in range(self._retries):
            # The first decision takes plain creates to be new unless it reads anyway; the last one always reads.
            guess = attempt == 0 and self._retries > 1
            plan, results = await self._decide(tenant, ops, ids, guess=guess)
            trail = audit.current.get()
            if trail is not None:
                audit.add_results(plan, self._keys, trail, tenant, ops, results)
            try:
                await self._committer.commit(plan)
            except PlanConflict:
                continue
            except PlanOverloaded as exc:
                raise Overloaded(f"the gateway has {exc.backlog} jobs waiting; retry later", retry_after=5) from None
            except (redis_errors.TimeoutError, redis_errors.ConnectionError):
                # The reply was lost (a busy Redis answered after the timeout, or the connection broke): the plan
                # may have been applied all the same. Answer what was done rather than a 503 for a write that is in.
                if not await self._landed(tenant, results):
                    raise
            if trail is not None:
                trail.written += [(r.rtype, r.rid, str(r.vid or ""), r.status) for r in results]
            await self._replicated()
            # Counted once per type and outcome (a labelled counter costs 1.5-3.5 us a call, a Bundle's entries share
            # a few): the same totals as one increment per result.
            for (rtype, outcome), count in Counter((r.rtype, r.outcome) for r in results).items():
                RESOURCES.labels(rtype, outcome).inc(count)
            lenient = Counter(
                r.rtype for r, op in zip(results, ops, strict=True) if not isinstance(op, Delete) and op.issues
            )
            for rtype, count in lenient.items():
                LENIENT_ACCEPTED.labels(rtype).inc(count)
            return results
        raise Overloaded("too many concurrent writes to the same resources; retry", retry_after=1)

    async def _landed(self, tenant: str, results: list[Result]) -> bool:
        """Tell whether a plan whose reply was lost was applied: every version it wrote is there, as written.

        A plan is applied whole or not at all, so its versions are all there or none is; ``lu`` is this decision's
        own instant, so a concurrent writer's version with the same number is not taken for it. False when the plan
        wrote no version (its answers would rest on checks that may have failed) or when Redis still does not
        answer (the caller's error then stands).
        """
        written = [r for r in results if r.outcome in ("created", "updated", "deleted")]
        if not written:
            return False
        try:
            reads: list[Read] = [("hgetall", self._keys.current(tenant, r.rtype, r.rid)) for r in written]
            states = await self._snapshot.read(reads)
        except redis_errors.RedisError:
            return False
        found = [Current.from_hash(raw) for raw in states]
        return all(c is not None and c.vid == r.vid and c.last_updated == r.last_updated
                   for c, r in zip(found, written, strict=True))  # fmt: skip

    async def _register(self, tenant: str) -> None:
        """List the tenant among those that have written, for the workers (once per process and tenant).

        The list is outside every tenant's slot, so it cannot be written by the commit script on a Redis Cluster.
        """
        if tenant not in self._registered:
            await self._redis.sadd(self._keys.tenants, tenant)
            self._registered.add(tenant)

    async def _replicated(self) -> None:
        """Wait until enough replicas hold the write, when configured; else answer 503 so the client retries.

        The write stays on the primary; the retry finds the same content and answers without a second version.
        """
        replicas, timeout_ms = self._wait
        if replicas and int(await self._redis.wait(replicas, timeout_ms)) < replicas:
            raise Overloaded(f"fewer than {replicas} Redis replicas confirmed the write in time; retry", retry_after=1)

    async def _decide(
        self, tenant: str, ops: Sequence[Operation], ids: list[str], *, guess: bool = False
    ) -> tuple[Plan, list[Result]]:
        """Decide ``ops`` (operation i on the resource ``ids[i]`` unless a condition names another) into one plan."""
        k = self._keys
        decisions = [Decision(op=op, rid=rid) for op, rid in zip(ops, ids, strict=True)]
        plan = Plan()

        # 1. Conditional operations: which existing resources match their criteria?
        conditional = [(d, c) for d in decisions if (c := condition_of(d.op))]
        if conditional:
            pipe = self._redis.pipeline(transaction=False)
            for d, criteria in conditional:
                pipe.smembers(self._criteria_key(tenant, d.op.rtype, criteria))
            for (d, criteria), members in zip(conditional, await pipe.execute(), strict=True):
                ids = sorted(text(m) for m in members)
                if len(ids) > 1:
                    raise PreconditionFailed(
                        f"the condition matches {len(ids)} {d.op.rtype} resources", expression=d.op.rtype
                    )
                plan.expect_members(self._criteria_key(tenant, d.op.rtype, criteria), ids)
                if isinstance(d.op, Create):
                    if ids:
                        d.match = d.rid = ids[0]
                elif ids:
                    d.rid = ids[0]
                    body_id = d.op.resource.get("id") if isinstance(d.op, Update) else None
                    if body_id not in (None, d.rid):
                        raise BadRequest("the id in the resource is not the one the condition matches", expression="id")
                elif isinstance(d.op, Update):
                    body_id = d.op.resource.get("id")
                    d.rid = body_id if isinstance(body_id, str) else str(uuid.uuid4())

        versions.refuse_written_twice(decisions)

        # 2. Current state of everything the operations touch (a create given a fresh uuid touches nothing there),
        # read with the first reads of step 3 (one round trip).
        existing, reads = versions.state_reads(k, tenant, decisions)

        # 3. Resolve urn:uuid and fullUrl references, deduplicating retried plain creates on the way.
        mapping, replies = await self._resolve(tenant, decisions, plan, reads, guess=guess)
        versions.take_states(existing, replies)

        # 4. Each operation's outcome and writes.
        now = self._clock()
        results = versions.decide_all(
            k, tenant, decisions, mapping, plan, now, dedupe_seconds=self._dedupe_seconds,
            packed=self.format.packed_index, max_backlog=self._max_backlog,
        )  # fmt: skip
        activity.count(plan, k, tenant, activity.ACCEPTED, len(ops), now)  # the console's accepted/min chart

        # Answers that write nothing return the stored resource; read those versions now, under the same checks.
        quiet = [(r, d) for r, d in zip(results, decisions, strict=True) if r.resource is None and r.vid]
        if quiet:
            pipe = self._redis.pipeline(transaction=False)
            for r, _ in quiet:
                pipe.hget(k.history(tenant, r.rtype, r.rid), str(r.vid))
            for (r, _), raw in zip(quiet, await pipe.execute(), strict=True):
                r.resource = encoding.loads(raw) if raw else None
        return plan, results

    async def _resolve(
        self, tenant: str, decisions: list[Decision], plan: Plan, reads: list[Read], *, guess: bool = False
    ) -> tuple[dict[str, str], list[Any]]:
        """Map every entry's fullUrl and every conditional reference to ``Type/id``, giving retried identical creates
        their first id; return the mapping and the answers to ``reads``, read with the first dedupe keys.

        With ``guess`` and nothing else to read, the plain creates are taken to be new without reading their dedupe
        keys: a set of creates is then accepted in one round trip instead of two. The plan still requires each key
        to be absent, so a retried create fails the commit's checks, and the next decision reads them.
        """
        mapping: dict[str, str] = {}
        for d in decisions:
            full_url = getattr(d.op, "full_url", None)
            if full_url:
                mapping[full_url] = f"{d.op.rtype}/{d.rid}"
        written = [
            conditional.Written(d.op.rtype, d.rid, getattr(d.op, "resource", None), d.references(), d.op.path)
            for d in decisions
        ]
        mapping.update(await conditional.resolve(self._redis, self._keys, tenant, written, plan))
        plain = [d for d in decisions if isinstance(d.op, Create) and not d.op.if_none_exist and d.op.dedupe]
        if self._dedupe_seconds <= 0:
            plain = []
        # Creates are deduplicated on their content with references resolved, so an entry is looked up only once
        # every entry it points at has its final id (dependency order; a cycle falls back to new ids). Every entry is
        # digested and looked up at once with the ids known now, which hold unless an entry it points at is found to
        # be a retry: only then is it digested and looked up again, in its turn.
        for d in plain:
            versions.prepare(d, mapping)
        replies: list[Any]
        if guess and not reads:
            replies = [None] * len(plain)
        else:
            replies = await self._snapshot.read(reads + [self._dedupe_read(tenant, d) for d in plain])
        hits = dict(zip(map(id, plain), replies[len(reads) :], strict=True))
        for ready in dependency_order(plain):
            moved = [d for d in ready if not still_resolved(d, mapping)]
            for d in moved:
                versions.prepare(d, mapping)
            for d, hit in zip(moved, await self._snapshot.read([self._dedupe_read(tenant, d) for d in moved]),
                              strict=True):  # fmt: skip
                hits[id(d)] = hit
            found = [(i, d, hits[id(d)]) for i, d in enumerate(ready) if hits[id(d)]]
            # The resources these digests name: still there, still with this content?
            checked = await self._snapshot.read([("hgetall", self._keys.current(tenant, d.op.rtype, h.decode()))
                                                 for _, d, h in found])  # fmt: skip
            states: list[Any] = [{}] * len(ready)
            for (i, _, _), state in zip(found, checked, strict=True):
                states[i] = state
            for d, raw in zip(ready, states, strict=True):
                assert isinstance(d.op, Create) and d.prepared is not None
                dg, hit = d.prepared[3], hits[id(d)]
                key = self._keys.dedupe(tenant, d.op.rtype, dg)
                live = Current.from_hash(raw)
                if hit and live is not None and live.digest == dg and not live.deleted:
                    d.match = d.rid = hit.decode()
                    d.current = live
                    plan.expect_value(key, d.rid)
                    plan.expect_field(self._keys.current(tenant, d.op.rtype, d.rid), "hash", dg)
                    if d.op.full_url:
                        mapping[d.op.full_url] = f"{d.op.rtype}/{d.rid}"
                else:
                    plan.expect_value(key, hit.decode() if hit else None)
        return mapping, replies[: len(reads)]

    def _dedupe_read(self, tenant: str, d: Decision) -> Read:
        assert d.prepared is not None
        return ("get", self._keys.dedupe(tenant, d.op.rtype, d.prepared[3]))

    def _criteria_key(self, tenant: str, rtype: str, criteria: str) -> str:
        """Return the identifier-index key a condition reads."""
        try:
            system, value = parse_condition(criteria)
        except ValueError as exc:
            raise BadRequest(str(exc), expression="condition") from None
        return self._keys.token_index(tenant, rtype, "identifier", system, value)
