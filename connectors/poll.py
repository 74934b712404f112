"""Incremental pull: search each tenant's EHR for what changed, and accept it the way a push is accepted.

Per tenant and resource type a sweep searches ``_lastUpdated=gt<cursor - overlap>`` (see ``connectors.search``),
follows ``Bundle.link[next]`` only while it stays on the EHR's base URL, and hands every page's resources to the
gateway's accept path (``Sink``: validation, idempotent store, inbound queue). The cursor is the newest
``meta.lastUpdated`` accepted, and moves only after its page is queued: page by page when the EHR confirms it
sorted by ``_lastUpdated`` (its ``self`` link echoes ``_sort``), else once the whole sweep is queued. The overlap
searches again a little behind the cursor, for clock skew and late commits; the accept path makes that repeat
harmless (the same content is acknowledged, not stored again).

An operator's "poll now" (the console) polls the tenant at once when no poller holds its lease, else it sets the
tenant's poll-now flag, which the holder sees within ``POLL_NOW_SECONDS`` and polls.

Several poller replicas are safe: a tenant is polled only by the replica holding its lease in Redis (``SET NX
PX``, renewed while it polls and waits), and a cursor is written only under that lease, so a replica that lost it
stops without moving anything.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol
from urllib.parse import parse_qsl, urlsplit

from redis.asyncio import Redis

from connectors.client import EHRClient
from connectors.errors import ConnectorError, LeaseLost
from connectors.pool import Connectors
from connectors.search import search_params
from mappers.vendors import profile

log = logging.getLogger("connectors.poll")

DEFAULT_LOOKBACK = timedelta(days=30)
MAX_PAGES = 10_000  # per sweep: a bound on an EHR whose next links never end
MAX_DEAD_LETTERS = 1_000  # per tenant: the newest kept, the count of all in the status hash
POLL_NOW_SECONDS = 2.0  # how often a waiting poller looks for an operator's "poll now"
RESCAN_SECONDS = 1.0  # how soon a running poller takes the EHR blocks of a reloaded clients file

_TAKE = """
local holder = redis.call("GET", KEYS[1])
if holder == ARGV[1] then
  redis.call("PEXPIRE", KEYS[1], ARGV[2])
  return 1
end
if not holder then
  redis.call("SET", KEYS[1], ARGV[1], "PX", ARGV[2])
  return 1
end
return 0
"""

_MOVE = """
if redis.call("GET", KEYS[1]) ~= ARGV[1] then return 0 end
redis.call("HSET", KEYS[2], ARGV[2], ARGV[3])
return 1
"""

_RELEASE = """
if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end
return 0
"""


class PollKeys(Protocol):
    """The keys of the poller (``gateway.store.keys.Keyspace`` has them)."""

    def connector_cursor(self, tenant: str) -> str: ...

    def connector_lease(self, tenant: str) -> str: ...

    def connector_poll_now(self, tenant: str) -> str: ...

    def connector_status(self, tenant: str) -> str: ...

    def connector_dead_letters(self, tenant: str) -> str: ...


@dataclass(frozen=True)
class Refusal:
    """A resource the accept path refused: its HTTP-like status and the class of its error (never its content)."""

    status: int
    error: str


class Sink(Protocol):
    """The gateway's accept path: take a page of resources for ``tenant``; return each one's HTTP-like status.

    A refused resource's status may come as a ``Refusal`` naming its error. The sink raises only when the whole page
    cannot be taken now (backpressure, Redis down): then the cursor stays and the page is searched again.
    """

    async def __call__(self, tenant: str, resources: list[dict[str, Any]]) -> Sequence[int | Refusal]: ...


@dataclass
class SweepReport:
    """What one sweep of one type did."""

    rtype: str
    pages: int = 0
    accepted: int = 0
    rejected: int = 0
    dead_letters: int = 0
    cursor: str | None = None
    error: str | None = None


@dataclass
class PollReport:
    """What one poll of one tenant did."""

    tenant: str
    sweeps: list[SweepReport] = field(default_factory=list)


def _status(answer: int | Refusal) -> int:
    return answer.status if isinstance(answer, Refusal) else answer


_SAFE_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")


def dead_letter(resource: dict[str, Any], answer: int | Refusal) -> dict[str, Any]:
    """Return what a dead letter keeps of a refused resource: its type and id (when they are well formed), the
    status and the error class; never a value from its content."""
    rtype, rid = resource.get("resourceType"), resource.get("id")
    return {
        "type": rtype if isinstance(rtype, str) and rtype.isalpha() and len(rtype) <= 64 else "unknown",
        "id": rid if isinstance(rid, str) and _SAFE_ID.match(rid) else None,
        "status": _status(answer),
        "error": answer.error if isinstance(answer, Refusal) else f"refused ({answer})",
    }


def parse_instant(value: str | None) -> datetime | None:
    """Return a FHIR instant as an aware datetime, or None."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


def _link(bundle: dict[str, Any], relation: str) -> str | None:
    for link in bundle.get("link") or []:
        if isinstance(link, dict) and link.get("relation") == relation and isinstance(link.get("url"), str):
            return str(link["url"])
    return None


def sorted_by_last_updated(bundle: dict[str, Any]) -> bool:
    """Tell whether the EHR says (in its ``self`` link) that it sorted the search by ``_lastUpdated``."""
    link = _link(bundle, "self")
    if not link:
        return False
    sort = dict(parse_qsl(urlsplit(link).query)).get("_sort", "")
    return sort.split(",")[0] == "_lastUpdated"


def page_resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """Return the resources of a searchset page (search outcomes left out); nothing in them is fetched."""
    found = []
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        mode = (entry.get("search") or {}).get("mode") if isinstance(entry, dict) else None
        if isinstance(resource, dict) and mode != "outcome" and resource.get("resourceType") != "OperationOutcome":
            found.append(resource)
    return found


def newest(resources: list[dict[str, Any]], rtype: str) -> tuple[datetime, str] | None:
    """Return the latest ``meta.lastUpdated`` among the resources of ``rtype``, parsed and as given."""
    best: tuple[datetime, str] | None = None
    for resource in resources:
        if resource.get("resourceType") != rtype:
            continue
        meta = resource.get("meta")
        text = meta.get("lastUpdated") if isinstance(meta, dict) else None
        moment = parse_instant(text) if isinstance(text, str) else None
        if moment is not None and (best is None or moment > best[0]):
            best = (moment, str(text))
    return best


class Poller:
    """Poll every tenant whose EHR block has a ``poll`` section."""

    def __init__(
        self,
        redis: Redis,
        keys: PollKeys,
        connectors: Connectors,
        sink: Sink,
        *,
        name: str | None = None,
        lease_seconds: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._redis = redis
        self._keys = keys
        self.connectors = connectors
        self._sink = sink
        self.token = f"{name or 'poller'}|{uuid.uuid4().hex[:12]}"
        self._lease_ms = int(lease_seconds * 1000)
        self.lease_seconds = lease_seconds
        self._clock = clock
        self._take = redis.register_script(_TAKE)
        self._move = redis.register_script(_MOVE)
        self._release = redis.register_script(_RELEASE)

    @property
    def tenants(self) -> list[str]:
        """Return the tenants this poller polls."""
        return [t for t in self.connectors.tenants if (c := self.connectors.get(t)) and c.config.poll]

    async def take(self, tenant: str) -> bool:
        """Take or renew the tenant's lease; tell whether this poller holds it."""
        return bool(int(await self._take(keys=[self._keys.connector_lease(tenant)], args=[self.token, self._lease_ms])))

    async def release(self, tenant: str) -> None:
        """Give the tenant's lease up, if this poller holds it."""
        await self._release(keys=[self._keys.connector_lease(tenant)], args=[self.token])

    async def run(self, stop: asyncio.Event) -> None:
        """Poll every tenant at its interval until ``stop`` is set.

        The tenants are looked at again every ``RESCAN_SECONDS``: a tenant whose EHR block a reloaded clients file
        added is polled from then on, one whose block changed is polled with its new client, one whose block is
        gone is no longer polled (its loop ends after the poll in progress and lets its lease go).
        """
        loops: dict[str, tuple[EHRClient, asyncio.Event, asyncio.Task[None]]] = {}
        log.info("poller started", extra={"tenants": len(self.tenants), "poller": self.token})
        if not self.tenants:
            log.warning("no tenant has an EHR block with a poll section yet: waiting for the clients file to add one")
        try:
            while not stop.is_set():
                wanted = {t: c for t in self.tenants if (c := self.connectors.get(t)) is not None}
                for tenant, (client, ended, task) in list(loops.items()):
                    if wanted.get(tenant) is not client or task.done():
                        ended.set()
                        await task
                        del loops[tenant]
                for tenant, client in wanted.items():
                    if tenant not in loops:
                        ended = asyncio.Event()
                        task = asyncio.create_task(self._tenant_loop(tenant, client, ended), name=f"poll-{tenant}")
                        loops[tenant] = (client, ended, task)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=RESCAN_SECONDS)
        finally:
            self.connectors.wind_down()  # a request being retried gives up now; its sweep resumes from its cursor
            for _, ended, _ in loops.values():
                ended.set()
            await asyncio.gather(*(task for _, _, task in loops.values()), return_exceptions=True)
        log.info("poller stopped", extra={"poller": self.token})

    async def _tenant_loop(self, tenant: str, client: EHRClient, stop: asyncio.Event) -> None:
        assert client.config.poll is not None
        interval = client.config.poll.interval_seconds
        try:
            while not stop.is_set():
                held = False
                try:
                    held = await self.take(tenant)
                    if held:
                        await self.poll_tenant(tenant, client)
                except Exception:
                    log.exception("poll error", extra={"tenant": tenant})
                # Wait for the next poll, renewing the lease so it never lapses between polls; an operator's
                # "poll now" (a flag in Redis) ends the wait early.
                deadline = self._clock() + (interval if held else min(self.lease_seconds / 3, interval))
                while not stop.is_set() and (left := deadline - self._clock()) > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=min(left, self.lease_seconds / 3, POLL_NOW_SECONDS))
                    if held and not stop.is_set():
                        try:
                            held = await self.take(tenant)
                            if held and await self._redis.getdel(self._keys.connector_poll_now(tenant)):
                                break
                        except Exception:
                            log.exception("lease renewal error", extra={"tenant": tenant})
        finally:
            try:
                await self.release(tenant)
            except Exception:
                log.warning("lease not released; it expires by itself", extra={"tenant": tenant})

    async def poll_once(self, tenant: str) -> PollReport | None:
        """Poll one tenant now if its lease is free (or ours), then let the lease go; None if another holds it."""
        client = self.connectors.get(tenant)
        if client is None or client.config.poll is None or not await self.take(tenant):
            return None
        try:
            return await self.poll_tenant(tenant, client)
        finally:
            await self.release(tenant)

    async def poll_tenant(self, tenant: str, client: EHRClient) -> PollReport:
        """Sweep every configured type of a tenant whose lease this poller holds."""
        assert client.config.poll is not None
        report = PollReport(tenant)
        for rtype in client.config.poll.types:
            sweep = SweepReport(rtype)
            report.sweeps.append(sweep)
            try:
                await self.sweep(tenant, client, rtype, sweep)
            except LeaseLost:
                sweep.error = LeaseLost.kind
                log.warning("poll lease lost", extra={"tenant": tenant, "type": rtype})
                return report
            except ConnectorError as exc:
                sweep.error = exc.kind
                log.warning("poll failed", extra={"tenant": tenant, "type": rtype, "error": exc.kind})
            except Exception as exc:  # the accept path refused the page (backpressure, say): try again next time
                sweep.error = type(exc).__name__
                log.warning("poll page not accepted", extra={"tenant": tenant, "type": rtype, "error": sweep.error})
        await self._redis.hset(self._keys.connector_cursor(tenant), "_last_poll", self._clock())
        return report

    async def sweep(self, tenant: str, client: EHRClient, rtype: str, report: SweepReport) -> None:
        """Search ``rtype`` from its cursor, page by page, accepting each page before moving the cursor."""
        poll = client.config.poll
        assert poll is not None
        cursor_key = self._keys.connector_cursor(tenant)
        stored = _text(await self._redis.hget(cursor_key, rtype))
        now = datetime.fromtimestamp(self._clock(), UTC)
        cursor = parse_instant(stored) or poll.since or (now - DEFAULT_LOOKBACK)
        report.cursor = stored
        start = cursor - timedelta(seconds=poll.overlap_seconds)
        bundle = await client.search(rtype, search_params(profile(client.vendor), client.config, rtype, start, now))
        by_page = poll.sort and sorted_by_last_updated(bundle)
        best: tuple[datetime, str] | None = None
        seen: set[str] = set()
        while True:
            resources = page_resources(bundle)
            answers = await self._sink(tenant, resources) if resources else []
            statuses = [a.status if isinstance(a, Refusal) else a for a in answers]
            report.pages += 1
            report.accepted += sum(1 for s in statuses if 200 <= s < 300)
            report.rejected += sum(1 for s in statuses if not 200 <= s < 300)
            refused = [(r, a) for r, a in zip(resources, answers, strict=False) if not 200 <= _status(a) < 300]
            if refused:
                await self._dead_letters(tenant, refused)
                report.dead_letters += len(refused)
            page_best = newest(resources, rtype)
            if page_best and (best is None or page_best[0] > best[0]):
                best = page_best
            if by_page and best and best[0] > cursor:
                await self._advance(tenant, rtype, best, report)
                cursor = best[0]
            link = _link(bundle, "next")
            if not link or link in seen or report.pages >= MAX_PAGES:
                break
            seen.add(link)
            if not await self.take(tenant):
                raise LeaseLost("another poller holds the tenant now")
            bundle = await client.follow(link, rtype)
        if best and best[0] > cursor:
            await self._advance(tenant, rtype, best, report)

    async def _dead_letters(self, tenant: str, refused: list[tuple[dict[str, Any], int | Refusal]]) -> None:
        """Record the resources of a page the accept path refused: type, id, status and error class, no content."""
        now = self._clock()
        letters = [json.dumps({"at": now, **dead_letter(resource, answer)}) for resource, answer in refused]
        key = self._keys.connector_dead_letters(tenant)
        pipe = self._redis.pipeline(transaction=True)
        pipe.lpush(key, *letters)
        pipe.ltrim(key, 0, MAX_DEAD_LETTERS - 1)
        pipe.hincrby(self._keys.connector_status(tenant), "dead_letters", len(letters))
        await pipe.execute()
        for letter in letters:
            log.warning("polled resource refused", extra=json.loads(letter))

    async def _advance(self, tenant: str, rtype: str, best: tuple[datetime, str], report: SweepReport) -> None:
        keys = [self._keys.connector_lease(tenant), self._keys.connector_cursor(tenant)]
        if not int(await self._move(keys=keys, args=[self.token, rtype, best[1]])):
            raise LeaseLost("another poller holds the tenant now")
        report.cursor = best[1]
