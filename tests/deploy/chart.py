"""The Helm chart rendered by the real Helm library, and the value sets the tests use.

``helm-python-sdk`` binds Helm v4's Go SDK (``libhelm_c``) through ctypes: lint, schema
validation and rendering are Helm's own code, offline, with no helm binary and no cluster.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import helm_python as helm
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

ROOT = Path(__file__).parents[2]
CHART = ROOT / "helm" / "portico"
RELEASE = "demo"
NAMESPACE = "llm"
FULLNAME = f"{RELEASE}-portico"


def _public_key_pem() -> str:
    # A real key, so the gateway's settings accept it; random, so it is its own canary.
    public = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = public.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return pem.decode()


# Canaries: secret values that must show up in Secrets and nowhere else.
CANARIES = {
    "adminToken": "CANARY-admin-token-7c1f",
    "keyPepper": "CANARY-key-pepper-93ab",
    "apiKeys": "CANARY-api-key-one,CANARY-api-key-two",
    "jwtSecret": "CANARY-jwt-secret-0123456789abcdef0123456789abcdef",
    "jwtPublicKey": _public_key_pem(),
}
REDIS_PASSWORD_CANARY = "CANARY-redis-password-55d2"
EXTERNAL_REDIS_URL_CANARY = "rediss://:CANARY-external-redis-pw@redis.example.net:6380/0"

GPU_SET = "gpu-two-groups"
VALUE_SETS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "external-redis": {
        "redis": {"enabled": False},
        "externalRedis": {"url": EXTERNAL_REDIS_URL_CANARY},
        "gateway": {"secrets": CANARIES},
    },
    "external-redis-existing-secret": {
        "redis": {"enabled": False},
        "externalRedis": {"existingSecret": "team-redis", "existingSecretKey": "url"},
    },
    "tensor-parallel-2": {
        "engine": {"model": "Qwen/Qwen2.5-14B-Instruct", "tensorParallelSize": 2},
    },
    "awq": {
        "engine": {
            "model": "Qwen/Qwen2.5-7B-Instruct-AWQ",
            "servedModelName": "qwen2.5-7b",
            "quantization": "awq_marlin",
            "dtype": "float16",
            "maxModelLen": 16384,
            "maxNumSeqs": 128,
            "maxNumQueuedReqs": 512,
            "enablePrefixCaching": True,
            "extraArgs": ["--kv-cache-dtype=fp8"],
            "hfToken": {"existingSecret": "hf-token"},
        },
    },
    "ingress-and-monitoring": {
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "annotations": {"nginx.ingress.kubernetes.io/proxy-buffering": "off"},
            "hosts": [{"host": "llm.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}],
            "tls": [{"secretName": "llm-tls", "hosts": ["llm.example.com"]}],
        },
        "metrics": {
            "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
            "prometheusRule": {"enabled": True},
            "grafanaDashboard": {"enabled": True},
        },
        "gateway": {
            "autoscaling": {"inFlight": {"enabled": True}},
            "trustedProxies": "10.244.0.0/16, 10.96.0.10",  # the ingress controller's pods
        },
        "networkPolicy": {
            "metricsFrom": [
                {
                    "namespaceSelector": {
                        "matchLabels": {"kubernetes.io/metadata.name": "monitoring"}
                    }
                }
            ],
        },
    },
    "engine-replicas-3": {
        "engine": {
            "replicas": 3,
            "modelCache": {"type": "existingClaim", "existingClaim": "models-rwx"},
        },
    },
    "offline-hostpath-no-autoscaling": {
        "engine": {
            "model": "/cache/models/my-checkpoint",
            "offline": True,
            "enforceEager": True,
            "enablePrefixCaching": False,
            "modelCache": {"type": "hostPath"},
            "podDisruptionBudget": {"enabled": False},
        },
        "gateway": {
            "autoscaling": {"enabled": False},
            "replicas": 3,
            "terminationGracePeriodSeconds": 120,
            "secrets": {"existingSecret": "portico-gateway-secrets"},
        },
        "redis": {"auth": {"existingSecret": "portico-redis", "existingSecretKey": "password"}},
        "networkPolicy": {"enabled": False},
        "serviceAccount": {"create": False, "name": "portico"},
    },
    # A GPU cluster as issue #22 describes it: two engine groups (one autoscaled by KEDA,
    # one with fixed replicas), weights fetched by the download init container into a
    # shared claim mounted read-only, a hub mirror, CUDA forward compatibility, long
    # drains, the restricted Pod Security context (the chart's default) and scrapes.
    GPU_SET: {
        "engine": {
            "groups": [
                {
                    "name": "chat",
                    "model": "meta-llama/Llama-3.3-70B-Instruct",
                    "revision": "6f6073b423013f6a7d4d9f39144961bfbfbc386b",
                    "tensorParallelSize": 4,
                    "maxModelLen": 32768,
                    "loraAdapters": [{"name": "sql", "path": "/cache/adapters/sql-lora"}],
                    "schedulingPolicy": "priority",
                    "autoscaling": {"enabled": True, "maxReplicas": 3},
                    "resources": {"requests": {"cpu": "16", "memory": "200Gi"}},
                },
                {
                    "name": "coder",
                    "model": "Qwen/Qwen2.5-Coder-32B-Instruct-AWQ",
                    "servedModelName": "qwen-coder",
                    "quantization": "awq_marlin",
                    "tensorParallelSize": 2,
                    "replicas": 2,
                    "enforceEager": False,
                    "nodeSelector": {"nvidia.com/gpu.product": "NVIDIA-L40S"},
                    "topologySpreadConstraints": [
                        {
                            "maxSkew": 1,
                            "topologyKey": "topology.kubernetes.io/zone",
                            "whenUnsatisfiable": "DoNotSchedule",
                        }
                    ],
                },
            ],
            "enforceEager": True,
            "download": {"enabled": True},
            "hfToken": {"existingSecret": "hf-token"},
            "hfEndpoint": "https://hf-mirror.internal",
            "cudaCompat": {"enabled": True},
            "modelCache": {
                "type": "existingClaim",
                "existingClaim": "models-rwx",
                "readOnly": True,
            },
            "preStopSleepSeconds": 15,
            "drainSeconds": 300,
            "autoscaling": {"prometheusAddress": "http://prometheus.monitoring.svc:9090"},
        },
        "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True}},
        "gateway": {"drainSeconds": 300},
    },
    "canaries": {
        "gateway": {"secrets": CANARIES},
        "redis": {"auth": {"password": REDIS_PASSWORD_CANARY}, "persistence": {"enabled": False}},
    },
}


@dataclass(frozen=True)
class Rendered:
    """One release as Helm renders it: the merged values, the objects and NOTES.txt."""

    values: dict[str, Any]
    objects: list[dict[str, Any]]
    notes: str

    def of_kind(self, kind: str) -> list[dict[str, Any]]:
        return [o for o in self.objects if o["kind"] == kind]

    def get(self, kind: str, name: str) -> dict[str, Any]:
        found = [o for o in self.of_kind(kind) if o["metadata"]["name"] == name]
        assert len(found) == 1, f"expected one {kind} named {name}, found {len(found)}"
        return found[0]

    def component(self, kind: str, component: str) -> dict[str, Any]:
        found = [
            o
            for o in self.of_kind(kind)
            if o["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component
        ]
        assert len(found) == 1, f"expected one {component} {kind}, found {len(found)}"
        return found[0]

    def engines(self) -> dict[str, dict[str, Any]]:
        """The engine Deployments by group name."""
        return {
            d["metadata"]["labels"]["portico.io/engine-group"]: d
            for d in self.of_kind("Deployment")
            if d["metadata"]["labels"].get("app.kubernetes.io/component") == "engine"
        }

    def engine_groups(self) -> dict[str, dict[str, Any]]:
        """Each group's values with the engine.* defaults filled in, as the chart does."""
        engine = self.values["engine"]
        groups = {}
        for group in engine["groups"]:
            merged = {**engine, **group}
            merged["autoscaling"] = {**engine["autoscaling"], **group.get("autoscaling", {})}
            groups[group["name"]] = merged
        return groups

    def container(self, kind: str, component: str) -> dict[str, Any]:
        containers = self.component(kind, component)["spec"]["template"]["spec"]["containers"]
        assert len(containers) == 1
        container: dict[str, Any] = containers[0]
        return container

    def secret_data(self, name: str) -> dict[str, str]:
        data = self.get("Secret", name).get("data", {})
        return {key: base64.b64decode(value).decode() for key, value in data.items()}


def render(values: dict[str, Any] | None = None) -> Rendered:
    """Render the chart as ``helm install demo helm/portico -n llm`` would."""
    with helm.Chart.load(CHART) as chart:
        merged = chart.merge_values(values)
        manifests = chart.render(values, name=RELEASE, namespace=NAMESPACE, is_install=True)
    objects: list[dict[str, Any]] = []
    notes = ""
    for path, text in sorted(manifests.items()):
        if path.endswith("NOTES.txt"):
            notes = text
            continue
        objects += [doc for doc in yaml.safe_load_all(text) if doc]
    return Rendered(values=merged, objects=objects, notes=notes)


def lint(values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """``helm lint --strict`` findings at warning level or above (info is not a finding)."""
    report = helm.lint(CHART, values, strict=True, namespace=NAMESPACE)
    findings: list[dict[str, Any]] = [m for m in report["messages"] if m["severity"] >= 2]
    return findings


def render_error(values: dict[str, Any]) -> str:
    """The message Helm refuses these values with (fails the test if Helm accepts them)."""
    try:
        render(values)
    except helm.HelmError as exc:
        return str(exc)
    raise AssertionError(f"Helm rendered values it should refuse: {values}")
