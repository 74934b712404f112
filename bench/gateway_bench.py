#!/usr/bin/env python3
"""Throughput benchmark of the FHIR gateway, run as real processes.

Phase 1 (acceptance): ``fhir-gateway api --workers N`` runs alone (no worker), once per N in ``--api-processes``,
and concurrent clients POST transaction Bundles of synthetic Appointments (plus one Patient per Bundle that the
Appointments reference by urn:uuid). Every accepted Appointment leaves a job on the tenant's inbound stream (so does
a Patient once Patients are mapped). API CPU is the sum over the process started and every process under it.

Baseline: the Bundles sent to the first API are parsed again in this process with fhir.resources (``baseline.py``),
one XADD per resource; the report prints the gateway's rates and CPU cost per resource beside it, as ratios.

Open loop (``--open-loop``): after each closed-loop run, the same API gets Bundles of that size on a fixed
schedule (send i at t0 + i/rate, one task per request, whatever the answers do); latency counts from the scheduled
send time, so a slow answer or a late sender shows in the figures (no coordinated omission).

Phase 2 (drain): ``fhir-gateway worker`` process(es) start and the backlog (XLEN of the inbound stream plus ZCARD
of the retry set) is watched until it reaches 0. Then the platform change feed is paged through and must hold
exactly one event per accepted Appointment.

Run ``python bench/gateway_bench.py --help`` for the options; bench/README.md says what the figures mean.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.machinery
import importlib.util
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import redis
from baseline import BaselineResult, run_baseline

TENANT = "bench"
EHR_TOKEN = "ehr-bench-" + uuid.uuid4().hex
PLATFORM_TOKEN = "platform-bench-" + uuid.uuid4().hex
CLK_TCK = os.sysconf("SC_CLK_TCK")
FEED_PAGE = 1000
DEFAULT_BUNDLES = "1000,250"
DEFAULT_API_PROCESSES = "1,2"
NOISE_PCT = 25  # "other" CPU above this (percent of one core) makes a phase's figures suspect
LATE_MS = 2.0  # an open-loop send whose first byte leaves later than this after its scheduled time is late
CLIENT_BEHIND_MS = 5.0  # open-loop sender lateness p99 above this: the client could not keep its schedule
# A closed loop whose API used less than this (percent of one core per API process) did not measure the API's
# capacity: its clients spent the rest waiting (on Redis's fsync, mostly), and more of them would raise the rate.
SATURATED_PCT = 90
SLOW_MS = 25.0  # an open-loop answer later than this (the issue's p99 target) is slow; slow ones make spells
SPELL_GAP_S = 0.5  # slow answers to sends scheduled less than this apart belong to one spell
MOST_SPELLS = 50  # spells kept in the JSON (the longest first); the count covers them all
LATENCY_MS = 5  # Redis's latency monitor threshold, set on the embedded Redis: events this long are recorded
OPEN_LOOP_CONNECTIONS = 512  # the open-loop client's pool: requests outstanding at once before one must wait
OPEN_LOOP_BUNDLE_SEQ = 20_000_000  # open-loop Bundles' numbers (closed loop from 0, warm-up from 10,000,000)


# --------------------------------------------------------------------------------------------------------------
# Command line


def _bundles_arg(text: str) -> tuple[str, list[float]]:
    """``200`` is 200 Bundles per size; ``1000,250`` one count per size; ``30s`` 30 seconds per size."""
    text = text.strip()
    match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*s", text)
    if match:
        if float(match.group(1)) <= 0:
            raise argparse.ArgumentTypeError("the duration must be more than 0 seconds")
        return "seconds", [float(match.group(1))]
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(
            "give a count (200), one count per size (1000,250) or a duration in seconds (30s)"
        ) from None
    if any(c < 1 for c in counts):
        raise argparse.ArgumentTypeError("a Bundle count must be at least 1")
    return "count", [float(c) for c in counts]


def _sizes_arg(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("sizes are whole numbers separated by commas, e.g. 20,100") from None
    if not sizes or any(s < 2 for s in sizes):
        raise argparse.ArgumentTypeError("each Bundle size must be at least 2 (one Patient and an Appointment)")
    return sizes


def _counts_arg(text: str) -> list[int]:
    try:
        counts = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("give process counts separated by commas, e.g. 1,2") from None
    if not counts or any(c < 1 for c in counts):
        raise argparse.ArgumentTypeError("each process count must be at least 1")
    return counts


def _open_loop_arg(text: str) -> tuple[str, float]:
    """``half`` or ``0.5x``: that fraction of the closed-loop Bundles/s just measured; ``150``: 150 Bundles/s."""
    text = text.strip().lower()
    try:
        if text == "half":
            kind, value = "fraction", 0.5
        elif text.endswith("x"):
            kind, value = "fraction", float(text[:-1])
        else:
            kind, value = "fixed", float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            "give 'half', a fraction of the closed-loop rate such as 0.8x, or Bundles per second such as 150"
        ) from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError("the rate must be more than 0")
    return kind, value


def _positive_seconds(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError("must be more than 0 seconds")
    return value


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="gateway_bench.py",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Benchmark the FHIR gateway as real processes on this machine.\n\n"
            "Phase 1 (acceptance): starts 'fhir-gateway api --workers N' for each N in --api-processes (a "
            "temporary\nclients file with one ehr and one platform client for tenant 'bench') with NO worker "
            "running, and POSTs\ntransaction Bundles from --concurrency concurrent clients (a pool of as many "
            "keep-alive connections; --client).\nEach Bundle has one Patient (POST, fullUrl urn:uuid) and size-1 "
            "Appointments "
            "(alternately PUT and\nPOST, distinct identifiers) that reference the Patient by its urn:uuid. "
            "Prints accepted resources/s (in all\nand per API process), API CPU ms per resource (the uvicorn "
            "parent and all its children), Bundles/s\nand p50/p95/p99 latency per API process count and Bundle "
            "size.\n\n"
            "Open loop (--open-loop RATE): after each closed-loop run above, sends Bundles of that size to the same "
            "API on a\nfixed schedule (Bundle i at t0 + i/RATE, one task per request, a pool of "
            f"{OPEN_LOOP_CONNECTIONS} connections), whatever the\nanswers do. Latency counts from each Bundle's "
            "SCHEDULED send time, so a slow answer or a sender that fell\nbehind is in the figures. Prints target "
            "and achieved Bundles/s, resources/s, p50/p95/p99/max latency,\nfailures and how late the sender "
            f"was (p99; sends more than {LATE_MS:g} ms late are counted).\nAnswers later than {SLOW_MS:g} ms are "
            f"grouped into spells (slow answers to sends under {SPELL_GAP_S:g} s apart), so that a tail\nmade of one "
            "stall reads apart from a service slow now and then; with the embedded Redis, its latency\nmonitor "
            f"(events of {LATENCY_MS} ms or more) names Redis's slowest fsync, fork and command of the window.\n"
            "Its Appointments (warm-up included) go through phase 2's drain and feed check like the others.\n\n"
            "Baseline: the same Bundles (JSON bytes) parsed in this process with fhir.resources' R4B Bundle model "
            "and each\nentry's resource XADDed (one XADD per resource, pipelined per Bundle) onto a scratch "
            "stream under the run's\nkey prefix (deleted after); prints its resources/s, CPU ms per resource and "
            "the gateway/baseline ratios.\n\n"
            "Phase 2 (drain): starts --workers 'fhir-gateway worker' process(es) and times how fast the "
            "backlog\n(XLEN <prefix>:{bench}:inbound + ZCARD <prefix>:{bench}:retry) falls to 0 (jobs/s, "
            "timed from the first\nworker's 'worker started' log line). Then pages GET "
            "/platform/v1/changes?limit=1000 and checks it\nholds exactly one appointment event per accepted "
            "Appointment, each naming a rewritten Patient/<id>\n(events of other record types, such as "
            "patient.created, are counted, not checked).\n\n"
            "Redis: REDIS_URL when set (keys under a unique GATEWAY_KEY_PREFIX 'gwbench-<hex>', deleted at the "
            "end;\nthe server is never flushed), else an embedded redis-server (AOF, appendfsync always) in a "
            "temporary\nfolder, stopped at the end. With the embedded Redis, the AOF is rewritten (BGREWRITEAOF, "
            "waited for) before\neach timed window, so that no window pays for a rewrite that earlier windows' "
            "writes made due. Redis\nCPU counts its forked children (a rewrite), and the windows in which Redis "
            "forked one are named.\nPrints a machine line and Markdown tables (stdout; progress "
            "on stderr);\n--json-out writes every figure as JSON. Child processes are always stopped, also on "
            "Ctrl-C or SIGTERM.\n\n"
            "Exit status: 0 on success; 1 if a Bundle failed, the drain timed out, a job was dead-lettered or "
            "the feed\ncheck failed; 2 on a setup error; 130 when interrupted."
        ),
        epilog="Example: REDIS_URL=redis://127.0.0.1:6379 .venv/bin/python bench/gateway_bench.py "
        "--json-out bench/results/external.json",
    )
    parser.add_argument(
        "--concurrency",
        type=_positive,
        default=8,
        help="concurrent clients (and pooled connections) (default 8); the report says when they did not keep "
        "the API processes busy",
    )
    parser.add_argument(
        "--bundles",
        type=_bundles_arg,
        default=_bundles_arg(DEFAULT_BUNDLES),
        metavar="N|N,M|Ss",
        help="how much to send per Bundle size: a number of Bundles for every size (300), one number per "
        f"size in --sizes order (1000,250), or a duration in seconds per size (20s; Bundles are then built "
        f"while sending) (default {DEFAULT_BUNDLES})",
    )
    parser.add_argument(
        "--sizes", type=_sizes_arg, default=[20, 100], metavar="A,B", help="Bundle sizes in entries (default 20,100)"
    )
    parser.add_argument(
        "--warmup",
        type=int,
        default=2,
        metavar="N",
        help="rounds per size sent before measuring, each one Bundle per API process sent together; they "
        "are not timed but their Appointments count in the drain and the feed check; the baseline also ingests "
        "its first N Bundles untimed first (default 2)",
    )
    parser.add_argument(
        "--api-processes",
        type=_counts_arg,
        default=_counts_arg(DEFAULT_API_PROCESSES),
        metavar="A,B",
        help="run phase 1 once per count with 'fhir-gateway api --workers N' (the API restarted between "
        "counts, same Redis and key prefix; the last one serves the feed check) "
        f"(default {DEFAULT_API_PROCESSES})",
    )
    parser.add_argument(
        "--open-loop",
        type=_open_loop_arg,
        default=None,
        metavar="RATE",
        help="after each closed-loop run, also send that Bundle size at a fixed rate: 'half' (half the "
        "closed-loop Bundles/s just measured for that size and API process count), a fraction of it ('0.8x') "
        "or Bundles per second ('150', the same for every size and API process count) (default: no open loop)",
    )
    parser.add_argument(
        "--open-loop-seconds",
        type=_positive_seconds,
        default=20.0,
        metavar="S",
        help="measured seconds of each open-loop run (default 20)",
    )
    parser.add_argument(
        "--open-loop-warmup",
        type=float,
        default=2.0,
        metavar="S",
        help="seconds sent at the same rate before the measured ones, not in the figures (their Appointments "
        "still go through the drain and the feed check) (default 2)",
    )
    parser.add_argument(
        "--client",
        choices=("raw", "httpx"),
        default="raw",
        help="the closed loop's HTTP client: 'raw' (pre-built HTTP/1.1 requests on keep-alive connections, tens of "
        "microseconds of this process's CPU per request) or 'httpx' (an httpx.AsyncClient, about a millisecond "
        "per request: a third of a core at 20-entry rates, taken from the API and Redis on a 2-core machine) "
        "(default raw; every answer is read and checked either way)",
    )
    parser.add_argument(
        "--open-loop-client",
        choices=("raw", "httpx"),
        default="raw",
        help="the open loop's HTTP client: 'raw' (pre-built HTTP/1.1 requests on keep-alive connections, tens of "
        "microseconds of this process's CPU per request) or 'httpx' (an httpx.AsyncClient as the closed loop "
        "uses, about a millisecond per request, which on a 2-core machine delays its own sends and the API) "
        "(default raw)",
    )
    parser.add_argument(
        "--no-baseline",
        action="store_true",
        help="skip the fhir.resources-inline baseline (parse each Bundle with fhir.resources' R4B Bundle "
        "model, one XADD per resource, pipelined per Bundle, in this process)",
    )
    parser.set_defaults(compact_aof=False, redis_latency=False)  # main() turns them on for the embedded Redis
    parser.add_argument(
        "--no-compact-aof",
        action="store_true",
        help="do not rewrite the embedded Redis's AOF before each timed window (a rewrite Redis starts by "
        "itself, when the file has doubled, may then fall in any window; it is never done on a REDIS_URL server)",
    )
    parser.add_argument(
        "--workers", type=_positive, default=1, help="'fhir-gateway worker' processes for phase 2 (default 1)"
    )
    parser.add_argument(
        "--worker-concurrency",
        type=_positive,
        default=None,
        metavar="N",
        help="set GATEWAY_WORKER_CONCURRENCY for the workers (default: the gateway's default)",
    )
    parser.add_argument(
        "--drain-timeout",
        type=float,
        default=300.0,
        metavar="S",
        help="give up on the drain after this many seconds (default 300)",
    )
    parser.add_argument(
        "--request-timeout", type=float, default=120.0, metavar="S", help="per-request timeout (default 120)"
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="S",
        help=f"before starting, wait up to S seconds for other processes to use less than {NOISE_PCT}%% of a "
        "core (default 0: measure one second, warn, and go on)",
    )
    parser.add_argument("--port", type=int, default=0, help="API port on 127.0.0.1 (default: a free one)")
    parser.add_argument(
        "--embedded", action="store_true", help="use an embedded redis-server even when REDIS_URL is set"
    )
    parser.add_argument("--json-out", type=Path, default=None, metavar="FILE", help="also write the results as JSON")
    parser.add_argument(
        "--profile-api",
        type=Path,
        default=None,
        metavar="FILE",
        help="run the API under cProfile and write its stats to FILE at the end (slows the API; the "
        "figures are then not comparable)",
    )
    parser.add_argument(
        "--store-format",
        type=int,
        default=1,
        help="the store format the gateway writes, as 'fhir-gateway store-format --set N' sets it (default 1)",
    )
    parser.add_argument(
        "--keep-tmp", action="store_true", help="keep the temporary folder (clients file, process logs, Redis data)"
    )
    args = parser.parse_args(argv)
    if len(args.bundles[1]) not in (1, len(args.sizes)):
        parser.error(f"--bundles gives {len(args.bundles[1])} counts for {len(args.sizes)} sizes")
    if args.open_loop_warmup < 0:
        parser.error("--open-loop-warmup cannot be negative")
    if args.profile_api is not None and args.api_processes != [1]:
        parser.error("--profile-api profiles one uvicorn process: use it with --api-processes 1")
    return args


# --------------------------------------------------------------------------------------------------------------
# Synthetic Bundles


def make_bundle(run: str, size: int, seq: int) -> tuple[bytes, int]:
    """Return a transaction Bundle of ``size`` entries as JSON bytes, and how many Appointments it holds."""
    patient_urn = f"urn:uuid:{uuid.uuid4()}"
    tag = f"{run}-{size}-{seq}"
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": patient_urn,
            "resource": {
                "resourceType": "Patient",
                "identifier": [{"system": "urn:gwbench:mrn", "value": f"mrn-{tag}"}],
                "name": [{"family": "Bench", "given": [f"Synthetic{seq}"]}],
                "birthDate": "1980-01-01",
            },
            "request": {"method": "POST", "url": "Patient"},
        }
    ]
    day = datetime(2027, 1, 4, 14, 0, tzinfo=UTC) + timedelta(days=seq % 300)
    for i in range(size - 1):
        start = day + timedelta(minutes=15 * i)
        appointment: dict[str, Any] = {
            "resourceType": "Appointment",
            "identifier": [{"system": "urn:gwbench:appt", "value": f"appt-{tag}-{i}"}],
            "status": "booked",
            "description": "Synthetic benchmark visit",
            "start": start.isoformat().replace("+00:00", "Z"),
            "end": (start + timedelta(minutes=30)).isoformat().replace("+00:00", "Z"),
            "participant": [
                {"actor": {"reference": patient_urn}, "status": "accepted"},
                {"actor": {"reference": "Practitioner/bench-prac-1"}, "status": "accepted"},
            ],
        }
        if i % 2 == 0:
            rid = f"b{tag}-{i}"
            appointment["id"] = rid
            entries.append({"resource": appointment, "request": {"method": "PUT", "url": f"Appointment/{rid}"}})
        else:
            entries.append(
                {
                    "fullUrl": f"urn:uuid:{uuid.uuid4()}",
                    "resource": appointment,
                    "request": {"method": "POST", "url": "Appointment"},
                }
            )
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    return json.dumps(bundle, separators=(",", ":")).encode(), size - 1


# --------------------------------------------------------------------------------------------------------------
# Measurements


def percentile(sorted_values: list[float], q: float) -> float:
    """Linear-interpolated percentile (q in 0..100) of an ascending list."""
    if not sorted_values:
        return float("nan")
    if len(sorted_values) == 1:
        return sorted_values[0]
    pos = (len(sorted_values) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


def proc_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process (0 if it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime, stime


def process_tree(root: int) -> list[int]:
    """``root`` and every process descended from it (parent links from /proc/*/stat), root first."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            ppid = int(Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [root], [root]
    while todo:
        for child in children.get(todo.pop(), []):
            tree.append(child)
            todo.append(child)
    return tree


def tree_cpu_seconds(root: int) -> dict[int, float]:
    """CPU seconds of ``root`` and each of its descendants, by pid (uvicorn's supervisor and its workers)."""
    return {pid: proc_cpu_seconds(pid) for pid in process_tree(root)}


def process_label(pid: int, root: int) -> str:
    """``root`` (the API, or uvicorn's supervisor), ``server <pid>``, or ``tracker`` (multiprocessing's)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_text(errors="replace")
    except OSError:
        cmdline = ""
    if pid == root:
        return f"root {pid}"
    if "resource_tracker" in cmdline:
        return f"tracker {pid}"
    return f"server {pid}"


def tree_cpu_delta(before: dict[int, float], after: dict[int, float]) -> dict[int, float]:
    """CPU seconds each process used between two ``tree_cpu_seconds`` readings (a newcomer counts from 0)."""
    return {pid: after[pid] - before.get(pid, 0.0) for pid in after}


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def kernel_thread_seconds() -> float:
    """CPU seconds of the kernel's own threads (children of kthreadd: I/O, journal, memory workers)."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[1] == "2" or entry.name == "2":  # ppid 2 (kthreadd), or kthreadd itself
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def machine_cpu_seconds() -> tuple[float, float]:
    """(CPU seconds all cores spent running user processes, CPU seconds of kernel work) since boot.

    Busy is everything but idle and iowait in /proc/stat; kernel work is interrupt and softirq time plus the
    kernel threads, so that "other processes" means other programs, not the fsyncs and loopback traffic
    the benchmark itself causes.
    """
    try:
        first = Path("/proc/stat").read_text().splitlines()[0].split()
    except OSError:
        return 0.0, 0.0
    ticks = [int(x) for x in first[1:9]]  # user nice system idle iowait irq softirq steal
    busy = (sum(ticks) - ticks[3] - ticks[4]) / CLK_TCK
    kernel = (ticks[5] + ticks[6]) / CLK_TCK + kernel_thread_seconds()
    return busy - kernel, kernel


def other_cpu_pct(window: float, own_pids: list[int]) -> float:
    """Percent of one core that processes other than this one and ``own_pids`` used over ``window`` seconds."""
    busy0, own0 = machine_cpu_seconds()[0], self_cpu_seconds() + sum(proc_cpu_seconds(p) for p in own_pids)
    time.sleep(window)
    busy1, own1 = machine_cpu_seconds()[0], self_cpu_seconds() + sum(proc_cpu_seconds(p) for p in own_pids)
    return max(100 * ((busy1 - busy0) - (own1 - own0)) / window, 0.0)


def wait_until_quiet(own_pids: list[int], patience: float) -> float:
    """Measure other processes' CPU for a second, again and again up to ``patience`` seconds until it is low."""
    deadline = time.monotonic() + patience
    while True:
        other = other_cpu_pct(1.0, own_pids)
        if other <= NOISE_PCT or time.monotonic() >= deadline:
            return other
        print(f"waiting for a quiet machine: other processes use {other:.0f}% of a core", file=sys.stderr)


_REDIS_PIDS: dict[int, int | None] = {}


def redis_server_pid(client: redis.Redis) -> int | None:
    """The Redis server's pid when it runs on this machine and /proc shows it (else None), asked once per client."""
    if id(client) not in _REDIS_PIDS:
        pid: int | None = int(client.info("server").get("process_id", 0)) or None
        try:
            if pid is None or "redis" not in Path(f"/proc/{pid}/comm").read_text():
                pid = None  # another machine, or another PID namespace (a container): its pid means nothing here
        except OSError:
            pid = None
        _REDIS_PIDS[id(client)] = pid
    return _REDIS_PIDS[id(client)]


def redis_cpu_seconds(client: redis.Redis) -> float:
    """Redis's CPU seconds so far, its forked children's included (an AOF rewrite, a snapshot).

    INFO cpu counts a child only once it has exited; a child still running is read from /proc where the server
    is on this machine, so a window that ends during a rewrite counts the rewrite's work so far (and the next
    window, the rest).
    """
    info = client.info("cpu")
    total = sum(float(info.get(f"used_cpu_{kind}", 0)) for kind in ("user", "sys", "user_children", "sys_children"))
    pid = redis_server_pid(client)
    if pid is not None:
        total += sum(proc_cpu_seconds(child) for child in process_tree(pid)[1:])
    return total


def redis_forks(client: redis.Redis) -> int:
    """How many children Redis has forked since it started (AOF rewrites, snapshots)."""
    return int(client.info("stats").get("total_forks", 0))


def prepare_redis(args: argparse.Namespace, client: redis.Redis, window: str) -> None:
    """Before a timed window: rewrite the AOF of the benchmark's own (embedded) Redis, unless told not to."""
    if not args.compact_aof:
        return
    seconds = compact_aof(client)
    if seconds:
        print(f"rewrote Redis's AOF before {window} in {seconds:.1f}s", file=sys.stderr, flush=True)


def compact_aof(client: redis.Redis, timeout: float = 600.0) -> float:
    """Rewrite Redis's AOF now and wait for the rewrite to end; return the seconds it took (0 when AOF is off).

    Redis rewrites its AOF by itself each time the file doubles, in a forked child that takes most of a core for
    seconds at a few hundred MB. Started before a timed window, the rewrite of what earlier windows wrote is not
    in that window's figures; the rewrites a window's own writes cause still are (``redis_forks``).
    """
    if client.config_get("appendonly").get("appendonly") != "yes":
        return 0.0
    started = time.monotonic()

    def wait_for_rewrites() -> None:
        while True:
            info = client.info("persistence")
            if not (int(info.get("aof_rewrite_in_progress", 0)) or int(info.get("aof_rewrite_scheduled", 0))):
                return
            if time.monotonic() - started > timeout:
                raise RuntimeError("Redis's AOF rewrite did not end in time")
            time.sleep(0.05)

    wait_for_rewrites()  # one Redis started on its own ends first (BGREWRITEAOF would only be scheduled)
    client.bgrewriteaof()
    wait_for_rewrites()
    status = client.info("persistence").get("aof_last_bgrewrite_status")
    if status != "ok":  # a full disk, say: the window still runs, and its figures may include Redis's next try
        print(f"warning: Redis's AOF rewrite ended with status {status!r}", file=sys.stderr, flush=True)
    return time.monotonic() - started


@dataclass
class CpuReading:
    """CPU seconds so far of the API (by pid), Redis, this process, and the machine (programs, kernel work)."""

    api: dict[int, float]
    redis: float
    client: float
    busy: float
    kernel: float


def cpu_reading(api_pid: int, rclient: redis.Redis) -> CpuReading:
    """Read every CPU counter a window of phase 1 needs."""
    return CpuReading(tree_cpu_seconds(api_pid), redis_cpu_seconds(rclient), self_cpu_seconds(), *machine_cpu_seconds())


@dataclass
class CpuShares:
    """What each party used between two readings, in percent of one core (API CPU also in seconds)."""

    api_seconds: float = 0.0
    api_pct: float = 0.0
    redis_pct: float = 0.0
    client_pct: float = 0.0
    other_pct: float = 0.0
    kernel_pct: float = 0.0
    api_pct_by_process: dict[str, float] = field(default_factory=dict)


def cpu_shares(before: CpuReading, after: CpuReading, seconds: float, api_pid: int) -> CpuShares:
    """Percent of one core per party over ``seconds`` (other = the machine's busy time minus ours)."""
    api_used = tree_cpu_delta(before.api, after.api)
    shares = CpuShares(api_seconds=sum(api_used.values()))
    if seconds <= 0:
        return shares
    shares.api_pct_by_process = {
        process_label(pid, api_pid): round(100 * used / seconds, 1) for pid, used in api_used.items()
    }
    redis_used, client_used = after.redis - before.redis, after.client - before.client
    shares.api_pct = 100 * shares.api_seconds / seconds
    shares.redis_pct = 100 * redis_used / seconds
    shares.client_pct = 100 * client_used / seconds
    ours = shares.api_seconds + redis_used + client_used
    shares.other_pct = max(100 * ((after.busy - before.busy) - ours) / seconds, 0.0)
    shares.kernel_pct = 100 * (after.kernel - before.kernel) / seconds
    return shares


@dataclass
class AcceptanceResult:
    size: int
    concurrency: int
    bundles: int = 0
    failed: int = 0
    resources: int = 0
    appointments: int = 0  # accepted Appointments, warm-up included
    patients: int = 0  # accepted Patients, warm-up included
    seconds: float = 0.0
    resources_per_s: float = 0.0
    bundles_per_s: float = 0.0
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    mean_ms: float = 0.0
    api_cpu_pct: float = 0.0
    redis_cpu_pct: float = 0.0
    client_cpu_pct: float = 0.0
    other_cpu_pct: float = 0.0
    kernel_cpu_pct: float = 0.0
    api_cpu_ms_per_resource: float = 0.0  # steadier than the rates on a busy machine
    api_processes: int = 1  # 'fhir-gateway api --workers N'
    resources_per_s_per_process: float = 0.0  # resources_per_s / api_processes
    # "root <pid>" (the process started: the API itself, or uvicorn's supervisor with N > 1), "server <pid>"
    # (uvicorn's API processes), "tracker <pid>" (multiprocessing's resource tracker) -> percent of one core
    api_cpu_pct_by_process: dict[str, float] = field(default_factory=dict)
    api_restarts: int = 0  # API processes uvicorn's supervisor saw die (and replaced) while this API ran
    redis_forks: int = 0  # children Redis forked during the window (AOF rewrites: their CPU is in redis_cpu_pct)
    client: str = "raw"  # the load client: "raw" (RawClient) or "httpx"
    errors: list[str] = field(default_factory=list)


@dataclass
class OpenLoopResult:
    """One open-loop run: Bundles of one size sent to one API at a fixed rate."""

    size: int
    api_processes: int = 1
    target_bundles_per_s: float = 0.0
    rate_from: str = "fixed"  # "fixed", or "0.5x closed loop" (the fraction of closed_loop_bundles_per_s)
    closed_loop_bundles_per_s: float | None = None
    warmup_seconds: float = 0.0
    warmup_sends: int = 0  # sent first at the same rate, not in the figures
    scheduled: int = 0  # measured sends
    seconds: float = 0.0  # from the first measured send's scheduled time to the last measured answer
    bundles: int = 0  # accepted, measured
    failed: int = 0  # warm-up included
    resources: int = 0  # accepted, measured
    appointments: int = 0  # accepted Appointments, warm-up included (the drain and the feed check expect them)
    patients: int = 0  # accepted Patients, warm-up included
    bundles_per_s: float = 0.0  # achieved: accepted measured Bundles per second of the window
    resources_per_s: float = 0.0
    resources_per_s_per_process: float = 0.0
    # Latency from each Bundle's scheduled send time to its full answer (what a caller sending at this rate sees)
    p50_ms: float = 0.0
    p95_ms: float = 0.0
    p99_ms: float = 0.0
    max_ms: float = 0.0
    mean_ms: float = 0.0
    # From the moment the request's first byte left (the API's and the network's share alone)
    service_p50_ms: float = 0.0
    service_p99_ms: float = 0.0
    # How late the first byte left after the scheduled time (event loop, connection pool, connecting)
    lateness_p50_ms: float = 0.0
    lateness_p99_ms: float = 0.0
    lateness_max_ms: float = 0.0
    late_sends: int = 0  # measured sends more than LATE_MS late
    # The event loop's share of the lateness: how late the request's task began (the rest is httpx and the pool)
    loop_lateness_p50_ms: float = 0.0
    loop_lateness_p99_ms: float = 0.0
    late_threshold_ms: float = LATE_MS
    max_outstanding: int = 0  # most Bundles scheduled and not yet answered at once
    connections: int = OPEN_LOOP_CONNECTIONS
    api_cpu_pct: float = 0.0
    redis_cpu_pct: float = 0.0
    client_cpu_pct: float = 0.0
    other_cpu_pct: float = 0.0
    kernel_cpu_pct: float = 0.0
    api_cpu_ms_per_resource: float = 0.0
    api_cpu_pct_by_process: dict[str, float] = field(default_factory=dict)
    redis_forks: int = 0  # children Redis forked during the measured window (AOF rewrites)
    # Answers slower than slow_ms, grouped into spells (see ``slow_spells``): one stall, or a slow service?
    slow_ms: float = SLOW_MS
    slow_sends: int = 0
    spells: int = 0
    slow_spells: list[dict[str, float]] = field(default_factory=list)  # the longest MOST_SPELLS, in time order
    # The embedded Redis's slowest event of each kind in the window, in ms (``LATENCY LATEST``: aof-fsync-always,
    # fork, command, ...), those of LATENCY_MS or more; empty on a REDIS_URL server, whose settings are not changed
    redis_latency_ms: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


@dataclass
class DrainResult:
    workers: int
    jobs: int = 0
    seconds: float = 0.0
    jobs_per_s: float = 0.0
    seconds_from_spawn: float = 0.0
    startup_seconds: float = 0.0
    worker_cpu_pct: float = 0.0
    redis_cpu_pct: float = 0.0
    other_cpu_pct: float = 0.0
    kernel_cpu_pct: float = 0.0
    worker_cpu_ms_per_job: float = 0.0
    redis_forks: int = 0  # children Redis forked during the timed drain (AOF rewrites)
    drained: bool = False
    dead_letters: int = 0
    processed: int | None = None  # from the workers' "worker stopped" log lines
    samples: list[tuple[float, int]] = field(default_factory=list)


@dataclass
class FeedResult:
    expected: int = 0  # accepted Appointments
    events: int = 0  # every event in the feed
    appointment_events: int = 0  # events whose record_type is "appointment"
    distinct_appointments: int = 0
    other_events: int = 0  # events of other record types (e.g. a Patient family, once one is mapped)
    pages: int = 0
    seconds: float = 0.0
    types: dict[str, int] = field(default_factory=dict)
    unresolved_patient_refs: int = 0
    ok: bool = False


# --------------------------------------------------------------------------------------------------------------
# Processes


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def gateway_command(args: list[str], profile: Path | None = None) -> list[str]:
    """The ``fhir-gateway`` command of this interpreter's environment (``python -m gateway`` as a fallback)."""
    if profile is not None:
        return [sys.executable, "-m", "cProfile", "-o", str(profile), "-m", "gateway", *args]
    script = Path(sys.executable).parent / "fhir-gateway"
    if script.exists():
        return [str(script), *args]
    found = shutil.which("fhir-gateway")
    return [found, *args] if found else [sys.executable, "-m", "gateway", *args]


class Children:
    """Child processes, each with its own log file, always terminated in the end."""

    def __init__(self, folder: Path, env: dict[str, str]) -> None:
        self.folder = folder
        self.env = env
        self.procs: list[tuple[str, subprocess.Popen[bytes], Path]] = []

    def start(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        log = self.folder / f"{name}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                command,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C reaches the bench only; it stops the children itself
                cwd=self.folder,
            )
        self.procs.append((name, proc, log))
        return proc

    def log_of(self, proc: subprocess.Popen[bytes]) -> Path:
        return next(log for _, p, log in self.procs if p is proc)

    def stop(self, procs: list[subprocess.Popen[bytes]] | None = None, timeout: float = 25.0) -> None:
        """SIGTERM, wait, then SIGKILL whatever is left."""
        chosen = [p for _, p, _ in self.procs if procs is None or p in procs]
        for proc in chosen:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for proc in chosen:
            try:
                proc.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)

    def tail(self, proc: subprocess.Popen[bytes], lines: int = 20) -> str:
        try:
            return "\n".join(self.log_of(proc).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def wait_for_api(base: str, proc: subprocess.Popen[bytes], children: Children, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited with status {proc.returncode}:\n{children.tail(proc)}")
        try:
            if httpx.get(f"{base}/healthz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"the API did not answer /healthz within {timeout:.0f}s:\n{children.tail(proc)}")


# --------------------------------------------------------------------------------------------------------------
# Phase 1: acceptance


class BundleSource:
    """Bundles to send: pre-built for a count (kept out of the timed window), built on demand for a duration.

    Every Bundle handed out is kept in ``sent`` (the baseline ingests the same bytes).
    """

    def __init__(self, run: str, size: int, mode: str, amount: float, first_seq: int) -> None:
        self.run, self.size, self.mode = run, size, mode
        self.seq = first_seq
        self.deadline = float("inf")
        self.amount = amount
        self.sent: list[bytes] = []
        self._prebuilt: Iterator[tuple[bytes, int]] | None = None
        if mode == "count":
            built = [make_bundle(run, size, first_seq + i) for i in range(int(amount))]
            self._prebuilt = iter(built)

    def start(self) -> None:
        if self.mode == "seconds":
            self.deadline = time.perf_counter() + self.amount

    def next(self) -> tuple[bytes, int] | None:
        if self._prebuilt is not None:
            item = next(self._prebuilt, None)
        elif time.perf_counter() >= self.deadline:
            item = None
        else:
            self.seq += 1
            item = make_bundle(self.run, self.size, self.seq)
        if item is not None:
            self.sent.append(item[0])
        return item


async def post_bundle(
    client: httpx.AsyncClient, body: bytes, entries: int, extensions: dict[str, Any] | None = None
) -> tuple[bool, int, str]:
    """POST one Bundle; return (ok, resources accepted, error text)."""
    response = await client.post("/fhir/R4", content=body, extensions=extensions)
    return check_answer(response.status_code, response.content, entries)


def check_answer(status: int, content: bytes, entries: int) -> tuple[bool, int, str]:
    """Read a transaction's answer: (every entry accepted, resources accepted, error text)."""
    if status != 200:
        return False, 0, f"HTTP {status}: {content[:300].decode(errors='replace')}"
    answer = json.loads(content)
    statuses = [e.get("response", {}).get("status", "") for e in answer.get("entry", [])]
    accepted = sum(1 for s in statuses if s[:1] == "2")
    if len(statuses) != entries or accepted != entries:
        return False, accepted, f"{accepted} of {entries} entries accepted: {Counter(statuses)}"
    return True, accepted, ""


class _Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection: a request written whole, its answer read up to its Content-Length."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None
        self.usable = True
        self.idle_since = 0.0  # when its last answer came (time.monotonic)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.waiter is None or self.waiter.done():
            return
        try:
            answer = self._answer()
        except ValueError as exc:
            self.usable = False
            self.waiter.set_exception(exc)
            return
        if answer is not None:
            self.waiter.set_result(answer)

    def connection_lost(self, exc: Exception | None) -> None:
        self.usable = False
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(ConnectionError("the API closed the connection"))

    def _answer(self) -> tuple[int, bytes] | None:
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        lines = bytes(self.buffer[:end]).split(b"\r\n")
        status, length = int(lines[0].split()[1]), -1
        for line in lines[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                self.usable = False
            elif name == b"transfer-encoding":
                raise ValueError("a chunked answer (this client reads Content-Length answers only)")
        if length < 0:
            raise ValueError("an answer without Content-Length")
        if len(self.buffer) < end + 4 + length:
            return None
        content = bytes(self.buffer[end + 4 : end + 4 + length])
        del self.buffer[: end + 4 + length]
        return status, content


class RawClient:
    """POST pre-built HTTP/1.1 requests on a pool of keep-alive connections, at most ``connections`` at once.

    httpx costs this process about a millisecond of CPU per request (request and response objects, header
    handling, its pool's bookkeeping); on a 2-core machine that the API and Redis share, that made the open loop's
    own sends late and took CPU from the API. Here a request is one ``write`` of bytes built before the run and an
    answer is parsed up to its Content-Length: tens of microseconds each.

    A connection idle for ``keepalive_expiry`` seconds or more is closed rather than used again, as httpx's pool
    does: the API closes a connection idle for 5 s (uvicorn's keep-alive timeout), and one whose close this client
    has not read yet (its event loop was held by a pause between windows) would fail the request written on it.
    """

    def __init__(
        self, base: str, headers: dict[str, str], connections: int, timeout: float, keepalive_expiry: float = 4.0
    ) -> None:
        url = httpx.URL(base)
        self.host, self.port = url.host, url.port or 80
        self.timeout = timeout
        self.keepalive_expiry = keepalive_expiry
        fields = {"Host": f"{self.host}:{self.port}", "Accept": "*/*", **headers}
        self._head = "".join(f"{name}: {value}\r\n" for name, value in fields.items())
        self._idle: list[_Connection] = []
        self._all: list[_Connection] = []
        self._slots = asyncio.Semaphore(connections)

    def request(self, path: str, body: bytes) -> bytes:
        """Return the bytes of a POST of ``body`` to ``path``."""
        return f"POST {path} HTTP/1.1\r\n{self._head}Content-Length: {len(body)}\r\n\r\n".encode() + body

    async def send(self, request: bytes, mark_started: Callable[[], None]) -> tuple[int, bytes]:
        """Send one request (from ``request``) and return its answer's status and content."""
        async with self._slots:
            conn = None
            fresh = time.monotonic() - self.keepalive_expiry
            while self._idle and conn is None:
                conn = self._idle.pop()  # the most recently used first
                if not conn.usable or conn.transport is None or conn.transport.is_closing():
                    conn = None
                elif conn.idle_since < fresh:
                    conn.transport.close()
                    conn = None
            if conn is None:
                _, conn = await asyncio.get_running_loop().create_connection(_Connection, self.host, self.port)
                self._all.append(conn)
            assert conn.transport is not None
            conn.waiter = asyncio.get_running_loop().create_future()
            mark_started()
            conn.transport.write(request)
            try:
                async with asyncio.timeout(self.timeout):
                    answer = await conn.waiter
            except BaseException:
                conn.usable = False
                conn.transport.close()
                raise
            conn.waiter = None
            if conn.usable:
                conn.idle_since = time.monotonic()
                self._idle.append(conn)
            else:
                conn.transport.close()
            return answer

    def close(self) -> None:
        for conn in self._all:
            if conn.transport is not None:
                conn.transport.close()


# Sends one Bundle of so many entries and reads its answer: (every entry accepted, resources accepted, error text).
Poster = Callable[[bytes, int], Awaitable[tuple[bool, int, str]]]


def raw_poster(raw: RawClient) -> Poster:
    """Return a Poster that sends each Bundle through ``raw`` (one write; the answer read and checked)."""

    async def post(body: bytes, entries: int) -> tuple[bool, int, str]:
        try:
            status, content = await raw.send(raw.request("/fhir/R4", body), lambda: None)
        except (OSError, ValueError, TimeoutError) as exc:
            return False, 0, f"{type(exc).__name__}: {exc}"
        return check_answer(status, content, entries)

    return post


def httpx_poster(client: httpx.AsyncClient) -> Poster:
    """Return a Poster that sends each Bundle through ``client``."""

    async def post(body: bytes, entries: int) -> tuple[bool, int, str]:
        try:
            return await post_bundle(client, body, entries)
        except httpx.HTTPError as exc:
            return False, 0, f"{type(exc).__name__}: {exc}"

    return post


async def acceptance(
    post: Poster,
    source: BundleSource,
    concurrency: int,
    api_pid: int,
    api_processes: int,
    rclient: redis.Redis,
    client: str = "raw",
) -> AcceptanceResult:
    result = AcceptanceResult(size=source.size, concurrency=concurrency, api_processes=api_processes, client=client)
    latencies: list[float] = []
    forks0 = redis_forks(rclient)
    cpu0 = cpu_reading(api_pid, rclient)

    async def one_client() -> None:
        while True:
            item = source.next()
            if item is None:
                return
            body, appointments = item
            started = time.perf_counter()
            ok, accepted, error = await post(body, source.size)
            latencies.append(time.perf_counter() - started)
            if ok:
                result.bundles += 1
                result.resources += accepted
                result.appointments += appointments
                result.patients += 1
            else:
                result.failed += 1
                if len(result.errors) < 5:
                    result.errors.append(error)

    started = time.perf_counter()
    source.start()
    await asyncio.gather(*(one_client() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started
    cpu = cpu_shares(cpu0, cpu_reading(api_pid, rclient), result.seconds, api_pid)
    result.redis_forks = redis_forks(rclient) - forks0
    latencies.sort()
    ms = [x * 1000 for x in latencies]
    result.p50_ms, result.p95_ms, result.p99_ms = (percentile(ms, q) for q in (50, 95, 99))
    result.max_ms = ms[-1] if ms else float("nan")
    result.mean_ms = statistics.fmean(ms) if ms else float("nan")
    if result.seconds > 0:
        result.resources_per_s = result.resources / result.seconds
        result.resources_per_s_per_process = result.resources_per_s / api_processes
        result.bundles_per_s = result.bundles / result.seconds
        _take_cpu(result, cpu)
    return result


def _take_cpu(result: AcceptanceResult | OpenLoopResult, cpu: CpuShares) -> None:
    result.api_cpu_pct_by_process = cpu.api_pct_by_process
    result.api_cpu_pct, result.redis_cpu_pct, result.client_cpu_pct = cpu.api_pct, cpu.redis_pct, cpu.client_pct
    result.other_cpu_pct, result.kernel_cpu_pct = cpu.other_pct, cpu.kernel_pct
    if result.resources:
        result.api_cpu_ms_per_resource = 1000 * cpu.api_seconds / result.resources


# --------------------------------------------------------------------------------------------------------------
# Open loop: a fixed send schedule


@dataclass
class Send:
    """One open-loop request: when it was due, when its first byte left, when its answer was complete."""

    index: int
    scheduled: float
    task_started: float = 0.0  # the event loop began the request's task
    started: float = 0.0  # the request headers began to go out; the task's start if they never did
    finished: float = 0.0
    ok: bool = False
    resources: int = 0
    appointments: int = 0
    error: str = ""


# send(index, mark_started) -> (ok, resources accepted, Appointments accepted, error text); it calls
# mark_started() when the request's first byte goes out.
SendFn = Callable[[int, Callable[[], None]], Awaitable[tuple[bool, int, int, str]]]


async def run_schedule(
    send: SendFn,
    rate: float,
    count: int,
    *,
    warmup: int = 0,
    at_window_start: Callable[[], Awaitable[object]] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
    lead: float = 0.05,
) -> list[Send]:
    """Start send(i) at t0 + i/rate for i < ``count``, one task each, never waiting for an answer to send.

    A send the loop could not start on time starts as soon as it can (none is skipped); its lateness is
    ``started - scheduled`` and its latency still counts from ``scheduled``. ``at_window_start`` runs as its own
    task when the first measured send (index ``warmup``) is due.
    """
    t0 = clock() + lead
    sends = [Send(index=i, scheduled=t0 + i / rate) for i in range(count)]
    watchers: list[asyncio.Task[object]] = []

    async def one(item: Send) -> None:
        item.task_started = item.started = clock()
        marked = False

        def mark_started() -> None:
            nonlocal marked
            if not marked:
                item.started, marked = clock(), True

        item.ok, item.resources, item.appointments, item.error = await send(item.index, mark_started)
        item.finished = clock()

    tasks: list[asyncio.Task[None]] = []
    for item in sends:
        await sleep(max(item.scheduled - clock(), 0.0))  # 0 when behind: still let the started tasks run
        if item.index == warmup and at_window_start is not None:
            watchers.append(asyncio.ensure_future(at_window_start()))
        tasks.append(asyncio.create_task(one(item)))
    await asyncio.gather(*tasks, *watchers)
    return sends


def max_outstanding(sends: list[Send]) -> int:
    """The most requests scheduled and not yet answered at the same moment."""
    events = sorted([(s.scheduled, 1) for s in sends] + [(s.finished, -1) for s in sends])
    most = now = 0
    for _, step in events:  # at equal times the answer (-1) sorts first: a slot freed and taken is one
        now += step
        most = max(most, now)
    return most


def summarize_open_loop(result: OpenLoopResult, sends: list[Send], warmup: int) -> None:
    """Fill ``result``'s counts, rates and percentiles from the sends (the first ``warmup`` only count as work)."""
    measured = sends[warmup:]
    result.warmup_sends, result.scheduled = min(warmup, len(sends)), len(measured)
    for item in sends:
        if item.ok:
            result.appointments += item.appointments
            result.patients += 1
        else:
            result.failed += 1
            if len(result.errors) < 5:
                result.errors.append(item.error)
    accepted = [s for s in measured if s.ok]
    result.bundles, result.resources = len(accepted), sum(s.resources for s in accepted)
    if not measured:
        return
    result.seconds = max(s.finished for s in measured) - measured[0].scheduled
    if result.seconds > 0:
        result.bundles_per_s = result.bundles / result.seconds
        result.resources_per_s = result.resources / result.seconds
        result.resources_per_s_per_process = result.resources_per_s / result.api_processes
    latency = sorted(1000 * (s.finished - s.scheduled) for s in measured)
    service = sorted(1000 * (s.finished - s.started) for s in measured)
    late = sorted(1000 * max(s.started - s.scheduled, 0.0) for s in measured)
    loop_late = sorted(1000 * max(s.task_started - s.scheduled, 0.0) for s in measured)
    result.p50_ms, result.p95_ms, result.p99_ms = (percentile(latency, q) for q in (50, 95, 99))
    result.max_ms, result.mean_ms = latency[-1], statistics.fmean(latency)
    result.service_p50_ms, result.service_p99_ms = percentile(service, 50), percentile(service, 99)
    result.lateness_p50_ms, result.lateness_p99_ms = percentile(late, 50), percentile(late, 99)
    result.lateness_max_ms = late[-1]
    result.loop_lateness_p50_ms, result.loop_lateness_p99_ms = percentile(loop_late, 50), percentile(loop_late, 99)
    result.late_sends = sum(1 for x in late if x > result.late_threshold_ms)
    result.max_outstanding = max_outstanding(measured)
    spells = slow_spells(measured, result.slow_ms)
    result.slow_sends, result.spells = sum(int(sp["requests"]) for sp in spells), len(spells)
    result.slow_spells = sorted(longest_spells(spells, MOST_SPELLS), key=lambda sp: sp["at_s"])


def longest_spells(spells: list[dict[str, float]], most: int) -> list[dict[str, float]]:
    """The ``most`` spells of the most slow answers (the earlier first among equals)."""
    return sorted(spells, key=lambda sp: (-sp["requests"], sp["at_s"]))[:most]


def slow_spells(measured: list[Send], slow_ms: float, gap_s: float = SPELL_GAP_S) -> list[dict[str, float]]:
    """Group the sends answered later than ``slow_ms`` after their schedule into spells, in time order.

    Slow sends scheduled less than ``gap_s`` apart are one spell: a tail made of one long stall (an AOF rewrite,
    a fsync that waited, a collection of the API's heap) reads as one spell of many requests, a service slow now
    and then as many spells of one. Each spell: ``at_s`` (its first slow send's schedule, seconds into the
    window), ``seconds`` (to its last one's), ``requests`` and ``worst_ms``.
    """
    if not measured:
        return []
    t0 = measured[0].scheduled
    spells: list[dict[str, float]] = []
    last = 0.0
    for s in sorted(measured, key=lambda item: item.scheduled):
        latency = 1000 * (s.finished - s.scheduled)
        if latency <= slow_ms:
            continue
        at = s.scheduled - t0
        if spells and at - last < gap_s:
            spell = spells[-1]
            spell["seconds"], spell["requests"] = at - spell["at_s"], spell["requests"] + 1
            spell["worst_ms"] = max(spell["worst_ms"], latency)
        else:
            spells.append({"at_s": at, "seconds": 0.0, "requests": 1, "worst_ms": latency})
        last = at
    return spells


def watch_latency(client: redis.Redis) -> None:
    """Have Redis record every event (a fsync, a fork, a command) that takes LATENCY_MS or more."""
    client.config_set("latency-monitor-threshold", LATENCY_MS)


def reset_latency(client: redis.Redis) -> None:
    """Forget the latency events recorded so far (the window's own are read at its end)."""
    client.latency_reset()


def latency_events(client: redis.Redis) -> dict[str, int]:
    """The slowest event of each kind Redis recorded since the last reset, in ms, by kind."""
    events: dict[str, int] = {}
    for row in client.latency_latest() or []:
        name = row[0].decode() if isinstance(row[0], bytes) else str(row[0])
        events[name] = int(row[3])
    return dict(sorted(events.items(), key=lambda item: -item[1]))


def open_loop_rate(spec: tuple[str, float], closed: AcceptanceResult) -> tuple[float, str]:
    """The send rate (Bundles/s) for one open-loop run, and where it comes from."""
    kind, value = spec
    if kind == "fixed":
        return value, "fixed"
    return value * closed.bundles_per_s, f"{value:g}x closed loop"


async def open_loop(
    base: str,
    headers: dict[str, str],
    request_timeout: float,
    result: OpenLoopResult,
    bodies: list[tuple[bytes, int]],
    warmup: int,
    api_pid: int,
    rclient: redis.Redis,
    client_kind: str = "raw",
    redis_latency: bool = False,
) -> OpenLoopResult:
    """Send ``bodies`` at ``result.target_bundles_per_s`` from a pool large enough that no send waits for one.

    With ``redis_latency`` (the benchmark's own Redis, watched by ``watch_latency``), the slowest Redis events of
    the measured window are read at its end."""
    limits = httpx.Limits(max_connections=result.connections, max_keepalive_connections=result.connections)
    readings: list[CpuReading] = []
    forks: list[int] = []

    async def window_start() -> None:
        readings.append(await asyncio.to_thread(cpu_reading, api_pid, rclient))
        forks.append(await asyncio.to_thread(redis_forks, rclient))
        if redis_latency:
            await asyncio.to_thread(reset_latency, rclient)

    if client_kind == "raw":
        raw = RawClient(base, headers, result.connections, request_timeout)
        requests = [raw.request("/fhir/R4", body) for body, _ in bodies]  # built before the schedule starts

        async def send_raw(index: int, mark_started: Callable[[], None]) -> tuple[bool, int, int, str]:
            try:
                status, content = await raw.send(requests[index], mark_started)
                ok, accepted, error = check_answer(status, content, result.size)
            except (OSError, ValueError, TimeoutError) as exc:
                ok, accepted, error = False, 0, f"{type(exc).__name__}: {exc}"
            return ok, accepted, bodies[index][1] if ok else 0, error

        try:
            sends = await run_schedule(
                send_raw, result.target_bundles_per_s, len(bodies), warmup=warmup, at_window_start=window_start
            )
        finally:
            raw.close()
    else:
        async with httpx.AsyncClient(base_url=base, limits=limits, headers=headers, timeout=request_timeout) as client:

            async def send(index: int, mark_started: Callable[[], None]) -> tuple[bool, int, int, str]:
                body, appointments = bodies[index]

                async def trace(event: str, _info: dict[str, Any]) -> None:
                    if event in ("http11.send_request_headers.started", "http2.send_request_headers.started"):
                        mark_started()

                try:
                    ok, accepted, error = await post_bundle(client, body, result.size, {"trace": trace})
                except httpx.HTTPError as exc:
                    ok, accepted, error = False, 0, f"{type(exc).__name__}: {exc}"
                return ok, accepted, appointments if ok else 0, error

            sends = await run_schedule(
                send, result.target_bundles_per_s, len(bodies), warmup=warmup, at_window_start=window_start
            )
    end = cpu_reading(api_pid, rclient)
    summarize_open_loop(result, sends, warmup)
    if readings and result.seconds > 0:
        _take_cpu(result, cpu_shares(readings[0], end, result.seconds, api_pid))
    if forks:
        result.redis_forks = redis_forks(rclient) - forks[0]
        if redis_latency:
            result.redis_latency_ms = latency_events(rclient)
    return result


# --------------------------------------------------------------------------------------------------------------
# Phase 2: drain and the feed check


def backlog(rclient: redis.Redis, prefix: str) -> int:
    pipe = rclient.pipeline(transaction=False)
    pipe.xlen(f"{prefix}:{{{TENANT}}}:inbound")
    pipe.zcard(f"{prefix}:{{{TENANT}}}:retry")
    queued, retrying = pipe.execute()
    return int(queued) + int(retrying)


def processed_by(log: Path) -> int | None:
    """The job count a worker logs when it stops, if it did."""
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        if "worker stopped" in line:
            try:
                return int(json.loads(line)["processed"])
            except (ValueError, KeyError, TypeError):
                return None
    return None


def started_at(log: Path) -> float | None:
    """Epoch seconds of the worker's 'worker started' log line, if it is there yet."""
    try:
        text = log.read_text(errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if "worker started" in line:
            try:
                ts = json.loads(line)["ts"]
                return datetime.fromisoformat(ts).timestamp()
            except (ValueError, KeyError, TypeError):
                return time.time()
    return None


def _drain_cpu(procs: list[subprocess.Popen[bytes]], api_pid: int, rclient: redis.Redis) -> tuple[float, ...]:
    return (
        sum(proc_cpu_seconds(p.pid) for p in procs),
        redis_cpu_seconds(rclient),
        sum(tree_cpu_seconds(api_pid).values()) + self_cpu_seconds(),
        *machine_cpu_seconds(),
    )


def drain(
    children: Children,
    api_pid: int,
    command: list[str],
    workers: int,
    rclient: redis.Redis,
    prefix: str,
    timeout: float,
) -> tuple[DrainResult, list[subprocess.Popen[bytes]]]:
    result = DrainResult(workers=workers)
    result.jobs = backlog(rclient, prefix)
    spawned = time.time()
    procs = [children.start(f"worker-{i + 1}", command) for i in range(workers)]
    cpu_spawn, forks_spawn = _drain_cpu(procs, api_pid, rclient), redis_forks(rclient)
    forks_ready = forks_spawn
    ready: float | None = None
    cpu_ready: tuple[float, ...] | None = None
    deadline = time.monotonic() + timeout
    last_sample = 0.0
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"a worker exited with status {proc.returncode}:\n{children.tail(proc)}")
        if ready is None:
            stamps = [started_at(children.log_of(p)) for p in procs]
            known = [s for s in stamps if s is not None]
            if known:
                ready = min(known)
                cpu_ready = _drain_cpu(procs, api_pid, rclient)
                forks_ready = redis_forks(rclient)
        left = backlog(rclient, prefix)
        now = time.time()
        if now - last_sample >= 0.5:
            result.samples.append((round(now - spawned, 3), left))
            last_sample = now
        if left == 0 and ready is None and now - spawned > 10:
            ready = spawned  # no "worker started" line (a changed log format?): time from the spawn instead
            cpu_ready, forks_ready = cpu_spawn, forks_spawn
        if left == 0 and ready is not None:
            result.samples.append((round(now - spawned, 3), left))
            result.drained = True
            result.seconds = max(now - ready, 1e-9)
            result.seconds_from_spawn = now - spawned
            result.startup_seconds = ready - spawned
            result.jobs_per_s = result.jobs / result.seconds
            if cpu_ready is not None:
                cpu = _drain_cpu(procs, api_pid, rclient)
                result.worker_cpu_pct = 100 * (cpu[0] - cpu_ready[0]) / result.seconds
                result.redis_cpu_pct = 100 * (cpu[1] - cpu_ready[1]) / result.seconds
                ours = sum(cpu[i] - cpu_ready[i] for i in range(3))
                result.other_cpu_pct = max(100 * ((cpu[3] - cpu_ready[3]) - ours) / result.seconds, 0.0)
                result.kernel_cpu_pct = 100 * (cpu[4] - cpu_ready[4]) / result.seconds
                if result.jobs:
                    result.worker_cpu_ms_per_job = 1000 * (cpu[0] - cpu_ready[0]) / result.jobs
                result.redis_forks = redis_forks(rclient) - forks_ready
            break
        time.sleep(0.02)
    result.dead_letters = int(rclient.xlen(f"{prefix}:{{{TENANT}}}:dlq"))
    return result, procs


async def check_feed(client: httpx.AsyncClient, expected: int) -> FeedResult:
    """Page through the whole feed; it must hold exactly one event per accepted Appointment."""
    result = FeedResult(expected=expected)
    appointments: set[str] = set()
    types: Counter[str] = Counter()
    cursor: str | None = None
    started = time.perf_counter()
    headers = {"Authorization": f"Bearer {PLATFORM_TOKEN}"}
    while True:
        params: dict[str, Any] = {"limit": FEED_PAGE}
        if cursor:
            params["cursor"] = cursor
        response = await client.get("/platform/v1/changes", params=params, headers=headers)
        response.raise_for_status()
        page = response.json()
        result.pages += 1
        events = page["events"]
        if not events:
            break
        for event in events:
            types[event.get("type", "?")] += 1
            if event.get("record_type") != "appointment":
                result.other_events += 1
                continue
            result.appointment_events += 1
            appointments.add(str(event.get("record_id")))
            patient = ((event.get("record") or {}).get("patient") or {}).get("reference") or ""
            if not patient.startswith("Patient/"):
                result.unresolved_patient_refs += 1
        result.events += len(events)
        cursor = page["next_cursor"]
    result.seconds = time.perf_counter() - started
    result.types = dict(types)
    result.distinct_appointments = len(appointments)
    result.ok = (
        result.appointment_events == expected
        and result.distinct_appointments == expected
        and result.unresolved_patient_refs == 0
    )
    return result


# --------------------------------------------------------------------------------------------------------------
# Machine and report


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def gateway_revision() -> str:
    """The git commit of the checkout this script sits in, marked when tracked files have local changes."""
    root = str(Path(__file__).resolve().parents[1])
    try:
        head = subprocess.run(
            ["git", "-C", root, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", root, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' with local changes' if dirty else ''}" if head else "unknown"


def gateway_build(find: Callable[[str], Any] = importlib.util.find_spec) -> str:
    """Say whether the gateway these processes import is the compiled build (setup.py, ``GATEWAY_MYPYC=1``): its
    hot modules, such as the store's plan, then load from extension modules rather than source."""
    spec = find("gateway.store.plan")
    origin = str(getattr(spec, "origin", "") or "")
    return "compiled (mypyc)" if origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)) else "pure Python"


def machine(rclient: redis.Redis, embedded: bool) -> dict[str, Any]:
    server = rclient.info("server")
    config = {**rclient.config_get("appendonly"), **rclient.config_get("appendfsync")}
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "cpu": cpu_model(),
        "cores": cores,
        "python": platform.python_version(),
        "os": f"{platform.system()} {platform.release()}",
        "redis_version": server.get("redis_version", "?"),
        "redis": "embedded" if embedded else "external",
        "redis_transport": "unix socket" if embedded else "tcp",
        "appendonly": config.get("appendonly", "?"),
        "appendfsync": config.get("appendfsync", "?"),
        "gateway_commit": gateway_revision(),
        "gateway_build": gateway_build(),
    }


def machine_line(m: dict[str, Any]) -> str:
    return (
        f"Machine: {m['cpu']}, {m['cores']} cores, Python {m['python']}, {m['os']}; "
        f"Redis {m['redis_version']} ({m['redis']}, {m['redis_transport']}, appendonly {m['appendonly']}, "
        f"appendfsync {m['appendfsync']}"
        + ("; AOF rewritten before each timed window" if m.get("aof_rewritten_before_windows") else "")
        + f"); gateway commit {m['gateway_commit']}, {m.get('gateway_build', 'pure Python')}, "
        + f"store format {m.get('store_format', 1)}"
    )


def _f(value: float, digits: int = 0) -> str:
    return f"{value:,.{digits}f}"


def report(
    m: dict[str, Any],
    accepted: list[AcceptanceResult],
    drained: DrainResult | None,
    feed: FeedResult | None,
    baseline: list[BaselineResult] | None = None,
    opened: list[OpenLoopResult] | None = None,
) -> str:
    lines = [machine_line(m), ""]
    if "other_cpu_pct_before" in m:
        lines[-1:] = [f"Before the run, other processes used {m['other_cpu_pct_before']:.0f}% of a core.", ""]
    lines.append(
        "| Phase 1: acceptance, no worker | API processes | Bundles | Resources | Clients | Resources/s "
        "| Resources/s per API process | API CPU ms per resource | Bundles/s | p50 ms | p95 ms | p99 ms "
        "| CPU % API / Redis / client / other |"
    )
    lines.append("|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|")
    for r in accepted:
        failed = f" ({r.failed} failed)" if r.failed else ""
        lines.append(
            f"| {r.size}-entry transaction | {r.api_processes} | {r.bundles}{failed} | {_f(r.resources)} "
            f"| {r.concurrency} ({r.client}) | {_f(r.resources_per_s)} | {_f(r.resources_per_s_per_process)} "
            f"| {r.api_cpu_ms_per_resource:.3f} | {_f(r.bundles_per_s, 1)} | {_f(r.p50_ms)} | {_f(r.p95_ms)} "
            f"| {_f(r.p99_ms)} | {_f(r.api_cpu_pct)} / {_f(r.redis_cpu_pct)} / {_f(r.client_cpu_pct)} "
            f"/ {_f(r.other_cpu_pct)} |"
        )
    noisy = [f"{r.size}-entry Bundles ({r.api_processes} API)" for r in accepted if r.other_cpu_pct > NOISE_PCT]
    behind: list[str] = []
    if opened:
        lines += ["", *open_loop_table(opened)]
        noisy += [
            f"the open loop of {o.size}-entry Bundles ({o.api_processes} API)"
            for o in opened
            if o.other_cpu_pct > NOISE_PCT
        ]
        behind = [
            f"{o.size}-entry Bundles ({o.api_processes} API): sender late p99 {o.lateness_p99_ms:.1f} ms, "
            f"{o.max_outstanding} of {o.connections} connections outstanding at most"
            for o in opened
            if o.lateness_p99_ms > CLIENT_BEHIND_MS or o.max_outstanding >= o.connections
        ]
    if baseline:
        lines.append("")
        lines.append(
            "| Baseline: fhir.resources inline, 1 process | Bundles | Resources | Resources/s "
            "| CPU ms per resource | parse ms per Bundle | CPU % process / Redis / other |"
        )
        lines.append("|---|--:|--:|--:|--:|--:|--:|")
        for b in baseline:
            lines.append(
                f"| {b.size}-entry transaction | {b.bundles} | {_f(b.resources)} | {_f(b.resources_per_s)} "
                f"| {b.cpu_ms_per_resource:.3f} | {b.parse_ms_per_bundle:.1f} | {_f(b.cpu_pct)} "
                f"/ {_f(b.redis_cpu_pct)} / {_f(b.other_cpu_pct)} |"
            )
        noisy += [f"the {b.size}-entry baseline" for b in baseline if b.other_cpu_pct > NOISE_PCT]
        lines.append("")
        lines.append(
            "| Ratio to the baseline (target >= 3x) | API processes | gateway resources/s per API process "
            "/ baseline resources/s | baseline CPU per resource / gateway API CPU per resource |"
        )
        lines.append("|---|--:|--:|--:|")
        by_size = {b.size: b for b in baseline}
        for r in accepted:
            base = by_size.get(r.size)
            if base is None or not base.resources_per_s or not r.api_cpu_ms_per_resource:
                continue
            lines.append(
                f"| {r.size}-entry transaction | {r.api_processes} "
                f"| {r.resources_per_s_per_process / base.resources_per_s:.2f}x "
                f"| {base.cpu_ms_per_resource / r.api_cpu_ms_per_resource:.2f}x |"
            )
    if drained is not None:
        lines.append("")
        lines.append(
            "| Phase 2: drain | Workers | Jobs | Seconds | Jobs/s | CPU % workers / Redis / other "
            "| Appointment events in feed |"
        )
        lines.append("|---|--:|--:|--:|--:|--:|--:|")
        seconds = _f(drained.seconds, 2) if drained.drained else f"> {_f(drained.seconds_from_spawn, 0)}"
        rate = _f(drained.jobs_per_s) if drained.drained else "n/a"
        events = "n/a"
        if feed is not None:
            events = f"{_f(feed.appointment_events)} of {_f(feed.expected)} {'ok' if feed.ok else 'MISMATCH'}"
        lines.append(
            f"| inbound backlog to 0 | {drained.workers} | {_f(drained.jobs)} | {seconds} | {rate} "
            f"| {_f(drained.worker_cpu_pct)} / {_f(drained.redis_cpu_pct)} / {_f(drained.other_cpu_pct)} "
            f"| {events} |"
        )
        if drained.other_cpu_pct > NOISE_PCT:
            noisy.append("the drain")
    lines.append("")
    lines.append(
        "CPU is percent of one core over the timed window: API = the uvicorn process and every process under "
        "it (with --workers N: the supervisor and its N server processes), client = this script, "
        "Redis = INFO cpu and its forked children (on a shared server it includes other clients' commands), "
        "other = every other "
        "program on the machine (kernel threads and interrupts excluded; the JSON has them as kernel_cpu_pct)."
    )
    if opened:
        lines.append(
            "Open loop: Bundle i is sent at t0 + i/target rate whatever the answers do; latency is from that "
            "scheduled time to the full answer, so it includes any time the client itself was late; achieved = "
            "accepted Bundles from the first measured send's scheduled time to the last answer; sender late = "
            "how long after its scheduled time a request's first byte left (event loop, connection pool, connect)."
        )
    if behind:
        lines.append(
            f"WARNING: the client fell behind its schedule ({'; '.join(behind)}): the open-loop latencies "
            "include the client's own delay (it is saturated or starved of CPU)."
        )
    forked = [f"{r.size}-entry Bundles ({r.api_processes} API)" for r in accepted if r.redis_forks]
    forked += [
        f"the open loop of {o.size}-entry Bundles ({o.api_processes} API)" for o in opened or [] if o.redis_forks
    ]
    if drained is not None and drained.redis_forks:
        forked.append("the drain")
    if forked:
        lines.append(
            f"Redis forked a child (an AOF rewrite, or a snapshot on a shared server; its CPU is in Redis's share) "
            f"during {', '.join(forked)}: those windows paid for it."
        )
    lines += [note for o in opened or [] if (note := spell_note(o))]
    if note := unsaturated_note(accepted):
        lines.append(note)
    if noisy:
        lines.append(
            f"WARNING: other processes used more than {NOISE_PCT}% of a core during {', '.join(noisy)}: "
            "those figures are disturbed; re-run on a quiet machine."
        )
    return "\n".join(lines)


def unsaturated_note(accepted: list[AcceptanceResult]) -> str | None:
    """Name the closed loops whose API processes were not busy all the time: their rate is the clients' (each one
    waits for its answer, and an answer waits for Redis's fsync), a floor for what the API can take, not its
    capacity."""
    idle = [
        f"{r.size}-entry Bundles ({r.api_cpu_pct:.0f}% of a core for {r.api_processes} API process"
        + ("es)" if r.api_processes > 1 else ")")
        for r in accepted
        if r.bundles and r.api_cpu_pct < SATURATED_PCT * r.api_processes
    ]
    if not idle:
        return None
    return (
        f"The API processes were busy less than {SATURATED_PCT}% of the time during {', '.join(idle)}: those rates "
        "are bounded by the clients' round trips, not the API's CPU; more clients (--concurrency) measure its "
        "capacity."
    )


def spell_note(o: OpenLoopResult) -> str | None:
    """Where an open loop's slow answers came from: its longest spells, and Redis's slowest events in the window."""
    if not o.slow_sends and not o.redis_latency_ms:
        return None
    where = f"Open loop of {o.size}-entry Bundles ({o.api_processes} API): "
    if o.slow_sends:
        longest = longest_spells(o.slow_spells, 3)
        shown = "; ".join(
            f"at {sp['at_s']:.1f} s, {sp['seconds']:.1f} s long, {int(sp['requests']):,} answers, worst "
            f"{sp['worst_ms']:,.0f} ms"
            for sp in longest
        )
        where += (
            f"{o.slow_sends:,} answers over {o.slow_ms:g} ms, in {o.spells:,} spell(s) (slow answers to sends "
            f"under {SPELL_GAP_S:g} s apart); the longest: {shown}."
        )
    else:
        where += f"no answer over {o.slow_ms:g} ms."
    if o.redis_latency_ms:
        events = ", ".join(f"{name} {ms} ms" for name, ms in list(o.redis_latency_ms.items())[:4])
        where += f" Redis's slowest events in the window: {events}."
    return where


def open_loop_table(opened: list[OpenLoopResult]) -> list[str]:
    """The open loop's Markdown table, one row per (API processes, Bundle size)."""
    lines = [
        "| Open loop: fixed send rate, no worker | API processes | Target Bundles/s | Achieved Bundles/s "
        "| Resources/s | Bundles | Failed | p50 ms | p95 ms | p99 ms | max ms | Sender late p99 ms (sends late) "
        "| CPU % API / Redis / client / other |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for o in opened:
        target = _f(o.target_bundles_per_s, 1)
        if o.closed_loop_bundles_per_s is not None:
            fraction = o.target_bundles_per_s / o.closed_loop_bundles_per_s if o.closed_loop_bundles_per_s else 0
            target += f" ({fraction:g} x {_f(o.closed_loop_bundles_per_s, 1)})"
        lines.append(
            f"| {o.size}-entry transaction | {o.api_processes} | {target} | {_f(o.bundles_per_s, 1)} "
            f"| {_f(o.resources_per_s)} | {o.bundles} of {o.scheduled} | {o.failed} | {_f(o.p50_ms, 1)} "
            f"| {_f(o.p95_ms, 1)} | {_f(o.p99_ms, 1)} | {_f(o.max_ms, 1)} "
            f"| {_f(o.lateness_p99_ms, 1)} ({o.late_sends} > {o.late_threshold_ms:g} ms) "
            f"| {_f(o.api_cpu_pct)} / {_f(o.redis_cpu_pct)} / {_f(o.client_cpu_pct)} / {_f(o.other_cpu_pct)} |"
        )
    return lines


# --------------------------------------------------------------------------------------------------------------
# Main


def clients_file(folder: Path) -> Path:
    path = folder / "clients.json"
    config = {
        "clients": [
            {"token": EHR_TOKEN, "tenant": TENANT, "role": "ehr", "name": "bench-ehr"},
            {"token": PLATFORM_TOKEN, "tenant": TENANT, "role": "platform", "scopes": ["sensitive"],
             "name": "bench-platform"},
        ],
        "tenants": {TENANT: {"vendor": "generic"}},
    }  # fmt: skip
    path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    path.chmod(0o600)
    return path


def delete_keys(url: str, prefix: str) -> int:
    client = redis.Redis.from_url(url)
    deleted = 0
    try:
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"{prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(client.unlink(*batch))
                batch = []
        if batch:
            deleted += int(client.unlink(*batch))
    finally:
        client.close()
    return deleted


async def phase_one(
    args: argparse.Namespace, base: str, run: str, api_pid: int, api_processes: int, rclient: redis.Redis
) -> tuple[list[AcceptanceResult], dict[int, list[bytes]], list[OpenLoopResult]]:
    """Send every Bundle size to one API; return the results, the closed loop's Bundles by size, the open loops."""
    mode, amounts = args.bundles
    limits = httpx.Limits(max_connections=args.concurrency, max_keepalive_connections=args.concurrency)
    headers = {"Authorization": f"Bearer {EHR_TOKEN}", "Content-Type": "application/fhir+json"}
    results: list[AcceptanceResult] = []
    open_results: list[OpenLoopResult] = []
    sent: dict[int, list[bytes]] = {}
    raw = RawClient(base, headers, args.concurrency, args.request_timeout)
    with contextlib.closing(raw):
        async with httpx.AsyncClient(
            base_url=base, limits=limits, headers=headers, timeout=args.request_timeout
        ) as client:
            post = raw_poster(raw) if args.client == "raw" else httpx_poster(client)
            for index, size in enumerate(args.sizes):
                amount = amounts[index] if len(amounts) > 1 else amounts[0]
                # Warm-up: untimed, so lazy imports and model builds are not in the figures. Rounds of one Bundle per
                # API process sent together, so that each process is likely to get some (the kernel, not the
                # benchmark, decides which process accepts a connection).
                warm = AcceptanceResult(size=size, concurrency=api_processes)
                for i in range(args.warmup):
                    bodies = [make_bundle(run, size, 10_000_000 + i * api_processes + j) for j in range(api_processes)]
                    answers = await asyncio.gather(*(post(body, size) for body, _ in bodies))
                    for (ok, _, error), (_, appointments) in zip(answers, bodies, strict=True):
                        if not ok:
                            raise RuntimeError(f"a warm-up Bundle of {size} entries failed: {error}")
                        warm.appointments += appointments
                        warm.patients += 1
                prepare_redis(args, rclient, f"{size}-entry Bundles")
                source = BundleSource(run, size, mode, amount, first_seq=0)
                print(
                    f"phase 1: {api_processes} API process(es), {size}-entry Bundles, "
                    + (f"{int(amount)} Bundles" if mode == "count" else f"{amount:g}s")
                    + f", {args.concurrency} clients ({args.client}) ...",
                    file=sys.stderr,
                    flush=True,
                )
                result = await acceptance(post, source, args.concurrency, api_pid, api_processes, rclient, args.client)
                sent[size] = source.sent
                # They are in the queue and must reach the feed too.
                result.appointments += warm.appointments
                result.patients += warm.patients
                results.append(result)
                by_process = ", ".join(f"{name} {pct:.0f}" for name, pct in result.api_cpu_pct_by_process.items())
                print(
                    f"  {result.bundles} Bundles in {result.seconds:.2f}s: {result.resources_per_s:,.0f} resources/s "
                    f"({result.resources_per_s_per_process:,.0f} per API process), "
                    f"{result.api_cpu_ms_per_resource:.3f} ms API CPU per resource, API CPU % by process "
                    f"{by_process}, p50 {result.p50_ms:,.0f} ms, p99 {result.p99_ms:,.0f} ms"
                    + (f", {result.failed} FAILED: {result.errors[0]}" if result.failed else ""),
                    file=sys.stderr,
                    flush=True,
                )
                if args.open_loop is not None:
                    opened = await open_loop_phase(args, base, headers, run, api_pid, result, rclient)
                    if opened is not None:
                        open_results.append(opened)
    return results, sent, open_results


async def open_loop_phase(
    args: argparse.Namespace,
    base: str,
    headers: dict[str, str],
    run: str,
    api_pid: int,
    closed: AcceptanceResult,
    rclient: redis.Redis,
) -> OpenLoopResult | None:
    """Run the open loop for the size and API that ``closed`` measured; None when there is no rate to send at."""
    rate, rate_from = open_loop_rate(args.open_loop, closed)
    if rate <= 0:
        print(f"open loop: no rate for {closed.size}-entry Bundles (the closed loop accepted none)", file=sys.stderr)
        return None
    result = OpenLoopResult(
        size=closed.size,
        api_processes=closed.api_processes,
        target_bundles_per_s=rate,
        rate_from=rate_from,
        closed_loop_bundles_per_s=closed.bundles_per_s if rate_from != "fixed" else None,
        warmup_seconds=args.open_loop_warmup,
    )
    warmup = round(rate * args.open_loop_warmup)
    measured = max(round(rate * args.open_loop_seconds), 1)
    print(
        f"open loop: {closed.api_processes} API process(es), {closed.size}-entry Bundles at {rate:,.1f}/s "
        f"({rate_from}) for {args.open_loop_warmup:g}s warm-up + {args.open_loop_seconds:g}s: building "
        f"{warmup + measured} Bundles ...",
        file=sys.stderr,
        flush=True,
    )
    bodies = [make_bundle(run, closed.size, OPEN_LOOP_BUNDLE_SEQ + i) for i in range(warmup + measured)]
    prepare_redis(args, rclient, f"the open loop of {closed.size}-entry Bundles")
    await open_loop(
        base, headers, args.request_timeout, result, bodies, warmup, api_pid, rclient, args.open_loop_client,
        redis_latency=args.redis_latency,
    )  # fmt: skip
    print(
        f"  {result.bundles} of {result.scheduled} Bundles in {result.seconds:.2f}s: {result.bundles_per_s:,.1f} "
        f"Bundles/s, {result.resources_per_s:,.0f} resources/s, latency from the scheduled send p50 "
        f"{result.p50_ms:,.1f} ms, p99 {result.p99_ms:,.1f} ms, max {result.max_ms:,.1f} ms; sender late p99 "
        f"{result.lateness_p99_ms:.1f} ms, {result.late_sends} sends > {LATE_MS:g} ms late; "
        f"at most {result.max_outstanding} outstanding; {result.slow_sends} answers over {result.slow_ms:g} ms in "
        f"{result.spells} spell(s)" + (f", {result.failed} FAILED: {result.errors[0]}" if result.failed else ""),
        file=sys.stderr,
        flush=True,
    )
    return result


def start_api(
    children: Children, processes: int, port: int, profile: Path | None
) -> tuple[subprocess.Popen[bytes], str]:
    """Start 'fhir-gateway api --workers N' and wait until /healthz answers and every process has started."""
    base = f"http://127.0.0.1:{port}"
    command = gateway_command(["api", "--host", "127.0.0.1", "--port", str(port), "--workers", str(processes)], profile)
    api = children.start(f"api-{processes}", command)
    wait_for_api(base, api, children)
    if processes > 1:
        wait_for_api_processes(api, processes, children)
    return api, base


def wait_for_api_processes(
    api: subprocess.Popen[bytes], processes: int, children: Children, timeout: float = 120.0
) -> None:
    """Wait until uvicorn's supervisor has ``processes`` live server processes that logged their start-up."""
    deadline = time.monotonic() + timeout
    log = children.log_of(api)
    while time.monotonic() < deadline:
        if api.poll() is not None:
            raise RuntimeError(f"the API exited with status {api.returncode}:\n{children.tail(api)}")
        text = log.read_text(errors="replace")
        started = set(re.findall(r"Started server process \[(\d+)\]", text))
        live = [pid for pid in process_tree(api.pid)[1:] if str(pid) in started]
        if len(live) >= processes and text.count("Application startup complete") >= processes:
            return
        time.sleep(0.1)
    raise RuntimeError(f"the API did not start {processes} processes within {timeout:.0f}s:\n{children.tail(api)}")


def stop_api(children: Children, api: subprocess.Popen[bytes]) -> int:
    """Stop the API (uvicorn's supervisor stops its processes); kill any that outlive it. Return its restarts."""
    tree = process_tree(api.pid)[1:]
    children.stop([api])
    for pid in tree:
        with contextlib.suppress(OSError):
            if "multiprocessing" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace"):
                os.kill(pid, signal.SIGKILL)
    return api_restarts(children.log_of(api))


def api_restarts(log: Path) -> int:
    """How many API processes uvicorn's supervisor saw die (it starts a new one for each)."""
    try:
        return len(re.findall(r"Child process \[\d+\] died", log.read_text(errors="replace")))
    except OSError:
        return 0


def baseline_phase(
    args: argparse.Namespace,
    rclient: redis.Redis,
    prefix: str,
    bodies: dict[int, list[bytes]],
    own_pids: list[int],
    api_pid: int,
) -> list[BaselineResult]:
    """Run the fhir.resources-inline baseline per Bundle size on the run's Redis (the API idle, no worker)."""
    results: list[BaselineResult] = []
    for size in args.sizes:
        print(f"baseline: {len(bodies[size])} {size}-entry Bundles with fhir.resources ...", file=sys.stderr)

        def ours() -> float:
            return (
                self_cpu_seconds()
                + sum(tree_cpu_seconds(api_pid).values())
                + sum(proc_cpu_seconds(p) for p in own_pids)
                + redis_cpu_seconds(rclient)
            )

        started, busy0, own0 = time.perf_counter(), machine_cpu_seconds()[0], ours()
        result = run_baseline(rclient, f"{prefix}:baseline:{size}", size, bodies[size], warmup=args.warmup)
        window = time.perf_counter() - started
        other = max(100 * ((machine_cpu_seconds()[0] - busy0) - (ours() - own0)) / window, 0.0)
        results.append(result)
        result.other_cpu_pct = other
        print(
            f"  {result.resources_per_s:,.0f} resources/s, {result.cpu_ms_per_resource:.3f} ms CPU per resource "
            f"({result.parse_ms_per_bundle:.1f} ms parse per Bundle), other processes {other:.0f}% of a core",
            file=sys.stderr,
            flush=True,
        )
    return results


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # SIGTERM (and SIGINT, even when inherited as ignored) unwind through the cleanup below.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    run = uuid.uuid4().hex[:10]
    prefix = f"gwbench-{run}"
    folder = Path(tempfile.mkdtemp(prefix="gwbench-"))
    external_url = None if args.embedded else os.environ.get("REDIS_URL") or None
    embedded = None
    children: Children | None = None
    rclient: redis.Redis | None = None
    api: subprocess.Popen[bytes] | None = None
    status = 0
    out: dict[str, Any] = {}
    try:
        if external_url:
            url = external_url
        else:
            from gateway.embedded import EmbeddedRedis

            embedded = EmbeddedRedis(folder / "redis").start()
            url = embedded.url
        rclient = redis.Redis.from_url(url)
        rclient.ping()
        rclient.set(f"{prefix}:store-format", args.store_format)  # Keyspace.store_format, read by every process
        m = machine(rclient, embedded is not None)
        m["store_format"] = args.store_format
        args.compact_aof = embedded is not None and not args.no_compact_aof
        args.redis_latency = embedded is not None
        if args.redis_latency:
            watch_latency(rclient)
        m["aof_rewritten_before_windows"] = args.compact_aof
        print(machine_line(m), file=sys.stderr, flush=True)
        own = [embedded.process.pid] if embedded is not None and embedded.process is not None else []
        m["other_cpu_pct_before"] = round(wait_until_quiet(own, args.wait_quiet), 1)

        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env.update(
            {
                "REDIS_URL": url,
                "GATEWAY_KEY_PREFIX": prefix,
                "GATEWAY_CLIENTS_FILE": str(clients_file(folder)),
                "GATEWAY_DATA_DIR": str(folder / "data"),
                "PYTHONUNBUFFERED": "1",
                # No worker metrics HTTP port: several workers (and other gateways here) would contend for it.
                "GATEWAY_WORKER_METRICS_PORT": "0",
                # Phase 1 accepts with no worker running: every run's jobs wait until phase 2, past the default
                # backlog limit (100,000) once the open loops add theirs, which would answer 503 by design.
                "GATEWAY_MAX_BACKLOG": "10000000",
            }
        )
        if args.worker_concurrency:
            env["GATEWAY_WORKER_CONCURRENCY"] = str(args.worker_concurrency)
        children = Children(folder, env)
        profile = args.profile_api.resolve() if args.profile_api else None
        accepted: list[AcceptanceResult] = []
        opened: list[OpenLoopResult] = []
        sent: dict[int, list[bytes]] = {}
        base = ""
        for processes in args.api_processes:
            # Same Redis and key prefix for every count: phase 2 drains all of it, the feed holds all of it.
            if api is not None:
                stop_api(children, api)
            api, base = start_api(children, processes, args.port or free_port(), profile)
            print(
                f"API pid {api.pid} ({processes} process(es): {process_tree(api.pid)}) at {base}; key prefix "
                f"{prefix}; logs in {folder}",
                file=sys.stderr,
                flush=True,
            )
            # A distinct run tag per count: other identifiers and ids, so every count creates new Appointments.
            results, bodies, open_results = asyncio.run(
                phase_one(args, base, f"{run}-p{processes}", api.pid, processes, rclient)
            )
            restarts = api_restarts(children.log_of(api))
            if restarts:
                print(f"note: uvicorn replaced {restarts} API process(es) that died", file=sys.stderr)
            for result in results:
                result.api_restarts = restarts
            accepted += results
            opened += open_results
            for size, sent_bodies in bodies.items():
                sent.setdefault(size, sent_bodies)  # the baseline ingests the first count's Bundles
        assert api is not None  # --api-processes holds at least one count

        baseline: list[BaselineResult] = []
        if not args.no_baseline:
            prepare_redis(args, rclient, "the baseline")
            baseline = baseline_phase(args, rclient, prefix, sent, own, api.pid)

        # The open loops' Appointments (their warm-up too) are in the backlog and must reach the feed as well.
        expected = sum(r.appointments for r in accepted) + sum(o.appointments for o in opened)
        patients = sum(r.patients for r in accepted) + sum(o.patients for o in opened)
        queued = backlog(rclient, prefix)
        if queued == expected + patients:
            print(f"note: {patients} Patients made jobs too (a Patient family is mapped)", file=sys.stderr)
        elif queued != expected:
            print(
                f"note: the backlog is {queued} jobs for {expected} Appointments and {patients} Patients accepted",
                file=sys.stderr,
            )

        prepare_redis(args, rclient, "the drain")
        print(f"phase 2: draining {queued} jobs with {args.workers} worker(s) ...", file=sys.stderr, flush=True)
        drained, worker_procs = drain(
            children, api.pid, gateway_command(["worker"]), args.workers, rclient, prefix, args.drain_timeout
        )
        children.stop(worker_procs)
        counts = [processed_by(children.log_of(p)) for p in worker_procs]
        drained.processed = None if None in counts else sum(c or 0 for c in counts)
        if drained.processed is not None and drained.processed != drained.jobs:
            print(
                f"note: the workers processed {drained.processed} jobs; the backlog held {drained.jobs} "
                "(redeliveries, retries or follow-up jobs)",
                file=sys.stderr,
            )
        feed: FeedResult | None = None
        if drained.drained:
            print(
                f"  drained in {drained.seconds:.2f}s ({drained.jobs_per_s:,.0f} jobs/s); checking the feed ...",
                file=sys.stderr,
                flush=True,
            )
            feed = asyncio.run(check_feed_with_client(base, expected, args.request_timeout))
        else:
            print(f"  the backlog did not reach 0 within {args.drain_timeout:g}s", file=sys.stderr)

        text = report(m, accepted, drained, feed, baseline, opened)
        print(text)
        if feed is not None:
            print(
                f"\nFeed check: {feed.appointment_events} appointment events for {feed.expected} accepted "
                f"Appointments ({feed.distinct_appointments} distinct records, "
                f"{feed.unresolved_patient_refs} with an unresolved patient reference); {feed.events} events "
                f"in all, by type {feed.types}; {feed.pages} pages of {FEED_PAGE} read in {feed.seconds:.2f}s: "
                f"{'OK' if feed.ok else 'MISMATCH'}"
            )
        if drained.dead_letters:
            print(f"Dead letters: {drained.dead_letters}")

        failed = sum(r.failed for r in accepted) + sum(o.failed for o in opened)
        if failed:
            errors = ([e for r in accepted for e in r.errors] + [e for o in opened for e in o.errors])[:3]
            print(f"FAILED: {failed} Bundle(s) were not accepted; first errors: {errors}")
            status = 1
        if not drained.drained or feed is None or not feed.ok or drained.dead_letters:
            status = 1

        out = {
            "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": m,
            "settings": {
                "concurrency": args.concurrency,
                "bundles": {"mode": args.bundles[0], "amount": args.bundles[1]},
                "sizes": args.sizes,
                "warmup": args.warmup,
                "workers": args.workers,
                "api_processes": args.api_processes,
                "baseline": not args.no_baseline,
                "worker_concurrency": args.worker_concurrency,
                "key_prefix": prefix,
                "profiled": profile is not None,
                "open_loop": None
                if args.open_loop is None
                else {
                    "rate": {"kind": args.open_loop[0], "value": args.open_loop[1]},
                    "seconds": args.open_loop_seconds,
                    "warmup_seconds": args.open_loop_warmup,
                    "connections": OPEN_LOOP_CONNECTIONS,
                    "late_threshold_ms": LATE_MS,
                },
            },
            "acceptance": [asdict(r) for r in accepted],
            "open_loop": [asdict(o) for o in opened],
            "baseline": [asdict(b) for b in baseline],
            "drain": asdict(drained),
            "feed": asdict(feed) if feed else None,
            "ok": status == 0,
        }
    except (RuntimeError, OSError, redis.RedisError, httpx.HTTPError) as exc:
        print(f"gateway_bench: {exc}", file=sys.stderr)
        status = 2
    except KeyboardInterrupt:
        print("gateway_bench: interrupted", file=sys.stderr)
        status = 130
    finally:
        if children is not None:
            if api is not None:
                stop_api(children, api)  # also kills API processes that outlive their supervisor
            children.stop()
        if rclient is not None:
            rclient.close()
        if external_url:
            try:
                removed = delete_keys(external_url, prefix)
                print(f"deleted {removed} keys under {prefix}:", file=sys.stderr)
            except redis.RedisError as exc:
                print(f"gateway_bench: could not delete keys under {prefix}: ({exc})", file=sys.stderr)
        if embedded is not None:
            embedded.stop()
        if args.keep_tmp:
            print(f"kept {folder}", file=sys.stderr)
        else:
            shutil.rmtree(folder, ignore_errors=True)
    if out and args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.json_out}", file=sys.stderr)
    return status


async def check_feed_with_client(base: str, expected: int, request_timeout: float) -> FeedResult:
    async with httpx.AsyncClient(base_url=base, timeout=request_timeout) as client:
        return await check_feed(client, expected)


if __name__ == "__main__":
    sys.exit(main())
