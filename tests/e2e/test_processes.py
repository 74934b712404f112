"""End-to-end: real ``fhir-gateway`` processes, real Redis, real HTTP.

Each test starts the console script as subprocesses (``run``, ``api``, ``worker``, ``dlq``, ``validate``), talks to
them over HTTP with httpx, and looks at Redis only where a user would (the pending list of a crashed worker, the
backlog). Every process is started in its own session so that teardown can stop it and anything it spawned.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import corpus_dir
from tests.e2e.conftest import (
    EHR,
    PLATFORM,
    TENANT,
    TIMEOUT,
    Proc,
    Queue,
    all_events,
    appointment,
    base_env,
    cli,
    created_counts,
    demo_tokens,
    fhir_headers,
    find_key,
    gateway_env,
    hl7_transaction,
    json_lines,
    put_bundle,
    scalars,
    wait_http,
    wait_until,
    write_clients,
)
from tests.support import free_port

pytestmark = pytest.mark.e2e


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
        # The EHR token cannot read the platform feed; the admin token opens the console, which shows the tenant.
        assert http.get(f"{base}/platform/v1/changes", headers=fhir_headers(tokens["ehr"])).status_code == 403
        console = http.get(f"{base}/console", headers={"Authorization": f"Bearer {tokens['admin']}"})
        assert console.status_code == 200 and 'id="tenant-demo"' in console.text

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
            worker = launch("worker", env=worker_env, name=f"worker-{round_no}")
            deadline = time.monotonic() + TIMEOUT
            while not (held := queue.pending_of_pid(worker.pid)) and queue.backlog() > 0:
                assert worker.alive(), worker.describe()
                assert time.monotonic() < deadline, f"the worker took no job: {worker.describe()}"
                time.sleep(0.001)
            worker.kill()  # while it holds a batch it has read and not acknowledged, if the poll caught one
            caught = queue.pending_of_pid(worker.pid) if held else []
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


@pytest.mark.embedded_only  # the Redis server makes no difference here
def test_api_exits_0_on_sigterm(redis_url: str, key_prefix: str, launch: Callable[..., Proc], tmp_path: Path) -> None:
    env = gateway_env(redis_url, key_prefix, write_clients(tmp_path / "clients.json"))
    port = free_port()
    api = launch("api", "--host", "127.0.0.1", "--port", str(port), env=env, name="api")
    wait_http(api, port)
    assert api.terminate() == 0


@pytest.mark.embedded_only  # the Redis makes no difference to a reload
def test_a_worker_process_maps_with_the_tenant_settings_of_a_reloaded_clients_file(
    redis_url: str, key_prefix: str, launch: Callable[..., Proc], tmp_path: Path
) -> None:
    clients = write_clients(tmp_path / "clients.json")
    env = gateway_env(redis_url, key_prefix, clients)
    port = free_port()
    base = wait_http(launch("api", "--host", "127.0.0.1", "--port", str(port), env=env, name="api"), port)
    worker = launch("worker", env=env, name="worker")
    with httpx.Client(timeout=30) as http:

        def zone_of(rid: str) -> Any:
            answer = http.put(f"{base}/fhir/R4/Appointment/{rid}", json=appointment(rid), headers=fhir_headers(EHR))
            assert answer.status_code == 201, answer.text
            records = wait_until(
                lambda: [e["record"] for e in all_events(http, base, PLATFORM) if e["record_id"] == rid],
                "the worker to map the appointment",
            )
            return records[0].get("timezone")

        assert zone_of("before") is None
        # The tenant gets a timezone: written then renamed, as an editor or a Kubernetes volume does.
        config = json.loads(clients.read_text(encoding="utf-8"))
        config["tenants"] = {TENANT: {"vendor": "generic", "timezone": "America/Chicago"}}
        clients.with_suffix(".tmp").write_text(json.dumps(config), encoding="utf-8")
        clients.with_suffix(".tmp").replace(clients)
        # The worker looks at the file every second: one of the next appointments is mapped with the new zone.
        pushed = iter(range(1000))
        wait_until(lambda: zone_of(f"after-{next(pushed)}") == "America/Chicago", "a record in the new zone", every=0.2)
    assert worker.alive(), worker.describe()
    assert worker.terminate() == 0


# ---------------------------------------------------------------- 3. poison jobs and dead letters


@pytest.mark.embedded_only  # the Redis server makes no difference here
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


@pytest.mark.embedded_only  # the Redis server makes no difference here
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

    example = corpus_dir() / "hl7-r4-spec-examples" / "Appointment-example.json"
    valid = cli("validate", "--format", "json", str(example), env=env)
    assert valid.returncode == 0, valid.stdout + valid.stderr
    assert json_lines(valid.stdout)[0]["valid"] is True

    bogus = tmp_path / "bogus.json"
    bogus.write_text(json.dumps({**appointment("bogus"), "status": "bogus"}), encoding="utf-8")
    invalid = cli("validate", "--format", "json", str(bogus), env=env)
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


@pytest.mark.embedded_only  # the Redis server makes no difference here
def test_api_refuses_to_start_without_clients(redis_url: str, key_prefix: str) -> None:
    result = cli("api", "--port", str(free_port()), env=gateway_env(redis_url, key_prefix))
    assert result.returncode != 0
    assert "no API clients are configured" in result.stderr


@pytest.mark.embedded_only  # the Redis server makes no difference here
def test_dlq_replay_needs_ids_or_all(redis_url: str, key_prefix: str) -> None:
    result = cli("dlq", "replay", env=gateway_env(redis_url, key_prefix))
    assert result.returncode == 2
    assert "--all" in result.stderr
