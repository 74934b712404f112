"""The ``fhir-gateway`` command: run, api, worker, poll (the processes), and the operator commands of
``gateway.admin`` (connectors, validate, dlq, conformance)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from gateway import admin
from gateway.admin import EXIT_INVALID, EXIT_OK, EXIT_USAGE
from gateway.settings import MIN_TOKEN_BITS, ClientsConfig, Settings

if TYPE_CHECKING:
    from gateway.services import Services

T = TypeVar("T")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fhir-gateway",
        description="FHIR R4 integration gateway: an EHR-facing FHIR edge, a durable Redis work queue, "
        "workers that map FHIR to the platform model, the platform API with webhooks, and EHR connectors.",
        epilog="Settings come from GATEWAY_* environment variables and REDIS_URL; see the README.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    run = sub.add_parser(
        "run",
        help="development: the API, a worker and the poller in one process",
        description="Run the API, a worker (inbound jobs, webhooks, write-back delivery) and the EHR poller in one "
        "process (development mode: plain-HTTP loopback webhooks allowed). Without REDIS_URL an "
        "embedded Redis starts with its data under --data-dir; without GATEWAY_CLIENTS_FILE a 'demo' "
        "tenant with an ehr, a platform and an admin (console) token is created there and the tokens are printed.",
    )
    run.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    run.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    run.add_argument("--data-dir", type=Path, default=None, help="where local data lives (default ./.gateway-data)")

    api = sub.add_parser(
        "api", help="production: the HTTP API", description="Serve the HTTP API. Needs REDIS_URL and clients."
    )
    api.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0)")
    api.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    api.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        metavar="N",
        help="API processes sharing the port (default: the CPU count); each one is stateless",
    )

    sub.add_parser(
        "worker",
        help="production: inbound jobs, webhook deliveries and write-back delivery",
        description="Process inbound jobs, deliver webhooks and deliver write-backs to the EHRs until SIGTERM or "
        "SIGINT, then finish and acknowledge what is in hand. Needs REDIS_URL.",
    )

    poll = sub.add_parser(
        "poll",
        help="production: pull changes from the tenants' EHRs",
        description="Poll every tenant whose EHR block has a 'poll' section (_lastUpdated since its cursor, all "
        "pages) and accept what comes back as a push is accepted, until SIGTERM or SIGINT. The clients file is "
        "watched: a tenant given a 'poll' section later is polled from then on, so the poller may start with none. "
        "Replicas are safe: one lease per tenant in Redis. Needs REDIS_URL ('fhir-gateway run' polls in-process).",
    )
    poll.add_argument(
        "--once", action="store_true",
        help="poll each tenant once (whose lease is free) and exit; refused when no tenant has an EHR block",
    )  # fmt: skip
    poll.add_argument("--tenant", action="append", help="only this tenant (repeatable; default all)")

    connectors = sub.add_parser(
        "connectors",
        help="EHR connectors: status",
        description="Show each tenant's EHR connector: last success and error, circuit state, retries, rate-limited "
        "calls, poll cursors and the poller holding the tenant. Uses REDIS_URL, or --data-dir of 'fhir-gateway run'.",
    )
    connectors.add_argument("--data-dir", type=Path, default=None, help="the data folder of 'fhir-gateway run'")
    connectors.add_argument("--tenant", action="append", help="only this tenant (repeatable; default all)")
    connectors_sub = connectors.add_subparsers(dest="connectors_command", required=True, metavar="ACTION")
    connectors_sub.add_parser("status", help="print one JSON line per tenant with an EHR block")

    validate = sub.add_parser(
        "validate",
        help="validate FHIR JSON files offline",
        description="Validate FHIR R4 JSON files offline and report each file's issues. Exit 0 when no file "
        "has an error or fatal issue, 1 when one has, 2 on a usage error (a file or support that cannot be read).",
    )
    validate.add_argument("files", nargs="+", type=Path, metavar="FILE")
    validate.add_argument(
        "--support",
        action="append",
        type=Path,
        default=[],
        metavar="FILE_OR_DIR",
        help="Questionnaires, StructureDefinitions, ValueSets and CodeSystems (alone or in Bundles; a folder is "
        "read recursively) to validate against; other resources are ignored (repeatable)",
    )
    validate.add_argument(
        "--profile",
        action="append",
        default=[],
        metavar="URL",
        help="a profile (a StructureDefinition given with --support) every file must meet (repeatable)",
    )
    validate.add_argument(
        "--format",
        choices=("text", "json"),
        default="text",
        help="text: a line per file and per issue (default); json: a JSON line per file, with an OperationOutcome",
    )

    dlq = sub.add_parser(
        "dlq",
        help="list or replay dead-lettered jobs (or, with --webhooks, webhook deliveries)",
        description="Dead letters: jobs that failed every attempt, or with --webhooks webhook deliveries that "
        "did. Uses REDIS_URL, or the embedded Redis of a running 'fhir-gateway run' in --data-dir.",
    )
    dlq.add_argument("--data-dir", type=Path, default=None, help="the data folder of 'fhir-gateway run'")
    dlq.add_argument("--tenant", action="append", help="only this tenant (repeatable; default all)")
    dlq.add_argument("--webhooks", action="store_true", help="webhook deliveries instead of inbound jobs")
    dlq.add_argument(
        "--subscription", action="append", help="with --webhooks: only this subscription (repeatable; default all)"
    )
    dlq_sub = dlq.add_subparsers(dest="dlq_command", required=True, metavar="ACTION")
    dlq_sub.add_parser("list", help="print each dead letter as a JSON line")
    replay = dlq_sub.add_parser("replay", help="put dead letters back on the inbound queue")
    replay.add_argument("ids", nargs="*", metavar="ID", help="dead-letter ids, as 'dlq list' prints them")
    replay.add_argument("--all", action="store_true", help="replay every dead letter")
    reindex = sub.add_parser(
        "reindex",
        help="index every stored resource as this version of the gateway does (after an upgrade)",
        description="Write every stored resource into the search, conditional and history indexes this version "
        "keeps, each in one atomic step that holds only while the resource is unchanged (safe while the gateway "
        "runs). Run it once after upgrading from a version whose indexes differed: until then searches and "
        "conditional creates do not see the older resources. Uses REDIS_URL, or --data-dir of 'fhir-gateway run'.",
    )
    reindex.add_argument("--data-dir", type=Path, default=None, help="the data folder of 'fhir-gateway run'")
    reindex.add_argument("--tenant", action="append", help="only this tenant (repeatable; default all)")
    store_format = sub.add_parser(
        "store-format",
        help="print or set the form of stored data every gateway process writes",
        description="Print the store format set in Redis and the one this version writes for it, as a JSON line. "
        "With --set N, set it: every API, worker and poller process writes format N from its next write at most "
        "10 s later. Format 2 packs each resource's index entries (10% less Redis memory for its current state, 14% "
        "fewer append-only-file bytes per write); set it "
        "only once every process runs a version that reads it (docs/deploy.md, 'Store format'). Resources keep "
        "their form until written again, or until 'fhir-gateway reindex'. Uses REDIS_URL, or --data-dir of "
        "'fhir-gateway run'.",
    )
    store_format.add_argument(
        "--set", type=int, choices=(1, 2), dest="number", help="the format to write (gateway/store/format.py)"
    )
    store_format.add_argument("--data-dir", type=Path, default=None, help="the data folder of 'fhir-gateway run'")
    audit = sub.add_parser(
        "audit",
        help="export a tenant's audit trail as FHIR R4 AuditEvents",
        description="Write a tenant's audit entries (who read, searched, wrote, deleted or was refused what, when, "
        "from where) as NDJSON FHIR R4 AuditEvents, oldest first. Uses REDIS_URL, or --data-dir of "
        "'fhir-gateway run'. The export is itself audited.",
    )
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    export = audit_sub.add_parser("export", help="write NDJSON AuditEvents to stdout (or --output)")
    export.add_argument("--tenant", required=True, help="the tenant")
    export.add_argument("--since", default=None, help="entries recorded at or after this ISO 8601 time (default all)")
    export.add_argument("--output", type=Path, default=None, help="write to this file instead of stdout")
    export.add_argument("--data-dir", type=Path, default=None, help="the data folder of 'fhir-gateway run'")
    _conformance_parser(sub)
    return parser


def _conformance_parser(sub: Any) -> None:
    conformance = sub.add_parser(
        "conformance",
        help="replay a corpus of FHIR files through a running gateway and write a Markdown report",
        description="Push every JSON file of a corpus through a running gateway, read what it stored back, and "
        "write a report: accepted and rejected files with their defects, read-back mismatches, the validator's "
        "verdicts and mapping coverage. Tokens may come from GATEWAY_EHR_TOKEN and GATEWAY_PLATFORM_TOKEN.",
    )
    conformance_sub = conformance.add_subparsers(dest="conformance_command", required=True, metavar="ACTION")
    run = conformance_sub.add_parser("run", help="run the corpus and write the report")
    run.add_argument("--corpus", type=Path, required=True, help="folder of FHIR JSON files (searched recursively)")
    run.add_argument("--url", required=True, help="the gateway's root URL, e.g. http://127.0.0.1:8080")
    run.add_argument("--out", type=Path, required=True, help="where to write the Markdown report")
    run.add_argument("--ehr-token", "--token", dest="ehr_token", help="an 'ehr' client's token (GATEWAY_EHR_TOKEN)")
    run.add_argument("--platform-token", help="a 'platform' client's token of the same tenant (GATEWAY_PLATFORM_TOKEN)")
    run.add_argument(
        "--exclude", action="append", default=[], metavar="GLOB", help="skip files whose path below --corpus matches"
    )
    run.add_argument("--command-line", default="", help="the command to name in the report as how to regenerate it")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status."""
    args = _parser().parse_args(argv)
    command = {
        "run": _run, "api": _api, "worker": _worker, "poll": _poll, "validate": admin.validate, "dlq": admin.dlq,
        "connectors": admin.connectors, "conformance": admin.conformance, "reindex": admin.reindex,
        "store-format": admin.store_format, "audit": admin.audit,
    }[args.command]  # fmt: skip
    try:
        return command(args)
    except KeyboardInterrupt:
        return EXIT_OK
    except SystemExit:
        raise
    except (ValueError, RuntimeError, OSError) as exc:
        print(f"fhir-gateway: {exc}", file=sys.stderr)
        return EXIT_USAGE


def _demo_clients(data_dir: Path) -> tuple[Path, ClientsConfig]:
    path = data_dir / "demo-clients.json"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        config = {
            "clients": [
                {"token": "ehr-" + secrets.token_urlsafe(24), "tenant": "demo", "role": "ehr", "name": "demo-ehr"},
                {"token": "platform-" + secrets.token_urlsafe(24), "tenant": "demo", "role": "platform",
                 "scopes": ["sensitive"], "name": "demo-platform"},
                {"token": "admin-" + secrets.token_urlsafe(24), "tenant": "demo", "role": "admin",
                 "scopes": ["all-tenants"], "name": "demo-admin"},
            ],
            "tenants": {"demo": {"vendor": "generic"}},
        }  # fmt: skip
        path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        path.chmod(0o600)
    return path, ClientsConfig.load(path)


def _run(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway import logs
    from gateway.app import create_app
    from gateway.embedded import EmbeddedRedis

    logs.configure()
    settings = admin.settings(development=True, data_dir=args.data_dir)
    embedded = None
    if not settings.redis_url:
        embedded = EmbeddedRedis(settings.data_dir / "redis").start()
        settings = settings.model_copy(update={"redis_url": embedded.url})
        print(f"Embedded Redis (AOF, appendfsync always) with its data in {embedded.data_dir}", flush=True)
    try:
        if settings.clients_file is None:
            path, clients = _demo_clients(settings.data_dir)
            print(f"No GATEWAY_CLIENTS_FILE: demo tenant 'demo' from {path}", flush=True)
            for client in clients.clients:
                if client.token is not None:
                    print(f"  {client.role:9} token: {client.token.get_secret_value()}", flush=True)
        else:
            clients = settings.load_clients()
        print(f"FHIR base:    http://{args.host}:{args.port}/fhir/R4", flush=True)
        print(f"Platform API: http://{args.host}:{args.port}/platform/v1", flush=True)
        print(f"Console:      http://{args.host}:{args.port}/console (an 'admin' token)", flush=True)
        app = create_app(settings, clients, with_worker=True, with_poller=True)
        _serve(uvicorn, app, args.host, args.port)
    finally:
        if embedded is not None:
            embedded.stop()
    return EXIT_OK


def _serve(uvicorn: Any, app: Any, host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT, then return normally so cleanup runs and the exit status is 0."""
    # uvicorn shuts down gracefully, then re-raises the signal under the handler it found: make that an
    # exception the caller's ``finally`` sees, rather than the default that kills the process on the spot.
    from gateway import heap

    signal.signal(signal.SIGTERM, signal.default_int_handler)
    heap.settle()
    uvicorn.run(app, host=host, port=port, log_config=None, timeout_graceful_shutdown=20)


def _production_settings() -> Settings:
    settings = admin.settings()
    if settings.development:
        # Development behaviour (plain-http loopback webhooks, cookies without Secure) is `run`'s alone: an
        # environment variable left over from a laptop must not bring it into a deployment.
        raise RuntimeError(
            "GATEWAY_DEVELOPMENT=true is for 'fhir-gateway run' only; api, worker and poll always run in "
            "production mode: unset it"
        )
    if not settings.redis_url:
        raise RuntimeError("REDIS_URL must be set (use 'fhir-gateway run' for an embedded Redis)")
    return settings


def _production_clients(settings: Settings) -> ClientsConfig:
    """Read the clients file, refusing tokens too weak for production (naming their clients, never the tokens)."""
    clients = settings.load_clients()
    if weak := clients.weak_clients():
        raise RuntimeError(
            f"weak or placeholder tokens are refused outside 'run' (each needs at least {MIN_TOKEN_BITS} bits of "
            "estimated entropy; make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'); "
            f"clients: {', '.join(weak)}"
        )
    return clients


def _api(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway import logs
    from gateway.app import create_app

    logs.configure()
    settings = _production_settings()
    clients = _production_clients(settings)
    if not clients.clients:
        raise RuntimeError("no API clients are configured: set GATEWAY_CLIENTS_FILE to a clients file")
    if args.workers < 1:
        raise RuntimeError("--workers must be at least 1")
    if args.workers == 1:
        _serve(uvicorn, create_app(settings, clients), args.host, args.port)
        return EXIT_OK
    # Several processes on one port: uvicorn's supervisor starts each one, which builds its app from the environment.
    # Its health check restarts a process that has not answered in time; 5 s (its default) kills processes that
    # are merely slow to start on a busy host, so they get 30 s.
    uvicorn.run(
        "gateway.app:from_environment", factory=True, host=args.host, port=args.port, workers=args.workers,
        log_config=None, timeout_graceful_shutdown=20, timeout_worker_healthcheck=30,
    )  # fmt: skip
    return EXIT_OK


async def _until_signalled() -> asyncio.Event:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def _worker(args: argparse.Namespace) -> int:
    from gateway import logs
    from gateway.services import Services

    logs.configure()
    settings = _production_settings()
    clients = _production_clients(settings)
    if settings.worker_metrics_port:
        from prometheus_client import start_http_server

        from gateway.metrics import REGISTRY

        try:
            start_http_server(settings.worker_metrics_port, registry=REGISTRY)
        except OSError as exc:
            # Metrics are worth having, not worth refusing to work for (another worker may hold the port).
            logging.getLogger("gateway.worker").warning(
                "metrics port unavailable", extra={"port": settings.worker_metrics_port, "error": exc.strerror}
            )

    async def work() -> None:
        services = Services.build(settings, clients)
        stop = await _until_signalled()
        try:
            async with _watching_clients(services, stop):  # tenants' mapping settings, webhook owners' scopes
                await services.worker().run(stop)
        finally:
            await services.aclose()

    _run_loop(work())
    return EXIT_OK


@contextlib.asynccontextmanager
async def _watching_clients(
    services: Services, stop: asyncio.Event, select: Callable[[ClientsConfig], ClientsConfig] | None = None
) -> AsyncIterator[None]:
    """Read the clients file again on change or SIGHUP while the body runs, as the API does (EHR blocks included:
    connectors are added, replaced and retired)."""
    task = asyncio.create_task(services.clients_reloader(select).run(stop)) if services.settings.clients_file else None
    try:
        yield
    finally:
        stop.set()
        if task is not None:
            await task


def _run_loop(main: Coroutine[Any, Any, T]) -> T:
    """Run a long-lived process's coroutine on uvloop (the event loop uvicorn also picks for the API)."""
    import uvloop

    from gateway import heap

    heap.settle()
    return uvloop.run(main)


def _poll(args: argparse.Namespace) -> int:
    from gateway import logs
    from gateway.services import Services

    logs.configure()
    settings = _production_settings()

    def chosen(clients: ClientsConfig) -> ClientsConfig:
        if not args.tenant:
            return clients
        return clients.model_copy(update={"tenants": {t: v for t, v in clients.tenants.items() if t in args.tenant}})

    clients = chosen(_production_clients(settings))
    if args.once and not clients.connector_targets():
        raise RuntimeError("no tenant has an 'ehr' block in the clients file (GATEWAY_CLIENTS_FILE)")

    async def work() -> int:
        services = Services.build(settings, clients)
        poller = services.poller()
        try:
            if not args.once:
                stop = await _until_signalled()
                async with _watching_clients(services, stop, chosen):  # tenants' validation and dedupe settings
                    await poller.run(stop)
                return EXIT_OK
            failed = False
            for tenant in poller.tenants:
                report = await poller.poll_once(tenant)
                if report is None:
                    print(json.dumps({"tenant": tenant, "skipped": "another poller holds the tenant"}))
                    continue
                for sweep in report.sweeps:
                    failed = failed or sweep.error is not None
                    print(json.dumps({"tenant": tenant, **vars(sweep)}))
            return EXIT_INVALID if failed else EXIT_OK
        finally:
            await services.aclose()

    return _run_loop(work())


if __name__ == "__main__":
    sys.exit(main())
