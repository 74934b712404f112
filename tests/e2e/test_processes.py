"""End-to-end: real ``fhir-gateway`` processes, real Redis, real HTTP.

Each test starts the console script as subprocesses (``run``, ``api``, ``worker``, ``dlq``, ``validate``), talks to
them over HTTP with httpx, and looks at Redis only where a user would (the pending list of a crashed worker, the
backlog). Every process is started in its own session so that teardown can stop it and anything it spawned.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from redis import Redis

from tests.conftest import corpus_dir

pytestmark = pytest.mark.e2e

BIN = Path(sys.executable).parent / "fhir-gateway"
TENANT = "clinic-a"
EHR = "e2e-ehr-token-clinic-a-0123456789"
PLATFORM = "e2e-platform-token-clinic-a-0123456789"
GROUP = "workers"
PATIENT_URN = "urn:uuid:7c1e3b0e-8f0a-4c55-9b7e-2f6d7a8b9c01"
PRACTITIONER_URN = "urn:uuid:0f8e6c2a-1b3d-4e5f-8a9b-c0d1e2f3a4b5"
APPOINTMENT_URN = "urn:uuid:5d1c7c0c-4b5f-4a8e-9d6e-1a2b3c4d5e6f"
TIMEOUT = 20.0


# ---------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def base_env(**settings: str) -> dict[str, str]:
    """The test's environment without any gateway setting, plus ``settings``."""
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL" and not k.startswith("GATEWAY_")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(settings)
    return env


def gateway_env(redis_url: str, prefix: str, clients_file: Path | None = None, **extra: str) -> dict[str, str]:
    settings = {
        "REDIS_URL": redis_url,
        "GATEWAY_KEY_PREFIX": prefix,
        "GATEWAY_CLAIM_IDLE_SECONDS": "1",
        "GATEWAY_RETRY_BASE_SECONDS": "0.05",
        "GATEWAY_RETRY_MAX_SECONDS": "0.2",
        "GATEWAY_WORKER_BLOCK_MS": "100",
        **extra,
    }
    if clients_file is not None:
        settings["GATEWAY_CLIENTS_FILE"] = str(clients_file)
    return base_env(**settings)


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run one short ``fhir-gateway`` command to completion."""
    return subprocess.run(
        [str(BIN), *args], env=env, capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


class Proc:
    """A long-running ``fhir-gateway`` process in its own session, its output in files."""

    def __init__(self, args: list[str], env: dict[str, str], logdir: Path, name: str) -> None:
        self.name = name
        self.out_path = logdir / f"{name}.out"
        self.err_path = logdir / f"{name}.err"
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.popen = subprocess.Popen(
                [str(BIN), *args], env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                start_new_session=True,
            )  # fmt: skip
        self.pid = self.popen.pid

    def stdout(self) -> str:
        return self.out_path.read_text(encoding="utf-8", errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(encoding="utf-8", errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def describe(self) -> str:
        return f"{self.name} (rc={self.popen.poll()}):\n{self.stdout()[-2000:]}\n{self.stderr()[-4000:]}"

    def terminate(self, timeout: float = TIMEOUT) -> int:
        """Send SIGTERM to the process (not its group) and return its exit status."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
        return self.popen.wait(timeout=timeout)

    def kill(self) -> None:
        """SIGKILL the process alone, as a crash would."""
        self.popen.kill()
        self.popen.wait(timeout=TIMEOUT)

    def group_alive(self) -> bool:
        """Whether anything of the process's session is still running (e.g. a redis-server it started)."""
        try:
            os.killpg(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True

    def cleanup(self) -> None:
        """Stop the process and everything it started."""
        if self.alive():
            self.popen.send_signal(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=10)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout=10)


@pytest.fixture
def launch(tmp_path: Path) -> Iterator[Callable[..., Proc]]:
    """Start ``fhir-gateway`` processes; all of them, and what they spawned, are stopped at teardown."""
    if not BIN.exists():
        pytest.fail(f"the console script is not installed at {BIN}")
    procs: list[Proc] = []
    logdir = tmp_path / "logs"
    logdir.mkdir()

    def start(*args: str, env: dict[str, str], name: str) -> Proc:
        proc = Proc(list(args), env, logdir, f"{name}-{len(procs)}")
        procs.append(proc)
        return proc

    yield start
    for proc in reversed(procs):
        proc.cleanup()


def wait_until(condition: Callable[[], Any], what: str, timeout: float = TIMEOUT, every: float = 0.05) -> Any:
    """Poll ``condition`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def wait_http(proc: Proc, port: int) -> str:
    """Wait until the process answers /healthz; return its base URL."""
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if not proc.alive():
            pytest.fail(f"the process exited before serving: {proc.describe()}")
        try:
            return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
        except httpx.TransportError:
            return False

    wait_until(up, f"{proc.name} to serve on port {port}", every=0.1)
    return base


def write_clients(path: Path) -> Path:
    config = {
        "clients": [
            {"token": EHR, "tenant": TENANT, "role": "ehr"},
            {"token": PLATFORM, "tenant": TENANT, "role": "platform", "scopes": ["sensitive"]},
        ],
        "tenants": {},
    }
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def fhir_headers(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"}


def all_events(http: httpx.Client, base: str, token: str) -> list[dict[str, Any]]:
    """Read the whole change feed through the platform API, page by page."""
    events: list[dict[str, Any]] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 1000}
        if cursor:
            params["cursor"] = cursor
        response = http.get(f"{base}/platform/v1/changes", params=params, headers=fhir_headers(token))
        assert response.status_code == 200, response.text
        page = response.json()
        if not page["events"]:
            return events
        events.extend(page["events"])
        cursor = page["next_cursor"]


def created_counts(events: list[dict[str, Any]]) -> Counter[str]:
    return Counter(e["record_id"] for e in events if e["type"] == "appointment.created")


def appointment(rid: str) -> dict[str, Any]:
    """A synthetic booked Appointment (no real patient data)."""
    return {
        "resourceType": "Appointment",
        "id": rid,
        "status": "booked",
        "description": "Follow-up visit",
        "start": "2026-12-10T09:00:00-05:00",
        "end": "2026-12-10T09:30:00-05:00",
        "participant": [
            {"actor": {"reference": f"Patient/p-{rid}"}, "status": "accepted"},
            {"actor": {"reference": "Practitioner/prac-1"}, "status": "accepted"},
        ],
    }


def put_bundle(rids: list[str]) -> dict[str, Any]:
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"resource": appointment(rid), "request": {"method": "PUT", "url": f"Appointment/{rid}"}} for rid in rids
        ],
    }


def hl7_transaction() -> dict[str, Any]:
    """The HL7 example Appointment with its Patient and Practitioner, linked by urn:uuid references."""
    path = corpus_dir() / "hl7-r4-spec-examples" / "Appointment-example.json"
    appt = json.loads(path.read_text(encoding="utf-8"))
    appt["participant"][0]["actor"]["reference"] = PATIENT_URN
    appt["participant"][1]["actor"]["reference"] = PRACTITIONER_URN
    patient = {"resourceType": "Patient", "name": [{"family": "Synthetic", "given": ["Pat"]}]}
    practitioner = {"resourceType": "Practitioner", "name": [{"family": "Example", "prefix": ["Dr"]}]}
    entries = [(appt, APPOINTMENT_URN), (patient, PATIENT_URN), (practitioner, PRACTITIONER_URN)]
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": urn, "resource": res, "request": {"method": "POST", "url": res["resourceType"]}}
            for res, urn in entries
        ],
    }


def demo_tokens(proc: Proc) -> dict[str, str]:
    """Wait for ``fhir-gateway run`` to print its demo tokens; return them by role."""

    def printed() -> dict[str, str]:
        if not proc.alive():
            pytest.fail(f"'run' exited: {proc.describe()}")
        found = dict(re.findall(r"^\s*(ehr|platform)\s+token:\s*(\S+)\s*$", proc.stdout(), re.MULTILINE))
        return found if {"ehr", "platform"} <= found.keys() else {}

    tokens: dict[str, str] = wait_until(printed, "the demo tokens on stdout", every=0.1)
    return tokens


class Queue:
    """What Redis says about a tenant's queue, read the way an operator would with redis-cli."""

    def __init__(self, redis_url: str, prefix: str, tenant: str = TENANT) -> None:
        self.redis = Redis.from_url(redis_url, decode_responses=True)
        self.prefix = prefix
        self.inbound = f"{prefix}:{{{tenant}}}:inbound"
        self.retry = f"{prefix}:{{{tenant}}}:retry"
        self.dlq = f"{prefix}:{{{tenant}}}:dlq"
        self.feed = f"{prefix}:{{{tenant}}}:feed"
        self.tenant = tenant

    def backlog(self) -> int:
        return int(self.redis.xlen(self.inbound)) + int(self.redis.zcard(self.retry))

    def pending(self) -> int:
        if not self.redis.exists(self.inbound):
            return 0
        return int(self.redis.xpending(self.inbound, GROUP)["pending"])

    def pending_of_pid(self, pid: int) -> list[str]:
        """The ids pending for the consumer of process ``pid`` (consumer names are host-pid-random)."""
        summary = self.redis.xpending(self.inbound, GROUP)
        names = [c["name"] for c in summary.get("consumers") or [] if f"-{pid}-" in c["name"]]
        held: list[str] = []
        for name in names:
            rows = self.redis.xpending_range(self.inbound, GROUP, "-", "+", 100_000, consumername=name)
            held += [row["message_id"] for row in rows]
        return held

    def poison(self, rid: str) -> str:
        """Queue a job naming a version that was never stored: every attempt fails with NotFound."""
        self.redis.sadd(f"{self.prefix}:tenants", self.tenant)
        job = {"type": "Appointment", "id": rid, "vid": 1, "op": "upsert", "attempt": 0}
        return str(self.redis.xadd(self.inbound, job))

    def dead_letter_ids(self) -> dict[str, str]:
        """Dead-letter stream id by the resource id of its job."""
        return {fields["id"]: entry_id for entry_id, fields in self.redis.xrange(self.dlq)}

    def delete_all(self) -> None:
        """Delete every key of the prefix, many per command (the embedded server fsyncs every write)."""
        batch: list[str] = []
        for key in self.redis.scan_iter(match=f"{self.prefix}:*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                self.redis.delete(*batch)
                batch.clear()
        if batch:
            self.redis.delete(*batch)

    def close(self) -> None:
        self.redis.close()


@pytest.fixture
def queue(redis_url: str, key_prefix: str) -> Iterator[Queue]:
    """The test's queue in Redis; its keys are deleted afterwards (after the processes, started later, stop)."""
    q = Queue(redis_url, key_prefix)
    yield q
    q.delete_all()
    q.close()


def find_key(obj: Any, key: str) -> list[Any]:
    """Every value stored under ``key`` anywhere in a JSON value."""
    found: list[Any] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            if k == key:
                found.append(v)
            found += find_key(v, key)
    elif isinstance(obj, list):
        for v in obj:
            found += find_key(v, key)
    return found


def scalars(obj: Any) -> set[str]:
    if isinstance(obj, dict):
        return set().union(*(scalars(v) for v in obj.values())) if obj else set()
    if isinstance(obj, list):
        return set().union(*(scalars(v) for v in obj)) if obj else set()
    return {str(obj)}


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


# ---------------------------------------------------------------- 1. one-command development run


def test_run_with_embedded_redis_serves_the_demo_tenant_and_keeps_data(
    launch: Callable[..., Proc], tmp_path: Path
) -> None:
    bundle = hl7_transaction()  # skips when the corpus is absent
    data_dir = tmp_path / "data"
    port = free_port()
    env = base_env()
    run = launch("run", "--port", str(port), "--data-dir", str(data_dir), env=env, name="run")
    base = wait_http(run, port)
    tokens = demo_tokens(run)
    assert "embedded redis" in run.stdout().lower()
    assert tokens["ehr"] != tokens["platform"]

    with httpx.Client(timeout=10) as http:
        started = time.monotonic()
        response = http.post(f"{base}/fhir/R4", json=bundle, headers=fhir_headers(tokens["ehr"]))
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["resourceType"] == "Bundle" and answer["type"] == "transaction-response"
        assert [e["response"]["status"] for e in answer["entry"]] == ["201 Created"] * 3
        appt_id = answer["entry"][0]["response"]["location"].split("/")[1]

        def scheduled_event() -> list[dict[str, Any]]:
            return [
                e
                for e in all_events(http, base, tokens["platform"])
                if e["type"] == "appointment.created" and e["record_id"] == appt_id
            ]

        events = wait_until(scheduled_event, "appointment.created on the feed", timeout=10, every=0.1)
        print(f"appointment.created on the feed {time.monotonic() - started:.2f} s after the POST")
        assert len(events) == 1
        assert events[0]["record"]["status"] == "scheduled"
        # The EHR token cannot read the platform feed.
        assert http.get(f"{base}/platform/v1/changes", headers=fhir_headers(tokens["ehr"])).status_code == 403

    # SIGTERM: the process stops within the timeout (its exit status is checked in a test of its own).
    run.terminate()
    run.cleanup()  # anything it left running, so that the restart below owns the data folder alone

    again = launch("run", "--port", str(port), "--data-dir", str(data_dir), env=env, name="run-again")
    base = wait_http(again, port)
    assert demo_tokens(again) == tokens
    with httpx.Client(timeout=10) as http:
        events = [e for e in all_events(http, base, tokens["platform"]) if e["record_id"] == appt_id]
        assert [e["type"] for e in events] == ["appointment.created"]
        assert events[0]["record"]["status"] == "scheduled"
        stored = http.get(f"{base}/fhir/R4/Appointment/{appt_id}", headers=fhir_headers(tokens["ehr"]))
        assert stored.status_code == 200 and stored.json()["status"] == "booked"

    # The dead-letter command finds the embedded Redis of the running gateway through --data-dir.
    listed = cli("dlq", "--data-dir", str(data_dir), "list", env=base_env())
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.strip() == ""


def test_run_exits_0_on_sigterm_and_stops_its_embedded_redis(launch: Callable[..., Proc], tmp_path: Path) -> None:
    port = free_port()
    run = launch("run", "--port", str(port), "--data-dir", str(tmp_path / "data"), env=base_env(), name="run")
    wait_http(run, port)
    status = run.terminate()
    leftover = run.group_alive()
    run.cleanup()
    assert (status, leftover) == (0, False), f"exit status {status}, embedded redis still running: {leftover}"


def test_dlq_finds_the_embedded_redis_of_run_with_a_long_data_dir(launch: Callable[..., Proc], tmp_path: Path) -> None:
    data_dir = tmp_path / ("deep-" * 16) / "data"
    assert len(str(data_dir / "redis" / "redis.sock")) > 100
    port = free_port()
    run = launch("run", "--port", str(port), "--data-dir", str(data_dir), env=base_env(), name="run")
    wait_http(run, port)
    listed = cli("dlq", "--data-dir", str(data_dir), "list", env=base_env())
    assert listed.returncode == 0, listed.stderr


# ---------------------------------------------------------------- 2. crash recovery


def test_jobs_of_a_killed_worker_are_reclaimed_and_applied_once(
    redis_url: str, key_prefix: str, queue: Queue, launch: Callable[..., Proc], tmp_path: Path
) -> None:
    clients = write_clients(tmp_path / "clients.json")
    env = gateway_env(redis_url, key_prefix, clients)
    port = free_port()
    base = wait_http(launch("api", "--host", "127.0.0.1", "--port", str(port), env=env, name="api"), port)
    worker_env = {**env, "GATEWAY_WORKER_CONCURRENCY": "64"}
    all_ids: list[str] = []
    caught: list[str] = []

    with httpx.Client(timeout=30) as http:
        # Kill a worker while it holds jobs. Timing decides whether a given kill lands mid-batch, so a round
        # that misses (nothing held, or everything already done) pushes a fresh batch and tries again.
        for round_no in range(4):
            ids = [f"r{round_no}-{i:04d}" for i in range(600)]
            for chunk in range(0, len(ids), 100):
                response = http.post(
                    f"{base}/fhir/R4", json=put_bundle(ids[chunk : chunk + 100]), headers=fhir_headers(EHR)
                )
                assert response.status_code == 200, response.text
            all_ids += ids
            before = int(queue.redis.xlen(queue.feed))
            worker = launch("worker", env=worker_env, name=f"worker-{round_no}")
            deadline = time.monotonic() + TIMEOUT
            while True:
                assert worker.alive(), worker.describe()
                assert time.monotonic() < deadline, f"the worker applied nothing: {worker.describe()}"
                done = int(queue.redis.xlen(queue.feed))
                if done > before:
                    break
                time.sleep(0.002)
            if done < len(all_ids) - 64:  # the feed is still growing: the worker holds a batch
                worker.kill()
            else:
                worker.terminate()
            caught = queue.pending_of_pid(worker.pid)
            print(f"round {round_no}: killed the worker holding {len(caught)} pending jobs")
            if caught:
                break
        assert caught, "no round killed the worker while it held jobs"
        assert queue.backlog() > 0

        started = time.monotonic()
        rescuer = launch("worker", env=worker_env, name="rescuer")
        wait_until(lambda: queue.backlog() == 0 and queue.pending() == 0, "the backlog to drain")
        print(f"the second worker drained the backlog in {time.monotonic() - started:.2f} s")
        assert rescuer.alive(), rescuer.describe()

        counts = created_counts(all_events(http, base, PLATFORM))
        assert {rid: counts[rid] for rid in all_ids} == dict.fromkeys(all_ids, 1)
        assert set(counts) == set(all_ids)
        assert queue.redis.xlen(queue.dlq) == 0
        assert rescuer.terminate() == 0


def test_api_exits_0_on_sigterm(redis_url: str, key_prefix: str, launch: Callable[..., Proc], tmp_path: Path) -> None:
    env = gateway_env(redis_url, key_prefix, write_clients(tmp_path / "clients.json"))
    port = free_port()
    api = launch("api", "--host", "127.0.0.1", "--port", str(port), env=env, name="api")
    wait_http(api, port)
    assert api.terminate() == 0


# ---------------------------------------------------------------- 3. poison jobs and dead letters


def test_poison_jobs_are_dead_lettered_listed_and_replayed(
    redis_url: str, key_prefix: str, queue: Queue, launch: Callable[..., Proc], tmp_path: Path
) -> None:
    clients = write_clients(tmp_path / "clients.json")
    env = gateway_env(redis_url, key_prefix, clients, GATEWAY_MAX_ATTEMPTS="3")
    port = free_port()
    base = wait_http(launch("api", "--host", "127.0.0.1", "--port", str(port), env=env, name="api"), port)

    with httpx.Client(timeout=10) as http:
        seed = http.put(
            f"{base}/fhir/R4/Patient/seed", json={"resourceType": "Patient", "id": "seed"}, headers=fhir_headers(EHR)
        )
        assert seed.status_code == 201, seed.text
        queue.poison("ghost-a")
        queue.poison("ghost-b")
        worker = launch("worker", env=env, name="worker")
        wait_until(lambda: queue.redis.xlen(queue.dlq) == 2, "two dead letters")
        assert worker.alive(), worker.describe()

        listed = cli("dlq", "list", env=env)
        assert listed.returncode == 0, listed.stderr
        letters = json_lines(listed.stdout)
        assert len(letters) == 2
        for letter in letters:
            assert TENANT in scalars(letter) and "Appointment" in scalars(letter)
            assert [int(a) for a in find_key(letter, "attempt")] == [3]
            (error,) = find_key(letter, "error")
            assert "NotFound" in error
        assert {"ghost-a", "ghost-b"} <= set().union(*(scalars(letter) for letter in letters))

        unknown = cli("dlq", "replay", "0-1", env=env)
        assert unknown.returncode == 1
        assert len(json_lines(cli("dlq", "list", env=env).stdout)) == 2

        # Stop the worker, then store the missing version: its own PUT queues a job for Appointment/ghost-a v1,
        # so each replayed dead letter is a duplicate of a queued job and must not produce a second event.
        assert worker.terminate() == 0
        for rid in ("ghost-a", "ghost-b"):
            stored = http.put(f"{base}/fhir/R4/Appointment/{rid}", json=appointment(rid), headers=fhir_headers(EHR))
            assert stored.status_code == 201, stored.text
            assert stored.headers["etag"] == 'W/"1"'

        dead = queue.dead_letter_ids()
        one = cli("dlq", "replay", dead["ghost-a"], env=env)
        assert one.returncode == 0, one.stderr
        assert json_lines(one.stdout) == [{"tenant": TENANT, "replayed": dead["ghost-a"]}]
        remaining = json_lines(cli("dlq", "list", env=env).stdout)
        assert len(remaining) == 1 and "ghost-b" in scalars(remaining[0])

        everything = cli("dlq", "replay", "--all", env=env)
        assert everything.returncode == 0, everything.stderr
        assert json_lines(everything.stdout) == [{"tenant": TENANT, "replayed": dead["ghost-b"]}]
        emptied = cli("dlq", "list", env=env)
        assert emptied.returncode == 0 and emptied.stdout.strip() == ""
        assert queue.redis.xlen(queue.inbound) == 4  # two PUT jobs and two replayed ones

        worker = launch("worker", env=env, name="worker-again")
        wait_until(lambda: queue.backlog() == 0 and queue.pending() == 0, "the replayed jobs to be applied")
        events = [e for e in all_events(http, base, PLATFORM) if e["record_id"] in ("ghost-a", "ghost-b")]
        assert sorted((e["type"], e["record_id"]) for e in events) == [
            ("appointment.created", "ghost-a"),
            ("appointment.created", "ghost-b"),
        ]
        assert all(e["record"]["status"] == "scheduled" for e in events)
        assert cli("dlq", "list", env=env).stdout.strip() == ""
        assert worker.terminate() == 0


def test_dlq_list_prints_the_id_that_replay_takes(
    redis_url: str, key_prefix: str, queue: Queue, launch: Callable[..., Proc]
) -> None:
    env = gateway_env(redis_url, key_prefix, GATEWAY_MAX_ATTEMPTS="2")
    queue.poison("ghost")
    worker = launch("worker", env=env, name="worker")
    wait_until(lambda: queue.redis.xlen(queue.dlq) == 1, "a dead letter")
    # Stopped first: a running worker would fail the replayed poison job again and dead-letter it anew.
    assert worker.terminate() == 0
    (letter,) = json_lines(cli("dlq", "list", env=env).stdout)
    replay = cli("dlq", "replay", str(letter["id"]), env=env)
    assert replay.returncode == 0, replay.stderr
    assert queue.redis.xlen(queue.dlq) == 0


# ---------------------------------------------------------------- 4. command-line contracts


def test_cli_contracts(tmp_path: Path) -> None:
    env = base_env()

    for command in ("api", "worker"):
        result = cli(command, env=env)
        assert result.returncode != 0, f"{command} started without REDIS_URL"
        assert "REDIS_URL" in result.stderr

    no_target = cli("dlq", "list", env=env)
    assert no_target.returncode != 0 and "REDIS_URL" in no_target.stderr

    valid = cli("validate", str(corpus_dir() / "hl7-r4-spec-examples" / "Appointment-example.json"), env=env)
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert json_lines(valid.stdout)[0]["valid"] is True

    bogus = tmp_path / "bogus.json"
    bogus.write_text(json.dumps({**appointment("bogus"), "status": "bogus"}), encoding="utf-8")
    invalid = cli("validate", str(bogus), env=env)
    assert invalid.returncode == 1, invalid.stdout + invalid.stderr
    (report,) = json_lines(invalid.stdout)
    assert report["valid"] is False
    outcome = report["outcome"]
    assert outcome["resourceType"] == "OperationOutcome"
    errors = [i for i in outcome["issue"] if i["severity"] in ("error", "fatal")]
    assert any("Appointment.status" in expr for i in errors for expr in i.get("expression", [])), outcome

    missing = cli("validate", str(tmp_path / "absent.json"), env=env)
    assert missing.returncode == 2
    assert "absent.json" in missing.stderr

    for args in (
        [], ["run"], ["api"], ["worker"], ["validate"], ["dlq"], ["dlq", "list"], ["dlq", "replay"]
    ):  # fmt: skip
        shown = cli(*args, "--help", env=env)
        assert shown.returncode == 0, (args, shown.stderr)
        assert "usage: fhir-gateway" in shown.stdout

    assert cli(env=env).returncode == 2  # no command


def test_api_refuses_to_start_without_clients(redis_url: str, key_prefix: str) -> None:
    result = cli("api", "--port", str(free_port()), env=gateway_env(redis_url, key_prefix))
    assert result.returncode != 0
    assert "no API clients are configured" in result.stderr


def test_dlq_replay_needs_ids_or_all(redis_url: str, key_prefix: str) -> None:
    result = cli("dlq", "replay", env=gateway_env(redis_url, key_prefix))
    assert result.returncode == 2
    assert "--all" in result.stderr
