"""What a security review checks: the restricted Pod Security Standard on every pod, no secret value in anything
the chart renders, no API token, and a default-deny network."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import helm_python as helm
import pytest

from tests.helm.rendering import GATEWAY_COMPONENTS, Release, component, render
from tests.helm.scenarios import SCENARIO_IDS, SCENARIOS, Scenario

# Volume types the restricted profile allows.
RESTRICTED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
FAKE_PASSWORD = "Zebra-7f3c-not-a-real-password"
HOST = "redis.example.org"


@pytest.fixture(scope="module", params=SCENARIOS, ids=SCENARIO_IDS)
def release(request: pytest.FixtureRequest) -> Release:
    spec: Scenario = request.param
    return render(spec.values)


def _effective(pod: dict[str, Any], container: dict[str, Any], key: str) -> Any:
    """A container's setting, else the pod's (how Kubernetes resolves it)."""
    own = container.get("securityContext", {})
    return own[key] if key in own else pod.get("securityContext", {}).get(key)


def test_every_pod_meets_the_restricted_pod_security_standard(release: Release) -> None:
    pods = list(release.pod_specs())
    assert pods
    for name, pod in pods:
        for flag in ("hostNetwork", "hostPID", "hostIPC"):
            assert not pod.get(flag), f"{name}: {flag}"
        assert pod["securityContext"]["runAsNonRoot"] is True, name
        assert pod["securityContext"]["runAsUser"] > 0, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        for volume in pod.get("volumes", []):
            types = set(volume) - {"name"}
            assert types <= RESTRICTED_VOLUMES, f"{name}: volume {volume['name']} is {types}"
        for container in pod["containers"] + pod.get("initContainers", []):
            where = f"{name}/{container['name']}"
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["readOnlyRootFilesystem"] is True, where
            assert context.get("privileged", False) is False, where
            assert context["capabilities"]["drop"] == ["ALL"], where
            assert not context["capabilities"].get("add"), where
            assert _effective(pod, container, "runAsNonRoot") is True, where
            assert _effective(pod, container, "runAsUser") not in (None, 0), where
            assert _effective(pod, container, "seccompProfile") == {"type": "RuntimeDefault"}, where
            assert all("hostPort" not in p for p in container.get("ports", [])), where


def test_every_container_writes_only_to_an_emptydir_at_tmp(release: Release) -> None:
    for name, pod in release.pod_specs():
        empty_dirs = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for container in pod["containers"]:
            tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            assert len(tmp) == 1 and tmp[0]["name"] in empty_dirs, f"{name}/{container['name']}"


def test_no_pod_gets_an_api_token_or_service_links(release: Release) -> None:
    for name, pod in release.pod_specs():
        assert pod["automountServiceAccountToken"] is False, name
        assert pod["enableServiceLinks"] is False, name
    for manifest in release.manifests:
        if manifest["kind"] == "ServiceAccount":
            assert manifest["automountServiceAccountToken"] is False


def test_nothing_secret_is_rendered(release: Release) -> None:
    kinds = {m["kind"] for m in release.manifests}
    assert "Secret" not in kinds
    for manifest in release.manifests:
        assert "stringData" not in manifest
        if manifest["kind"] == "ConfigMap":
            assert "binaryData" not in manifest
            assert not any(
                "requirepass" in line.split("#")[0] for text in manifest["data"].values() for line in text.splitlines()
            )
    for name, pod in release.pod_specs():
        for container in pod["containers"]:
            for env in container.get("env", []):
                if any(word in env["name"] for word in ("PASSWORD", "AUTH", "TOKEN", "SECRET")):
                    assert "value" not in env, f"{name}: {env['name']} has a literal value"
                    assert set(env["valueFrom"]) == {"secretKeyRef"}, f"{name}: {env['name']}"
                if env["name"] == "REDIS_URL":
                    url = urlsplit(env["value"])
                    assert url.password in (None, "$(REDIS_PASSWORD)"), f"{name}: REDIS_URL carries a password"
                    assert "password" not in url.query


def test_secrets_arrive_only_by_reference_to_the_named_secret() -> None:
    release = render({"existingSecret": "ops-made-secret", "smartKeys": {"secretName": "ops-smart-keys"}})
    referenced: set[str] = set()
    for _, pod in release.pod_specs():
        for volume in pod["volumes"]:
            if "secret" in volume:
                referenced.add(volume["secret"]["secretName"])
        for container in pod["containers"]:
            for env in container.get("env", []):
                if "valueFrom" in env:
                    referenced.add(env["valueFrom"]["secretKeyRef"]["name"])
    assert referenced == {"ops-made-secret", "ops-smart-keys"}
    assert "Secret" not in {m["kind"] for m in release.manifests}


def test_smart_keys_are_mounted_where_connectors_run_and_not_on_the_api() -> None:
    release = render({"smartKeys": {"secretName": "ehr-keys"}, "poller": {"enabled": True}})
    for name, container in release.gateway_containers():
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        if name == "api":
            assert "/etc/fhir-gateway/smart-keys" not in mounts
        else:
            assert mounts["/etc/fhir-gateway/smart-keys"]["readOnly"] is True
    for _, pod in release.pod_specs():
        for volume in pod["volumes"]:
            if "secret" in volume:
                assert volume["secret"]["defaultMode"] == 0o440


@pytest.mark.parametrize(
    ("values", "error"),
    [
        ({"redis": {"enabled": False, "url": f"redis://:{FAKE_PASSWORD}@{HOST}:6379/0"}}, helm.HelmRenderError),
        ({"redis": {"enabled": False, "url": f"rediss://gateway:{FAKE_PASSWORD}@{HOST}/0"}}, helm.HelmRenderError),
        ({"redis": {"enabled": False, "url": f"redis://{HOST}/0?password={FAKE_PASSWORD}"}}, helm.HelmRenderError),
        ({"redis": {"password": FAKE_PASSWORD}}, helm.HelmValuesError),
        ({"redis": {"auth": {"password": FAKE_PASSWORD}}}, helm.HelmValuesError),
        ({"config": {"redisPassword": FAKE_PASSWORD}}, helm.HelmValuesError),
        ({"config": {"redisUrl": f"redis://:{FAKE_PASSWORD}@r:6379"}}, helm.HelmValuesError),
        ({"secretKeys": {"redisPasswordValue": FAKE_PASSWORD}}, helm.HelmValuesError),
        ({"clientsFile": FAKE_PASSWORD}, helm.HelmValuesError),
    ],
    ids=["url-password", "url-user-password", "url-query-password", "redis.password", "redis.auth.password",
         "config.redisPassword", "config.redisUrl", "secretKeys-value", "clientsFile"],
)  # fmt: skip
def test_a_password_given_as_a_value_is_refused_without_repeating_it(values: dict[str, Any], error: type) -> None:
    with pytest.raises(error) as caught:
        render(values)
    assert FAKE_PASSWORD not in str(caught.value)


def test_a_password_in_an_external_url_never_reaches_the_output() -> None:
    """The fake password is refused above; prove the same URL without it renders, and nothing secret leaks."""
    url = "rediss://gateway@redis.example.org:6380/0"
    release = render({"redis": {"enabled": False, "url": url}})
    for _, container in release.gateway_containers():
        env = {e["name"]: e for e in container["env"]}
        assert env["REDIS_URL"]["value"] == "rediss://gateway:$(REDIS_PASSWORD)@redis.example.org:6380/0"
    assert FAKE_PASSWORD not in release.text + release.notes


def test_default_deny_covers_every_pod_of_the_release(release: Release) -> None:
    policies = [m for m in release.manifests if m["kind"] == "NetworkPolicy"]
    if not policies:
        return  # networkPolicy.enabled false: the scenario "no-network-policy" turns them all off on purpose.
    deny = release.get("NetworkPolicy", "gateway")["spec"]
    assert deny["policyTypes"] == ["Ingress", "Egress"]
    assert "ingress" not in deny and "egress" not in deny
    for manifest in release.manifests:
        if manifest["kind"] in ("Deployment", "StatefulSet"):
            labels = manifest["spec"]["template"]["metadata"]["labels"]
            assert deny["podSelector"]["matchLabels"].items() <= labels.items(), manifest["metadata"]["name"]
            own = release.get("NetworkPolicy", component(manifest))["spec"]
            assert own["policyTypes"] == ["Ingress", "Egress"]
            assert own["podSelector"]["matchLabels"].items() <= labels.items()


def _egress_ports(policy: dict[str, Any]) -> set[tuple[str, int]]:
    return {(p["protocol"], p["port"]) for rule in policy["spec"]["egress"] for p in rule["ports"]}


def test_gateway_pods_reach_only_dns_redis_and_configured_ehrs() -> None:
    release = render(
        {"poller": {"enabled": True}, "networkPolicy": {"ehrEgress": [{"cidrs": ["203.0.113.0/24"], "ports": [443]}]}}
    )
    base = {("UDP", 53), ("TCP", 53), ("TCP", 6379)}
    assert _egress_ports(release.get("NetworkPolicy", "api")) == base
    for name in ("worker", "poller"):
        policy = release.get("NetworkPolicy", name)
        assert _egress_ports(policy) == base | {("TCP", 443)}
        assert {"ipBlock": {"cidr": "203.0.113.0/24"}} in policy["spec"]["egress"][-1]["to"]
    assert release.get("NetworkPolicy", "poller")["spec"]["ingress"] == []
    assert _egress_ports(render().get("NetworkPolicy", "worker")) == base


def test_dns_egress_goes_to_the_cluster_dns_and_listed_addresses() -> None:
    policy = render({"networkPolicy": {"dnsCidrs": ["169.254.20.10/32"], "dnsNamespace": "dns"}})
    dns = policy.get("NetworkPolicy", "worker")["spec"]["egress"][0]
    assert dns["to"] == [
        {
            "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "dns"}},
            "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}},
        },
        {"ipBlock": {"cidr": "169.254.20.10/32"}},
    ]
    assert dns["ports"] == [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]


def test_external_redis_egress_follows_the_url_port_and_cidrs() -> None:
    release = render(
        {
            "redis": {"enabled": False, "url": "rediss://r.example:6380/0"},
            "networkPolicy": {"externalRedisCidrs": ["10.9.0.0/16"]},
        }
    )
    rule = release.get("NetworkPolicy", "api")["spec"]["egress"][1]
    assert rule == {"ports": [{"protocol": "TCP", "port": 6380}], "to": [{"ipBlock": {"cidr": "10.9.0.0/16"}}]}


def test_api_port_is_open_only_to_the_ingress_controller_and_prometheus() -> None:
    policy = render({"networkPolicy": {"apiIngressNamespaces": ["traefik"], "metricsNamespaces": ["observability"]}})
    (rule,) = policy.get("NetworkPolicy", "api")["spec"]["ingress"]
    namespaces = [peer["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for peer in rule["from"]]
    assert namespaces == ["traefik", "observability"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 8080}]


def test_workers_accept_only_prometheus_on_their_metrics_port() -> None:
    (rule,) = render().get("NetworkPolicy", "worker")["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 9091}]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    assert render({"config": {"workerMetricsPort": 0}}).get("NetworkPolicy", "worker")["spec"]["ingress"] == []


def test_redis_accepts_only_the_gateway_pods_and_sends_nothing() -> None:
    policy = render().get("NetworkPolicy", "redis")["spec"]
    assert policy["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "redis"
    assert policy["egress"] == []
    (rule,) = policy["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]
    (peer,) = rule["from"]
    assert set(peer) == {"podSelector"}
    expressions = {e["key"]: (e["operator"], e["values"]) for e in peer["podSelector"]["matchExpressions"]}
    assert expressions == {
        "app.kubernetes.io/name": ("In", ["fhir-gateway"]),
        "app.kubernetes.io/instance": ("In", ["gw"]),
        "app.kubernetes.io/component": ("In", list(GATEWAY_COMPONENTS)),
    }


def test_only_workers_reach_webhook_receivers() -> None:
    release = render(
        {
            "poller": {"enabled": True},
            "networkPolicy": {"webhookEgress": [{"cidrs": ["198.51.100.0/24"], "ports": [8443]}]},
        }
    )
    worker = release.get("NetworkPolicy", "worker")
    assert ("TCP", 8443) in _egress_ports(worker)
    assert {"ipBlock": {"cidr": "198.51.100.0/24"}} in worker["spec"]["egress"][-1]["to"]
    for name in ("api", "poller"):
        assert ("TCP", 8443) not in _egress_ports(release.get("NetworkPolicy", name))
