"""The values matrix the chart tests render, and the resources each one must produce (and only those)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

EXTERNAL_REDIS = {"enabled": False, "url": "rediss://redis.clinic.example.org:6380/2"}
TENANTS = ["clinic-a", "clinic-b", "clinic-c"]

# What the default values render: the gateway, the bundled Redis, budgets and network policies, nothing optional.
BASE: frozenset[tuple[str, str]] = frozenset(
    {
        ("ServiceAccount", "gateway"),
        ("NetworkPolicy", "gateway"),
        ("Deployment", "api"),
        ("Service", "api"),
        ("PodDisruptionBudget", "api"),
        ("NetworkPolicy", "api"),
        ("Deployment", "worker"),
        ("PodDisruptionBudget", "worker"),
        ("NetworkPolicy", "worker"),
        ("StatefulSet", "redis"),
        ("Service", "redis"),
        ("ConfigMap", "redis"),
        ("NetworkPolicy", "redis"),
    }
)
BUNDLED_REDIS = frozenset(r for r in BASE if r[1] == "redis")
MONITORING = frozenset({("ServiceMonitor", "api"), ("ServiceMonitor", "worker"), ("Service", "worker")})
POLLER = frozenset({("Deployment", "poller"), ("PodDisruptionBudget", "poller"), ("NetworkPolicy", "poller")})


@dataclass(frozen=True)
class Scenario:
    """Values to render, and the resources they add to or remove from BASE."""

    name: str
    values: dict[str, Any]
    added: frozenset[tuple[str, str]] = field(default_factory=frozenset)
    removed: frozenset[tuple[str, str]] = field(default_factory=frozenset)

    def expected(self) -> set[tuple[str, str]]:
        """Return exactly the (kind, component) pairs this scenario must render."""
        return set((BASE - self.removed) | self.added)


SCENARIOS = [
    Scenario("defaults", {}),
    Scenario("external-redis", {"redis": EXTERNAL_REDIS}, removed=BUNDLED_REDIS),
    Scenario(
        "external-redis-no-auth",
        {
            "redis": {**EXTERNAL_REDIS, "auth": {"enabled": False}},
            "networkPolicy": {"externalRedisCidrs": ["10.2.0.0/16"]},
        },
        removed=BUNDLED_REDIS,
    ),
    Scenario(
        "ingress",
        {"ingress": {"enabled": True, "host": "fhir.clinic.example.org", "tls": {"secretName": "fhir-tls"}}},
        added=frozenset({("Ingress", "api")}),
    ),
    Scenario(
        "hpa",
        {"autoscaling": {"enabled": True}},
        added=frozenset({("HorizontalPodAutoscaler", "api"), ("HorizontalPodAutoscaler", "worker")}),
    ),
    Scenario("keda", {"keda": {"enabled": True, "tenants": TENANTS}}, added=frozenset({("ScaledObject", "worker")})),
    Scenario(
        "keda-and-hpa",
        {"keda": {"enabled": True, "tenants": TENANTS}, "autoscaling": {"enabled": True}},
        added=frozenset({("ScaledObject", "worker"), ("HorizontalPodAutoscaler", "api")}),
    ),
    Scenario(
        "keda-external-redis",
        {"keda": {"enabled": True, "tenants": ["clinic-a"], "metric": "pendingEntriesCount"}, "redis": EXTERNAL_REDIS},
        added=frozenset({("ScaledObject", "worker")}),
        removed=BUNDLED_REDIS,
    ),
    Scenario(
        "service-monitor",
        {"metrics": {"serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}}}},
        added=MONITORING,
    ),
    Scenario(
        "service-monitor-no-worker-metrics",
        {"metrics": {"serviceMonitor": {"enabled": True}}, "config": {"workerMetricsPort": 0}},
        added=frozenset({("ServiceMonitor", "api")}),
    ),
    Scenario("poller", {"poller": {"enabled": True}}, added=POLLER),
    Scenario(
        "no-pdb",
        {"podDisruptionBudget": {"enabled": False}},
        removed=frozenset({("PodDisruptionBudget", "api"), ("PodDisruptionBudget", "worker")}),
    ),
    Scenario(
        "no-network-policy",
        {"networkPolicy": {"enabled": False}},
        removed=frozenset(r for r in BASE if r[0] == "NetworkPolicy"),
    ),
    Scenario(
        "no-service-account", {"serviceAccount": {"create": False}}, removed=frozenset({("ServiceAccount", "gateway")})
    ),
    Scenario(
        "everything",
        {
            "existingSecret": "clinic-gateway-secrets",
            "smartKeys": {"secretName": "clinic-smart-keys"},
            "redis": EXTERNAL_REDIS,
            "ingress": {"enabled": True, "host": "fhir.clinic.example.org", "className": "nginx"},
            "autoscaling": {"enabled": True},
            "keda": {"enabled": True, "tenants": TENANTS, "metric": "lagCount"},
            "metrics": {"serviceMonitor": {"enabled": True}},
            "poller": {"enabled": True},
            "imagePullSecrets": ["registry-credentials"],
            "networkPolicy": {"ehrEgress": [{"cidrs": ["203.0.113.0/24"], "ports": [443]}]},
        },
        added=frozenset({("Ingress", "api"), ("HorizontalPodAutoscaler", "api"), ("ScaledObject", "worker")})
        | MONITORING
        | POLLER,
        removed=BUNDLED_REDIS,
    ),
]
SCENARIO_IDS = [s.name for s in SCENARIOS]
