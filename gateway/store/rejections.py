"""Resources refused as invalid, per tenant: counted by type and element path, never with a value.

The edge validates synchronously and does not know the tenant, so recording has two halves. ``note`` is called
where a resource is refused (``gateway.fhir.requests.validated`` and ``gateway.fhir.entries.parse_entries``) and
adds to the tally of the work in hand, if one is open; whoever knows the tenant opens that tally with ``tally()``
and writes it with ``flush``: the console's middleware for each FHIR request (``gateway.console.recording``), and
``Services.poller`` for each page pulled from an EHR. Outside a tally ``note`` does nothing.

An element path keeps the element names and drops the indices (``Patient.name.given``); a name that is not an
identifier is shown as ``?``, so that nothing a sender wrote, except element names, is stored.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from redis.asyncio import Redis

from conformance.outcome import Issue
from gateway.store import activity
from gateway.store.connection import text
from gateway.store.keys import Keyspace

KEEP_DAYS = 8
MAX_FIELDS = 2000  # per tenant and day: past it, new paths are counted as "(other)"
OTHER = "(other)"
_INDEX = re.compile(r"\[[^\]]*\]")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_ENTRY_RESOURCE = "Bundle.entry.resource."


@dataclass
class Tally:
    """Refusals noted while some work was in hand: resources by type, issues by (type, path, code)."""

    resources: Counter[str] = field(default_factory=Counter)
    issues: Counter[tuple[str, str, str]] = field(default_factory=Counter)

    def __bool__(self) -> bool:
        return bool(self.resources)


_current: ContextVar[Tally | None] = ContextVar("rejections", default=None)


def element_path(rtype: str, expression: str | None) -> str:
    """Return an issue's element path without indices, rooted at ``rtype`` for an entry of a Bundle."""
    path = _INDEX.sub("", expression or rtype)
    if path.startswith(_ENTRY_RESOURCE) and rtype and rtype != "Bundle":
        path = f"{rtype}.{path.removeprefix(_ENTRY_RESOURCE)}"
    return ".".join(part if _NAME.match(part) else "?" for part in path.split("."))[:200]


def note(rtype: str, issues: Sequence[Issue]) -> None:
    """Count one refused resource of ``rtype`` and its errors in the open tally (if any)."""
    tally = _current.get()
    if tally is None:
        return
    kind = rtype if _NAME.match(rtype or "") else "?"
    tally.resources[kind] += 1
    for issue in issues:
        if issue.severity in ("error", "fatal"):
            tally.issues[(kind, element_path(kind, issue.expression), issue.code)] += 1


@contextmanager
def tally() -> Iterator[Tally]:
    """Open a tally for the work in hand; ``note`` adds to it until the block ends."""
    opened = Tally()
    token = _current.set(opened)
    try:
        yield opened
    finally:
        _current.reset(token)


def _day(now: float) -> str:
    return datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%d")


async def flush(redis: Redis, keys: Keyspace, tenant: str, noted: Tally, now: float) -> None:
    """Add the tally to the tenant's counts of the day (and to the last hour's chart)."""
    if not noted:
        return
    key = keys.rejections(tenant, _day(now))
    fields: Counter[str] = Counter(noted.resources)
    for (rtype, path, code), n in noted.issues.items():
        fields[f"{rtype}|{path}|{code}"] += n
    if int(await redis.hlen(key)) + len(fields) > MAX_FIELDS:
        # Nearly full (a sender inventing element names?): paths not counted yet today go to "(other)".
        names = list(fields)
        pipe = redis.pipeline(transaction=False)
        for name in names:
            pipe.hexists(key, name)
        for name, seen in zip(names, await pipe.execute(), strict=True):
            if not seen and name.count("|") == 2:
                rtype, _, code = name.split("|")
                fields[f"{rtype}|{OTHER}|{code}"] += fields.pop(name)
    pipe = redis.pipeline(transaction=True)  # the tenant's keys share a slot
    for name, n in fields.items():
        pipe.hincrby(key, name, n)
    pipe.expire(key, KEEP_DAYS * 86_400)
    await pipe.execute()
    await activity.add(redis, keys, tenant, activity.REJECTED, sum(noted.resources.values()), now)


@dataclass(frozen=True)
class Summary:
    """A tenant's refusals over some days: resources by type, and issues by type, path and code, most first."""

    days: int
    resources: list[tuple[str, int]]
    issues: list[tuple[str, str, str, int]]


async def summary(redis: Redis, keys: Keyspace, tenant: str, now: float, days: int = 7) -> Summary:
    """Return the tenant's refusals of the last ``days`` UTC days, today included."""
    today = datetime.fromtimestamp(now, UTC)
    pipe = redis.pipeline(transaction=False)
    for back in range(days):
        pipe.hgetall(keys.rejections(tenant, (today - timedelta(days=back)).strftime("%Y-%m-%d")))
    resources: Counter[str] = Counter()
    issues: Counter[tuple[str, str, str]] = Counter()
    for raw in await pipe.execute():
        for name, value in (raw or {}).items():
            parts = text(name).split("|")
            if len(parts) == 1:
                resources[parts[0]] += int(value)
            elif len(parts) == 3:
                issues[(parts[0], parts[1], parts[2])] += int(value)
    return Summary(
        days=days,
        resources=sorted(resources.items(), key=lambda kv: (-kv[1], kv[0])),
        issues=[(*k, n) for k, n in sorted(issues.items(), key=lambda kv: (-kv[1], kv[0]))],
    )
