"""The chart renders, lints clean and validates against the Kubernetes schemas for every scenario; each switch turns
exactly its resources on or off."""

from __future__ import annotations

import json
import re
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest

from gateway.store.keys import GROUP, Keyspace
from tests.helm.rendering import CRD_KINDS, Release, kind_of_template, lint, render
from tests.helm.scenarios import SCENARIO_IDS, SCENARIOS, TENANTS, Scenario

KUBERNETES_VERSION = "1.30"
_VALID: set[str] = set()
KIND_FILE_NAMES = {
    "Deployment": "deployment",
    "StatefulSet": "statefulset",
    "Service": "service",
    "ConfigMap": "configmap",
    "Ingress": "ingress",
    "HorizontalPodAutoscaler": "hpa",
    "PodDisruptionBudget": "pdb",
    "NetworkPolicy": "networkpolicy",
    "ServiceAccount": "serviceaccount",
    "ScaledObject": "scaledobject",
    "ServiceMonitor": "servicemonitor",
}


@pytest.fixture(scope="module", params=SCENARIOS, ids=SCENARIO_IDS)
def scenario(request: pytest.FixtureRequest) -> tuple[Scenario, Release]:
    return request.param, render(request.param.values)


def test_each_scenario_renders_exactly_its_resources(scenario: tuple[Scenario, Release]) -> None:
    spec, release = scenario
    rendered = release.resources()
    assert len(rendered) == len(release.manifests), "two manifests of one kind for one component"
    assert rendered == spec.expected(), (
        f"missing {sorted(spec.expected() - rendered)}, unexpected {sorted(rendered - spec.expected())}"
    )


def test_each_scenario_lints_clean(scenario: tuple[Scenario, Release]) -> None:
    spec, _ = scenario
    report = lint(spec.values)
    assert report["errors"] == []
    # Only information remains (helm says an icon is recommended); strict lint turns warnings into failures.
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


def test_lint_reports_a_broken_value() -> None:
    report = lint({"api": {"replicas": "two"}})
    assert report["errors"] or any(m["severity"] >= 2 for m in report["messages"])


def test_each_manifest_matches_the_kubernetes_schema(scenario: tuple[Scenario, Release]) -> None:
    _, release = scenario
    checked = []
    for manifest in release.manifests:
        if manifest["kind"] in CRD_KINDS:
            continue  # KEDA and Prometheus Operator CRDs: no schema ships with kubernetes-validate.
        key = json.dumps(manifest, sort_keys=True)
        if key not in _VALID:  # scenarios share most manifests; each distinct one is validated once
            kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
            _VALID.add(key)
        checked.append(manifest["kind"])
    assert {"Deployment", "Service"} <= set(checked)


def test_schema_validation_would_catch_a_misspelt_field() -> None:
    deployment = render().get("Deployment", "api")
    deployment["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_one_resource_per_template_named_component_kind(scenario: tuple[Scenario, Release]) -> None:
    _, release = scenario
    for template, docs in release.templates.items():
        assert len(docs) <= 1, f"{template} renders {len(docs)} resources"
        for doc in docs:
            assert kind_of_template(template) == KIND_FILE_NAMES[doc["kind"]], template
            component_label = doc["metadata"]["labels"]["app.kubernetes.io/component"]
            assert template.split("/")[-1].startswith(f"{component_label}-"), template


def test_defaults_leave_the_optional_parts_off() -> None:
    kinds = {kind for kind, _ in render().resources()}
    assert not kinds & {"Ingress", "HorizontalPodAutoscaler", "ScaledObject", "ServiceMonitor"}
    assert ("Deployment", "poller") not in render().resources()


def test_autoscaling_leaves_replicas_to_the_hpa() -> None:
    off, on = render(), render({"autoscaling": {"enabled": True}})
    assert off.get("Deployment", "api")["spec"]["replicas"] == 2
    assert "replicas" not in on.get("Deployment", "api")["spec"]
    assert "replicas" not in on.get("Deployment", "worker")["spec"]
    hpa = on.get("HorizontalPodAutoscaler", "worker")
    assert hpa["spec"]["scaleTargetRef"]["name"] == on.get("Deployment", "worker")["metadata"]["name"]


def _triggers(release: Release) -> list[dict[str, Any]]:
    return list(release.get("ScaledObject", "worker")["spec"]["triggers"])


def test_keda_renders_one_stream_trigger_per_tenant_on_the_gateway_keys() -> None:
    release = render({"keda": {"enabled": True, "tenants": TENANTS}, "config": {"keyPrefix": "gw-east"}})
    triggers = _triggers(release)
    assert [t["metadata"]["stream"] for t in triggers] == [Keyspace("gw-east").inbound(t) for t in TENANTS]
    for trigger in triggers:
        assert trigger["type"] == "redis-streams"
        assert trigger["metadata"]["address"] == "gw-fhir-gateway-redis.clinic.svc:6379"
        # XLEN is the backlog because the gateway deletes a job when it acknowledges it.
        assert trigger["metadata"]["streamLength"] == "500"
        assert "consumerGroup" not in trigger["metadata"]
        assert trigger["metadata"]["passwordFromEnv"] == "REDIS_PASSWORD"
    scaled = release.get("ScaledObject", "worker")["spec"]
    assert scaled["scaleTargetRef"]["name"] == release.get("Deployment", "worker")["metadata"]["name"]
    assert scaled["scaleTargetRef"]["envSourceContainerName"] == "worker"


@pytest.mark.parametrize("metric", ["pendingEntriesCount", "lagCount"])
def test_keda_group_metrics_name_the_workers_group(metric: str) -> None:
    release = render({"keda": {"enabled": True, "tenants": ["clinic-a"], "metric": metric, "target": 40}})
    (trigger,) = _triggers(release)
    assert trigger["metadata"]["consumerGroup"] == GROUP
    assert trigger["metadata"][metric] == "40"


def test_keda_on_external_tls_redis_uses_its_address_and_tls() -> None:
    release = render(
        {
            "keda": {"enabled": True, "tenants": ["clinic-a"]},
            "redis": {"enabled": False, "url": "rediss://r.example:6380/3"},
        }
    )
    (trigger,) = _triggers(release)
    assert trigger["metadata"]["address"] == "r.example:6380"
    assert trigger["metadata"]["enableTLS"] == "true"
    assert trigger["metadata"]["databaseIndex"] == "3"


def test_keda_without_tenants_is_refused() -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape("keda.tenants")):
        render({"keda": {"enabled": True}})


def test_keda_lets_its_operator_reach_the_bundled_redis() -> None:
    def peers(release: Release) -> list[dict[str, Any]]:
        return list(release.get("NetworkPolicy", "redis")["spec"]["ingress"][0]["from"])

    assert len(peers(render())) == 1
    keda_peer = peers(render({"keda": {"enabled": True, "tenants": ["a"], "operatorNamespace": "autoscalers"}}))[1]
    assert keda_peer == {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "autoscalers"}}}


def test_ingress_routes_only_the_public_apis_with_tls() -> None:
    release = render({"ingress": {"enabled": True, "host": "fhir.example.org", "tls": {"secretName": "fhir-tls"}}})
    spec = release.get("Ingress", "api")["spec"]
    assert spec["tls"] == [{"hosts": ["fhir.example.org"], "secretName": "fhir-tls"}]
    (rule,) = spec["rules"]
    assert rule["host"] == "fhir.example.org"
    paths = [p["path"] for p in rule["http"]["paths"]]
    assert paths == ["/fhir/R4", "/platform/v1"]
    assert all(p["backend"]["service"]["name"] == "gw-fhir-gateway-api" for p in rule["http"]["paths"])


def test_ingress_needs_a_host() -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape("ingress.host")):
        render({"ingress": {"enabled": True}})


def test_service_monitor_scrapes_metrics_on_the_api_port() -> None:
    release = render({"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}}})
    monitor = release.get("ServiceMonitor", "api")
    assert monitor["metadata"]["labels"]["release"] == "prom"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics"
    assert monitor["spec"]["endpoints"][0]["port"] == "http"
    assert release.get("Service", "api")["spec"]["ports"][0]["name"] == "http"
    assert monitor["spec"]["selector"]["matchLabels"] == release.get("Service", "api")["spec"]["selector"]


def test_service_monitor_scrapes_each_worker_metrics_port() -> None:
    release = render({"metrics": {"serviceMonitor": {"enabled": True}}, "config": {"workerMetricsPort": 9100}})
    service = release.get("Service", "worker")
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["ports"] == [{"name": "metrics", "port": 9100, "targetPort": "metrics", "protocol": "TCP"}]
    worker = release.get("Deployment", "worker")["spec"]["template"]["spec"]["containers"][0]
    assert worker["ports"] == [{"name": "metrics", "containerPort": 9100, "protocol": "TCP"}]
    assert release.get("ServiceMonitor", "worker")["spec"]["endpoints"][0]["port"] == "metrics"
    assert (
        "ports"
        not in render({"config": {"workerMetricsPort": 0}}).get("Deployment", "worker")["spec"]["template"]["spec"][
            "containers"
        ][0]
    )


def test_api_probes_are_healthz_and_readyz_on_the_api_port() -> None:
    container = render().get("Deployment", "api")["spec"]["template"]["spec"]["containers"][0]
    assert container["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["args"] == ["api", "--host", "0.0.0.0", "--port", "8080", "--workers", "1"]


def test_processes_run_their_commands() -> None:
    release = render({"poller": {"enabled": True}})
    args = {c: container["args"] for c, container in release.gateway_containers()}
    assert args["worker"] == ["worker"]
    assert args["poller"] == ["poll"]


def test_every_container_has_requests_and_limits(scenario: tuple[Scenario, Release]) -> None:
    _, release = scenario
    for name, pod in release.pod_specs():
        for container in pod["containers"]:
            for bound in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][bound]), f"{name}: {bound}"


def test_bundled_redis_is_durable() -> None:
    release = render()
    conf = release.get("ConfigMap", "redis")["data"]["redis.conf"].splitlines()
    assert "appendonly yes" in conf
    assert "appendfsync always" in conf
    assert "maxmemory-policy noeviction" in conf
    assert "auto-aof-rewrite-min-size 512mb" in conf  # as the embedded Redis: no rewrite every few seconds
    statefulset = release.get("StatefulSet", "redis")
    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim["spec"]["resources"]["requests"]["storage"] == "8Gi"
    mounts = statefulset["spec"]["template"]["spec"]["containers"][0]["volumeMounts"]
    assert {"name": "data", "mountPath": "/data"} in mounts
    assert (
        "appendfsync everysec"
        in render({"redis": {"appendfsync": "everysec"}}).get("ConfigMap", "redis")["data"]["redis.conf"].splitlines()
    )


def test_bundled_redis_requires_the_password_from_the_secret() -> None:
    container = render().get("StatefulSet", "redis")["spec"]["template"]["spec"]["containers"][0]
    (env,) = container["env"]
    assert env["name"] == "REDISCLI_AUTH"
    assert env["valueFrom"]["secretKeyRef"] == {"name": "gw-fhir-gateway", "key": "redis-password"}
    assert "requirepass ${REDISCLI_AUTH}" in container["command"][-1]
    with pytest.raises(helm.HelmRenderError, match=re.escape("redis.auth.enabled")):
        render({"redis": {"auth": {"enabled": False}}})


def test_external_redis_needs_a_url() -> None:
    with pytest.raises(helm.HelmRenderError, match=re.escape("redis.url")):
        render({"redis": {"enabled": False}})
    with pytest.raises(helm.HelmRenderError, match="scheme"):
        render({"redis": {"enabled": False, "url": "http://redis.example.org"}})


def test_notes_tell_the_operator_which_secret_to_create() -> None:
    notes = render().notes
    assert "kubectl --namespace clinic create secret generic gw-fhir-gateway" in notes
    assert "--from-file=clients.yaml=./clients.yaml" in notes
    assert '--from-literal=redis-password="$(openssl rand -hex 32)"' in notes
    named = render({"existingSecret": "ops-secret"}).notes
    assert 'Using the Secret "ops-secret"' in named
    assert "create secret" not in named
