"""The operator commands of ``fhir-gateway``: connectors status, dead letters, offline validation, conformance.

The commands that read a gateway's state reach its Redis by ``REDIS_URL``, or, for a ``fhir-gateway run`` on this
machine, through its ``--data-dir`` (the embedded server's socket and the demo clients file).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING

from conformance.outcome import has_errors, operation_outcome
from conformance.validator import Support, validate_resource
from gateway.settings import ClientsConfig, Settings

if TYPE_CHECKING:  # imported where used: ``--help``, ``validate`` and usage errors start without the services
    from gateway.services import Services

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2


def settings(**overrides: object) -> Settings:
    """Return the settings from the environment, with ``overrides`` that are not None."""
    return Settings().model_copy(update={k: v for k, v in overrides.items() if v is not None})


def _running(data_dir: Path | None) -> Services:
    """Return the services of the gateway whose Redis is REDIS_URL, or the ``run`` whose data is in ``data_dir``."""
    from gateway.embedded import EmbeddedRedis
    from gateway.services import Services

    found = settings(data_dir=data_dir)
    if not found.redis_url:
        url = EmbeddedRedis.running_url(found.data_dir / "redis")
        if url is None:
            raise RuntimeError("set REDIS_URL, or point --data-dir at a running 'fhir-gateway run'")
        found = found.model_copy(update={"redis_url": url})
    demo = found.data_dir / "demo-clients.json"
    clients = ClientsConfig.load(demo) if found.clients_file is None and demo.exists() else found.load_clients()
    return Services.build(found, clients)


def _with_services(data_dir: Path | None, act: Callable[[Services], Awaitable[int]]) -> int:
    services = _running(data_dir)

    async def go() -> int:
        try:
            return await act(services)
        finally:
            await services.aclose()

    return asyncio.run(go())


def connectors(args: argparse.Namespace) -> int:
    """Print one JSON line per tenant with an EHR block: its connector's status and write-back backlog."""
    from connectors import read_status

    async def show(services: Services) -> int:
        keys, targets = services.keys, services.clients.connector_targets()
        for tenant in sorted(args.tenant or targets):
            target = targets.get(tenant)
            if target is None:
                print(json.dumps({"tenant": tenant, "error": "no ehr block for this tenant"}))
                continue
            status = await read_status(
                services.redis, tenant, status_key=keys.connector_status(tenant),
                cursor_key=keys.connector_cursor(tenant), lease_key=keys.connector_lease(tenant),
                dead_key=keys.connector_dead_letters(tenant),
            )  # fmt: skip
            counts = await services.outbound.counts(tenant)
            print(json.dumps({
                **status.as_dict(), "vendor": target.vendor, **target.ehr.summary(),
                "writebacks_waiting": counts.backlog, "writebacks_dead": counts.dead,
            }))  # fmt: skip
        return EXIT_OK

    return _with_services(args.data_dir, show)


def reindex(args: argparse.Namespace) -> int:
    """Index every stored resource of each tenant as this version of the gateway does; print a line per tenant."""

    async def act(services: Services) -> int:
        from gateway.work.inbound import known_tenants

        for tenant in args.tenant or await known_tenants(services.redis, services.keys):
            done, changed = await services.store.reindex(tenant)
            print(json.dumps({"tenant": tenant, "reindexed": done, "changed_meanwhile": changed}), flush=True)
        return EXIT_OK

    return _with_services(args.data_dir, act)


def store_format(args: argparse.Namespace) -> int:
    """Print the store format (as set, and as this version writes it); with ``--set N``, set it first."""

    async def act(services: Services) -> int:
        from gateway.store.format import FORMATS, read_format, set_format

        key = services.keys.store_format
        if args.number is not None:
            await set_format(services.redis, key, args.number)
        stored, writes = await read_format(services.redis, key)
        print(json.dumps({"store_format": stored, "writes": writes, "form": FORMATS[writes]}), flush=True)
        return EXIT_OK

    return _with_services(args.data_dir, act)


def audit(args: argparse.Namespace) -> int:
    """Write a tenant's audit entries since ``--since`` as NDJSON FHIR R4 AuditEvents."""
    from gateway.access import audit_event
    from gateway.clock import epoch_of
    from gateway.store import audit as entries

    since = epoch_of(args.since) if args.since else None
    if args.since and since is None:
        raise RuntimeError("--since must be an ISO 8601 date or date-time")

    async def act(services: Services) -> int:
        out = args.output.open("w", encoding="utf-8") if args.output else sys.stdout
        written, cursor = 0, None
        try:
            while True:
                page = await services.audit.entries(
                    args.tenant, since_ms=int(since * 1000) if since is not None else None, cursor=cursor, limit=1000
                )
                for entry in page.entries:
                    out.write(json.dumps(audit_event(entry), separators=(",", ":")) + "\n")
                written += len(page.entries)
                if page.next_cursor is None:
                    break
                cursor = page.next_cursor
        finally:
            if args.output:
                out.close()
        # The export is audited too: who (the operator's command), what (how many entries), when.
        trail = services.audit.open("", "export", "since" if args.since else "")
        fields = entries.entry(trail, tenant=args.tenant, client="operator-cli", rtype="AuditEvent", outcome=200)
        services.audit.record(args.tenant, fields)
        await services.audit.flush()
        print(json.dumps({"tenant": args.tenant, "exported": written}), file=sys.stderr)
        return EXIT_OK

    return _with_services(args.data_dir, act)


def dlq(args: argparse.Namespace) -> int:
    """List or replay dead-lettered inbound jobs, or with ``--webhooks`` webhook deliveries."""
    if args.dlq_command == "replay" and not args.ids and not args.all:
        raise RuntimeError("name dead-letter ids to replay, or pass --all")

    async def act(services: Services) -> int:
        if args.webhooks:
            return await _webhook_dead_letters(args, services)
        from gateway.work.inbound import known_tenants

        queue = services.inbound
        moved = 0
        for tenant in args.tenant or await known_tenants(services.redis, services.keys):
            letters = await queue.dead_letters(tenant)
            if args.dlq_command == "list":
                for letter in letters:
                    job = {("resource_id" if k == "id" else k): v for k, v in letter.fields.items()}
                    print(json.dumps({"tenant": tenant, "id": letter.entry_id, **job}))
                continue
            wanted = [d.entry_id for d in letters if args.all or d.entry_id in args.ids]
            for entry_id in await queue.replay(tenant, wanted):
                moved += 1
                print(json.dumps({"tenant": tenant, "replayed": entry_id}))
        if args.dlq_command == "replay":
            print(f"replayed {moved} dead letter(s)", file=sys.stderr)
            if args.ids and moved < len(set(args.ids)):
                return EXIT_INVALID
        return EXIT_OK

    return _with_services(args.data_dir, act)


async def _webhook_dead_letters(args: argparse.Namespace, services: Services) -> int:
    """List (without the records) or replay webhook dead letters, per tenant and subscription."""
    from gateway.errors import BadRequest
    from gateway.webhooks.subscriptions import stream_id

    try:
        wanted = [stream_id(i, "ID") for i in args.ids] if args.dlq_command == "replay" and not args.all else None
    except BadRequest as exc:
        raise RuntimeError(exc.message) from None
    subs = services.subscriptions
    moved: set[str] = set()
    for tenant in args.tenant or await subs.tenants():
        for sid in args.subscription or await subs.ids(tenant):
            if args.dlq_command == "replay":
                for entry_id in await subs.replay(tenant, sid, wanted):
                    moved.add(entry_id)
                    print(json.dumps({"tenant": tenant, "subscription": sid, "replayed": entry_id}))
                continue
            after: str | None = None
            while True:
                letters, after = await subs.dead_letters(tenant, sid, after=after)
                for d in letters:
                    print(json.dumps({
                        "tenant": tenant, "subscription": sid, "id": d.id, "event_id": d.event.get("id"),
                        "event_type": d.event.get("type"), "record_type": d.event.get("record_type"),
                        "record_id": d.event.get("record_id"), "attempts": d.attempts,
                        "last_status": d.last_status, "last_error": d.last_error, "failed_at": d.failed_at,
                    }))  # fmt: skip
                if after is None:
                    break
    if args.dlq_command == "replay":
        print(f"replayed {len(moved)} webhook dead letter(s)", file=sys.stderr)
        if wanted and len(moved) < len(set(wanted)):
            return EXIT_INVALID
    return EXIT_OK


def validate(args: argparse.Namespace) -> int:
    """Validate FHIR files offline; exit 0 valid, 1 invalid, 2 usage."""
    from gateway.errors import GatewayError
    from gateway.web.body import parse_json

    settings = Settings()
    try:
        support = Support.load(args.support) if args.support else None
    except (OSError, ValueError) as exc:
        print(f"fhir-gateway: cannot read the support: {exc}", file=sys.stderr)
        return EXIT_USAGE
    worst = EXIT_OK
    for path in args.files:
        try:
            raw = path.read_bytes()
        except OSError as exc:
            print(f"fhir-gateway: cannot read {path}: {exc.strerror}", file=sys.stderr)
            return EXIT_USAGE
        try:
            resource = parse_json(raw, max_depth=settings.max_json_depth, max_string=settings.max_string_length)
            issues = validate_resource(resource, support=support, profiles=args.profile)
        except GatewayError as exc:
            issues = exc.issues
        valid = not has_errors(issues)
        if not valid:
            worst = EXIT_INVALID
        if args.format == "json":
            print(json.dumps({"file": str(path), "valid": valid, "outcome": operation_outcome(issues)}))
            continue
        failing = sum(1 for issue in issues if issue.severity in ("error", "fatal"))
        summary = "valid" if valid else f"invalid ({failing} error{'s' if failing != 1 else ''})"
        print(f"{path}: {summary}" + (f", {len(issues) - failing} other issue(s)" if len(issues) > failing else ""))
        for issue in issues:
            print(f"  {issue.severity:<11} {issue.code:<14} {issue.expression or '-'}: {issue.diagnostics}")
    return worst


def conformance(args: argparse.Namespace) -> int:
    """Replay a corpus through a running gateway and write the report."""
    import os

    import httpx

    from conformance.report import run_report
    from mappers.registry import record_routes

    ehr = args.ehr_token or os.environ.get("GATEWAY_EHR_TOKEN")
    platform = args.platform_token or os.environ.get("GATEWAY_PLATFORM_TOKEN")
    if not ehr or not platform:
        print("fhir-gateway: give --ehr-token and --platform-token (or GATEWAY_*_TOKEN)", file=sys.stderr)
        return EXIT_USAGE
    if not args.corpus.is_dir():
        print(f"fhir-gateway: {args.corpus} is not a folder", file=sys.stderr)
        return EXIT_USAGE
    root = args.url.rstrip("/").removesuffix("/fhir/R4")

    async def go() -> int:
        async with httpx.AsyncClient(base_url=root, timeout=120.0) as client:
            report = await run_report(
                args.corpus,
                args.out,
                client,
                ehr_token=ehr,
                platform_token=platform,
                exclude=args.exclude,
                record_routes=sorted(record_routes()),
                command=args.command_line,
            )
        accepted = sum(f.accepted for f in report.files)
        print(f"{args.out}: {accepted}/{len(report.files)} files accepted", flush=True)
        return EXIT_OK

    return asyncio.run(go())
